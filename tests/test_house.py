"""House rules: the import direction, ruff, and environment.yml in step with pyproject.toml."""

import ast
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

LIB = ROOT / "lmbook"


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_the_library_never_imports_the_engine():
    for path in LIB.glob("*.py"):
        if path.name == "__main__.py":  # `python -m lmbook` is the command line
            continue
        bad = [
            m for m in _imports(path) if m.startswith(".engine") or m.startswith("lmbook.engine")
        ]
        assert not bad, (
            f"{path.name} imports {bad}: the library must not depend on the book machine"
        )


def test_chapters_never_import_the_engine():
    for path in (ROOT / "notebooks").glob("*.md"):
        assert "lmbook.engine" not in path.read_text(), f"{path.name} imports the book machine"


def test_importing_lmbook_loads_no_engine_module():
    code = "import sys, lmbook; print(any(m.startswith('lmbook.engine') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(
    shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) is None and shutil.which("ruff") is None,
    reason="ruff is not installed",
)
def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) or shutil.which("ruff")
    done = subprocess.run(
        [ruff, "check", "lmbook", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip().strip('"'), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    names = set()
    for dep in env:
        if isinstance(dep, dict):
            names |= {_name(d) for d in dep["pip"] if not d.startswith("-e")}
        else:
            names.add(_name(dep))
    names = {"torch" if n == "pytorch" else n for n in names} - {"python", "pip"}
    assert wanted == names, (
        f"only in pyproject: {wanted - names}; only in environment.yml: {names - wanted}"
    )
