"""What a run leaves behind: the week's intermediates, when they go, and the logs that stay.

The intermediates (``$DATA_DIR/etl/<asset>/<week>.parquet|json``, or the same layout and the claims
under ``$CUSTOMER_ASSETS_INTERMEDIATES_URL``, a bucket) hold customer-level rows. They live no
longer than the run that wrote them, and no shorter than the last step of that run that can still
read them:

1. **As the run goes.** Every asset step carries the hook ``record_and_release`` (``hooks.py``),
   which records and alerts a failed step. When a step ends,
   successfully or not, ``sweep`` removes each intermediate of the week whose producer has ended
   and whose consumers in this run have all ended or can no longer run (a consumer downstream of a
   failed or skipped step, or of a step that ended without the output it needs, will be skipped
   by Dagster). A failed step never removes what a step of an independent branch still has to
   read, so that branch completes and loads.
2. **When the run ends.** The run's executor is wrapped (``with_final_sweep``): when its plan has
   finished, however it finished (success, a failed step, an interrupt), every intermediate of the
   run's weeks is removed. This runs in the run worker, so it holds for runs started from the CLI,
   the UI, the schedule or a sensor, with no daemon. ``dagster.materialize()`` (the Python API)
   brings its own executor: there the hooks' sweep alone applies, which removes everything once
   the last step of a run ends.
3. **After a crash.** A worker killed outright (``kill -9``, a lost machine) runs neither. Before
   it writes a week's first intermediate, a run claims the week
   (``$DATA_DIR/.run_claims/<week>/<run id>.json``: its process and host). At the start of every
   run, in the sensor ``orphaned_intermediates`` and in an erasure, the intermediates of a week
   that no live run claims are removed (``sweep_orphans``) and the dead run is recorded in
   ``failed_*.json``. A claim is live while its process runs (on this host), or, from another
   host, until the instance says its run ended. The run-failure sensor ``etl_failure_cleanup`` and
   the instance's run monitoring (``deploy/dagster.yaml``) mark such a run failed when a daemon
   runs.

A failure is recorded in ``$ETL_LOG_DIR/failed_YYYYMMDD_HHMMSS.json``, in one shape
(``failure_record``) whoever records it: the hook of the first failed step, the run-failure sensor
``etl_failure_cleanup`` for a run no hook recorded, or the orphan sweep. Later sweeps of the same
run add what they removed to it, and steps that fail later are added as ``other_failed_steps``.
The week of a run is read here only (``run_week``, ``run_weeks``), and every log of the ETL log
directory is written by ``write_log`` (the run summary, the erasure and rekey records too).

The parts, one a module:

- ``intermediates.py``: where a week's intermediates are (disk and bucket) and their removal;
- ``claims.py``: a run's claim on a week, and the sweep of the weeks no live run claims (3.);
- ``progress.py``: which step writes and reads each intermediate, and where a run is (1.);
- ``sweep.py``: the sweep of a run's intermediates, as its steps end and when it ends (1., 2.);
- ``records.py``: the failure record and ``write_log``;
- ``runs.py``: the weeks a run works on.
"""
