"""The package's `evaluate` metric modules, loaded by path offline (conftest sets HF_HUB_OFFLINE=1
and fails any non-loopback connection), against hand-computed values and scikit-learn."""

import os
import tomllib
from pathlib import Path

import evaluate
import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from hf_vit_repro.metrics import METRIC_NAMES, load_metric, metric_path


def test_offline_by_path():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for name in METRIC_NAMES:
        module = evaluate.load(str(metric_path(name)), keep_in_memory=True)
        assert module.name == name


def test_top_k_ties_hand_computed():
    """Ties rank the lower class index first: with 7 equal scores, class 4 is 5th (in the top 5)
    and class 5 is 6th (out); with one class above a 6-way tie, class 3 is 5th, class 4 6th."""
    metric = load_metric("top_k_accuracy")
    flat = [0.25] * 7
    one_high = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9]
    predictions = [flat, flat, one_high, one_high, one_high]
    references = [4, 5, 3, 4, 6]
    # top-1: only row 5 (class 6 is the argmax). top-2: row 5 and row 3? class 3 has rank 1 + 3 = 4: no.
    # top-5: rows 1 (rank 4), 3 (rank 4), 5 (rank 0) -> 3 of 5; row 2 rank 5, row 4 rank 5.
    result = metric.compute(predictions=predictions, references=references, k=[1, 2, 5])
    assert result == {"accuracy": 1 / 5, "top2_accuracy": 1 / 5, "top5_accuracy": 3 / 5}
    # The flat row: top-1 is class 0, as argmax says.
    assert metric.compute(predictions=[flat], references=[0], k=1) == {"accuracy": 1.0}
    assert np.argmax(flat) == 0


def test_top_k_matches_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(97, 12))
    labels = rng.integers(0, 12, size=97)
    result = load_metric("top_k_accuracy").compute(predictions=scores.tolist(), references=labels.tolist(), k=[1, 3, 5])
    for k, name in ((1, "accuracy"), (3, "top3_accuracy"), (5, "top5_accuracy")):
        assert result[name] == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=range(12)))
    assert result["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))


def test_top_k_defaults_and_errors():
    metric = load_metric("top_k_accuracy")
    assert set(metric.compute(predictions=[[0.0, 1.0, 2.0]], references=[2])) == {"accuracy"}  # K <= 5: no top-5
    assert set(metric.compute(predictions=[[0.0] * 6], references=[0])) == {"accuracy", "top5_accuracy"}
    with pytest.raises(ValueError, match="k must lie in"):
        metric.compute(predictions=[[0.0, 1.0]], references=[0], k=5)
    with pytest.raises(ValueError, match="outside"):
        metric.compute(predictions=[[0.0, 1.0]], references=[2])
    with pytest.raises(ValueError, match="NaN"):
        metric.compute(predictions=[[float("nan"), 1.0]], references=[0])


def test_per_class_hand_computed():
    metric = load_metric("per_class_accuracy")
    # class 0: 2 images, 1 right; class 1: 1 image, right; class 2: 3 images, 2 right; class 3: none.
    predictions = [0, 2, 1, 2, 2, 0]
    references = [0, 0, 1, 2, 2, 2]
    result = metric.compute(predictions=predictions, references=references, num_classes=4)
    assert result["per_class_accuracy"] == [0.5, 1.0, pytest.approx(2 / 3), None]
    assert result["per_class_count"] == [2, 1, 3, 0]
    assert result["mean_per_class_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # From scores through argmax, ties to the lowest index: rows 2 and 3 ([0, 1, 1]) both predict 1.
    scores = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    result = metric.compute(predictions=scores, references=[0, 1, 2])
    assert result["per_class_accuracy"] == [1.0, 1.0, 0.0]


def test_real_with_empty_label_sets():
    metric = load_metric("real_accuracy")
    predictions = [3, 1, 7, 2, 9]
    label_sets = [[3, 5], [], [2], [2, 4, 6], []]
    # Counted: rows 1 (hit), 3 (miss), 4 (hit) -> 2 / 3; rows 2 and 5 have empty sets and are excluded.
    assert metric.compute(predictions=predictions, references=label_sets) == {"real_accuracy": 2 / 3, "real_num_images": 3}
    # From scores (argmax) the same.
    scores = np.full((5, 10), -1.0)
    scores[np.arange(5), predictions] = 1.0
    assert metric.compute(predictions=scores.tolist(), references=label_sets)["real_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty ReaL label set"):
        metric.compute(predictions=[1, 2], references=[[], []])


def test_batched_and_combined():
    """Added batch by batch, through evaluate.combine, the numbers equal one call on everything."""
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 8)).round(1)  # rounding makes ties
    labels = rng.integers(0, 8, size=50)
    combined = evaluate.combine([load_metric("top_k_accuracy"), load_metric("per_class_accuracy")])
    for start in range(0, 50, 16):
        combined.add_batch(predictions=scores[start : start + 16].tolist(), references=labels[start : start + 16].tolist())
    result = combined.compute()
    whole = load_metric("top_k_accuracy").compute(predictions=scores.tolist(), references=labels.tolist())
    assert result["accuracy"] == whole["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert result["top5_accuracy"] == whole["top5_accuracy"]
    assert result["mean_per_class_accuracy"] == pytest.approx(
        np.mean([np.mean(scores[labels == c].argmax(1) == c) for c in np.unique(labels)])
    )


def test_metric_files_are_package_data():
    """A non-editable install carries the modules: pyproject's package-data glob matches them all."""
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["hf_vit_repro.metrics"]
    package = root / "hf_vit_repro" / "metrics"
    shipped = {p.relative_to(package).as_posix() for pattern in globs for p in package.glob(pattern)}
    assert {f"{name}/{name}.py" for name in METRIC_NAMES} <= shipped
