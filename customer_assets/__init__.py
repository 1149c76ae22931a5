"""customer_assets: the weekly customer-data pipeline as a Dagster asset graph."""

import pandas as pd

# Text columns as Arrow-backed ``str`` (pandas 3's default, opt-in on pandas 2.3): a week's strings stay in
# Arrow buffers from the COPY stream through Parquet and DuckDB instead of becoming millions of Python
# objects, which is most of the pipeline's time and memory otherwise (see benchmarks/).
pd.set_option("future.infer_string", True)

from customer_assets.definitions import defs  # noqa: E402

__all__ = ["defs"]
