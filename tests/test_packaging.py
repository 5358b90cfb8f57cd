"""What a built wheel carries besides the modules: the model card template (a link to
model_cards/ in the checkout, a real file in the wheel), the `evaluate` metric scripts, and the
paper's tables (CSV, with their README and notes) that `hf_vit_repro.paper_results` reads, and the
VTAB runner's default recipes (links to recipes/ in the checkout)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from hf_vit_repro import hub
from hf_vit_repro import vtab
from hf_vit_repro.vtab import default_recipe_path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_model_card_template_and_metric_scripts(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("hf_vit_repro", "model_cards", "recipes"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("hf_vit_repro-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        template = archive.read("hf_vit_repro/hub/modelcard_template.md")
    assert template == (ROOT / "model_cards" / "modelcard_template.md").read_bytes()
    metrics = {Path(n).name for n in names if n.startswith("hf_vit_repro/metrics/") and n.endswith(".py")}
    assert {p.name for p in (ROOT / "hf_vit_repro" / "metrics").glob("*/*.py")} <= metrics
    # the paper's tables, byte for byte, where paper_results reads them
    tables = ROOT / "hf_vit_repro" / "paper_results"
    shipped = {p.name for p in tables.iterdir() if p.suffix in (".csv", ".md")}
    # Tables 1-9, the published PEFT rows on VTAB-1k with their sources (paper_results.peft_vtab), and
    # AugReg's pretraining settings with theirs (paper_results.augreg)
    assert len([n for n in shipped if n.endswith(".csv")]) == 13 and {"README.md", "notes.md"} <= shipped
    assert {"peft_vtab.csv", "peft_vtab_sources.csv", "augreg_settings.csv", "augreg_sources.csv"} <= shipped
    with zipfile.ZipFile(wheel) as archive:
        for name in shipped:
            assert archive.read(f"hf_vit_repro/paper_results/{name}") == (tables / name).read_bytes(), name
    # the package reads the template from inside itself, where the wheel puts it
    assert hub.TEMPLATE_PATH.parent == Path(hub.__file__).resolve().parent and hub.TEMPLATE_PATH.is_file()
    # the VTAB runner's default recipes (issue 15: `vit-repro vtab` without --recipe in an installed package)
    for protocol, name in (("paper", "finetune_vtab.yaml"), ("bit-hyperrule", "finetune_bit_vtab.yaml")):
        path = default_recipe_path(protocol)
        assert path.parent == Path(vtab.__file__).resolve().parent / "recipes" and path.name == name
        assert path.read_bytes() == (ROOT / "recipes" / name).read_bytes()
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(f"hf_vit_repro/vtab/recipes/{name}") == path.read_bytes(), name


def _requirement_names(requirements) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}


def _project() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _core_requirements() -> set[str]:
    return _requirement_names(_project()["dependencies"])


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-stdlib modules a source file imports (anywhere in it)."""
    import ast

    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"hf_vit_repro"}


#: Modules of the package that may import an extra's packages (and say which extra to install when
#: they are missing): the extra's name -> the module files.
EXTRA_MODULES = {"export": {"export.py", "export_precision.py", "quantization.py"}, "peft": {"training/peft_methods.py"}, "app": {"app.py"}}


def test_every_module_the_package_imports_is_a_core_dependency():
    """`pip install hf-vit-repro` (no extras) gives everything the package imports: scikit-learn
    for the offline digits task (smoke runs, the demo, README snippets) was only in [test]
    (issue 14, item 15). Test-only and benchmark imports live outside hf_vit_repro/."""
    from importlib.metadata import packages_distributions

    modules = set()
    for path in (ROOT / "hf_vit_repro").rglob("*.py"):
        if any(path.relative_to(ROOT / "hf_vit_repro").as_posix() in files for files in EXTRA_MODULES.values()):
            continue  # checked below against its extra
        modules |= _third_party_imports(path)
    distributions = packages_distributions()
    required = _core_requirements()
    missing = {m: distributions.get(m) for m in modules if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & required}
    assert "sklearn" in modules and not missing, missing


def test_modules_behind_an_extra_import_only_the_core_and_that_extra():
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    extras = _project()["optional-dependencies"]
    for extra, files in EXTRA_MODULES.items():
        allowed = _core_requirements() | _requirement_names(extras[extra])
        for name in files:
            modules = _third_party_imports(ROOT / "hf_vit_repro" / name)
            missing = {m for m in modules if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & allowed}
            assert not missing, (extra, name, missing)
