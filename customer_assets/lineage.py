"""Where each column of the facts and the marts comes from: its upstream columns, and the rule of a
derived column.

A column's sources are the upstream columns its value is computed from and, for a key looked up in a
dimension, the columns it is looked up by. Published as ``dagster/column_lineage`` in each
materialization's metadata (where Dagster reads it); the rules go in the column descriptions of
``lineage_schema``.
"""

from __future__ import annotations

from typing import NamedTuple

import dagster as dg
import pandera.pandas as pa

from customer_assets import tables
from customer_assets.dagster_types import column_schema
from customer_assets.schemas import (
    FactTransactions,
    MartChurnRetention,
    MartCohortRetention,
    MartWeeklySales,
)


class Lineage(NamedTuple):
    sources: tuple[str, ...]  # "<table>.<column>", tables of the warehouse schema (``tables.py``)
    rule: str  # how the value is made from them; "" when copied as is


def at(table: str, column: str) -> str:
    """A source column, ``table.column``: ``table`` one of ``tables.py``'s names, never spelled
    here."""
    return f"{table}.{column}"


def copied(source: str) -> Lineage:
    return Lineage((source,), "")


def derived(rule: str, *sources: str) -> Lineage:
    return Lineage(sources, rule)


# The person a transaction's shop id belongs to in the week's identity (the trimmed id when the map
# has none), and the person of a customer_history row the same way: the facts and the marts count
# people.
_FACT_PERSON = (
    at(tables.WEEKLY_TRANSACTIONS, "customer_id"),
    at(tables.CUSTOMER_IDENTITY_MAP, "source_customer_id"),
    at(tables.CUSTOMER_IDENTITY_MAP, "customer_id"),
)
_PERSON = (
    at(tables.CUSTOMER_HISTORY, "customer_id"),
    at(tables.CUSTOMER_IDENTITY_MAP, "source_customer_id"),
    at(tables.CUSTOMER_IDENTITY_MAP, "customer_id"),
)
_OF_PEOPLE = "over the person's shop ids and currencies"
_COHORT = "people whose first purchase fell in cohort_week"

LINEAGE: dict[str, dict[str, Lineage]] = {
    tables.FACT_TRANSACTIONS: {
        "transaction_id": copied(at(tables.WEEKLY_TRANSACTIONS, "transaction_id")),
        "customer_key": derived(
            "dim_customers.customer_key of the person's version valid in the transaction's week",
            at(tables.DIM_CUSTOMERS, "customer_key"),
            at(tables.DIM_CUSTOMERS, "customer_id"),
            *_FACT_PERSON,
        ),
        "product_key": derived(
            "dim_products.product_key of the product's version valid in the transaction's week",
            at(tables.DIM_PRODUCTS, "product_key"),
            at(tables.DIM_PRODUCTS, "product_id"),
            at(tables.WEEKLY_TRANSACTIONS, "product_id"),
        ),
        "date_key": derived(
            "yyyymmdd of the timestamp's UTC day, a dim_date.date_key",
            at(tables.WEEKLY_TRANSACTIONS, "timestamp"),
            at(tables.DIM_DATE, "date_key"),
        ),
        "customer_id": derived(
            "customer_identity_map.customer_id of the database record whose source_customer_id is the trimmed "
            "customer_id, in the transaction's week; the trimmed customer_id when the map has none",
            *_FACT_PERSON,
        ),
        "product_id": copied(at(tables.WEEKLY_TRANSACTIONS, "product_id")),
        "timestamp": copied(at(tables.WEEKLY_TRANSACTIONS, "timestamp")),
        "week_start": copied(at(tables.WEEKLY_TRANSACTIONS, "week_start")),
        "amount": copied(at(tables.WEEKLY_TRANSACTIONS, "amount")),
        "currency": copied(at(tables.WEEKLY_TRANSACTIONS, "currency")),
        "amount_usd": copied(at(tables.WEEKLY_TRANSACTIONS, "amount_usd")),
        "fx_rate": copied(at(tables.WEEKLY_TRANSACTIONS, "fx_rate")),
        "fx_rate_date": copied(at(tables.WEEKLY_TRANSACTIONS, "fx_rate_date")),
        "is_anomaly": copied(at(tables.WEEKLY_TRANSACTIONS, "is_anomaly")),
        "anomaly_flags": copied(at(tables.WEEKLY_TRANSACTIONS, "anomaly_flags")),
    },
    tables.MART_WEEKLY_SALES: {
        "week_start": derived(
            "the week measured, whose facts are summed", at(tables.FACT_TRANSACTIONS, "week_start")
        ),
        "category": derived(
            "COALESCE(category, 'unknown') of the fact's product version",
            at(tables.DIM_PRODUCTS, "category"),
            at(tables.DIM_PRODUCTS, "product_key"),
            at(tables.FACT_TRANSACTIONS, "product_key"),
        ),
        "country": derived(
            "COALESCE(country, 'unknown') of the fact's customer version",
            at(tables.DIM_CUSTOMERS, "country"),
            at(tables.DIM_CUSTOMERS, "customer_key"),
            at(tables.FACT_TRANSACTIONS, "customer_key"),
        ),
        "segment": derived(
            "COALESCE(segment, 'unknown') of the fact's customer version",
            at(tables.DIM_CUSTOMERS, "segment"),
            at(tables.DIM_CUSTOMERS, "customer_key"),
            at(tables.FACT_TRANSACTIONS, "customer_key"),
        ),
        "revenue_usd": derived(
            "SUM(amount_usd) of the group's facts of the week",
            at(tables.FACT_TRANSACTIONS, "amount_usd"),
        ),
        "orders": derived(
            "COUNT(*) of the group's facts of the week",
            at(tables.FACT_TRANSACTIONS, "transaction_id"),
        ),
        "customers": derived(
            "COUNT(DISTINCT customer_id) of the group's facts of the week",
            at(tables.FACT_TRANSACTIONS, "customer_id"),
        ),
        "avg_order_value_usd": derived(
            "revenue_usd / orders",
            at(tables.FACT_TRANSACTIONS, "amount_usd"),
            at(tables.FACT_TRANSACTIONS, "transaction_id"),
        ),
        "previous_revenue_usd": derived(
            "the group's revenue_usd of the week before",
            at(tables.FACT_TRANSACTIONS, "amount_usd"),
            at(tables.FACT_TRANSACTIONS, "week_start"),
        ),
        "revenue_wow_change_pct": derived(
            "(revenue_usd - previous_revenue_usd) / previous_revenue_usd * 100; null unless previous_revenue_usd > 0",
            at(tables.FACT_TRANSACTIONS, "amount_usd"),
            at(tables.FACT_TRANSACTIONS, "week_start"),
        ),
    },
    tables.MART_CHURN_RETENTION: {
        "week_start": derived(
            "the week measured: customer_history as of its end, and its facts",
            at(tables.CUSTOMER_HISTORY, "week_start"),
            at(tables.FACT_TRANSACTIONS, "week_start"),
        ),
        "segment": derived(
            "COALESCE(segment, 'unknown') of the person's dim_customers version valid in the week",
            at(tables.DIM_CUSTOMERS, "segment"),
            at(tables.DIM_CUSTOMERS, "customer_id"),
            *_PERSON,
        ),
        "value_tier": derived(
            "COALESCE(value_tier, 'unknown') of the person's dim_customers version valid in the week",
            at(tables.DIM_CUSTOMERS, "value_tier"),
            at(tables.DIM_CUSTOMERS, "customer_id"),
            *_PERSON,
        ),
        "tenure_band": derived(
            f"the band of the first purchase (MIN {_OF_PEOPLE}) against the week's end",
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
        "customers": derived(
            "COUNT of the group's people who have bought by the week's end", *_PERSON
        ),
        "active": derived(
            f"people whose last purchase (MAX {_OF_PEOPLE}) is < 7 days before the week's end",
            at(tables.CUSTOMER_HISTORY, "last_purchase_at"),
            *_PERSON,
        ),
        "at_risk": derived(
            "people whose last purchase is 7-30 days before the week's end",
            at(tables.CUSTOMER_HISTORY, "last_purchase_at"),
            *_PERSON,
        ),
        "churned": derived(
            "people whose last purchase is > 30 days before the week's end",
            at(tables.CUSTOMER_HISTORY, "last_purchase_at"),
            *_PERSON,
        ),
        "churn_rate": derived(
            "churned / customers", at(tables.CUSTOMER_HISTORY, "last_purchase_at"), *_PERSON
        ),
        "new_customers": derived(
            f"people whose first purchase (MIN {_OF_PEOPLE}) is in the week",
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
        "returning_customers": derived(
            "people with a fact of the week whose first purchase is before the week",
            at(tables.FACT_TRANSACTIONS, "customer_id"),
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
    },
    tables.MART_COHORT_RETENTION: {
        "week_start": derived(
            "the week measured: customer_history as of its end, and its facts",
            at(tables.CUSTOMER_HISTORY, "week_start"),
            at(tables.FACT_TRANSACTIONS, "week_start"),
        ),
        "cohort_week": derived(
            f"Monday of the first purchase (MIN {_OF_PEOPLE})",
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
        "weeks_since_first_purchase": derived(
            "(week_start - cohort_week) in weeks",
            at(tables.CUSTOMER_HISTORY, "week_start"),
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
        "cohort_size": derived(
            f"COUNT of the {_COHORT}", at(tables.CUSTOMER_HISTORY, "first_purchase_at"), *_PERSON
        ),
        "retained": derived(
            f"COUNT of the {_COHORT} with a fact of the week",
            at(tables.FACT_TRANSACTIONS, "customer_id"),
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
        "retention_rate": derived(
            "retained / cohort_size",
            at(tables.FACT_TRANSACTIONS, "customer_id"),
            at(tables.CUSTOMER_HISTORY, "first_purchase_at"),
            *_PERSON,
        ),
    },
}

MODELS: dict[str, type[pa.DataFrameModel]] = {
    tables.FACT_TRANSACTIONS: FactTransactions,
    tables.MART_WEEKLY_SALES: MartWeeklySales,
    tables.MART_CHURN_RETENTION: MartChurnRetention,
    tables.MART_COHORT_RETENTION: MartCohortRetention,
}


def _declared(name: str) -> dict[str, Lineage]:
    """The table's lineage, in the model's column order (a model column without one is left out: the
    lineage test names it)."""
    lineage = LINEAGE[name]
    return {
        column: lineage[column] for column in MODELS[name].to_schema().columns if column in lineage
    }


def _dep(source: str) -> dg.TableColumnDep:
    table, column = source.split(".")
    return dg.TableColumnDep(asset_key=tables.key(table), column_name=column)


def column_lineage(name: str) -> dg.TableColumnLineage:
    """The lineage of ``customer_analytics.<name>`` as Dagster's ``TableColumnLineage``."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [_dep(source) for source in lineage.sources]
            for column, lineage in _declared(name).items()
        }
    )


def lineage_metadata(name: str) -> dict:
    """The materialization metadata that carries the table's column lineage."""
    return {"dagster/column_lineage": column_lineage(name)}


def lineage_schema(name: str) -> dg.TableSchema:
    """The model's column schema (for the asset's definition), each description ending with where
    the column comes from: the rule and its sources, or the column it is copied from."""
    declared = _declared(name)

    def described(column: dg.TableColumn) -> dg.TableColumn:
        lineage = declared.get(column.name)
        if lineage is None:
            return column
        origin = (
            f"{lineage.rule} (from {', '.join(lineage.sources)})"
            if lineage.rule
            else f"copied from {lineage.sources[0]}"
        )
        text = f"{column.description} " if column.description else ""
        return dg.TableColumn(
            name=column.name,
            type=column.type,
            description=f"{text}Lineage: {origin}.",
            constraints=column.constraints,
            tags=column.tags,
        )

    return dg.TableSchema(
        columns=[described(column) for column in column_schema(MODELS[name]).columns]
    )
