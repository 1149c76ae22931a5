"""Sources that fall silent are noticed: a landing zone missing a day, a CRM extract thinner than
expected."""

from __future__ import annotations

import shutil

import dagster as dg

from customer_assets.assets.profile_inputs import CRM, CRM_REQUIRED_FIELDS, EVENTS
from customer_assets_tests.support.pipeline import run_week
from customer_assets_tests.support.sources import EVENTS as LANDING_ZONES

WEEK = "2026-11-16"
SILENT_DAY = "2026-11-18"


def _check(result: dg.ExecuteInProcessResult, name: str):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def test_a_day_without_event_files_and_a_thin_crm_extract_warn(
    pipeline_env, small_source, monkeypatch
):
    tmp = pipeline_env("small_source", crm=True)
    landing = tmp / "landing"
    shutil.copytree(LANDING_ZONES["small_source"], landing)
    days = [f"2026-11-{d}" for d in range(16, 23)]
    assert all((landing / f"dt={day}").is_dir() for day in days)  # the seed writes every day
    shutil.rmtree(landing / f"dt={SILENT_DAY}")  # the connector stopped for a day
    monkeypatch.setenv("EVENTS_PATH", str(landing))
    monkeypatch.setenv("CRM_MIN_RECORDS", "100000")

    result = run_week(WEEK, selection=dg.AssetSelection.assets(EVENTS, CRM))

    assert result.success  # warnings: the week goes on
    events = _check(result, "events_cover_week")
    assert not events.passed and events.severity == dg.AssetCheckSeverity.WARN
    assert f"Wed {SILENT_DAY}" in events.metadata["result"].value
    assert events.metadata["days_without_files"].value == 1 and events.metadata["events"].value > 0
    thin = _check(result, "crm_min_records")
    records = (
        result.asset_materializations_for_node("etl__crm_customers")[0]
        .metadata["dagster/row_count"]
        .value
    )
    assert not thin.passed and thin.severity == dg.AssetCheckSeverity.WARN
    assert thin.metadata["records"].value == records > 0
    fields = _check(result, "crm_required_fields")
    missing_required = set(fields.metadata["missing"].value) & set(CRM_REQUIRED_FIELDS)
    assert fields.severity == dg.AssetCheckSeverity.WARN and fields.passed == (not missing_required)
