"""The layout of the house: fer_core's wings and training's parts import only downwards, and no modules import each
other in a circle. Read from the source (every import statement, including those inside functions), so a lazy import
that runs back up is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND = {"fer_core", "fer_core.labels", "fer_core.files", "fer_core.locations", "fer_core.onnx_runtime",
          "fer_core.processes"}
COMMANDS = {"fer_core.predict", "fer_core.batch", "fer_core.video.__main__", "fer_core.cli"}
TRAINING_COMMANDS = {"train", "evaluate", "calibrate", "compare", "crossdomain", "average_weights", "results_table"}
BENCHMARK_DOORS = {"training.benchmark", "training.video_benchmark"}  # the commands users type, handing over

# each wing -> the wings it may import (its own included); video/ and analysis/ stand side by side
ALLOWED = {
    "ground": {"ground"},
    "faces": {"ground", "faces"},
    "model": {"ground", "faces", "model"},
    "video": {"ground", "faces", "model", "video"},
    "analysis": {"ground", "faces", "model", "analysis"},
    "jobs": {"ground", "faces", "model", "video", "analysis", "jobs"},
    "serve": {"ground", "faces", "model", "video", "analysis", "serve"},
    "commands": {"ground", "faces", "model", "video", "analysis", "jobs", "commands"},
    "ui": {"ground", "faces", "model", "video", "analysis", "ui"},
    "training.recipe": {"fer_core", "training", "training.recipe"},
    "training.commands": {"fer_core", "training", "training.recipe", "training.commands"},
    "training.experiments": {"fer_core", "training", "training.recipe", "training.commands", "training.experiments"},
    "training.benchmarks": {"fer_core", "training", "training.recipe", "training.commands", "training.benchmarks"},
}
FER_WINGS = {"ground", "faces", "model", "video", "analysis", "jobs", "serve", "commands", "ui"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in ("fer_core", "training") for p in (ROOT / package).rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package[:len(package) - (node.level - 1)]
                base = ".".join(stem + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a module: the longest project prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def wing(name: str) -> str:
    if name in GROUND:
        return "ground"
    if name in COMMANDS:
        return "commands"
    parts = name.split(".")
    if parts[0] == "fer_core":
        return parts[1]
    if name == "training":
        return "training"
    if name in BENCHMARK_DOORS:
        return "training.benchmarks"
    if parts[1] in ("recipe", "experiments", "benchmarks"):
        return f"training.{parts[1]}"
    assert parts[1] in TRAINING_COMMANDS, f"{name}: a training module outside recipe/, experiments/, benchmarks/"
    return "training.commands"


def allowed(importer: str, imported: str) -> bool:
    here, there = wing(importer), wing(imported)
    if here in FER_WINGS:
        return there in ALLOWED[here]
    if here == "training":
        return True  # the package's own docstring module imports nothing
    return there in ALLOWED[here] or (there in FER_WINGS and "fer_core" in ALLOWED[here])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_lives_in_a_wing(graph):
    for name in graph:
        assert wing(name) in ALLOWED or wing(name) == "training", name


def test_no_import_runs_back_up_a_floor(graph):
    upward = sorted(f"{a} -> {b} ({wing(a)} -> {wing(b)})" for a, deps in graph.items() for b in deps
                    if not allowed(a, b))
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_fer_core_never_imports_training(graph):
    assert not [(a, b) for a, deps in graph.items() for b in deps if a.startswith("fer_core") and
                b.startswith("training")]


def test_no_modules_import_each_other_in_a_circle(graph):
    """Tarjan's strongly connected components over the whole graph: every component must be one module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"modules that import each other: {circles}"


def test_training_modules_stay_readable():
    """train.py was split into arguments + loop, data assembly, resume state: no training module over ~400 lines."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "training").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


def test_the_public_face_is_lazy_and_complete():
    """`import fer_core` loads no wing; every name of __all__ resolves to the object its home defines."""
    code = ("import sys, fer_core; loaded = sorted(m for m in sys.modules if m.startswith('fer_core.')); "
            "print(loaded); import importlib; "
            "bad = [n for n in fer_core.__all__ if getattr(fer_core, n) is not "
            "getattr(importlib.import_module(fer_core._HOMES[n]), n)]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded, bad = out.stdout.splitlines()
    assert loaded == "[]" and bad == "[]", out.stdout
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, fer_core; fer_core.Predictor; "
                                          "print(sorted(sys.modules))"], cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout.split("'")
