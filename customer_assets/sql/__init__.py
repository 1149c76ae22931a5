"""SQL run inside the warehouse (DuckDB locally, BigQuery in production), one text for both engines.

Each function takes the ``WarehouseSQL`` resource (``resources/warehouse_sql.py``) that runs it,
and reads or maintains the tables named in ``tables.py``: the SCD2 dimensions, merges of persons,
the facts' candidates, the marts, the carried history's queries and the warehouse table's checks.
What the rows mean stays in ``logic/`` (pure functions, no SQL, no Dagster).
"""
