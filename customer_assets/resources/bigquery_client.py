"""The BigQuery client of the warehouse project, built in one place for the ``BigQueryWarehouse``
resource and the BigQuery warehouse IO manager."""

from __future__ import annotations


def bigquery_client(project: str, location: str, emulator_host: str | None = None):
    """A client of the warehouse project: the emulator's anonymous one in tests, else the default
    chain of credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata
    server)."""
    from google.cloud import bigquery

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator_host},
        )
    return bigquery.Client(project=project, location=location)
