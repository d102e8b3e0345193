"""The package structure: llava/ never imports fitprune/, no import cycles, the lab is depended on
by nothing, and pruned inference runs with fitprune/ absent."""
import ast
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("llava", "fitprune")
LAB = "fitprune.lab"
LAB_LAUNCHERS = {"fitprune.demo", "fitprune.bench", "fitprune.train_demo", "fitprune.synthetic"}
"""CLI entry points kept at their old names (README commands); each only runs a lab module's main."""


def _module_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _imports(path: Path) -> Set[str]:
    """Every module named by an import statement in the file, at any depth (function-level imports
    included), resolved to a submodule when ``from package import submodule``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), among our modules."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in graph or other == node:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_module_graph_was_read():
    assert {"llava.model.pruning.pruner", "llava.model.language_model.llava_llama", "fitprune.fit"} <= set(MODULES)
    assert "llava.model.pruning.from_config" in GRAPH["llava.model.language_model.llava_llama"]


def test_llava_imports_nothing_from_fitprune():
    offenders = {name: sorted(m for m in imported if _in(m, "fitprune"))
                 for name, imported in GRAPH.items() if _in(name, "llava")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_graph_has_no_cycles():
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_outside_the_lab_imports_it_but_its_launchers():
    offenders = {name: sorted(m for m in imported if _in(m, LAB))
                 for name, imported in GRAPH.items() if not _in(name, LAB) and name not in LAB_LAUNCHERS}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_launchers_only_run_a_lab_main():
    for name in LAB_LAUNCHERS & set(MODULES):
        others = {m for m in GRAPH[name] if not _in(m, LAB)} - {"sys", "__future__"}
        assert others == set(), f"{name} does more than run a lab main: it imports {sorted(others)}"


def test_no_runtime_module_imports_test_helpers():
    offenders = {name: sorted(m for m in imported if _in(m, "tests") or _in(m, "llava.testing"))
                 for name, imported in GRAPH.items()}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_an_old_module_path_still_works_and_warns():
    from llava.model.pruning.flops import DecoderDims

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from fitprune.flops import DecoderDims as old

    assert old is DecoderDims
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == [
        "fitprune.flops.DecoderDims has moved to llava.model.pruning.flops.DecoderDims; "
        "the old name will be removed in the next release"
    ]
    with pytest.raises(AttributeError, match="'fitprune.flops' has no attribute 'nothing'"):
        __import__("fitprune.flops", fromlist=["nothing"]).nothing


BLOCK_FITPRUNE = """
import runpy, sys

class BlockFitprune:
    def find_spec(self, name, path=None, target=None):
        if name == "fitprune" or name.startswith("fitprune."):
            raise ImportError("fitprune is blocked in this test: " + name)
        return None

sys.meta_path.insert(0, BlockFitprune())
sys.argv = ["run_llava"] + sys.argv[1:]
runpy.run_module("llava.eval.run_llava", run_name="__main__")
"""


def test_pruned_inference_runs_without_fitprune(tiny_checkpoint):
    from llava.model.pruning.recipe import RecipeBook
    from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT

    from tests.conftest import TINY_RECIPE_RATIO

    kept = RecipeBook.load(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT).get(TINY_RECIPE_RATIO).keep_counts[-1]
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_FITPRUNE, "--model-path", str(tiny_checkpoint),
         "--image-file", str(REPO / "tests" / "data" / "shapes.png"), "--query", "What is in the picture?",
         "--device", "cpu", "--temperature", "0", "--max-new-tokens", "3",
         "--reduction-ratio", f"{TINY_RECIPE_RATIO:g}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"visual tokens kept after the last layer: {kept} of 144" in result.stderr
