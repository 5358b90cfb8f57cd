"""Few-shot linear evaluation: the closed form against a reference solve, separable and random
features, the default (big_vision's) protocol on digits against a hand-run of its steps (its l2,
its k images per class, its resize + central crop computed with PIL and numpy), the l2-selection
option against a hand-run too, and the feature cache."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification
from hf_vit_repro.data import eval_transform, fewshot_subset, load_task
from hf_vit_repro.evaluation import (
    L2_GRID,
    FeatureCache,
    accuracy_by_l2,
    extract_features,
    fewshot_evaluate,
    fit_least_squares,
    model_fingerprint,
)
from hf_vit_repro.evaluation.fewshot import BIAS_CONSTANT

from .conftest import randomize_, tiny_kwargs


def reference_weights(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float) -> torch.Tensor:
    """Ridge regression by `torch.linalg.lstsq` on the augmented system [X; sqrt(l2) I] W = [T; 0],
    with the standardisation and bias feature written out here."""
    x = torch.from_numpy(x).double()
    mean, std = x.mean(0), x.std(0, unbiased=False) + 1e-5
    design = torch.cat([(x - mean) / std, torch.full((len(x), 1), BIAS_CONSTANT, dtype=torch.float64)], 1)
    t = -torch.ones(len(y), num_classes, dtype=torch.float64)
    t[torch.arange(len(y)), torch.from_numpy(y)] = 1.0
    d = design.shape[1]
    a = torch.cat([design, (l2**0.5) * torch.eye(d, dtype=torch.float64)])
    b = torch.cat([t, torch.zeros(d, num_classes, dtype=torch.float64)])
    return torch.linalg.lstsq(a, b).solution


@pytest.mark.parametrize("n", [12, 80])  # N < D + 1 (the usual few-shot case) and N >= D + 1
def test_closed_form_equals_lstsq(n):
    rng = np.random.default_rng(n)
    d, k = 24, 4
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0, size=d) + rng.normal(size=d)
    y = np.arange(n) % k
    fit = fit_least_squares(torch.from_numpy(x), torch.from_numpy(y), k)
    for l2 in (2.0**-6, 1.0, 2.0**10):
        expected = reference_weights(x, y, k, l2)
        torch.testing.assert_close(fit.weights(l2), expected, rtol=1e-6, atol=1e-8)


def test_separable_features_give_100_percent():
    """Class c lives within 0.1 (noise std) of its own random centre (centres ~10 apart in 20-D):
    linearly separable with a wide margin, in every feature (standardisation amplifies no pure-noise
    dimension)."""
    rng = np.random.default_rng(0)
    k, d = 6, 20
    centres = rng.normal(scale=2.0, size=(k, d))

    def draw(per_class):
        labels = np.repeat(np.arange(k), per_class)
        return centres[labels] + rng.normal(scale=0.1, size=(len(labels), d)), labels

    train_x, train_y = draw(2)
    test_x, test_y = draw(50)
    fit = fit_least_squares(torch.from_numpy(train_x), torch.from_numpy(train_y), k)
    accuracy = accuracy_by_l2(fit, torch.from_numpy(test_x), torch.from_numpy(test_y), [2.0**-4, 1.0, 2.0**4])
    assert accuracy == [1.0, 1.0, 1.0]


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(1)
    k, d = 10, 32
    train_x, train_y = rng.normal(size=(250, d)), np.repeat(np.arange(k), 25)
    test_x, test_y = rng.normal(size=(3000, d)), rng.integers(0, k, size=3000)
    fit = fit_least_squares(torch.from_numpy(train_x), torch.from_numpy(train_y), k)
    for accuracy in accuracy_by_l2(fit, torch.from_numpy(test_x), torch.from_numpy(test_y), [1.0, 1024.0]):
        assert abs(accuracy - 0.1) < 4 * (0.1 * 0.9 / 3000) ** 0.5  # 4 standard errors of chance


@pytest.fixture(scope="module")
def tiny_model():
    config = ViTReproConfig(**tiny_kwargs(num_labels=10))
    return randomize_(ViTReproForImageClassification(config), std=0.2, seed=3).eval()


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", "train"), load_task("digits", "test").select(range(120))


def _hand_pixels(images, size: int, resized: int | None) -> torch.Tensor:
    """PIL bilinear resize to a `resized` square and the central `size` crop (offset (resized -
    size) // 2, as big_vision's central_crop), or a plain resize to `size`; [-1, 1], channels first."""
    out = []
    for image in images:
        side = resized or size
        array = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
        top = (side - size) // 2
        out.append(torch.from_numpy(array[top : top + size, top : top + size].copy()).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def test_default_is_big_visions_protocol_by_hand(tiny_model, digits, monkeypatch):
    """With no options: exactly k images per class go into the fit (counted from the labels the
    solver receives), nothing else of the training split is even featurised, l2 is 2^10, and the
    images are resized to 37 x 37 (round(32 * 256 / 224)) and centrally cropped to 32 x 32.
    Every accuracy equals a hand-run: my pre-processing, my forward pass, lstsq at l2 = 1024."""
    from hf_vit_repro.evaluation import fewshot as module

    train, test = digits
    fitted, featurised = [], []
    real_fit, real_extract = module.fit_least_squares, module.extract_features

    def recording_fit(features, labels, num_classes):
        fitted.append(np.bincount(labels.numpy(), minlength=num_classes))
        return real_fit(features, labels, num_classes)

    def recording_extract(model, dataset, rows, **kwargs):
        featurised.append((kwargs.get("desc"), len(list(rows))))
        return real_extract(model, dataset, rows, **kwargs)

    monkeypatch.setattr(module, "fit_least_squares", recording_fit)
    monkeypatch.setattr(module, "extract_features", recording_extract)
    results = fewshot_evaluate(tiny_model, train, test, shots=[1, 5], seeds=[0, 1], progress=False)
    assert [counts.tolist() for counts in fitted] == [[1] * 10, [1] * 10, [5] * 10, [5] * 10]
    # Only the shot rows are featurised, no held-out images: the union of the two seeds' 5-shot
    # sets (each holds its 1-shot set), at most 2 x 5 x 10.
    numbered = train.add_column("r", list(range(len(train))))
    union = {r for seed in (0, 1) for r in fewshot_subset(numbered, 5, seed)["r"]}
    assert dict(featurised)["few-shot train features"] == len(union) <= 100
    for k in ("1", "5"):
        assert results[k]["l2_reg"] == [1024.0, 1024.0] and results[k]["l2_selection"] == "fixed"
        assert results[k]["train_images_per_class"] == int(k)

    def features(dataset):
        with torch.no_grad():
            pixels = _hand_pixels(dataset["image"], 32, 37)
            return tiny_model.vit(pixels).pooler_output.double().numpy(), np.asarray(dataset["label"])

    test_x, test_y = features(test)
    for seed in (0, 1):
        shot_x, shot_y = features(fewshot_subset(train, 5, seed))
        xt = torch.from_numpy(test_x)
        mean, std = torch.from_numpy(shot_x).mean(0), torch.from_numpy(shot_x).std(0, unbiased=False) + 1e-5
        design = torch.cat([(xt - mean) / std, torch.full((len(xt), 1), BIAS_CONSTANT, dtype=torch.float64)], 1)
        expected = float(((design @ reference_weights(shot_x, shot_y, 10, 1024.0)).argmax(1).numpy() == test_y).mean())
        assert results["5"]["accuracy"][seed] == pytest.approx(expected, abs=1e-9)


def test_l2_selection_option_matches_hand_run(tiny_model, digits, tmp_path):
    """l2_reg="select" (with the plain resize): draw the k-shot rows with data.fewshot_subset, run
    the encoder on the images myself, pick l2 on the next 10 images per class, solve by lstsq."""
    train, test = digits
    results = fewshot_evaluate(tiny_model, train, test, shots=[1, 5], seeds=[0, 1], cache_dir=tmp_path, progress=False,
                               l2_reg="select", preprocessing="resize")
    assert set(results) == {"1", "5"} and results["5"]["l2_selection"] == "held-out 10/class of the training split"
    assert results["5"]["seeds"] == [0, 1] and results["5"]["num_test_images"] == 120

    def features(dataset):
        transform = eval_transform(32)
        pixels = torch.stack([transform(image.convert("RGB")) for image in dataset["image"]])
        with torch.no_grad():
            return tiny_model.vit(pixels).pooler_output.double().numpy(), np.asarray(dataset["label"])

    test_x, test_y = features(test)
    for seed in (0, 1):
        shot_x, shot_y = features(fewshot_subset(train, 5, seed))
        numbered = train.add_column("r", list(range(len(train))))
        shot_rows = set(fewshot_subset(numbered, 5, seed)["r"])
        held = fewshot_subset(numbered, 15, seed).filter(lambda row: row["r"] not in shot_rows)
        assert len(held) == 100
        held_x, held_y = features(held)

        def accuracy(x, y, w):
            xt = torch.from_numpy(x)
            mean = torch.from_numpy(shot_x).mean(0)
            std = torch.from_numpy(shot_x).std(0, unbiased=False) + 1e-5
            design = torch.cat([(xt - mean) / std, torch.full((len(xt), 1), BIAS_CONSTANT, dtype=torch.float64)], 1)
            return float(((design @ w).argmax(1).numpy() == y).mean())

        val = [accuracy(held_x, held_y, reference_weights(shot_x, shot_y, 10, l2)) for l2 in L2_GRID]
        best = max(range(len(L2_GRID)), key=lambda i: (val[i], L2_GRID[i]))
        assert results["5"]["l2_reg"][seed] == L2_GRID[best]
        expected = accuracy(test_x, test_y, reference_weights(shot_x, shot_y, 10, L2_GRID[best]))
        assert results["5"]["accuracy"][seed] == pytest.approx(expected, abs=1e-9)
    assert results["5"]["mean"] == pytest.approx(np.mean(results["5"]["accuracy"]))
    assert results["5"]["mean"] > 0.3  # ten classes: chance is 0.1; random ViT features still separate digits


def test_fixed_l2_and_errors(tiny_model, digits):
    train, test = digits
    fixed = fewshot_evaluate(tiny_model, train, test, shots=[2], seeds=[0], l2_reg=1024.0, progress=False)
    assert fixed["2"]["l2_reg"] == [1024.0] and fixed["2"]["l2_selection"] == "fixed"
    small = fewshot_subset(train, 3, seed=0)
    with pytest.raises(ValueError, match="too small for 5-shot"):
        fewshot_evaluate(tiny_model, small, test, shots=[5], seeds=[0], progress=False)
    with pytest.raises(ValueError, match="l2_reg"):
        fewshot_evaluate(tiny_model, train, test, shots=[1], seeds=[0], l2_reg="best", progress=False)


def test_feature_cache_key(tiny_model, digits, tmp_path, monkeypatch):
    """Features are computed once per image; a new resolution, new weights or a new split name
    get new entries; labels that changed under the same key are not trusted."""
    _, test = digits
    rows = list(range(0, 40, 2))
    calls = []
    forward = type(tiny_model.vit).forward

    def counting(self, pixel_values, *args, **kwargs):
        calls.append(len(pixel_values))
        return forward(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(type(tiny_model.vit), "forward", counting)
    cache = FeatureCache(tmp_path)
    key = {"task": "digits", "split": "test"}
    first, labels = extract_features(tiny_model, test, rows, cache=cache, cache_key=key, progress=False)
    assert sum(calls) == 20 and len(list(tmp_path.iterdir())) == 1
    again, _ = extract_features(tiny_model, test, rows[:5] + [1, 3], cache=cache, cache_key=key, progress=False)
    assert sum(calls) == 22  # only rows 1 and 3 were new
    np.testing.assert_array_equal(again[:5], first[:5])
    np.testing.assert_array_equal(labels, np.asarray(test["label"])[rows])

    extract_features(tiny_model, test, rows, cache=cache, cache_key=key, image_size=48, progress=False)
    assert sum(calls) == 42  # another resolution: recomputed, interpolated position embeddings
    extract_features(tiny_model, test, rows, cache=cache, cache_key={"task": "digits", "split": "val"}, progress=False)
    assert sum(calls) == 62
    assert len(list(tmp_path.iterdir())) == 3

    changed = ViTReproForImageClassification(tiny_model.config)
    changed.load_state_dict(tiny_model.state_dict())
    assert model_fingerprint(changed) == model_fingerprint(tiny_model)
    with torch.no_grad():
        changed.vit.layernorm.bias[0] += 1e-3
    assert model_fingerprint(changed) != model_fingerprint(tiny_model)
    extract_features(changed.eval(), test, rows, cache=cache, cache_key=key, progress=False)
    assert sum(calls) == 82

    relabelled = test.map(lambda row: {"label": (row["label"] + 1) % 10})
    extract_features(tiny_model, relabelled, rows, cache=cache, cache_key=key, progress=False)
    assert sum(calls) == 102  # same key, different labels: recomputed


def test_cli_writes_fewshot_json(tmp_path, capsys):
    """`vit-repro fewshot` on a run folder writes RUN/fewshot.json in the shape the model card reads
    (results[task][str(k)] with mean, std, seeds); a second run reads every feature from the cache."""
    import json

    from hf_vit_repro import cli, runs

    from .evaluation_fixtures import save_classifier, tiny_digits_classifier

    run = tmp_path / "run"
    save_classifier(tiny_digits_classifier(), run / runs.FINAL_DIR)
    args = ["fewshot", str(run), "digits", "--shots", "1", "3", "--seeds", "2", "--cache-dir", str(tmp_path / "cache"),
            "--no-progress"]
    assert cli.main(args) == 0
    record = json.loads((run / runs.FEWSHOT).read_text())
    entry = record["results"]["digits"]["3"]
    assert entry["seeds"] == [0, 1] and len(entry["accuracy"]) == 2 and entry["mean"] == pytest.approx(np.mean(entry["accuracy"]))
    protocol = record["protocol"]
    assert (protocol["name"], protocol["l2_reg"], protocol["preprocessing"], protocol["resolution"]) == (
        "big_vision", 1024.0, "central_crop", 32)
    assert protocol["preprocessing_steps"] == "resize to 37 x 37, central crop 32" and entry["train_images_per_class"] == 3
    assert "3-shot (%)" in capsys.readouterr().out
    assert record["image_processor"]["class"] == "ViTImageProcessor" and record["image_processor"]["backend"] == "torchvision"
    cached = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir())
    assert cli.main(args) == 0
    assert json.loads((run / runs.FEWSHOT).read_text())["results"] == record["results"]
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()) == cached  # nothing recomputed
    # The selection option is labelled as not big_vision's, in the file and on the screen.
    assert cli.main(args + ["--l2-reg", "select", "--output-dir", str(tmp_path / "select.json")]) == 0
    assert "not big_vision's" in capsys.readouterr().out
    assert json.loads((tmp_path / "select.json").read_text())["protocol"]["name"] == (
        "l2 selection on held-out images (not big_vision's)")


def test_an_unreadable_image_names_a_remedy_fewshot_has(tmp_path, capsys):
    """The strict error recommended `--skip-unreadable`, which `fewshot` does not accept (issue 24):
    few-shot reads every image it draws, so its one-line error says how to repair the data."""
    from datasets import Dataset
    from datasets import Image as ImageFeature

    from hf_vit_repro import cli, runs

    from .evaluation_fixtures import save_classifier, tiny_digits_classifier

    run = tmp_path / "run"
    save_classifier(tiny_digits_classifier(), run / runs.FINAL_DIR)
    data = tmp_path / "digits-copy"
    (data / "data").mkdir(parents=True)
    for split in ("train", "test"):
        dataset = load_task("digits", split).select(range(60)).cast_column("image", ImageFeature(decode=False))
        rows = dataset.to_list()
        if split == "test":
            rows[4]["image"] = {"bytes": b"", "path": "broken.png"}
        Dataset.from_list(rows, features=dataset.features).to_parquet(str(data / "data" / f"{split}-00000-of-00001.parquet"))
    capsys.readouterr()
    code = cli.main(["fewshot", str(run), str(data), "--shots", "1", "--seeds", "1", "--no-cache", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("vit-repro fewshot: error:"), err
    assert "broken.png" in err and "cannot skip one: replace or remove the file" in err
    assert "--skip-unreadable" not in err
    with pytest.raises(SystemExit):  # and indeed fewshot has no such flag
        cli.main(["fewshot", str(run), str(data), "--skip-unreadable"])


def test_fewshot_json_keeps_other_tasks_and_protocols(tmp_path, capsys, monkeypatch):
    """`vit-repro fewshot RUN TASK` rewrote RUN/fewshot.json with TASK alone (issue 24): the demo's
    digits results, or another protocol's, were lost. Results merge per task and protocol; a rerun
    of the same task and protocol replaces its entry; the file is written atomically."""
    import json

    from hf_vit_repro import cli, runs
    from hf_vit_repro.evaluation import fewshot as fewshot_module

    from .evaluation_fixtures import save_classifier, tiny_digits_classifier

    run = tmp_path / "run"
    save_classifier(tiny_digits_classifier(), run / runs.FINAL_DIR)
    base = ["fewshot", str(run), "--seeds", "1", "--no-cache", "--no-progress"]
    digits_test = load_task("digits", "test")
    small = tmp_path / "digits-small"  # a second task: a local copy of 100 digits images
    (small / "data").mkdir(parents=True)
    for split in ("train", "test"):
        load_task("digits", split).select(range(100)).to_parquet(str(small / "data" / f"{split}-00000-of-00001.parquet"))

    assert cli.main(base + ["digits", "--shots", "1", "2"]) == 0
    first = json.loads((run / runs.FEWSHOT).read_text())
    assert cli.main(base + [str(small), "--shots", "1", "2"]) == 0  # another task, same protocol
    record = json.loads((run / runs.FEWSHOT).read_text())
    assert set(record["results"]) == {"digits", str(small)} and record["results"]["digits"] == first["results"]["digits"]
    assert record["results"][str(small)]["1"]["num_test_images"] == 100
    assert record["results"]["digits"]["1"]["num_test_images"] == len(digits_test)

    assert cli.main(base + ["digits", "--shots", "1", "--l2-reg", "select"]) == 0  # another protocol
    record = json.loads((run / runs.FEWSHOT).read_text())
    assert record["protocol"]["l2_reg"] == "select" and set(record["results"]) == {"digits"}
    [kept] = record["other_protocols"]
    assert kept["protocol"] == first["protocol"] and set(kept["results"]) == {"digits", str(small)}

    # the first protocol again, on digits: its entry replaced, the other task and protocol kept
    monkeypatch.setattr(fewshot_module, "fewshot_evaluate", lambda *a, **k: {"1": {"mean": 0.5, "std": 0.0, "seeds": [0]}})
    assert cli.main(base + ["digits", "--shots", "1", "2"]) == 0
    record = json.loads((run / runs.FEWSHOT).read_text())
    assert record["protocol"] == first["protocol"] and record["results"]["digits"] == {"1": {"mean": 0.5, "std": 0.0, "seeds": [0]}}
    assert record["results"][str(small)] == kept["results"][str(small)]
    assert [g["protocol"]["l2_reg"] for g in record["other_protocols"]] == ["select"]
    assert sorted(p.name for p in run.iterdir()) == [runs.FEWSHOT, runs.FINAL_DIR]  # no temporary file left


def test_cli_classes_keeps_those_labels_and_records_them(tmp_path, capsys):
    """`vit-repro fewshot RUN digits --classes 5 6 7 8 9` scores the digits 5-9 alone (as `select_classes`
    keeps them: the same accuracy as `fewshot_evaluate` on those rows), records them as digits[5,6,7,8,9]
    with each entry's `classes`; a label digits lacks is a one-line error naming it."""
    import json

    from hf_vit_repro import cli, runs
    from hf_vit_repro.data import select_classes
    from hf_vit_repro.evaluation.common import load_checkpoint

    from .evaluation_fixtures import save_classifier, tiny_digits_classifier

    run = tmp_path / "run"
    save_classifier(tiny_digits_classifier(), run / runs.FINAL_DIR)
    base = ["fewshot", str(run), "digits", "--shots", "1", "2", "--seeds", "1", "--no-cache", "--no-progress"]
    assert cli.main(base + ["--classes", "5", "6", "7", "8", "9"]) == 0
    assert "digits[5,6,7,8,9]" in capsys.readouterr().out
    record = json.loads((run / runs.FEWSHOT).read_text())
    entry = record["results"]["digits[5,6,7,8,9]"]["2"]
    test = load_task("digits", "test")
    assert entry["classes"] == [5, 6, 7, 8, 9] and entry["num_test_images"] == sum(y >= 5 for y in test["label"])
    loaded = load_checkpoint(run, device="cpu")
    reference = fewshot_evaluate(loaded.model, select_classes(load_task("digits", "train"), [5, 6, 7, 8, 9]),
                                 select_classes(test, [5, 6, 7, 8, 9]), [1, 2], [0], mean=loaded.mean, std=loaded.std,
                                 progress=False, precision=entry["precision"])
    assert entry["mean"] == pytest.approx(reference["2"]["mean"], abs=1e-9)
    capsys.readouterr()
    assert cli.main(base + ["--classes", "5", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vit-repro fewshot: error: digits/train: classes [12] are not labels"), err
    assert "vit-repro data show digits" in err
