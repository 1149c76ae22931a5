"""Issue 13: the operator's week in a real browser (Debian's Chromium driven by Playwright) against
`dagster dev` started by the test, on the embedded default: the lineage lists every asset, a week
launched from the UI succeeds, the quality plots have one point per loaded week, a check's result
shows its week.

`.ci/run` installs Chromium (`apt-get install -y chromium`); screenshots of a failure are saved and
their paths printed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from customer_assets_tests.graph.test_cli import DAGSTER, dagster_dev
from customer_assets_tests.graph.test_cli import _graphql as graphql
from customer_assets_tests.support.environ import clean_environ

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).parents[2]
LOADED, LAUNCHED = "2026-11-09", "2026-11-16"

playwright = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (the dev extra has it)"
)
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium: apt-get install -y chromium (.ci/run does)", allow_module_level=True)


def _env(tmp: Path) -> dict:
    (tmp / "home").mkdir(exist_ok=True)
    return clean_environ(
        DAGSTER_HOME=str(tmp / "home"), DATA_DIR=str(tmp / "data"), ETL_LOG_DIR=str(tmp / "logs")
    )


def _graphql(port: int, query: str) -> dict:
    return graphql(port, query)["data"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """`dagster dev` on the embedded default with one week already loaded from the CLI; yields
    (port, tmp)."""
    tmp = tmp_path_factory.mktemp("browser")
    env = _env(tmp)
    done = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "customer_assets",
            "--select",
            "*",
            "--partition",
            LOADED,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dagster_dev(env) as port:
        yield port, tmp


@pytest.fixture
def page(ui, request):
    port, tmp = ui
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 2200})
        page.set_default_timeout(30_000)
        page.base = f"http://127.0.0.1:{port}"
        page.goto(page.base + "/assets")
        skip = page.get_by_role("button", name="Skip")  # the first visit's newsletter dialog
        with contextlib.suppress(playwright.TimeoutError):
            skip.click(timeout=5_000)
        yield page
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            shot = tmp / f"{request.node.name}.png"
            page.screenshot(path=str(shot))
            print(f"screenshot of the failure: {shot}")
        browser.close()


def test_the_catalog_lists_every_asset(page, ui):
    port, _ = ui
    keys = [
        "/".join(n["assetKey"]["path"])
        for n in _graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
    ]
    assert len(keys) >= 15
    page.goto(page.base + "/assets?view=flat")
    page.get_by_text("raw_transactions").first.wait_for()
    text = page.locator("body").inner_text()
    missing = [key for key in keys if key.split("/")[-1] not in text]
    assert not missing, missing
    page.goto(page.base + "/asset-groups")
    for group in ("extract", "quality", "transform", "warehouse", "profiles"):
        page.get_by_text(group, exact=True).first.wait_for()
    page.screenshot(path=str(ui[1] / "lineage.png"))  # the README's picture comes from here


def test_a_week_launched_from_the_ui_succeeds_and_is_plotted_and_checked(page, ui):
    port, _ = ui
    page.goto(page.base + "/asset-groups")
    page.get_by_role("button", name="Materialize all").first.click()
    dialog = page.locator("[role=dialog]")
    box = dialog.locator("input:visible").first
    box.fill(LAUNCHED)
    box.press("Enter")
    dialog.get_by_role("button", name="Launch 1 run").click()

    deadline, status = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        runs = _graphql(
            port,
            "{ runsOrError(limit: 5) { ... on Runs { results { status tags { key value } } } } }",
        )
        launched = [
            r
            for r in runs["runsOrError"]["results"]
            if {"key": "dagster/partition", "value": LAUNCHED} in r["tags"]
        ]
        status = launched[0]["status"] if launched else None
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS"

    # The quality history: one materialization, so one plotted point, per loaded week.
    events = _graphql(
        port,
        '{ assetOrError(assetKey: {path: ["customer_analytics", "data_quality_metrics"]}) '
        "{ ... on Asset { assetMaterializations { partition metadataEntries { label } } } } }",
    )
    points = [
        m["partition"]
        for m in events["assetOrError"]["assetMaterializations"]
        if any(e["label"] == "quality_score" for e in m["metadataEntries"])
    ]
    assert sorted(points) == [LOADED, LAUNCHED]
    page.goto(page.base + "/assets/customer_analytics/data_quality_metrics")
    page.get_by_role("button", name="Plots").click()
    canvases = page.locator("canvas")
    canvases.first.wait_for()
    page.get_by_text("quality_score", exact=True).last.scroll_into_view_if_needed()
    page.wait_for_timeout(1_000)  # the charts draw after they are laid out
    assert canvases.count() >= 4  # score, quarantine and pass rates
    blank = canvases.first.evaluate(
        "c => { const b = document.createElement('canvas'); b.width = c.width; "
        "b.height = c.height; return c.toDataURL() === b.toDataURL(); }"
    )
    assert not blank
    page.screenshot(path=str(ui[1] / "quality_plots.png"))

    # A check's latest result names its week.
    page.goto(page.base + "/assets/customer_analytics/weekly_transactions?view=checks")
    page.get_by_text("weekly_volume").first.click()
    page.get_by_text("Partition", exact=True).first.wait_for()
    assert LAUNCHED in page.locator("body").inner_text()
