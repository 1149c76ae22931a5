"""The BigQuery warehouse: ``WarehouseSQL`` on dagster-gcp's ``BigQueryResource``.

Its own module so that only the production deployment (and the BigQuery IO manager) imports
dagster-gcp and the BigQuery client: a local process, the CLI and the code server, never loads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import ClassVar

import dagster as dg
import pandas as pd
import pyarrow as pa
from dagster_gcp import BigQueryResource
from pydantic import Field

from customer_assets.resources.bigquery_client import bigquery_client, retrying_conflicts
from customer_assets.resources.warehouse_sql import PARAM, WarehouseSQL


class BigQueryWarehouse(BigQueryResource, WarehouseSQL):
    """BigQuery (GCP_PROJECT_ID); datasets named by the asset key prefix unless BIGQUERY_DATASET is
    set. dagster-gcp's resource (its client, and its ``gcp_credentials`` option), or an emulator's
    anonymous client in tests, which that resource cannot reach."""

    project: str = Field(description="GCP project of the warehouse (GCP_PROJECT_ID).")
    location: str = Field(default="US", description="Location of the datasets and jobs.")
    dataset_override: str | None = Field(default=None, description="BIGQUERY_DATASET.")
    emulator_host: str | None = Field(
        default=None, description="BIGQUERY_EMULATOR_HOST (tests only)."
    )
    types: ClassVar[dict[str, str]] = {
        "INT": "INT64",
        "STR": "STRING",
        "BOOL": "BOOL",
        "DATETIME": "DATETIME",
        "FLOAT": "FLOAT64",
    }

    @contextmanager
    def get_client(self):
        if self.emulator_host:
            yield bigquery_client(self.project, self.location, self.emulator_host)
            return
        with super().get_client() as client:
            yield client

    def quote(self, name: str) -> str:
        return f"`{name}`"

    # a request stays far below BigQuery's size limit
    list_rows: ClassVar[int | None] = 50_000

    def unnest(self, param: str, alias: str) -> str:
        return f"UNNEST(@{param}) AS {alias}"

    def ensure_schema(self, schema: str) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.dataset_override or schema}")
        dataset.location = self.location
        with self.get_client() as client:
            client.create_dataset(dataset, exists_ok=True)

    def table(self, schema: str, name: str) -> str:
        return f"`{self.project}.{self.dataset_override or schema}.{name}`"

    def table_url(self, schema: str, name: str) -> str:
        dataset = self.dataset_override or schema
        return f"https://console.cloud.google.com/bigquery?project={self.project}&ws=!1m5!1m4!4m3!1s{self.project}!2s{dataset}!3s{name}"

    @classmethod
    def _parameters(cls, params: dict | None):
        from google.cloud import bigquery

        out = []
        for name, value in (params or {}).items():
            if isinstance(value, pa.ChunkedArray):
                value = value.to_pylist()
            elif hasattr(value, "tolist"):  # an array: pandas, NumPy or Arrow
                value = value.tolist()
            if isinstance(value, (list, tuple)):  # lists are of strings here (ids, hashes)
                if len(value) > cls.list_rows:
                    raise ValueError(
                        f"the list parameter @{name} holds {len(value)} values, more than the "
                        f"{cls.list_rows} a BigQuery statement takes here: ask in parts "
                        "(WarehouseSQL.in_parts)"
                    )
                out.append(bigquery.ArrayQueryParameter(name, "STRING", [str(v) for v in value]))
                continue
            if isinstance(value, bool):
                kind = "BOOL"
            elif isinstance(value, int):
                kind = "INT64"
            elif isinstance(value, float):
                kind = "FLOAT64"
            elif isinstance(value, datetime):
                kind = "TIMESTAMP" if value.tzinfo else "DATETIME"
            elif isinstance(value, date):
                kind = "DATE"
            else:
                kind, value = "STRING", str(value)
            out.append(bigquery.ScalarQueryParameter(name, kind, value))
        return out

    def _job(self, sql: str, params: dict | None, names: dict[str, str]):
        from google.cloud import bigquery

        rendered = self.render(sql, names)
        used = set(PARAM.findall(rendered))
        config = bigquery.QueryJobConfig(
            query_parameters=self._parameters(
                {k: v for k, v in (params or {}).items() if k in used}
            )
        )
        with self.get_client() as client:
            return retrying_conflicts(
                lambda: client.query(rendered, job_config=config, location=self.location).result(),
                dg.get_dagster_logger(),
            )

    def query(self, sql: str, params: dict | None = None, **names: str) -> pd.DataFrame:
        return self._job(sql, params, names).to_arrow(create_bqstorage_client=False).to_pandas()

    def execute(self, sql: str, params: dict | None = None, **names: str) -> None:
        self._job(sql, params, names)

    def batches(
        self, sql: str, params: dict | None = None, **names: str
    ) -> Iterator[pa.RecordBatch]:
        yield from self._job(sql, params, names).to_arrow_iterable()

    def exists(self, schema: str, name: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            with self.get_client() as client:
                client.get_table(f"{self.project}.{self.dataset_override or schema}.{name}")
            return True
        except NotFound:
            return False
