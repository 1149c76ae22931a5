"""Weeks in parallel (issue 26 item 5): a backfill of four weeks in production runs them at once and
ends with the same warehouse as running them one by one.

Production runs a backfill through the shipped instance (customer_assets/deploy/dagster.yaml): the
queued run coordinator starts up to 4 runs at once, one run per week. Here that instance is real: the
shipped file in a temporary DAGSTER_HOME on the test's PostgreSQL, a ``dagster-daemon run`` process
(in a process group of its own, stopped at teardown), the prod deployment writing to the BigQuery
emulator. The four weeks are submitted at once in the two ways an operator can:

- a job backfill (``dagster job backfill``, the CLI and the job's page), one run per week;
- an asset backfill (the UI's "Materialize" over a range of weeks: GraphQL
  ``launchPartitionBackfill`` on a real ``dagster-webserver``), which the daemon splits into runs.

The baseline is the same weeks run one by one, in order, in process (``dg.materialize`` with the
prod resources, one instance for the four weeks, as test_prod_graph.py runs a week). Each of the
three writes a BigQuery dataset of its own (``BIGQUERY_DATASET``), and every warehouse table of the
definitions is compared row for row.
"""

from __future__ import annotations

import dagster as dg
import pytest

from customer_assets import partitions
from customer_assets.assets.week_order import ORDER_GATES
from customer_assets.definitions import defs
from customer_assets.deployments import resources_for
from customer_assets.io_managers.bigquery_warehouse import BigQueryWarehouseIOManager
from customer_assets_tests.support import parallel_weeks as pw
from customer_assets_tests.support.bigquery_emulator import emulator_available
from customer_assets_tests.support.environ import clean_environ, environ
from customer_assets_tests.support.pipeline import ASSETS
from customer_assets_tests.support.sources import BIGQUERY_PROJECT, create_source

available, reason = emulator_available()
# A backfill takes 6-12 minutes on 2 cores, with the suite's other worker beside it: twice the
# suite's 900 s per test.
pytestmark = [pytest.mark.skipif(not available, reason=reason), pytest.mark.timeout(1800)]

SOURCE = "parallel_weeks_source"
# Every asset the weekly job materializes (the UI's "Materialize" selects the same), and the
# warehouse tables among them: taken from the definitions, so a new table is compared too.
JOB_GRAPH = defs.resolve_job_def(pw.JOB).asset_layer.asset_graph
JOB_ASSETS = sorted(
    (key for key in JOB_GRAPH.get_all_asset_keys() if JOB_GRAPH.get(key).is_materializable),
    key=lambda key: key.to_user_string(),
)
TABLES = pw.warehouse_tables(JOB_ASSETS)
# Columns that legitimately differ between two runs of the same week, dropped before comparing.
# Nothing else is: surrogate keys are derived (``<id>|<yyyymmdd of the version's first week>``,
# sql/scd2.py), not generated, and so must be equal too.
RUN_DEPENDENT = {
    # run_seconds: how long validation took; computed_at: the wall clock when the row was computed;
    # run_id: the Dagster run that wrote it (logic/quality.py metrics_row)
    "data_quality_metrics": ("run_seconds", "computed_at", "run_id"),
    # the wall clock of the profile step (assets/profiles.py)
    "weekly_customer_profiles": ("run_timestamp",),
}
# A generous bound: on 2 cores a week takes ~30 s in process, ~2.5 min as a daemon's run (its steps
# in processes of their own), and the weeks' carried steps wait for the week before.
BACKFILL_TIMEOUT = 1200.0


@pytest.fixture(scope="module")
def weeks_source(pg_server, tmp_path_factory):
    """The seeded source (pw.SEED: four complete weeks, its CRM table, ERP schema and event files);
    its landing zone."""
    events = tmp_path_factory.mktemp("parallel_weeks_events")
    create_source(pg_server, SOURCE, pw.SEED, events)
    return events


def environ_for(pg_server, events, workdir, bigquery_endpoint, bigquery_client, dataset) -> dict:
    """The pipeline's variables for a variant writing ``dataset``, emptied first."""
    bigquery_client.delete_dataset(
        f"{BIGQUERY_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True
    )
    workdir.mkdir(parents=True, exist_ok=True)
    return pw.pipeline_environ(
        pg_server,
        SOURCE,
        events,
        workdir,
        bigquery_endpoint,
        dataset,
        first_week=partitions.FIRST_WEEK,
    )


@pytest.fixture(scope="module")
def one_by_one(pg_server, weeks_source, bigquery_endpoint, bigquery_client, tmp_path_factory):
    """The baseline: the four weeks run one after the other, in order, in process with the prod
    resources and one instance; every warehouse table as it then is."""
    dataset = "weeks_one_by_one"
    workdir = tmp_path_factory.mktemp("one_by_one")
    variables = environ_for(
        pg_server, weeks_source, workdir, bigquery_endpoint, bigquery_client, dataset
    )
    instance = dg.DagsterInstance.ephemeral()
    with environ(variables):
        for week in pw.WEEKS:
            resources = resources_for("prod")
            assert isinstance(resources["warehouse_io_manager"], BigQueryWarehouseIOManager)
            result = dg.materialize(
                ASSETS, partition_key=week, resources=resources, instance=instance
            )
            assert result.success, week
        # nothing for the sensor source_changes to repair after the weeks one by one
        assert pw.left_to_repair(instance) == {}
    yield pw.read_warehouse(bigquery_client, dataset, TABLES)
    bigquery_client.delete_dataset(
        f"{BIGQUERY_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True
    )


@pytest.fixture
def production(pg_server, weeks_source, bigquery_endpoint, bigquery_client, tmp_path, monkeypatch):
    """A fresh production instance for one variant: the shipped dagster.yaml in its own
    DAGSTER_HOME on a new PostgreSQL database, a BigQuery dataset of its own; yields a function
    that starts the daemon (and the webserver) with it. Everything is stopped and removed after."""

    class Production:
        def __init__(self, name: str):
            self.name = name
            self.dataset = f"weeks_{name}"
            self.database = f"weeks_{name}_instance"
            self.workdir = tmp_path / name
            variables = environ_for(
                pg_server,
                weeks_source,
                self.workdir,
                bigquery_endpoint,
                bigquery_client,
                self.dataset,
            )
            variables |= pw.instance_home(pg_server, self.workdir / "dagster_home", self.database)
            # the processes get exactly these; this process too, to read the same instance
            self.env = clean_environ(**variables)
            for key, value in variables.items():
                monkeypatch.setenv(key, value)
            self.instance = dg.DagsterInstance.get()

    made: list[Production] = []

    def make(name: str) -> Production:
        made.append(Production(name))
        return made[-1]

    yield make
    for variant in made:
        variant.instance.dispose()
        pw.drop_database(pg_server, variant.database)
        bigquery_client.delete_dataset(
            f"{BIGQUERY_PROJECT}.{variant.dataset}", delete_contents=True, not_found_ok=True
        )


def assert_same_as_one_by_one(variant, backfill_id: str, log, one_by_one, bigquery_client):
    """The backfill's runs all succeeded, one run per week, several at once; every warehouse table
    equals the baseline's, row for row; and each week was carried from the week before (nothing
    left for the sensor source_changes to repair)."""
    runs = pw.wait_for_backfill(variant.instance, backfill_id, BACKFILL_TIMEOUT, log)
    report = pw.describe_runs(variant.instance, runs, frozenset(JOB_ASSETS))
    failed = [run for run in runs if run.status != dg.DagsterRunStatus.SUCCESS]
    if not runs or failed:
        pytest.fail(
            f"{len(failed)} of {len(runs)} run(s) of the backfill did not succeed:\n{report}\n"
            f"warnings in the daemon's log:\n{pw.daemon_warnings(log)}",
            pytrace=False,
        )
    weeks = sorted(run.tags.get(pw.PARTITION_TAG) for run in runs)
    assert weeks == pw.WEEKS, f"not one run per week:\n{report}"
    assert pw.max_overlap(variant.instance, runs) >= 2, f"the weeks did not run at once:\n{report}"

    at_once = pw.read_warehouse(bigquery_client, variant.dataset, TABLES)
    differences = pw.differences(one_by_one, at_once, RUN_DEPENDENT)
    assert not differences, (
        f"{len(differences)} of {len(TABLES)} tables differ from the weeks run one by one:\n\n"
        + "\n\n".join(differences)
    )
    # Every step that opens what carries the weeks before checked for a run of the week before
    # (week_order.ORDER_GATES), in every week's run.
    for gate in ORDER_GATES:
        for week in pw.WEEKS:
            records = variant.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=gate, asset_partitions=[week]), limit=1
            ).records
            assert records, f"{gate.to_user_string()} of {week} not materialized:\n{report}"
            metadata = records[0].asset_materialization.metadata
            assert "waited_for_previous_week_s" in metadata, (gate.to_user_string(), week)
    # Each week carried from the week before, as one by one: otherwise the sensor source_changes
    # re-runs the weeks later (a week whose history was rescanned because the week before was not
    # loaded yet can still end with the right totals, so the tables alone may not show it).
    assert pw.left_to_repair(variant.instance) == {}, report


# --------------------------------------------------------------------------------------------------


def test_the_baseline_carries_customers_across_the_four_weeks(one_by_one):
    """What makes the comparison meaningful: every table of the definitions is in the baseline, the
    four weeks are loaded, and customers bought in several of them, so their history and identity
    are carried from week to week."""
    assert sorted(one_by_one) == TABLES
    transactions = one_by_one["weekly_transactions"]
    weeks = transactions["week_start"].dt.strftime("%Y-%m-%d")
    assert sorted(weeks.unique()) == pw.WEEKS
    weeks_per_customer = transactions.assign(week=weeks).groupby("customer_id")["week"].nunique()
    assert (weeks_per_customer >= 2).sum() >= 50 and (weeks_per_customer == 4).any()
    history = one_by_one["customer_history"]
    last = history[history["week_start"] == history["week_start"].max()]
    assert last["transaction_count"].max() >= 4


def test_a_job_backfill_of_four_weeks_equals_running_them_one_by_one(
    production, one_by_one, bigquery_client
):
    """``dagster job backfill`` of the weekly job over the four weeks queues one run per week at
    once; the daemon runs them under the shipped limits (4 at a time); every run succeeds and every
    warehouse table ends equal, row for row, to the weeks run one by one."""
    variant = production("job_backfill")
    with pw.daemon(variant.env, variant.workdir, variant.instance) as log:
        backfill_id = pw.job_backfill(variant.env, variant.workdir)
        assert_same_as_one_by_one(variant, backfill_id, log, one_by_one, bigquery_client)


def test_an_asset_backfill_of_four_weeks_equals_running_them_one_by_one(
    production, one_by_one, bigquery_client
):
    """The UI's "Materialize" of every asset of the weekly job over the four weeks (GraphQL
    ``launchPartitionBackfill`` on the webserver) is run by the daemon as one run per week, several
    at once; every run succeeds and every warehouse table ends equal, row for row, to the weeks run
    one by one."""
    variant = production("asset_backfill")
    with (
        pw.daemon(variant.env, variant.workdir, variant.instance) as log,
        pw.webserver(variant.env, variant.workdir) as port,
    ):
        backfill_id = pw.asset_backfill(port, JOB_ASSETS)
        assert_same_as_one_by_one(variant, backfill_id, log, one_by_one, bigquery_client)
