"""The README's Python snippets run as written."""

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (1, 10)
    assert (tmp_path / "my-vit" / "modeling_vit_repro.py").exists()
    assert type(namespace["model"]).__name__ == "ViTReproForImageClassification"


def test_readme_analyze_command_runs_on_a_run_folder(tmp_path, monkeypatch):
    """The README's `vit-repro analyze outputs/run1 --images ...` line, run as written on a tiny run
    folder at that path (fewer images, to stay fast): its `--images digits/` did not exist (issue 24)."""
    from hf_vit_repro import runs
    from hf_vit_repro.cli import main

    from .run_fixtures import make_run

    lines = [line.split("#")[0].strip() for line in README.read_text().splitlines()]
    [command] = [line for line in lines if line.startswith("vit-repro analyze outputs/run1 ")]
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "outputs" / "run1", evaluated=False, figures=False)
    args = shlex.split(command)[1:] + ["--num-images", "8", "--rollout-images", "1", "--no-progress"]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "run1" / runs.ANALYSIS_DIR / runs.ANALYSIS_JSON).is_file()
