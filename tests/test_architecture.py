"""The package structure: llava/ never imports fitprune/, no import cycles, the lab is depended on
by nothing, and pruned inference runs with fitprune/ absent."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("llava", "fitprune")
LAB = "fitprune.lab"
LAB_LAUNCHERS = {"fitprune.demo", "fitprune.bench", "fitprune.train_demo", "fitprune.synthetic"}
"""The README's `python -m fitprune.X` commands; each only runs a lab module's main."""


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
    assert "llava.model.pruning_setup" in GRAPH["llava.model.language_model.llava_llama"]


def test_llava_imports_nothing_from_fitprune():
    offenders = {name: sorted(m for m in imported if _in(m, "fitprune"))
                 for name, imported in GRAPH.items() if _in(name, "llava")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_graph_has_no_cycles():
    assert _cycles(GRAPH) == []


def _folder(module: str) -> str:
    """The folder holding a module's file, dotted (``llava.model.pruning`` for its ``recipe``)."""
    return ".".join(MODULES[module].relative_to(REPO).parent.parts)


def _unit(module: str, package: str) -> str:
    """The unit of the folder-level check: a module directly in `package` (``llava.utils``) is
    its own unit, any other module counts as its folder."""
    folder = _folder(module)
    return module if folder == package else folder


def _folder_graph(package: str) -> Dict[str, Set[str]]:
    """Unit (`_unit`) -> the units its modules import, inside `package`. A folder and a folder
    inside it are one unit here: a package uses its sub-packages and they build on its modules, as
    upstream's ``llava/model/`` (``builder`` loads ``language_model.llava_llama``, which extends
    ``llava_arch``). The package's own modules are checked one by one against every folder: the
    folders build on them (``llava.utils``, ``llava.errors``), so none of them may import a folder
    that imports it back."""
    graph: Dict[str, Set[str]] = {}
    for name, imported in GRAPH.items():
        if not _in(name, package):
            continue
        source = _unit(name, package)
        targets = graph.setdefault(source, set())
        for other in imported:
            if other in MODULES and _in(other, package):
                target = _unit(other, package)
                if target != source and not (_folder(name) != package and _folder(other) != package
                                             and (_in(target, source) or _in(source, target))):
                    targets.add(target)
    return graph


def test_no_two_folders_inside_llava_import_each_other():
    """The decoder owns its hook contract: ``pruning/`` builds on ``language_model/``, never the
    reverse; ``llava/model/`` builds on the package's own modules (``llava.utils``,
    ``llava.errors``), never the reverse."""
    graph = _folder_graph("llava")
    assert "llava.model.language_model" in graph["llava.model.pruning"]
    assert {"llava.utils", "llava.errors"} <= graph["llava.model"]
    assert _cycles(graph) == []


def test_folder_check_sees_a_package_module_and_a_folder_importing_each_other():
    graph = dict(_folder_graph("llava"))
    graph["llava.utils"] = graph["llava.utils"] | {"llava.model"}
    assert ["llava.model", "llava.utils"] in _cycles(graph)


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


REDIRECT_SCAN = PACKAGES + ("benchmarks",)
PACKAGE_APIS = {"llava", "llava.model"}
"""Package `__init__`s that import their public classes, as upstream's `from llava.model import
LlavaLlamaForCausalLM`: a package's own API, not a redirect to a moved module."""


def _only_redirects(source: str) -> bool:
    """Whether a module defines nothing of its own: past its docstring it holds only imports,
    ``__all__`` / ``__getattr__`` assignments and an ``if __name__ == "__main__"`` block."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]

    def redirects(node: ast.stmt) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(node, ast.Assign):
            return all(isinstance(t, ast.Name) and t.id in ("__all__", "__getattr__") for t in node.targets)
        return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)

    return bool(body) and any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body) and all(map(redirects, body))


def test_redirect_finder_tells_an_alias_from_a_module():
    assert _only_redirects('"""Moved."""\nfrom a.b import c\n__getattr__ = alias(__name__, "a.b")\n')
    assert _only_redirects('import sys\nfrom a import main\nif __name__ == "__main__":\n    sys.exit(main())\n')
    assert not _only_redirects('"""A package."""\n')
    assert not _only_redirects('from a import b\ndef main():\n    return b()\n')


def test_no_module_only_redirects_but_the_documented_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    redirects = set()
    for folder in REDIRECT_SCAN:
        for path in (REPO / folder).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            if name not in PACKAGE_APIS and _only_redirects(path.read_text(encoding="utf-8")):
                redirects.add(name)
    assert redirects == LAB_LAUNCHERS
    assert [name for name in sorted(LAB_LAUNCHERS) if f"python -m {name}" not in readme] == []


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

    from tests.helpers import TINY_RECIPE_RATIO

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


def test_the_eval_scripts_use_nothing_from_fitprune():
    """Evaluation runs on llava alone: the scripts call no fitprune module or file (``fitprune`` as
    the name of the default pruning policy, ``--policy fitprune``, is the method, not the package)."""
    import re

    uses = [f"{path.name}:{number}: {line.strip()}"
            for path in sorted((REPO / "scripts" / "v1_5" / "eval").glob("*.sh"))
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if re.search(r"\bfitprune[./]|-m\s+fitprune\b|import\s+fitprune", line)]
    assert uses == []


LIBRARIES_WITH_A_COMMAND = {
    "llava.eval.records.run_record": "the run-record library; `merge` is a thin command over merge_run_records",
}
"""llava modules with a ``__main__`` block that other modules may import, and why."""


def test_no_command_line_module_is_imported_for_its_helpers():
    """Shared command-line plumbing lives in llava.cli_support: no llava command (a module with a
    ``__main__`` block) is imported by llava or fitprune for its helpers (the lab, which launches
    commands, is another engineer's room and not checked here)."""
    commands = {name for name, path in MODULES.items() if _in(name, "llava")
                and 'if __name__ == "__main__"' in path.read_text()} - set(LIBRARIES_WITH_A_COMMAND)
    importers = sorted(f"{name} -> {other}" for name, imported in GRAPH.items()
                       if (_in(name, "llava") or _in(name, "fitprune")) and not _in(name, "fitprune.lab")
                       for other in imported & commands if other != name)
    assert "llava.eval.run_llava" in commands
    assert importers == []


MAX_MODULE_LINES = 400
SOURCE_FOLDERS = PACKAGES + ("benchmarks", "scripts")
LONG_MODULES: Dict[str, str] = {}
"""Modules allowed over `MAX_MODULE_LINES` lines, and why."""


def _lines_over_limit() -> Dict[str, int]:
    """Source file (path from the repository root) -> its line count, for every one over the limit."""
    counts = {}
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                counts[path.relative_to(REPO).as_posix()] = lines
    return counts


def test_no_module_outside_tests_is_over_400_lines_but_the_named_exceptions():
    """A module over 400 lines mixes jobs: split it by job, or name it in `LONG_MODULES` with the
    reason; an exception that is no longer over the limit is removed from the list."""
    over = _lines_over_limit()
    assert {path: lines for path, lines in over.items() if path not in LONG_MODULES} == {}
    assert sorted(set(LONG_MODULES) - set(over)) == []


def _test_modules_imported(source: str) -> Set[str]:
    """Names of the ``tests/test_*`` modules and ``conftest`` that an import statement in `source` names,
    at any depth: ``import tests.test_x``, ``from tests.test_x import ...``, ``from tests import test_x``,
    ``from .test_x import ...``."""
    named = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = ("tests." if node.level else "") + (node.module or "")
            named.add(module)
            named.update(f"{module.rstrip('.')}.{alias.name}" for alias in node.names)
    return {name.split(".")[1] for name in named if name.startswith(("tests.test_", "tests.conftest"))}


def test_no_test_module_imports_another():
    """Shared fixtures live in tests/conftest.py (pytest hands them out; nobody imports it) and shared
    helpers in tests/ helper modules (helpers, records, scripts, ...): a test module never imports
    another test module or conftest."""
    sample = ("from tests.test_a import x\nfrom tests import test_b, helpers\ndef f():\n    from .test_c import y\n"
              "from tests.conftest import Z\n")
    assert _test_modules_imported(sample) == {"test_a", "test_b", "test_c", "conftest"}
    importers = {path.name: sorted(_test_modules_imported(path.read_text(encoding="utf-8")))
                 for path in sorted((REPO / "tests").glob("*.py"))}
    assert {name: named for name, named in importers.items() if named} == {}
