"""The package's layout (DESIGN.md "Layout"): rooms of focused modules whose imports point one way.

A room is a top-level module, a sub-package (`training`, `hub`, `data`, ...), or, inside
`evaluation`, one module: `evaluation.vtab` fine-tunes with the training package and so sits above
it, while the loop scores with `evaluation.classification`, below it. Imports are read from the
source (module level and inside functions alike), so a lazy import cannot hide a cycle; only the
lazy re-exports of a package's `__getattr__` are not counted as its own imports.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_vit_repro"
#: Sub-packages whose modules each form a room of their own.
SPLIT_BY_MODULE = {"evaluation"}
MAX_LINES = 700


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return module  # the package's __init__ (registration)
    if parts[1] in SPLIT_BY_MODULE and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the hf_vit_repro modules that `path` imports, outside `__getattr__`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    lazy = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "hf_vit_repro"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "hf_vit_repro":
                target = node.module
            else:
                continue
            found.add(target)
            # `from .x import name` may name a submodule (`from .. import runs`)
            found |= {f"{target}.{alias.name}" for alias in node.names
                      if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()
                      or (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).is_dir()}
    return found


def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "metrics" in path.relative_to(PACKAGE).parts[:1] and path.parent != PACKAGE / "metrics":
            continue  # the `evaluate` metric scripts, loaded by path, never imported
        module = module_name(path)
        source = room(module)
        graph.setdefault(source, set())
        for target in imported_modules(path):
            # importing hf_vit_repro.b.c runs b/__init__ too; a module's own enclosing packages run
            # before it anyway (the package's __init__ included), so they count only when named
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if prefix != target and (module + ".").startswith(prefix + "."):
                    continue
                other = room(prefix)
                if other != source:
                    graph[source].add(other)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_rooms_import_one_way():
    graph = room_graph()
    assert find_cycle(graph) is None, f"import cycle between rooms: {' -> '.join(find_cycle(graph))}"
    # the directions DESIGN.md names
    assert "hf_vit_repro.evaluation.classification" in graph["hf_vit_repro.training"]
    assert "hf_vit_repro.training" in graph["hf_vit_repro.evaluation.vtab"]
    assert "hf_vit_repro.evaluation.vtab" not in graph["hf_vit_repro.training"]
    for lower in ("hf_vit_repro.data", "hf_vit_repro.configuration_vit_repro", "hf_vit_repro.modeling_vit_repro",
                  "hf_vit_repro.runs", "hf_vit_repro.evaluation.classification", "hf_vit_repro.evaluation.fewshot",
                  "hf_vit_repro.evaluation.common"):
        assert not graph[lower] & {"hf_vit_repro.training", "hf_vit_repro.hub", "hf_vit_repro.demo"}, lower
    assert "hf_vit_repro.training" not in graph["hf_vit_repro.hub"]


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_training_loop_does_not_load_the_vtab_runner():
    code = (
        "import sys, hf_vit_repro.training\n"
        "assert 'hf_vit_repro.evaluation.vtab' not in sys.modules\n"
        "from hf_vit_repro.evaluation import run_vtab\n"  # the public name still resolves, on first use
        "assert 'hf_vit_repro.evaluation.vtab' in sys.modules and callable(run_vtab)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("package", ["training", "hub"])
def test_split_packages_have_focused_modules(package):
    modules = sorted((PACKAGE / package).glob("*.py"))
    assert len(modules) >= 4
    long = {p.name: n for p in modules if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules of {package}/ longer than {MAX_LINES} lines: {long}"


def test_public_training_and_hub_names_still_import():
    from hf_vit_repro import hub, training

    for name in training.__all__:
        assert getattr(training, name) is not None, name
    for name in ("load_recipe", "run_recipe", "train", "Recipe", "RecipeError", "build_model", "list_checkpoints"):
        assert name in training.__all__
    for name in hub.__all__:
        assert getattr(hub, name) is not None, name
    assert {"push_to_hub", "push_run", "model_card", "build_repo_folder", "validate_repo_folder"} <= set(hub.__all__)
