#!/usr/bin/env bash
# Install a local BigQuery emulator (the PyPI package `local-bigquery`) for the
# tests in customer_assets_tests/ that talk to BigQuery.
#
# Idempotent: safe to run again; it only installs what is missing.
#
#   BQ_EMULATOR_VENV    virtualenv for the emulator   (default /opt/bq-emulator/venv)
#   BQ_EMULATOR_HOME    throwaway HOME for the emulator, holding the DuckDB
#                       extension directory            (default /opt/bq-emulator/home)
#   BQ_EMULATOR_PYTHON  a Python 3.13 interpreter to use (default: pyenv's 3.13.x)
#
# Why it is done this way:
#   * local-bigquery requires Python >=3.13,<3.14, so it gets its own virtualenv
#     (the project's own venv may be another Python).
#   * It runs on DuckDB + the ducklake/icu/spatial extensions. DuckDB normally
#     downloads extensions at run time, which is impossible here (no internet
#     apart from PyPI), so the extension files are installed from the
#     duckdb-extension-* wheels on PyPI and linked into
#     $BQ_EMULATOR_HOME/.duckdb/extensions/v<duckdb version>/<platform>/,
#     where DuckDB autoloads them from when the emulator runs with
#     HOME=$BQ_EMULATOR_HOME.
#
# If no Python 3.13 is available the script says so and exits 0: the emulator
# tests then skip themselves with a reason.
set -euo pipefail

LOCAL_BIGQUERY_VERSION="0.3.2"
DUCKDB_VERSION="1.5.5"
EXTENSIONS=(ducklake icu spatial)

VENV="${BQ_EMULATOR_VENV:-/opt/bq-emulator/venv}"
EMU_HOME="${BQ_EMULATOR_HOME:-/opt/bq-emulator/home}"

log() { printf '[setup_bigquery_emulator] %s\n' "$*"; }

REQUIREMENTS=(
    "local-bigquery==${LOCAL_BIGQUERY_VERSION}"
    "duckdb==${DUCKDB_VERSION}"
)
for ext in "${EXTENSIONS[@]}"; do
    REQUIREMENTS+=("duckdb-extension-${ext}==${DUCKDB_VERSION}")
done
STAMP_CONTENT="${REQUIREMENTS[*]}"
STAMP_FILE="${VENV}/.bq-emulator-installed"

# --- 1. find a Python 3.13 -------------------------------------------------
is_py313() {
    [ -n "${1:-}" ] && [ -x "$1" ] &&
        "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' 2>/dev/null
}

find_python313() {
    if [ -n "${BQ_EMULATOR_PYTHON:-}" ]; then
        if is_py313 "${BQ_EMULATOR_PYTHON}"; then
            echo "${BQ_EMULATOR_PYTHON}"
            return 0
        fi
        log "BQ_EMULATOR_PYTHON=${BQ_EMULATOR_PYTHON} is not a Python 3.13 interpreter; looking elsewhere" >&2
    fi
    local root=""
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    fi
    root="${root:-${PYENV_ROOT:-${HOME:-/root}/.pyenv}}"
    local candidate
    # newest 3.13.x first
    for candidate in $(ls -d "${root}"/versions/3.13.* 2>/dev/null | sort -V -r); do
        if is_py313 "${candidate}/bin/python"; then
            echo "${candidate}/bin/python"
            return 0
        fi
    done
    candidate="$(command -v python3.13 2>/dev/null || true)"
    if is_py313 "${candidate}"; then
        echo "${candidate}"
        return 0
    fi
    return 1
}

# An existing venv built from Python 3.13 is reused even if pyenv changed.
if is_py313 "${VENV}/bin/python"; then
    PYTHON="${VENV}/bin/python"
    log "reusing virtualenv ${VENV} ($("${PYTHON}" -V 2>&1))"
else
    if ! BASE_PYTHON="$(find_python313)"; then
        log "SKIP: no Python 3.13 found (looked at \$BQ_EMULATOR_PYTHON, pyenv's versions/3.13.*, python3.13 on PATH)."
        log "      local-bigquery ${LOCAL_BIGQUERY_VERSION} needs Python >=3.13,<3.14."
        log "      Install one (e.g. 'pyenv install 3.13') and re-run this script;"
        log "      until then the BigQuery emulator tests are skipped."
        exit 0
    fi
    log "using base interpreter ${BASE_PYTHON} ($("${BASE_PYTHON}" -V 2>&1))"
    if [ -e "${VENV}" ]; then
        log "removing unusable virtualenv at ${VENV}"
        rm -rf "${VENV}"
    fi
    mkdir -p "$(dirname "${VENV}")"
    "${BASE_PYTHON}" -m venv "${VENV}"
    log "created virtualenv ${VENV}"
    PYTHON="${VENV}/bin/python"
fi

# --- 2. install the packages -----------------------------------------------
if [ -f "${STAMP_FILE}" ] && [ "$(cat "${STAMP_FILE}")" = "${STAMP_CONTENT}" ] &&
    [ -x "${VENV}/bin/local-bigquery" ] &&
    "${PYTHON}" -c "import duckdb, local_bigquery; assert duckdb.__version__ == '${DUCKDB_VERSION}'" 2>/dev/null; then
    log "packages already installed: ${STAMP_CONTENT}"
else
    log "installing from PyPI: ${STAMP_CONTENT}"
    rm -f "${STAMP_FILE}"
    "${PYTHON}" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s' "${STAMP_CONTENT}" >"${STAMP_FILE}"
    log "installed: $("${VENV}/bin/pip" list --disable-pip-version-check 2>/dev/null |
        grep -i -E '^(local-bigquery|duckdb)' | tr -s ' ' '=' | tr '\n' ' ')"
fi

# --- 3. put the DuckDB extensions where DuckDB looks for them --------------
mkdir -p "${EMU_HOME}"
EXT_DIR="$(HOME="${EMU_HOME}" "${PYTHON}" -c '
import os, duckdb
platform = duckdb.sql("PRAGMA platform").fetchone()[0]
print(os.path.join(os.path.expanduser("~"), ".duckdb", "extensions", "v" + duckdb.__version__, platform))
')"
mkdir -p "${EXT_DIR}"
for ext in "${EXTENSIONS[@]}"; do
    src="$("${PYTHON}" - "${ext}" <<'EOF'
import importlib, pathlib, sys
ext = sys.argv[1]
mod = importlib.import_module(f"duckdb_extension_{ext}")
found = sorted(pathlib.Path(mod.__file__).parent.rglob(f"{ext}.duckdb_extension"))
if not found:
    sys.exit(f"no {ext}.duckdb_extension inside {mod.__file__}")
print(found[0])
EOF
)"
    dst="${EXT_DIR}/${ext}.duckdb_extension"
    if [ -L "${dst}" ] && [ "$(readlink "${dst}")" = "${src}" ]; then
        log "extension ${ext}: already linked (${dst})"
    else
        ln -sfn "${src}" "${dst}"
        log "extension ${ext}: linked ${dst} -> ${src}"
    fi
done

# --- 4. check that DuckDB loads them offline ---------------------------------
HOME="${EMU_HOME}" "${PYTHON}" - "${EXTENSIONS[@]}" <<'EOF'
import sys, duckdb
con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
for ext in sys.argv[1:]:
    con.execute(f"LOAD {ext}")
print("[setup_bigquery_emulator] DuckDB", duckdb.__version__, "loads:", ", ".join(sys.argv[1:]))
EOF

log "ready: ${VENV}/bin/local-bigquery (run it with HOME=${EMU_HOME} --host 127.0.0.1)"
