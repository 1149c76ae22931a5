"""The warehouse: its schema and every table's name, each spelled here once.

A table's asset key is the schema and its name (``key``), so one key names a DuckDB schema locally
and a BigQuery dataset in production. Which tables hold customer ids is not listed here: each asset
says so in its decorator (``suppression.holds_customer_ids``), and every table is kept fresh
(``freshness.py``), so a new table cannot be missed.
"""

from __future__ import annotations

import dagster as dg

SCHEMA = "customer_analytics"

# Loaded week by week by the pipeline
WEEKLY_TRANSACTIONS = "weekly_transactions"
DATA_QUALITY_METRICS = "data_quality_metrics"
TRANSACTION_QUARANTINE = "transaction_quarantine"
FLAGGED_TRANSACTIONS = "flagged_transactions"
CUSTOMER_HISTORY = "customer_history"
WEEKLY_CUSTOMER_PROFILES = "weekly_customer_profiles"
CUSTOMER_IDENTITY_MAP = "customer_identity_map"
IDENTITY_MERGES = "identity_merges"
PIPELINE_ERROR_LOG = "pipeline_error_log"
# The analysts' star schema and marts
DIM_CUSTOMERS = "dim_customers"
DIM_PRODUCTS = "dim_products"
DIM_DATE = "dim_date"
PRODUCT_SNAPSHOTS = "product_snapshots"
FACT_TRANSACTIONS = "fact_transactions"
FACT_TRANSACTIONS_QUARANTINE = "fact_transactions_quarantine"
MART_WEEKLY_SALES = "mart_weekly_sales"
MART_CHURN_RETENTION = "mart_churn_retention"
MART_COHORT_RETENTION = "mart_cohort_retention"
# Written by the erasure job, not an asset: the keyed hashes of forgotten customers
ERASURE_SUPPRESSION = "erasure_suppression"


def key(table: str) -> dg.AssetKey:
    """The asset key of warehouse table ``table``."""
    return dg.AssetKey([SCHEMA, table])


def is_table(asset_key: dg.AssetKey) -> bool:
    """True for the key of a warehouse table (the schema, then the table's name)."""
    return len(asset_key.path) == 2 and asset_key.path[0] == SCHEMA
