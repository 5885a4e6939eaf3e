"""The layering of the code, checked by tools: import-linter contracts (pyproject), ruff, and the AST.

Why tests and not a convention: an upward import or a cycle hidden inside a function is invisible in
review and only shows up as an import error or a slow CLI months later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("experiments", "llm_bridge", "biobank", "signals")
BIN = Path(sys.executable).parent


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_hold() -> None:
    """Layers follow the data path, and no module imports a sibling in a cycle (pyproject [tool.importlinter])."""
    r = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_ruff_is_clean() -> None:
    r = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _function_level_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, comment)`` of every import of our packages inside a function."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            names = ([a.name for a in inner.names] if isinstance(inner, ast.Import)
                     else [inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
            for name in names:
                line = lines[inner.lineno - 1]
                found.append((inner.lineno, name, line.partition("#")[2].strip()))
    return found


def test_imports_inside_functions_are_few_and_give_a_reason() -> None:
    ours, unexplained = [], []
    for path in _modules():
        for line, name, comment in _function_level_imports(path):
            where = f"{path.relative_to(ROOT)}:{line} {name}"
            if name.split(".")[0] in PACKAGES:
                ours.append(where)
            if not comment:
                unexplained.append(where)
    assert len(ours) < 20, ours
    assert not unexplained, f"imports inside functions need a one-line reason: {unexplained}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_folder_is_a_flat_room(package: str) -> None:
    for folder in [ROOT / package, *(p for p in (ROOT / package).rglob("*") if p.is_dir())]:
        modules = [p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
        assert len(modules) <= 13, (folder, len(modules))


def test_library_code_leaves_the_matplotlib_backend_alone() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _modules() if "matplotlib.use(" in p.read_text()]
    assert not offenders, offenders
