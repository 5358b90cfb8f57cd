"""Training objectives: masked patch prediction (paper Sec. 4.6, Appendix B.1.2) through the same
loop, checkpoints and resume as classification. The corruption is drawn per image in the data
pipeline from that image's generator; no labels are read; the evaluation is the masked-patch loss
and colour accuracy, checked against the model's own loss on hand-drawn corruptions; a fine-tune
starts from the MPP run's encoder. Tiny models on scikit-learn's digits, a few steps each."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vit_repro import PatchCorruption, ViTReproForMaskedPatchPrediction, runs, sample_patch_corruption, training
from hf_vit_repro.data import SeededSampler, eval_transform, load_task, make_dataloader
from hf_vit_repro.data.collate import decode_image
from hf_vit_repro.training import PatchCorruptionDraw, Recipe, RecipeError, load_recipe, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=4)


def mpp_recipe(tmp_path, name="mpp", **changes) -> Recipe:
    """A 4-step masked-patch-prediction run of a tiny ViT at 16 px (4x4 patches: 16 per image)."""
    recipe = Recipe.from_dict({
        "name": name,
        "mode": "pretrain",
        "model": {"variant": None, "image_size": 16, "config": dict(TINY)},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 32, "max_eval_examples": 13,
                 "mean": [0.4, 0.5, 0.6], "std": [0.3, 0.5, 0.7]},
        "optim": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 1},
        "train": {"objective": "masked_patch_prediction", "steps": 4, "global_batch_size": 8, "micro_batch_size": 8,
                  "eval_batch_size": 5},
        "run": {"output_dir": str(tmp_path / name), "checkpoint_every": 2, "progress_bar": False, "trackers": []},
    })
    return recipe.replace(**changes) if changes else recipe


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / runs.FINAL_DIR / "model.safetensors"))


def images_only(split: str, n: int):
    """Digits with the label column removed: masked patch prediction must not need it."""
    return load_task("digits", split).select(range(n)).remove_columns("label")


# ------------------------------------------------------------------ the data pipeline


def test_loader_draws_each_images_corruption_from_its_generator_after_the_transform():
    dataset = images_only("train", 10)
    transform = eval_transform(16, (0.5,) * 3, (0.5,) * 3)
    draw = PatchCorruptionDraw(patch_hw=(4, 8), rate=0.5, split=(0.6, 0.2, 0.2))  # 4 x 2 = 8 patches, not square

    def batches(batch_size, workers):
        loader = make_dataloader(dataset, transform, batch_size, shuffle=True, seed=7, num_workers=workers,
                                 labels=False, per_image=draw)
        return [b for b in loader]

    small, large = batches(3, 0), batches(5, 1)
    assert "labels" not in small[0] and small[0]["corruption"].shape == (3, 8)
    assert small[0]["replacement_index"].dtype == torch.long
    # The same rows in the same order get the same corruption whatever the batching and workers.
    for key in ("pixel_values", "corruption", "replacement_index"):
        assert torch.equal(torch.cat([b[key] for b in small]), torch.cat([b[key] for b in large])), key

    # Reference, by hand: row i's generator seeded from the sampler's seed, consumed by the
    # transform first, then by sample_patch_corruption.
    pairs = list(SeededSampler(len(dataset), shuffle=True, seed=7))
    expected = []
    for row, seed in pairs:
        generator = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
        transform(decode_image(dataset[row]["image"]), generator=generator)
        expected.append(sample_patch_corruption(8, rate=0.5, split=(0.6, 0.2, 0.2), generator=generator))
    assert torch.equal(torch.cat([b["corruption"] for b in small]), torch.stack([c for c, _ in expected]))
    assert torch.equal(torch.cat([b["replacement_index"] for b in small]), torch.stack([r for _, r in expected]))
    assert all(int((c != PatchCorruption.NONE).sum()) == 4 for c, _ in expected)


def test_load_task_without_labels_reads_a_source_that_has_none(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    assert load_task("digits", "test", labels=False).column_names == ["image"]
    # A local folder of images and nothing else (column "img", no label column at all).
    images = []
    for value in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (5, 4), (value * 50, 0, 0)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"{value}.png"})
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"img": images}), tmp_path / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(Exception, match="label"):
        load_task(str(tmp_path), "train")
    unlabelled = load_task(str(tmp_path), "train", labels=False)
    assert unlabelled.column_names == ["image"] and len(unlabelled) == 3
    assert unlabelled[2]["image"].size == (5, 4) and unlabelled[2]["image"].getpixel((0, 0))[0] == 100


# ------------------------------------------------------------------ training and evaluation


def test_mpp_run_needs_no_labels_and_reports_the_masked_patch_loss_and_accuracy(tmp_path):
    recipe = mpp_recipe(tmp_path)
    result = train(recipe, train_dataset=images_only("train", 32), eval_dataset=images_only("test", 13))
    final = result.run_dir / runs.FINAL_DIR
    config = runs.read_json(final / "config.json")
    assert config["architectures"] == ["ViTReproForMaskedPatchPrediction"]
    assert (config["mpp_image_mean"], config["mpp_image_std"]) == ([0.4, 0.5, 0.6], [0.3, 0.5, 0.7])
    summary = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)
    assert summary["objective"] == "masked_patch_prediction" and summary["images_seen"] == 4 * 8
    metrics = summary["eval"]
    assert set(metrics) >= {"masked_patch_loss", "masked_patch_accuracy"} and "accuracy" not in metrics
    assert metrics["num_images"] == 13 and result.eval_accuracy == metrics["masked_patch_accuracy"]
    record = runs.read_json(runs.metrics_path(result.run_dir, "digits", "test"))
    assert record["objective"] == "masked_patch_prediction" and record["metrics"]["masked_patch_loss"] > 0

    # Independent reference: the saved model's own loss on all 13 test images in one batch, with
    # each row's corruption drawn by hand from its generator (evaluation: seed 0, epoch 0, in order).
    model = ViTReproForMaskedPatchPrediction.from_pretrained(final).eval()
    dataset = images_only("test", 13)
    transform = eval_transform(16, recipe.data.mean, recipe.data.std)
    pixels, corruption, replacement = [], [], []
    for row, seed in SeededSampler(13, shuffle=False, seed=0):
        generator = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
        pixels.append(transform(decode_image(dataset[row]["image"]), generator=generator))
        c, r = sample_patch_corruption(16, generator=generator)
        corruption.append(c), replacement.append(r)
    with torch.no_grad():
        out = model(torch.stack(pixels), corruption=torch.stack(corruption), replacement_index=torch.stack(replacement))
    chosen = out.corruption != PatchCorruption.NONE
    assert int(chosen.sum()) == 13 * 8
    hits = (out.logits.argmax(-1) == out.targets)[chosen].double().mean()
    torch.testing.assert_close(metrics["masked_patch_loss"], float(out.loss), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["masked_patch_accuracy"], float(hits), atol=1e-9, rtol=0)


def test_mpp_training_lowers_the_masked_patch_loss(tmp_path):
    recipe = mpp_recipe(tmp_path, **{"train.steps": 30, "run.checkpoint_every": 0, "data.eval_split": None,
                                     "data.max_train_examples": 64})
    result = train(recipe)
    losses = [loss for _, loss in result.losses]
    # ln(512) = 6.24 at the start; digits are grey, so 8 of the 512 colours are all it needs.
    assert losses[0] > 5.0 and sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_mpp_kill_and_resume_ends_with_the_same_weights(tmp_path):
    # Augmentation, dropout and accumulation on: the corruption, crops and dropout must all resume.
    changes = {"data.augmentation": "finetune", "model.dropout": 0.1, "train.steps": 5, "train.micro_batch_size": 4,
               "data.max_train_examples": 20, "data.eval_split": None}
    reference = train(mpp_recipe(tmp_path, "uninterrupted", **changes))

    class Killed(Exception):
        pass

    def kill_at_step_3(state):
        if state.step == 3:
            raise Killed

    interrupted = mpp_recipe(tmp_path, "interrupted", **changes)
    with pytest.raises(Killed):
        train(interrupted, callbacks=[kill_at_step_3])
    resumed = train(interrupted)
    assert resumed.losses[0][0] == 3 and resumed.steps == 5
    a, b = final_weights(reference.run_dir), final_weights(resumed.run_dir)
    assert a.keys() == b.keys() and "mpp_head.weight" in a and "vit.embeddings.mask_token" in a
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [loss for _, loss in resumed.losses] == [loss for _, loss in reference.losses[2:]]


def test_mpp_gradient_accumulation_equals_one_larger_batch(tmp_path):
    # Every image has exactly 8 corrupted patches, so the mean of micro-batch losses is the batch loss.
    common = {"optim.optimizer": "sgd", "optim.momentum": 0.0, "optim.grad_clip_norm": None, "optim.lr": 0.5,
              "optim.schedule": "constant", "optim.weight_decay": 0.0, "train.steps": 2,
              "train.global_batch_size": 16, "data.eval_split": None}
    whole = train(mpp_recipe(tmp_path, "whole", **common, **{"train.micro_batch_size": 16}))
    parts = train(mpp_recipe(tmp_path, "parts", **common, **{"train.micro_batch_size": 4}))
    assert [loss for _, loss in parts.losses] == pytest.approx([loss for _, loss in whole.losses], rel=1e-5)
    a, b = final_weights(whole.run_dir), final_weights(parts.run_dir)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-6, rtol=1e-5)
    assert not torch.equal(a["vit.embeddings.mask_token"], torch.zeros_like(a["vit.embeddings.mask_token"]))


def test_finetune_and_fewshot_start_from_an_mpp_smoke_run(tmp_path, monkeypatch):
    from hf_vit_repro.evaluation import fewshot_evaluate, load_checkpoint

    monkeypatch.chdir(tmp_path)
    common = ["smoke=true", "run.progress_bar=false", "run.trackers=[]"]
    pre = training.run_recipe(load_recipe(ROOT / "recipes" / "pretrain_mpp_vit_b16_imagenet21k.yaml",
                                          common + [f"run.output_dir={tmp_path / 'mpp'}"]))
    assert pre.eval_accuracy is not None
    recipe = load_recipe(ROOT / "recipes" / "finetune_vtab.yaml", common + [
        f"run.output_dir={tmp_path / 'ft'}", f"model.init_from={tmp_path / 'mpp'}", "model.variant=null"])
    model = training.build_model(recipe, 10)
    encoder = final_weights(tmp_path / "mpp")
    assert not any(name.startswith("mpp_head") or "mask_token" in name for name in model.state_dict())
    torch.testing.assert_close(model.vit.layers[0].mlp.fc1.weight, encoder["vit.layers.0.mlp.fc1.weight"])
    assert model.classifier.out_features == 10 and model.classifier.weight.abs().sum() == 0
    result = training.run_recipe(recipe)
    assert result.steps == 3 and 0.0 <= result.eval_accuracy <= 1.0
    assert runs.read_json(tmp_path / "ft" / runs.TRAIN_SUMMARY)["objective"] == "classification"

    loaded = load_checkpoint(tmp_path / "mpp", device="cpu")  # the encoder of the MPP run, pre-logits = class token
    shots = fewshot_evaluate(loaded.model, load_task("digits", "train"), load_task("digits", "test"), shots=(2,),
                             seeds=(0,), mean=loaded.mean, std=loaded.std, progress=False)
    assert 0.0 <= shots["2"]["mean"] <= 1.0


# ------------------------------------------------------------------ bad recipes


@pytest.mark.parametrize("changes, message", [
    ({"mode": "finetune"}, "mode: pretrain"),
    ({"model.representation_size": 16}, "representation_size: null"),
    ({"model.variant": "R50+ViT-B/16", "model.config": {}}, "plain ViTs only"),
    ({"train.label_smoothing": 0.1}, "own loss"),
    ({"optim.lr_sweep": [0.01, 0.1], "data.val_fraction": 0.2}, "lr_sweep"),
    ({"model.config": {**TINY, "mpp_image_mean": [0.5, 0.5, 0.5]}}, "data.mean"),
    ({"train.objective": "mim"}, "masked_patch_prediction"),
    ({"model.variant": "BiT-R50x1", "model.config": {}}, "BiT ResNet, which has no patch tokens"),
    ({"train.mixup_alpha": 0.1}, "mixes no labels"),
])
def test_recipes_that_cannot_train_mpp_are_refused(tmp_path, changes, message):
    with pytest.raises(RecipeError, match=message):
        mpp_recipe(tmp_path, **changes)


def test_early_stopping_on_the_l2_target_is_refused_before_training(tmp_path):
    """The l2_patch target reports a loss and no accuracy, which early stopping would choose by."""
    recipe = mpp_recipe(tmp_path, **{"model.config": {**TINY, "mpp_target": "l2_patch"}, "data.holdout": True,
                                     "data.val_fraction": 0.25, "train.eval_every": 2,
                                     "train.early_stopping_patience": 2})
    with pytest.raises(RecipeError, match="masked_patch_accuracy, which this model's target \\(l2_patch\\)"):
        train(recipe)
    assert not recipe.output_dir.exists()


def test_bad_mpp_config_values_fail_before_training(tmp_path):
    recipe = mpp_recipe(tmp_path, **{"model.config": {**TINY, "mpp_corruption_rate": 1.5}})
    with pytest.raises(RecipeError, match="mpp_corruption_rate"):
        train(recipe)
    assert not recipe.output_dir.exists()
