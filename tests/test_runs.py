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
