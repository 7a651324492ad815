"""The training package's modules import one another without a cycle, and each imports on its own."""
import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
PACKAGE = MODELS / "gsc_models"
MODULES = sorted(f.stem for f in PACKAGE.glob("*.py"))      # "__init__" is the package itself


def imported_modules(path: Path) -> set[str]:
    """The gsc_models modules that `path` imports anywhere in it (module level or inside functions),
    relative or absolute; `from gsc_models import x` counts as x when x is a module, else as __init__."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
            found |= {d.split(".")[1] if "." in d else "__init__" for d in dotted if d.split(".")[0] == "gsc_models"}
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1 or (node.level == 0 and (node.module or "").split(".")[0] != "gsc_models"):
                continue
            parts = (node.module or "").split(".")[0 if node.level else 1:]
            if parts and parts[0]:
                found.add(parts[0])
            else:
                found |= {a.name if a.name in MODULES else "__init__" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    return {m: imported_modules(PACKAGE / f"{m}.py") - {m} for m in MODULES}


def test_the_import_graph_parser_sees_every_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import gsc_models.data\nimport torch\nfrom gsc_models.layers import awgn\nfrom . import refiner\n"
                     "from .registry import MODELS\nfrom gsc_models import cards\nfrom .. import elsewhere\n"
                     "def f():\n    from .train import evaluate\n")
    assert imported_modules(probe) == {"data", "layers", "refiner", "registry", "cards", "train"}


def test_gsc_models_import_graph_is_acyclic():
    graph = import_graph()
    assert set(graph) >= {"cards", "registry", "export", "train", "train_refiner", "classifier"}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle in models/gsc_models: {' -> '.join(err.args[1])}")
    assert set(order) == set(MODULES)
    # the two shared modules sit below every entry point, never above one
    for entry in ("train", "export", "train_refiner", "classifier"):
        assert entry not in graph["cards"] | graph["registry"]


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__init__"])
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    run = subprocess.run([sys.executable, "-c", f"import gsc_models.{module}"], cwd=MODELS,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
