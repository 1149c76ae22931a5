"""customer_assets: the weekly customer-data pipeline as a Dagster asset graph."""

from customer_assets.definitions import defs

__all__ = ["defs"]
