"""The ECB rates file a week converted with, shared by the week's steps wherever they run.

Validation converts the week's amounts with the rates it refreshed (``EcbRates.refresh``) and
publishes that file beside the validated rows it converted
(``etl/validated_transactions/<week>.ecb_rates.zip``: the data dir, or the bucket when runs do not
share a disk). The steps that read those rows and convert (the transform's lifetime values, the
history's opening balance) read that file back (``week_rates``), so a step in another pod converts
with the same rates, not with whatever its own disk holds. The file goes with the validated rows:
the cleanup removes it when no step of the run reads them any more. A step whose week has no
published file (run alone, or a week validated before this file existed) takes
``EcbRates.in_use``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from customer_assets.io_managers.intermediate_root import home_root
from customer_assets.resources.rates import EcbRates
from customer_assets.settings import PipelineSettings

# The validated rows' folder: the cleanup's pattern for them (``<week>.*``) takes the file too.
FOLDER = ("etl", "validated_transactions")
NAME = "{week}.ecb_rates.zip"


def publish_week_rates(settings: PipelineSettings, week: str, rates_file: str) -> str:
    """Publishes ``rates_file`` as the week's rates; returns where it lives now."""
    root = home_root(settings)
    staged = Path(settings.data_dir, *FOLDER, f".{week}.{uuid.uuid4().hex[:12]}.staged")
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rates_file, staged)
    target = root.path(*FOLDER, NAME.format(week=week))
    if not root.in_bucket:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    root.publish(staged, target)
    return root.shown(target)


def week_rates(settings: PipelineSettings, rates: EcbRates, week: str) -> str:
    """The rates file the week's validation converted with, as a local path (a copy named after the
    week when it is in the bucket, which the week's cleanup removes); else ``rates.in_use()``."""
    root = home_root(settings)
    target = root.path(*FOLDER, NAME.format(week=week))
    if rates.pinned_file or not root.exists(target):
        return rates.in_use()
    if not root.in_bucket:
        return target
    return str(root.local_copy(target, Path(settings.data_dir, *FOLDER), week))
