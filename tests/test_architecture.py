"""The engine's rooms keep their arrows (docs/architecture.md): each package imports only the ones below it, the
engine imports neither Streamlit nor Altair, and what a reading page needs imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

ENGINE = ROOT / "cifar_app"
# lowest first; a module may import its own layer and those before it
LAYERS = [
    {"config", "events", "device", "atomic", "shape"},  # the ground
    {"data"}, {"model"}, {"store"}, {"engine"}, {"analysis"}, {"sweeps"},
]
ENTRY_MODULES = {"train", "bench", "dynamics", "sweep", "report", "labels"}  # `python -m cifar_app.<name>`, above every room


def layer_of(module: str) -> int:
    """The layer of `cifar_app.<room>[...]`."""
    room = module.split(".")[1]
    if room in ENTRY_MODULES:
        return len(LAYERS)
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, those inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


ENGINE_FILES = sorted(ENGINE.rglob("*.py"))


def test_every_room_imports_only_the_rooms_below_it():
    upward = []
    for path in ENGINE_FILES:
        me = module_name(path)
        if me == "cifar_app":
            continue
        for line, target in imports(path):
            if target.startswith("cifar_app.") and layer_of(target) > layer_of(me):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports running up a layer:\n" + "\n".join(upward)


def test_the_engine_imports_no_ui():
    ui = [f"{path.relative_to(ROOT)}:{line} imports {target}" for path in ENGINE_FILES
          for line, target in imports(path) if target.split(".")[0] in ("streamlit", "altair", "ui", "app_pages")]
    assert not ui, "\n".join(ui)


TORCH_FREE = [
    "cifar_app.config", "cifar_app.events", "cifar_app.shape", "cifar_app.data.formats", "cifar_app.store.runs",
    "cifar_app.store.liveness", "cifar_app.store.lineage", "cifar_app.store.records", "cifar_app.store.report",
    "cifar_app.engine.schedule", "cifar_app.analysis.dynamics", "cifar_app.analysis.metrics",
    "cifar_app.analysis.compare", "cifar_app.analysis.label_errors", "cifar_app.sweeps.space",
]


def test_reading_runs_and_records_imports_no_torch():
    # a page that only reads the run store or a per-image record should not pay torch's import (seconds)
    code = f"import sys; import {', '.join(TORCH_FREE)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"torch imported by one of {TORCH_FREE}: {out}"


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_modules_and_functions_stay_readable(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 420, f"{path.relative_to(ROOT)} has {lines} lines: split it along its seams"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 75]
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"
