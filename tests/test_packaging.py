"""What a built wheel carries besides the modules: the model card template (a link to
model_cards/ in the checkout, a real file in the wheel), the `evaluate` metric scripts, and the
paper's tables (CSV, with their README and notes) that `hf_vit_repro.paper_results` reads."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from hf_vit_repro import hub

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_model_card_template_and_metric_scripts(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("hf_vit_repro", "model_cards"):
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
    assert len([n for n in shipped if n.endswith(".csv")]) == 9 and {"README.md", "notes.md"} <= shipped
    with zipfile.ZipFile(wheel) as archive:
        for name in shipped:
            assert archive.read(f"hf_vit_repro/paper_results/{name}") == (tables / name).read_bytes(), name
    # the package reads the template from inside itself, where the wheel puts it
    assert hub.TEMPLATE_PATH.parent == Path(hub.__file__).resolve().parent and hub.TEMPLATE_PATH.is_file()
