"""The runtime package's modules import one another without a cycle, and each imports on its own."""
import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gsc_blocks"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def resolve(name: str, node: ast.ImportFrom, alias: str) -> str:
    """The gsc_blocks module that `from ... import alias` in module `name` names."""
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
    target = ".".join(base + ([node.module] if node.module else []))
    return f"{target}.{alias}" if f"{target}.{alias}" in MODULES else target


def imported_modules(name: str) -> set[str]:
    """gsc_blocks modules that module `name` imports anywhere (module level or in functions)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gsc_blocks")):
            found |= {resolve(name, node, a.name) for a in node.names}
    # a package's __init__ runs before its modules: importing gsc_blocks.core.x imports gsc_blocks.core
    return {m for m in found if m in MODULES and m != name and not name.startswith(m + ".")}


def test_gsc_blocks_import_graph_is_acyclic():
    graph = {name: imported_modules(name) for name in MODULES}
    assert "gsc_blocks.core.codec" in graph["gsc_blocks.core.jscc"]
    assert "gsc_blocks.core.registry" in graph["gsc_blocks.semantic_encoder"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle in gsc_blocks: {' -> '.join(err.args[1])}")
    # the codec interface sits below every codec, the registry above them
    assert not graph["gsc_blocks.core.codec"] & {"gsc_blocks.core.jscc", "gsc_blocks.core.separation",
                                                   "gsc_blocks.core.digital", "gsc_blocks.core.registry"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    run = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
