"""The layering (cli → pipeline/dse → recipe → techniques → models, metrics, data → io, errors), no import
cycles, and no string-keyed imports of sparsa modules. The contracts live in pyproject.toml
[tool.importlinter]; `lint-imports` checks them on the import graph, function-level imports included."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# sites that import a module named by data, each with why it cannot be a plain import
STRING_IMPORT_ALLOWED = {
    ("sparsa/cli/app.py", "__import__"): "versions of third-party libraries (`sparsa version`), not sparsa modules",
}


def _lint_imports() -> str | None:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports")


def test_import_contracts_hold():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the dev extra: pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"import contracts broken:\n{res.stdout}\n{res.stderr}"
    assert "0 broken" in res.stdout


def _string_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in ("import_module", "__import__"):
                found.append((node.lineno, name))
    return found


def test_no_string_keyed_imports_of_sparsa_modules():
    bad = []
    for path in sorted((ROOT / "sparsa").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, name in _string_imports(path):
            if (rel, name) not in STRING_IMPORT_ALLOWED:
                bad.append(f"{rel}:{line}: {name}(...)")
    assert not bad, "import sparsa modules with plain (if need be function-level) imports:\n" + "\n".join(bad)


def test_the_string_import_check_sees_a_call(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import importlib\nmod = importlib.import_module('sparsa.prune')\nx = __import__('sparsa')\n")
    assert _string_imports(p) == [(2, "import_module"), (3, "__import__")]


def test_models_rebuild_a_registered_layer_kind_and_name_an_unknown_one():
    from torch import nn

    from sparsa.errors import SparsaError
    from sparsa.models.layer_kinds import build_layer, register_layer_kind

    register_layer_kind("_TestKind", lambda shape: nn.Linear(shape["in"], shape["out"]))
    assert build_layer("a.b", {"type": "_TestKind", "in": 3, "out": 2}).weight.shape == (2, 3)
    with pytest.raises(SparsaError, match="a.b: the model folder holds a _NoSuchKind layer"):
        build_layer("a.b", {"type": "_NoSuchKind"})
