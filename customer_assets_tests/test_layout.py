"""The house rules of the package (issue 14), checked on its source rather than trusted to review."""

import ast
import subprocess
import sys
from pathlib import Path

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
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "getenv", "environb", "putenv"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and {a.name for a in node.names} & {"environ", "getenv", "environb"}:
            lines.append(node.lineno)
    return lines


def test_only_the_settings_layer_reads_the_environment():
    readers = {str(path): lines for path, tree in _modules()
               if path.name not in ENVIRONMENT_LAYER or path.parent != Path(".")
               for lines in [_reads_environment(tree)] if lines}
    assert readers == {}, f"os.environ read outside settings.py/deployments.py: {readers}"


def test_production_code_never_imports_the_demo():
    """Only the deployment switch may pick the demo (lazily, for the embedded default)."""
    importers = {}
    for path, tree in _modules():
        if path.parts[0] == "demo" or str(path) == "deployments.py":
            continue
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "customer_assets.demo" or n.startswith("customer_assets.demo.") for n in names):
                importers.setdefault(str(path), []).append(node.lineno)
    assert importers == {}


def test_importing_the_package_changes_no_pandas_option():
    """The options are set where the pipeline starts (its definitions), not by importing a module."""
    code = ("import pandas as pd; before = (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write'))\n"
            "import customer_assets, customer_assets.logic.validation, customer_assets.sources.extract\n"
            "after = (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write'))\n"
            "assert before == after, (before, after)\n"
            "import customer_assets.definitions\n"
            "assert (pd.get_option('future.infer_string'), pd.get_option('mode.copy_on_write')) == (True, True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
