"""customer_assets: the weekly customer-data pipeline as a Dagster asset graph.

``customer_assets.defs`` (what ``dagster ... -m customer_assets`` loads) is imported on first use,
so that the plain-Python parts (``sources``, ``logic``) can be used without loading Dagster.
"""


def __getattr__(name: str):
    if name == "defs":
        from customer_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'customer_assets' has no attribute {name!r}")


def __dir__() -> list[str]:  # Dagster finds ``defs`` through inspect.getmembers, which asks dir()
    return sorted([*globals(), "defs"])


__all__ = ["defs"]
