"""A run's claim on a week, and what happens after a crash (point 3 of the package docstring): the
intermediates of a week that no live run claims were left by a run killed outright, and are
removed (``sweep_orphans``) at the start of every run, by the sensor ``orphaned_intermediates``
and by an erasure."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timezone

import dagster as dg

from customer_assets.cleanup.intermediates import intermediate_files, remove_intermediates
from customer_assets.cleanup.records import failure_record, write_failure_record
from customer_assets.io_managers.intermediate_root import IntermediateRoot, home_root
from customer_assets.settings import PipelineSettings

CLAIMS = ".run_claims"


def claim_week(root: IntermediateRoot, week: str, run_id: str) -> None:
    """Mark the week's intermediates as being written by this run, in this process (see the package
    docstring); the claim lies beside them (in their bucket, if any), where every pod sees it."""
    path = root.path(CLAIMS, week, f"{run_id}.json")
    if not root.exists(path):
        root.write_text(
            path,
            json.dumps(
                {
                    "run_id": run_id,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "claimed_at": datetime.now(timezone.utc).isoformat(),
                }
            ),
        )


def release_claims(root: IntermediateRoot, run_id: str, weeks: Iterable[str]) -> None:
    for week in weeks:
        root.delete(root.path(CLAIMS, week, f"{run_id}.json"))


def _alive(claim: dict, instance: dg.DagsterInstance | None) -> bool:
    if claim.get("host") == socket.gethostname():
        try:
            os.kill(int(claim["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True  # a process of another user, or a claim that cannot tell: leave it alone
        return True
    run = instance.get_run_by_id(claim["run_id"]) if instance is not None else None
    return run is None or not run.is_finished


def sweep_orphans(
    settings: PipelineSettings,
    instance: dg.DagsterInstance | None = None,
    keep_run: str | None = None,
    keep_weeks: Iterable[str] = (),
) -> dict[str, list[str]]:
    """Remove the intermediates of every week that no live run claims (a run killed outright left
    them), and record each such week in ``failed_*.json``; ``keep_run``'s own weeks, and
    ``keep_weeks`` (those a run of the instance works on), are never touched."""
    weeks = {p.name.split(".")[0] for p in intermediate_files(settings, "*")} - set(keep_weeks)
    home = home_root(settings)
    swept = {}
    for week in sorted(weeks):
        claims = [json.loads(home.read_text(p)) for p in home.files(CLAIMS, week, pattern="*.json")]
        if any(c["run_id"] == keep_run or _alive(c, instance) for c in claims):
            continue
        removed, remaining = remove_intermediates(settings, week)
        for claim in claims:
            release_claims(home, claim["run_id"], [week])
        write_failure_record(
            settings,
            failure_record(
                settings,
                week,
                "orphan sweep",
                removed=removed,
                remaining=remaining,
                error="the run(s) that wrote these intermediates ended without cleaning up (a "
                "worker killed outright?)",
                runs=[c["run_id"] for c in claims],
            ),
        )
        swept[week] = removed
    return swept
