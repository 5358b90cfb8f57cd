"""The package's layout (DESIGN.md "Layout"): rooms of focused modules whose imports point one way.

A room is a top-level module or a sub-package (`training`, `hub`, `data`, `evaluation`, `vtab`, ...).
Imports are read from the source (module level and inside functions alike), so a lazy import cannot
hide a cycle or a wrong direction; only the lazy re-exports of a package's `__getattr__` are not
counted as its own imports. Two rules: no cycle between rooms, and no room imports a room of a higher
tier of DESIGN.md's order (`TIERS`): the VTAB runner and the studies train and then evaluate, so they
sit above both, and `evaluation` never imports `training`.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_vit_repro"
#: Sub-packages whose modules each form a room of their own (none: rooms are packages and modules).
SPLIT_BY_MODULE: set[str] = set()
#: DESIGN.md's order, lowest first: variants, configuration, modeling -> models -> data -> evaluation
#: -> training -> (vtab, studies) -> hub, analysis, export (+ its quantization) -> cli. A room may import its own tier
#: (the cycle check covers those) and lower ones, never a higher one. Rooms DESIGN.md does not name
#: are placed by what they are: leaf helpers with the shipped files, run folders and conversion with
#: the model families, the demo (training, then push) and the Gradio app (analysis over an upload) beside the CLI.
TIERS: list[set[str]] = [
    {"hf_vit_repro", "variants", "configuration_vit_repro", "modeling_vit_repro", "flops", "precision", "cli_options",
     "metrics", "paper_results", "figures"},
    {"models", "runs", "convert_common", "convert_bit", "convert_native", "convert", "convert_augreg"},
    {"data"},
    {"evaluation"},
    {"training"},
    {"vtab", "studies"},
    {"hub", "analysis", "export", "export_precision", "quantization"},
    {"cli", "demo", "app", "__main__"},
]
#: Upward imports tolerated for now: none. The two there were (issue 28) are gone: the loop publishes a
#: run through the `publish` callable its caller passes (`vit-repro train` passes `hub.push_run`), and
#: the figure helpers the study report shares with `analysis` live in the leaf module `figures`.
#: No upward import may be added; an entry here must go once it is fixed (checked below).
KNOWN_UPWARD: set[tuple[str, str]] = set()
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


def tier(room_name: str) -> int:
    short = room_name.removeprefix("hf_vit_repro.")
    found = [n for n, rooms in enumerate(TIERS) if short in rooms]
    assert found, f"room {room_name} has no place in TIERS: put it where DESIGN.md's order says"
    return found[0]


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where a room imports a room of a higher tier."""
    return {(source, target) for source, targets in graph.items() for target in targets if tier(target) > tier(source)}


def test_rooms_import_one_way():
    graph = room_graph()
    assert find_cycle(graph) is None, f"import cycle between rooms: {' -> '.join(find_cycle(graph))}"
    upward = upward_imports(graph)
    assert upward - KNOWN_UPWARD == set(), f"a lower room imports a higher one (DESIGN.md's order): {sorted(upward - KNOWN_UPWARD)}"
    assert KNOWN_UPWARD - upward == set(), f"fixed, so remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"
    # the directions DESIGN.md names
    assert "hf_vit_repro.evaluation" in graph["hf_vit_repro.training"]
    assert {"hf_vit_repro.training", "hf_vit_repro.evaluation"} <= graph["hf_vit_repro.vtab"]
    assert {"hf_vit_repro.training", "hf_vit_repro.evaluation"} <= graph["hf_vit_repro.studies"]
    assert "hf_vit_repro.vtab" not in graph["hf_vit_repro.training"]


def test_evaluation_never_imports_training_or_above():
    graph = room_graph()
    higher = {r for r in graph if tier(r) > tier("hf_vit_repro.evaluation")}
    assert "hf_vit_repro.training" in higher and "hf_vit_repro.vtab" in higher
    assert not graph["hf_vit_repro.evaluation"] & higher, sorted(graph["hf_vit_repro.evaluation"] & higher)


def test_upward_import_finder_finds_a_planted_one():
    graph = {"hf_vit_repro.evaluation": {"hf_vit_repro.data", "hf_vit_repro.training"},
             "hf_vit_repro.training": {"hf_vit_repro.evaluation"}, "hf_vit_repro.data": set()}
    assert upward_imports(graph) == {("hf_vit_repro.evaluation", "hf_vit_repro.training")}
    assert upward_imports({"hf_vit_repro.vtab": {"hf_vit_repro.training", "hf_vit_repro.studies"}}) == set()
    with pytest.raises(AssertionError, match="no place in TIERS"):
        tier("hf_vit_repro.somewhere_new")


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_evaluation_and_training_do_not_load_the_vtab_runner():
    code = (
        "import sys, hf_vit_repro.evaluation, hf_vit_repro.training\n"
        "assert 'hf_vit_repro.vtab' not in sys.modules\n"
        "from hf_vit_repro.vtab import run_vtab\n"
        "assert callable(run_vtab)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("package", ["training", "hub"])
def test_split_packages_have_focused_modules(package):
    modules = sorted((PACKAGE / package).glob("*.py"))
    assert len(modules) >= 4
    long = {p.name: n for p in modules if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules of {package}/ longer than {MAX_LINES} lines: {long}"


def test_public_training_hub_and_vtab_names_still_import():
    from hf_vit_repro import hub, training, vtab

    for name in training.__all__:
        assert getattr(training, name) is not None, name
    for name in ("load_recipe", "run_recipe", "train", "Recipe", "RecipeError", "build_model", "list_checkpoints"):
        assert name in training.__all__
    for name in hub.__all__:
        assert getattr(hub, name) is not None, name
    assert {"push_to_hub", "push_run", "model_card", "build_repo_folder", "validate_repo_folder"} <= set(hub.__all__)
    for name in vtab.__all__:
        assert getattr(vtab, name) is not None, name
    assert {"run_vtab", "resolve_tasks", "aggregate", "vtab_table", "vtab_report", "PAPER_SETTING", "DEFAULT_LR_SWEEP",
            "add_cli"} <= set(vtab.__all__)


#: Asking which family a model is (`is_bit(...)`, `is_bit_variant(...)`) is the family module's own business
#: (DESIGN.md, `models.py`): everyone else asks the family what to do (`family_of(model).reset_head(...)`).
FAMILY_MODULE = PACKAGE / "models.py"
FAMILY_QUESTION = re.compile(r"\b_?is_bit(?:_variant)?\b")


def family_questions(package: Path = PACKAGE) -> dict[str, list[int]]:
    """Source files (relative to the package) outside the family module that name `is_bit` or
    `is_bit_variant`, with the line numbers."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        if path == FAMILY_MODULE:
            continue
        lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if FAMILY_QUESTION.search(line)]
        if lines:
            found[str(path.relative_to(package))] = lines
    return found


def test_only_the_family_module_asks_which_family_a_model_is():
    assert FAMILY_QUESTION.search(FAMILY_MODULE.read_text(encoding="utf-8")), "the family module lost its is_bit"
    assert family_questions() == {}, (
        f"is_bit / is_bit_variant outside {FAMILY_MODULE.name}: ask the family instead "
        f"(models.family_of(config_or_model) / models.family_for_variant(name)): {family_questions()}"
    )


def test_family_question_finder_finds_a_planted_one(tmp_path):
    (tmp_path / "ok.py").write_text("from .convert_bit import is_bit_npz\nx = is_bit_npz\n", encoding="utf-8")
    (tmp_path / "bad.py").write_text("import os\n\nif variants.is_bit_variant(name):\n    pass\n", encoding="utf-8")
    assert family_questions(tmp_path) == {"bad.py": [3]}


def private_imports() -> list[str]:
    """`module: from X import _name` for every import of a private name from another hf_vit_repro module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hf_vit_repro")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{module_name(path)}: from {'.' * node.level}{node.module or ''} import {', '.join(private)}")
    return found


def test_no_module_imports_another_modules_private_names():
    """What one module uses of another is its public API (a leading underscore means: this module only)."""
    assert private_imports() == []
