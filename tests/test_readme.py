"""The README's Python snippets run as written."""

import re
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
