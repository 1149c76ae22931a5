"""IO managers: where each dataset lives, chosen per deployment under the same resource keys."""
