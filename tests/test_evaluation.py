"""`evaluate_model` / `evaluate_checkpoint` / `vit-repro evaluate`: numbers against scikit-learn on
logits computed here, the metrics JSON (runs.metrics_record), resolution change, ReaL matching."""

import io
import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from sklearn.metrics import accuracy_score, balanced_accuracy_score, top_k_accuracy_score

from hf_vit_repro import cli, runs
from hf_vit_repro.data import eval_transform, load_task
from hf_vit_repro.evaluation import evaluate_checkpoint, evaluate_model, real_label_sets

from .evaluation_fixtures import save_classifier, tiny_digits_classifier


@pytest.fixture(scope="module")
def classifier():
    return tiny_digits_classifier()


@pytest.fixture(scope="module")
def checkpoint(classifier, tmp_path_factory):
    return save_classifier(classifier, tmp_path_factory.mktemp("ckpt") / "final")


def reference_logits(model, dataset, size=32):
    transform = eval_transform(size)
    pixels = torch.stack([transform(image) for image in dataset["image"]])
    with torch.no_grad():
        return model(pixels, interpolate_pos_encoding=size != model.config.image_hw[0]).logits.numpy()


def test_metrics_match_sklearn(classifier):
    test = load_task("digits", "test").select(range(70))
    result = evaluate_model(classifier, test, batch_size=16, progress=False)
    logits, labels = reference_logits(classifier, test), np.asarray(test["label"])
    assert result["num_images"] == 70
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(1)))
    assert result["metrics"]["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=range(10)))
    assert result["metrics"]["mean_per_class_accuracy"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    assert 0.3 < result["metrics"]["accuracy"] < 1.0  # a classifier that classifies (chance: 0.1)
    digit_3 = labels == 3
    # keyed by the data's class names
    assert result["per_class_accuracy"]["3"] == pytest.approx(np.mean(logits[digit_3].argmax(1) == 3))


def test_cli_writes_metrics_record(checkpoint, classifier, tmp_path, capsys):
    run = checkpoint.parent  # a run folder: RUN/final holds the checkpoint
    code = cli.main(["evaluate", str(run), "digits", "--max-images", "37", "--batch-size", "8", "--no-progress"])
    assert code == 0
    path = runs.metrics_path(run, "digits", "test")
    record = json.loads(path.read_text())
    assert {k: record[k] for k in ("checkpoint", "task", "dataset", "split", "resolution", "num_images")} == {
        "checkpoint": str(run), "task": "digits", "dataset": "digits (local)", "split": "test", "resolution": 32,
        "num_images": 37,
    }
    assert {"python", "torch", "transformers", "accelerate", "datasets"} <= set(record["versions"])
    labels = np.asarray(load_task("digits", "test")["label"][:37])
    logits = reference_logits(classifier, load_task("digits", "test").select(range(37)))
    assert record["metrics"]["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(1)))
    out = capsys.readouterr().out
    assert "top5_accuracy" in out and f"{100 * record['metrics']['accuracy']:.2f}" in out and str(path) in out


def test_resolution_and_explicit_output(checkpoint, classifier, tmp_path):
    output = tmp_path / "where" / "m.json"
    record, path = evaluate_checkpoint(checkpoint, "digits", resolution=48, max_images=20, output=output, progress=False)
    assert path == output and json.loads(output.read_text())["resolution"] == 48
    resized = tiny_digits_classifier()
    resized.resize_position_embeddings(48)
    test = load_task("digits", "test").select(range(20))
    expected = accuracy_score(np.asarray(test["label"]), reference_logits(resized, test, size=48).argmax(1))
    assert record["metrics"]["accuracy"] == pytest.approx(expected)


def test_bad_input_is_explained(checkpoint, tmp_path, capsys):
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    from .conftest import tiny_kwargs

    three = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=3)))
    with pytest.raises(ValueError, match="head has 3 classes"):
        evaluate_model(three, load_task("digits", "test").select(range(10)), progress=False)
    assert cli.main(["evaluate", str(tmp_path / "nothing"), "digits", "--output-dir", str(tmp_path)]) == 2
    assert "cannot load a classifier" in capsys.readouterr().err


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_labels_matched_by_file_name(classifier, tmp_path):
    """Rows in shuffled order still get their own ReaL sets (by ILSVRC2012_val_ number); the
    ReaL accuracy equals the hand count over images with non-empty sets."""
    numbers = [4, 1, 3, 2, 5, 6]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=10)})
    dataset = Dataset.from_dict(
        {"image": [{"bytes": _png(20 * n), "path": f"ILSVRC2012_val_{n:08d}.JPEG"} for n in numbers], "label": [0] * 6},
        features=features,
    )
    predictions = reference_logits(classifier, dataset).argmax(1)
    real = [[] for _ in range(6)]  # by validation image number - 1
    real[0] = [int(predictions[numbers.index(1)])]  # image 1: hit
    real[1] = [(int(predictions[numbers.index(2)]) + 1) % 10]  # image 2: miss
    real[3] = [int(predictions[numbers.index(4)]), 7]  # image 4: hit; images 3, 5, 6: empty sets
    real_json = tmp_path / "real.json"
    real_json.write_text(json.dumps(real))
    sets, matched = real_label_sets(dataset, real_json)
    assert matched == "file_name" and sets[0] == real[3] and sets[1] == real[0]
    result = evaluate_model(classifier, dataset, real_labels=sets, batch_size=4, progress=False)
    assert result["metrics"]["real_accuracy"] == pytest.approx(2 / 3) and result["real_num_images"] == 3
    no_names = Dataset.from_dict({"image": [{"bytes": _png(1), "path": None}] * 2, "label": [0, 1]}, features=features)
    short = tmp_path / "short.json"
    short.write_text(json.dumps([[1]] * 5))
    with pytest.raises(ValueError, match="cannot match"):
        real_label_sets(no_names, short)


def test_a_task_with_more_classes_than_the_head_is_refused(checkpoint, classifier, tmp_path, capsys):
    """A 100-class task whose rows happen to use 10 labels: the task's label feature decides, in
    evaluate_model and in `vit-repro evaluate` (issue 14, item 14)."""
    features = Features({"image": Image(), "label": ClassLabel(num_classes=100)})
    rows = {"image": [{"bytes": _png(10 * i), "path": None} for i in range(10)], "label": list(range(10))}
    hundred = Dataset.from_dict(rows, features=features)
    with pytest.raises(ValueError, match="the task has 100 classes but the model's head has 10 classes"):
        evaluate_model(classifier, hundred, progress=False)
    folder = tmp_path / "hundred"
    folder.mkdir()
    hundred.to_parquet(str(folder / "test.parquet"))
    capsys.readouterr()
    assert cli.main(["evaluate", str(checkpoint), str(folder), "--output-dir", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "the task has 100 classes but the model's head has 10 classes" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    # the same rows labelled as the 10-class task they are: evaluated
    ten = Dataset.from_dict(rows, features=Features({"image": Image(), "label": ClassLabel(num_classes=10)}))
    assert evaluate_model(classifier, ten, progress=False)["num_images"] == 10


def test_metrics_record_names_the_image_processor_class_and_backend(checkpoint, tmp_path):
    """The processor `AutoImageProcessor` (and so `pipeline`) loads from the checkpoint, by class
    and transformers' backend name; a checkpoint without one says so."""
    import shutil
    import warnings

    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(checkpoint)
    record, _ = evaluate_checkpoint(checkpoint, "digits", max_images=8, output=tmp_path / "m.json", progress=False)
    saved = json.loads((tmp_path / "m.json").read_text())["image_processor"]
    assert saved == record["image_processor"] == {
        "class": type(processor).__name__, "backend": processor.backend, "source": f"{checkpoint}/preprocessor_config.json"}
    assert (saved["class"], saved["backend"]) == ("ViTImageProcessor", "torchvision")  # transformers 5's fast default

    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    (bare / "preprocessor_config.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record, _ = evaluate_checkpoint(bare, "digits", max_images=8, output=tmp_path / "b.json", progress=False)
    assert record["image_processor"]["class"] is None and "none saved" in record["image_processor"]["source"]
