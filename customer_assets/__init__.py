"""customer_assets: the weekly customer-data pipeline as a Dagster asset graph.

``customer_assets.defs`` (what ``dagster ... -m customer_assets`` loads) is imported on first use, so that
the plain-Python parts (``sources``, ``logic``) can be used without loading Dagster.
"""

import pandas as pd

# Text columns as Arrow-backed ``str`` (pandas 3's default, opt-in on pandas 2.3): a week's strings stay in
# Arrow buffers from the COPY stream through Parquet and DuckDB instead of becoming millions of Python
# objects, which is most of the pipeline's time and memory otherwise (see benchmarks/).
pd.set_option("future.infer_string", True)
# Copy-on-Write (also pandas 3's behaviour): derived frames share their parents' columns until written to, so
# validation and enrichment do not copy the whole week at every ``assign`` (their peak RSS ~10% lower).
pd.set_option("mode.copy_on_write", True)


def __getattr__(name: str):
    if name == "defs":
        from customer_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'customer_assets' has no attribute {name!r}")


def __dir__() -> list[str]:  # Dagster finds ``defs`` through inspect.getmembers, which asks dir()
    return sorted([*globals(), "defs"])


__all__ = ["defs"]
