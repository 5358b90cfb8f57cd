import json

import pytest

from hf_vit_repro import runs


def test_write_json_is_atomic_and_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "metrics.json"
    runs.write_json(path, {"a": 1})
    assert runs.read_json(path) == {"a": 1}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError):
        runs.write_json(path, {"a": 2})
    monkeypatch.undo()
    assert runs.read_json(path) == {"a": 1}  # the old file is intact


def test_metrics_record_schema(tmp_path):
    record = runs.metrics_record(
        checkpoint="ckpt", task="cifar10", dataset="uoft-cs/cifar10", split="test", resolution=384,
        num_images=10, metrics={"accuracy": 0.5},
    )
    assert record["metrics"] == {"accuracy": 0.5} and record["num_images"] == 10
    assert "torch" in record["versions"] and "transformers" in record["versions"]
    assert runs.metrics_path(tmp_path, "vtab/dtd", "test") == tmp_path / "metrics" / "vtab__dtd_test.json"


def test_replace_dir_swaps_in_the_new_folder_and_drops_the_old(tmp_path):
    final = tmp_path / "card"
    for content in ("first", "second"):
        tmp = tmp_path / ".card.new"
        tmp.mkdir()
        (tmp / "README.md").write_text(content)
        assert runs.replace_dir(tmp, final) == final
        assert (final / "README.md").read_text() == content and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card"]  # no .card.old left behind
