"""Run a local BigQuery emulator (PyPI ``local-bigquery``) for tests.

The emulator is installed by ``.ci/setup_bigquery_emulator.sh`` into its own
Python 3.13 virtualenv, separate from the project's venv. This module only
finds it, starts it as a subprocess on a free loopback port and stops it.
It defines no pytest fixtures; wrap it in one where needed, e.g.::

    available, reason = emulator_available()
    pytestmark = pytest.mark.skipif(not available, reason=reason)

    @pytest.fixture(scope="session")
    def bq_endpoint():
        with run_bigquery_emulator(project="test-project") as endpoint:
            yield endpoint

Environment (the same variables as the setup script):

``BQ_EMULATOR_VENV``  the emulator's virtualenv (default ``/opt/bq-emulator/venv``)
``BQ_EMULATOR_HOME``  the HOME the emulator runs with; DuckDB loads its
                      extensions from ``$BQ_EMULATOR_HOME/.duckdb/extensions``
                      (default ``/opt/bq-emulator/home``)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DEFAULT_VENV = "/opt/bq-emulator/venv"
DEFAULT_HOME = "/opt/bq-emulator/home"
SETUP_HINT = "run `bash .ci/setup_bigquery_emulator.sh` to install it"


class EmulatorEndpoint(str):
    """The REST endpoint URL (a plain ``str``), plus a few extra facts."""

    project: str
    grpc_address: str
    data_dir: str

    def __new__(
        cls, url: str, *, project: str, grpc_address: str, data_dir: str
    ) -> EmulatorEndpoint:
        obj = super().__new__(cls, url)
        obj.project = project
        obj.grpc_address = grpc_address
        obj.data_dir = data_dir
        return obj


def emulator_venv() -> Path:
    return Path(os.environ.get("BQ_EMULATOR_VENV") or DEFAULT_VENV)


def emulator_home() -> Path:
    return Path(os.environ.get("BQ_EMULATOR_HOME") or DEFAULT_HOME)


def emulator_executable() -> Path:
    return emulator_venv() / "bin" / "local-bigquery"


def emulator_available() -> tuple[bool, str]:
    """Whether the emulator is installed; if not, a skip reason saying how to fix it."""
    exe = emulator_executable()
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        return False, (
            f"BigQuery emulator not installed (no {exe}); {SETUP_HINT} "
            "(needs Python 3.13 via pyenv; set BQ_EMULATOR_VENV/BQ_EMULATOR_HOME "
            "if it lives elsewhere)"
        )
    ext_root = emulator_home() / ".duckdb" / "extensions"
    if not any(ext_root.glob("v*/*/ducklake.duckdb_extension")):
        return False, (
            f"BigQuery emulator's DuckDB extensions are missing under {ext_root}; {SETUP_HINT}"
        )
    return True, "BigQuery emulator available"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as err:  # the server answered, just not 2xx
        return err.code < 500
    except (OSError, ValueError):
        return False


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def run_bigquery_emulator(
    project: str = "test-project",
    *,
    dataset: str | None = None,
    startup_timeout: float = 60.0,
    data_dir: str | os.PathLike[str] | None = None,
) -> Iterator[EmulatorEndpoint]:
    """Start the emulator on free loopback ports; yield ``http://127.0.0.1:PORT``.

    The emulator runs in its own process group (``start_new_session=True``) with
    a fresh data directory (a temporary one unless ``data_dir`` is given); the
    whole group is killed on exit. Raises ``RuntimeError`` if it is not
    installed or does not answer within ``startup_timeout`` seconds.
    """
    ok, reason = emulator_available()
    if not ok:
        raise RuntimeError(reason)

    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bq-emulator-"))
        data_path = Path(data_dir)
        data_path.mkdir(parents=True, exist_ok=True)
        log_file = stack.enter_context(open(data_path / "emulator.log", "w+b"))

        port, grpc_port = _free_port(), _free_port()
        while grpc_port == port:
            grpc_port = _free_port()
        env = dict(os.environ)
        env.update(
            HOME=str(emulator_home()),
            PYTHONUNBUFFERED="1",
            # the emulator reads pydantic settings from the environment too
            DATA_DIR=str(data_path / "data"),
        )
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        cmd = [
            str(emulator_executable()),
            "serve",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--grpc-port", str(grpc_port),
            "--project", project,
            "--data-dir", str(data_path / "data"),
        ]  # fmt: skip
        if dataset:
            cmd += ["--dataset", dataset]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(data_path),
            start_new_session=True,
        )
        stack.callback(_kill_group, proc)

        url = f"http://127.0.0.1:{port}"
        probe = f"{url}/bigquery/v2/projects/{project}/datasets"
        deadline = time.monotonic() + startup_timeout
        while not _answers(probe):
            if proc.poll() is not None or time.monotonic() > deadline:
                log_file.seek(0)
                tail = log_file.read().decode(errors="replace")[-4000:]
                state = (
                    f"exited with code {proc.returncode}"
                    if proc.poll() is not None
                    else f"did not answer within {startup_timeout:.0f}s"
                )
                raise RuntimeError(f"BigQuery emulator {state}: {' '.join(cmd)}\n{tail}")
            time.sleep(0.1)

        yield EmulatorEndpoint(
            url,
            project=project,
            grpc_address=f"127.0.0.1:{grpc_port}",
            data_dir=str(data_path),
        )


def make_client(endpoint: str, project: str = "test-project"):
    """A real ``google.cloud.bigquery.Client`` talking to the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": str(endpoint)},
    )
