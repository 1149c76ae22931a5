"""The house rules of the package (issue 14), checked on its source rather than trusted to
review."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import customer_assets

PACKAGE = Path(customer_assets.__file__).parent
# The settings/deployment layer: the only modules that read the environment.
ENVIRONMENT_LAYER = {"settings.py", "deployments.py"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE), ast.parse(path.read_text(), filename=str(path))


def _reads_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "environb", "putenv")
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv", "environb"}
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_layer_reads_the_environment():
    readers = {
        str(path): lines
        for path, tree in _modules()
        if path.name not in ENVIRONMENT_LAYER or path.parent != Path(".")
        for lines in [_reads_environment(tree)]
        if lines
    }
    assert readers == {}, f"os.environ read outside settings.py/deployments.py: {readers}"


def test_production_code_never_imports_the_demo():
    """Only the deployment switch may pick the demo (lazily, for the embedded default)."""
    importers = {}
    for path, tree in _modules():
        if path.parts[0] == "demo" or str(path) == "deployments.py":
            continue
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(
                n == "customer_assets.demo" or n.startswith("customer_assets.demo.") for n in names
            ):
                importers.setdefault(str(path), []).append(node.lineno)
    assert importers == {}


def test_importing_the_package_changes_no_pandas_option():
    """The options are set where the pipeline starts (its definitions), not by importing a
    module."""
    code = (
        "import pandas as pd; before = (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write'))\n"
        "import customer_assets, customer_assets.logic.validation, customer_assets.sources.extract\n"
        "after = (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write'))\n"
        "assert before == after, (before, after)\n"
        "import customer_assets.definitions\n"
        "assert (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write')) == (True, True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("variable", "expected"), [(None, "system"), ("mimalloc", "mimalloc"), ("jemalloc", "jemalloc")]
)
def test_arrow_allocates_from_the_c_library_unless_the_environment_names_a_pool(variable, expected):
    """Where the pipeline starts, Arrow's pool becomes the system allocator; an operator's
    ``ARROW_DEFAULT_MEMORY_POOL`` is kept. Importing the package changes nothing."""
    code = (
        "import pyarrow as pa; before = pa.default_memory_pool().backend_name\n"
        "import customer_assets, customer_assets.logic.per_person\n"
        "assert pa.default_memory_pool().backend_name == before, before\n"
        "import customer_assets.definitions\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if variable is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = variable
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == expected


def test_only_production_loads_the_bigquery_client():
    """dagster-gcp and the BigQuery client cost about 1 s of every process's start (the CLI, the
    code server, each run): a local process never imports them; the production deployment does,
    when its resources are built."""
    code = (
        "import sys, customer_assets.definitions\n"
        "BQ = ('dagster_gcp', 'google.cloud.bigquery')\n"
        "print(sorted(m for m in sys.modules if m.startswith(BQ)) or 'none')\n"
        "from customer_assets.deployments import resources_for\n"
        "warehouse = resources_for('prod')['warehouse']\n"
        "print(type(warehouse).__name__, sorted(m for m in BQ if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_DEPLOYMENT", "DB_HOST")}
    env["DB_HOST"] = "db.example.internal"  # read for prod's resources only; never connected to
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    local, prod = done.stdout.splitlines()[-2:]
    assert local == "none"
    assert prod == "BigQueryWarehouse ['dagster_gcp', 'google.cloud.bigquery']"


# What logic/ must not import: Dagster (and its integrations, dagster_*), the warehouse resources,
# the warehouse's SQL, the IO managers, the Dagster types and the asset wiring. Logic is plain
# functions over frames and values.
NOT_IN_LOGIC = (
    "dagster",
    "customer_assets.resources",
    "customer_assets.sql",
    "customer_assets.io_managers",
    "customer_assets.dagster_types",
    "customer_assets.assets",
)


def _imported_names(tree: ast.AST, module: str) -> list[tuple[str, int]]:
    """Every module a file imports (``from x import y`` also as ``x.y``, relative imports
    resolved), with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found += [(base, node.lineno)]
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_logic_imports_neither_dagster_nor_the_warehouse_nor_io():
    """Every module under logic/ (found by walking the folder, so a new one is covered), imports
    included inside functions."""
    logic = sorted((PACKAGE / "logic").rglob("*.py"))
    assert len(logic) > 5, "logic/ not found"
    offenders = {}
    for path in logic:
        module = "customer_assets." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for name, line in _imported_names(ast.parse(path.read_text(), filename=str(path)), module):
            if any(
                name == banned or name.startswith(banned + ".") or name.startswith(banned + "_")
                for banned in NOT_IN_LOGIC
            ):
                where = str(path.relative_to(PACKAGE))
                offenders.setdefault(where, []).append(f"{name} (line {line})")
    assert offenders == {}, (
        f"logic/ is pure; move what needs these to sql/, assets/, io: {offenders}"
    )


# What may be decided when a module is imported: the partitions' first week (Dagster reads the
# partitions when it loads the definitions). Everything else that depends on the environment is
# decided by build_definitions(deployment).
DECIDED_AT_IMPORT = {("partitions.py", "first_week_from_env")}


def _environment_functions() -> set[str]:
    """The functions of the settings/deployment layer: each reads the environment or decides by
    it."""
    return {
        node.name
        for name in ENVIRONMENT_LAYER
        for node in ast.parse((PACKAGE / name).read_text()).body
        if isinstance(node, ast.FunctionDef)
    }


def _run_at_import(tree: ast.Module):
    """The nodes evaluated when the module is imported: module and class bodies, decorators and
    default arguments, not the bodies of functions and lambdas."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending += [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]
        elif isinstance(node, ast.Lambda):
            pending += [*node.args.defaults, *node.args.kw_defaults]
        elif node is not None:
            yield node
            pending += list(ast.iter_child_nodes(node))


def test_nothing_is_decided_at_import_but_the_first_week():
    decisions = _environment_functions()
    decided = set()
    for path, tree in _modules():
        for node in _run_at_import(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in decisions:
                    decided.add((str(path), name))
            elif (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and getattr(node.value, "id", None) == "os"
            ):
                decided.add((str(path), f"os.{node.attr}"))
    assert decided == DECIDED_AT_IMPORT, (
        f"decided at import: {sorted(decided - DECIDED_AT_IMPORT)}; "
        "decide it in build_definitions(deployment)"
    )


# The house in layers, top to bottom, as README.md's "Layout" draws it: a module imports from its
# own layer and the layers below, never from one above. A new top-level module or folder must be
# given a layer here, so the picture cannot drift from the code.
LAYERS = (
    ("the entry", {"__init__", "definitions"}),
    ("the deployments", {"deployments", "demo"}),
    (
        "the Dagster graph",
        {
            "assets",
            "sensors",
            "late_changes",
            "schedules",
            "freshness",
            "hooks",
            "step_threads",
            "step_order",
            "erasure",
            "suppression",
            "suppression_recheck",
            "suppression_rekey",
        },
    ),
    ("where data is kept", {"io_managers", "sql", "cleanup"}),
    ("the systems read", {"resources", "sources"}),
    (
        "shared shapes and settings",
        {
            "dagster_types",
            "frames",
            "duck",
            "tables",
            "partitions",
            "settings",
            "alerts",
            "lineage",
        },
    ),
    ("pure", {"logic", "schemas", "weeks", "errors"}),
)


def _unit(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py")


def test_every_import_runs_down_the_layers():
    layer_of = {unit: depth for depth, (_, units) in enumerate(LAYERS) for unit in units}
    found, unplaced = set(), set()
    for path, tree in _modules():
        unit = _unit(path.parts)
        if unit not in layer_of:
            unplaced.add(unit)
            continue
        module = "customer_assets." + ".".join(path.with_suffix("").parts)
        for name, _line in _imported_names(tree, module):
            parts = name.split(".")
            if parts[0] != "customer_assets" or len(parts) < 2 or parts[1] not in layer_of:
                continue
            if parts[1] != unit and layer_of[parts[1]] < layer_of[unit]:
                found.add((unit, parts[1]))
    assert not unplaced, f"give these a layer in LAYERS (and README's picture): {sorted(unplaced)}"
    assert not found, f"imports up a layer: {sorted(found)}"


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_short():
    """A module a reader can hold (≤ 400 lines), a function that fits a screen (≤ 60 lines, from
    its ``def`` to its last line), counted on the formatted source."""
    long_modules, long_functions = {}, {}
    for path, tree in _modules():
        lines = (PACKAGE / path).read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules[str(path)] = lines
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{path}::{node.name}"] = length
    assert long_modules == {} and long_functions == {}, (long_modules, long_functions)
