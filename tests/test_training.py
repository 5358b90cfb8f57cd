"""The training loop: optimizer groups, schedules, gradient accumulation, checkpoints and exact
resume, the run folder, NaN handling, the learning-rate sweep and bad input. Tiny models on
scikit-learn's digits (offline), a few steps each."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vit_repro import runs, training
from hf_vit_repro.training import Recipe, RecipeError, TrainingDivergedError, load_recipe, train

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)


def tiny_recipe(tmp_path, name="run", **changes) -> Recipe:
    """A 4-step pretraining run of the DESIGN.md tiny model at 16 px on 32 digits."""
    recipe = Recipe.from_dict({
        "name": "tiny",
        "mode": "pretrain",
        "model": {"variant": None, "image_size": 16, "config": dict(TINY)},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 32, "max_eval_examples": 16},
        "optim": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1},
        "train": {"steps": 4, "global_batch_size": 8, "micro_batch_size": 8},
        "run": {"output_dir": str(tmp_path / name), "checkpoint_every": 2, "progress_bar": False, "trackers": []},
    })
    return recipe.replace(**changes) if changes else recipe


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / runs.FINAL_DIR / "model.safetensors"))


def logged_losses(run_dir) -> list[float]:
    lines = (run_dir / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


# ------------------------------------------------------------------ optimizer and schedules


def test_parameter_groups_skip_decay_exactly_for_no_weight_decay(tmp_path):
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    config = ViTReproConfig(image_size=16, num_labels=3, representation_size=8, **{**TINY, "patch_size": 2},
                            backbone_config={"depths": [1], "hidden_sizes": [64], "embedding_size": 32, "num_groups": 8})
    model = ViTReproForImageClassification(config)
    decay, no_decay = training.parameter_groups(model, 0.3)
    assert set(no_decay["names"]) == model.no_weight_decay() and no_decay["weight_decay"] == 0.0
    assert set(decay["names"]) == {n for n, _ in model.named_parameters()} - model.no_weight_decay()
    assert decay["weight_decay"] == 0.3 and "vit.embeddings.position_embeddings" in no_decay["names"]

    # AdamW's decoupled decay, scaled by the learning rate: with zero gradients the Adam update is
    # 0, so each decayed parameter shrinks by exactly (1 - lr * wd) and the others do not move.
    recipe = tiny_recipe(tmp_path)
    optimizer = training.build_optimizer(model, recipe.optim, lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, param in model.named_parameters():
        factor = 1.0 if name in model.no_weight_decay() else 1 - 0.5 * 0.1
        torch.testing.assert_close(param.detach(), before[name] * factor)


@pytest.mark.parametrize("option", ["recompute_mlp_activation", "gradient_checkpointing"])
def test_model_memory_options_reach_the_model(tmp_path, option):
    recipe = tiny_recipe(tmp_path)
    plain = training.build_model(recipe, num_classes=10)
    model = training.build_model(recipe.replace(**{f"model.{option}": True}), num_classes=10)
    flags = {
        "recompute_mlp_activation": lambda m: [layer.mlp.recompute_activation for layer in m.vit.layers],
        "gradient_checkpointing": lambda m: [layer.gradient_checkpointing for layer in m.vit.layers],
    }[option]
    assert flags(model) == [True, True] and flags(plain) == [False, False]


def test_stochastic_depth_reaches_the_model_from_scratch_and_from_a_checkpoint(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"model.drop_path_rate": 0.2})
    model = training.build_model(recipe, num_classes=10)
    assert model.config.drop_path_rate == 0.2 and [layer.drop_path_rate for layer in model.vit.layers] == [0.0, 0.2]
    training.build_model(tiny_recipe(tmp_path), num_classes=10).save_pretrained(tmp_path / "pretrained")  # rate 0
    finetune = recipe.replace(**{"mode": "finetune", "model.init_from": str(tmp_path / "pretrained")})
    tuned = training.build_model(finetune, num_classes=10)
    assert [layer.drop_path_rate for layer in tuned.vit.layers] == [0.0, 0.2]
    for changes, message in (({"model.drop_path_rate": 1.0}, "`model.drop_path_rate` must be a probability in \\[0, 1\\)"),
                             ({"model.config": {**TINY, "drop_path_rate": 0.1}}, "use `model.drop_path_rate`")):
        with pytest.raises(RecipeError, match=message):
            tiny_recipe(tmp_path, **changes)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_optimizer_is_the_default_and_updates_like_the_loop(tmp_path, optimizer):
    """The single-kernel optimizer (`optim.fused`, on by default) takes the same steps as torch's
    per-parameter loop, to float32 rounding."""
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    recipe = tiny_recipe(tmp_path)
    optim = recipe.optim.__class__(**{**vars(recipe.optim), "optimizer": optimizer})
    torch.manual_seed(0)
    models = [ViTReproForImageClassification(ViTReproConfig(image_size=16, num_labels=3, **TINY)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = {n: p.detach().clone() for n, p in models[0].named_parameters()}
    fused = training.build_optimizer(models[0], optim)
    loop = training.build_optimizer(models[1], optim.__class__(**{**vars(optim), "fused": False}))
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=generator) for p in models[0].parameters()]
        for model, optimizer_ in ((models[0], fused), (models[1], loop)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer_.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    moved = [not torch.equal(a, initial[n]) for n, a in models[0].named_parameters()]
    assert all(moved)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedule_matches_formula_at_warmup_end_and_last_step(schedule):
    base, warmup, total = 0.2, 10, 50
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=base)
    scheduler = training.build_scheduler(optimizer, total, warmup, schedule)
    used = []  # the learning rate each update t = 1..total is applied with
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert used[0] == pytest.approx(base / warmup)  # linear warm-up from base / warmup
    assert used[warmup - 1] == pytest.approx(base)  # exactly the base rate at the end of warm-up
    t = 30  # a step in the decay: progress = (30 - 10) / 40 = 0.5
    expected_mid = {"linear": base * 0.5, "cosine": base * 0.5 * (1 + math.cos(math.pi * 0.5)), "constant": base}
    assert used[t - 1] == pytest.approx(expected_mid[schedule])
    assert used[-1] == pytest.approx({"linear": 0.0, "cosine": 0.0, "constant": base}[schedule], abs=1e-12)


def test_step_schedule_is_bit_hyperrule():
    """BiT-HyperRule (BiT Sec. 3.3): linear warm-up, then the base rate divided by 10 after 30%, 60%
    and 90% of the updates."""
    base, warmup, total = 0.003, 10, 100
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=base)
    scheduler = training.build_scheduler(optimizer, total, warmup, "step")
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [base * min(1.0, t / warmup) * 0.1 ** ((t > 30) + (t > 60) + (t > 90)) for t in range(1, total + 1)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert used[29] == pytest.approx(base) and used[30] == pytest.approx(base / 10) and used[-1] == pytest.approx(base / 1000)


def test_step_bit_code_schedule_follows_bit_released_get_lr():
    """BiT's released training loop, written out for 1000 images: steps s = 0, 1, ... until
    get_lr(s) is None, with supports [100, 200, 300, 400, 500]: s < 100 -> base * s / 100, else base
    divided by 10 for every later support strictly below s."""
    base, supports = 0.003, [100, 200, 300, 400, 500]

    def bit_get_lr(step):
        if step < supports[0]:
            return base * step / supports[0]
        if step >= supports[-1]:
            return None
        return base / 10 ** sum(x < step for x in supports[1:])

    reference, step = [], 0
    while (lr := bit_get_lr(step)) is not None:
        reference.append(lr)
        step += 1
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = training.build_scheduler(optimizer, 500, 100, "step_bit_code")
    used = []
    for _ in range(500):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert len(reference) == 500 and used == pytest.approx(reference, rel=1e-12)
    # 40/60/80%, not the paper text's 30/60/90% (the `step` schedule)
    assert used[0] == 0.0 and used[200] == pytest.approx(base) and used[201] == pytest.approx(base / 10)
    assert used[401] == pytest.approx(base / 1000)
    assert training.lr_multiplier(152, 500, 100, "step") == pytest.approx(0.1)
    assert training.lr_multiplier(152, 500, 100, "step_bit_code") == pytest.approx(1.0)


def test_mixup_mixes_images_and_losses_as_the_formula_says():
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(6, 3, 4, 4, generator=generator), torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, other, lam = training.mixup(pixels, labels, 0.1, (0, 7, 1, 0))
    perm = other  # labels are their own row indices here
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, lam * pixels + (1 - lam) * pixels[perm])
    again = training.mixup(pixels, labels, 0.1, (0, 7, 1, 0))
    assert again[2] == lam and torch.equal(again[1], other)  # the key decides everything (exact resume)
    assert training.mixup(pixels, labels, 0.1, (0, 7, 2, 0))[2] == lam  # one lambda per update
    assert training.mixup(pixels, labels, 0.1, (0, 8, 1, 0))[2] != lam
    logits = torch.randn(6, 6, generator=generator)
    loss = training.classification_loss(logits, labels, "softmax_xent", 0.1, mixed=(other, lam))
    f = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, lam * f(logits, labels, label_smoothing=0.1) + (1 - lam) * f(logits, other, label_smoothing=0.1))


def test_ema_is_polyak_average():
    model = torch.nn.Linear(2, 1)
    ema = training.EMA(model, 0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.9 * start + 0.1 * (start + 1.0))
    ema.copy_to(model)
    torch.testing.assert_close(model.weight.detach(), 0.9 * start + 0.1 * (start + 1.0))


class _Scalar(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(value, dtype=torch.float64))


def _ema_after(correction, decay, start, values):
    model = _Scalar(start)
    ema = training.EMA(model, decay, correction)
    for value in values:
        with torch.no_grad():
            model.w.fill_(value)
        ema.update(model)
    return ema


def test_ema_debias_matches_zero_start_average_divided_by_one_minus_d_to_the_t():
    d, start, values = 0.9, 5.0, [1.0, 2.0, 4.0]
    # by hand: z_t = d z_{t-1} + (1 - d) p_t from z_0 = 0, then z_t / (1 - d^t)
    z1 = 0.1 * 1.0                      # 0.1
    z2 = 0.9 * z1 + 0.1 * 2.0           # 0.29
    z3 = 0.9 * z2 + 0.1 * 4.0           # 0.661
    assert _ema_after("debias", d, start, values[:1]).shadow["w"].item() == pytest.approx(z1 / 0.1)  # = p_1: start ignored
    assert _ema_after("debias", d, start, values[:2]).shadow["w"].item() == pytest.approx(z2 / (1 - 0.81))
    ema = _ema_after("debias", d, start, values)
    assert ema.shadow["w"].item() == pytest.approx(0.661 / (1 - 0.729)) == pytest.approx(z3 / (1 - d**3))
    assert ema.updates == 3
    # without the correction the start value keeps weight d^t
    plain = _ema_after("none", d, start, values).shadow["w"].item()
    assert plain == pytest.approx(0.729 * 5.0 + 0.661)


def test_ema_warmup_uses_min_d_and_one_plus_n_over_ten_plus_n():
    d, start, values = 0.5, 5.0, [1.0, 2.0, 4.0]
    # by hand, n = updates before this one: d_1 = min(.5, 1/10) = .1, d_2 = min(.5, 2/11), d_3 = min(.5, 3/12) = .25
    e1 = 0.1 * 5.0 + 0.9 * 1.0
    e2 = (2 / 11) * e1 + (9 / 11) * 2.0
    e3 = 0.25 * e2 + 0.75 * 4.0
    assert _ema_after("warmup", d, start, values).shadow["w"].item() == pytest.approx(e3)
    # once (1 + n) / (10 + n) passes d, the factor is d
    ema = _ema_after("warmup", 0.5, start, values)
    assert ema.decay_at(20) == 0.5 and ema.decay_at(8) == pytest.approx(8 / 17)
    with pytest.raises(ValueError, match="debias"):
        training.EMA(_Scalar(0.0), 0.5, "bogus")


def test_ema_correction_is_a_recipe_choice(tmp_path):
    with pytest.raises(RecipeError, match="ema_correction"):
        tiny_recipe(tmp_path, **{"train.ema_decay": 0.9, "train.ema_correction": "adam"})


def test_losses_match_torch_references():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(training.classification_loss(logits, labels, "softmax_xent", 0.1),
                               torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))
    targets = torch.nn.functional.one_hot(labels, 4).float()
    expected = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits)))
    torch.testing.assert_close(training.classification_loss(logits, labels, "sigmoid_xent"), expected.sum(-1).mean())


# ------------------------------------------------------------------ the loop


def test_gradient_accumulation_equals_one_larger_batch(tmp_path):
    # Plain SGD without clipping: an update is lr x gradient, so a gradient k times off would show.
    common = {"optim.optimizer": "sgd", "optim.momentum": 0.0, "optim.grad_clip_norm": None, "optim.lr": 0.5,
              "optim.schedule": "constant",
              "optim.weight_decay": 0.0, "train.steps": 2, "train.global_batch_size": 16}
    whole = train(tiny_recipe(tmp_path, "whole", **common, **{"train.micro_batch_size": 16}))
    parts = train(tiny_recipe(tmp_path, "parts", **common, **{"train.micro_batch_size": 4}))
    assert [loss for _, loss in parts.losses] == pytest.approx([loss for _, loss in whole.losses], rel=1e-5)
    a, b = final_weights(whole.run_dir), final_weights(parts.run_dir)
    moved = 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-6, rtol=1e-5)
        moved += int(name.endswith("classifier.weight") and a[name].abs().sum() > 0)
    assert moved == 1  # the zero-initialised head did learn, so the comparison is not vacuous
    summary = runs.read_json(parts.run_dir / runs.TRAIN_SUMMARY)
    assert summary["gradient_accumulation_steps"] == 4 and summary["images_seen"] == 2 * 16


def test_run_folder_contents(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    result = train(tiny_recipe(tmp_path, **{"run.trackers": ["tensorboard"], "train.ema_decay": 0.5}))
    run_dir = result.run_dir
    assert (run_dir / runs.RECIPE).is_file() and load_recipe(run_dir / runs.RECIPE).to_dict() == \
        tiny_recipe(tmp_path, **{"run.trackers": ["tensorboard"], "train.ema_decay": 0.5}).to_dict()
    summary = runs.read_json(run_dir / runs.TRAIN_SUMMARY)
    for key in ("steps", "images_seen", "train_time_s", "hardware", "command", "final_train_loss"):
        assert key in summary
    assert summary["steps"] == 4 and summary["images_seen"] == 32
    assert summary["hardware"] == {"device": "cpu", "num_processes": 1, "mixed_precision": "no", "distributed_type": "NO",
                                   "num_nodes": 1, "sharding": None, "warnings": []}
    assert summary["final_train_loss"] == pytest.approx(logged_losses(run_dir)[-1])
    assert [p.name for p in training.list_checkpoints(run_dir)] == ["step_0000002", "step_0000004"]
    assert not list((run_dir / runs.CHECKPOINTS_DIR).glob(".*"))  # no temporary folders left
    assert list((run_dir / runs.LOGS_DIR).rglob("events.out.tfevents.*"))
    metrics = runs.read_json(runs.metrics_path(run_dir, "digits", "test"))
    assert metrics["num_images"] == 16 and 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    assert metrics["metrics"]["accuracy"] == pytest.approx(result.eval_accuracy)
    model = AutoModelForImageClassification.from_pretrained(run_dir / runs.FINAL_DIR)
    processor = AutoImageProcessor.from_pretrained(run_dir / runs.FINAL_DIR)
    assert processor.size == {"height": 16, "width": 16}
    # the metrics file names the processor published with the model, as pipeline() loads it
    assert (metrics["image_processor"]["class"], metrics["image_processor"]["backend"]) == (
        type(processor).__name__, processor.backend) == ("ViTImageProcessor", "torchvision")
    assert (run_dir / runs.FINAL_DIR / "modeling_vit_repro.py").is_file()
    # With EMA the saved weights are the average, not the last iterate.
    last = load_file(str(run_dir / runs.CHECKPOINTS_DIR / "step_0000004" / "model.safetensors"))
    final = model.state_dict()
    assert any(not torch.equal(last[k], final[k]) for k in last if last[k].dtype.is_floating_point)


class Killed(Exception):
    pass


def kill_at_step_3(recipe) -> None:
    """Train `recipe` until step 3 starts (after the step-2 checkpoint, before the step-4 one), then
    stop it as a crash would."""
    def kill(state):
        if state.step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(recipe, callbacks=[kill])


def test_kill_and_resume_ends_with_the_same_weights(tmp_path):
    # Augmentation and dropout on: exact resume needs the data position, augmentation seeds and RNG.
    changes = {"data.augmentation": "finetune", "model.dropout": 0.1, "train.steps": 5, "train.micro_batch_size": 4,
               "data.max_train_examples": 20}  # 5 micro-batches per epoch, 2 per step: epochs straddle steps
    reference = train(tiny_recipe(tmp_path, "uninterrupted", **changes))
    interrupted = tiny_recipe(tmp_path, "interrupted", **changes)
    kill_at_step_3(interrupted)
    assert [p.name for p in training.list_checkpoints(interrupted.output_dir)] == ["step_0000002"]
    assert not (interrupted.output_dir / runs.FINAL_DIR).exists()
    resumed = train(interrupted)  # run.resume defaults to "auto"
    assert resumed.losses[0][0] == 3 and resumed.steps == 5
    a, b = final_weights(reference.run_dir), final_weights(resumed.run_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [loss for _, loss in resumed.losses] == [loss for _, loss in reference.losses[2:]]


def test_kill_and_resume_keeps_the_bias_corrected_ema_bit_identical(tmp_path):
    # The EMA's update count is part of the checkpoint: the corrected decay d_t depends on it.
    changes = {"train.steps": 5, "train.ema_decay": 0.5, "train.ema_correction": "debias"}
    reference = train(tiny_recipe(tmp_path, "uninterrupted", **changes))
    interrupted = tiny_recipe(tmp_path, "interrupted", **changes)
    kill_at_step_3(interrupted)
    saved = [torch.load(f, weights_only=False) for f in
             (interrupted.output_dir / runs.CHECKPOINTS_DIR / "step_0000002").rglob("custom_checkpoint_*.pkl")]
    assert [(state["updates"], state["correction"]) for state in saved] == [(2, "debias")]
    resumed = train(interrupted)
    a, b = final_weights(reference.run_dir), final_weights(resumed.run_dir)
    for name in a:  # final/ holds the EMA weights
        assert torch.equal(a[name], b[name]), name
    plain = train(tiny_recipe(tmp_path, "plain", **{**changes, "train.ema_correction": "none"}))
    assert any(not torch.equal(a[k], v) for k, v in final_weights(plain.run_dir).items())  # the option matters


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = training.objectives.classification_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(training.objectives, "classification_loss", poisoned)
    recipe = tiny_recipe(tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*step_0000002"):
        train(recipe)
    assert [p.name for p in training.list_checkpoints(recipe.output_dir)] == ["step_0000002"]
    assert not (recipe.output_dir / runs.FINAL_DIR).exists()


def test_finetune_resamples_position_embeddings_and_attaches_zero_head(tmp_path):
    pretrained = train(tiny_recipe(tmp_path, "pre", **{"model.representation_size": 16, "train.steps": 2,
                                                       "data.eval_split": None}))
    recipe = tiny_recipe(tmp_path, "ft", **{"mode": "finetune", "model.init_from": str(pretrained.run_dir),
                                            "model.image_size": 32, "train.steps": 1, "optim.warmup_steps": 0})
    model = training.build_model(recipe, 10)
    source = final_weights(pretrained.run_dir)["vit.embeddings.position_embeddings"]
    assert model.config.image_size == 32 and model.config.representation_size is None
    assert model.vit.embeddings.position_embeddings.shape == (1, 1 + 16, 32)
    torch.testing.assert_close(model.vit.embeddings.position_embeddings[:, 0], source[:, 0])  # class token kept
    expected = torch.nn.functional.interpolate(
        source[:, 1:].reshape(1, 2, 2, 32).permute(0, 3, 1, 2), size=(4, 4), mode="bilinear", align_corners=True
    ).permute(0, 2, 3, 1).reshape(1, 16, 32)
    torch.testing.assert_close(model.vit.embeddings.position_embeddings[:, 1:], expected)
    assert model.classifier.weight.abs().sum() == 0 and model.classifier.out_features == 10
    assert train(recipe).steps == 1


def test_learning_rate_sweep_picks_best_on_holdout(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path, **{"mode": "finetune", "optim.lr_sweep": [0.001, 0.01], "data.val_fraction": 0.25,
                                      "train.steps": 1, "optim.warmup_steps": 0, "run.checkpoint_every": 0})
    scores = {0.001: 0.3, 0.01: 0.6}
    seen = []
    real_train = training.loop.train

    def fake_scores(member, **kwargs):
        result = real_train(member, **kwargs)
        seen.append((member.optim.lr, member.data.holdout, member.output_dir.name))
        if member.data.holdout:
            result.eval_accuracy = scores[member.optim.lr]
        return result

    monkeypatch.setattr(training.loop, "train", fake_scores)
    result = training.run_recipe(recipe)
    assert seen[:2] == [(0.001, True, "lr_0.001"), (0.01, True, "lr_0.01")]
    assert seen[2] == (0.01, False, "run")  # the final run: best rate, whole training split
    sweep = runs.read_json(recipe.output_dir / training.SWEEP)
    assert sweep["best_lr"] == 0.01 and sweep["accuracy_by_lr"] == {"0.001": 0.3, "0.01": 0.6}
    assert load_recipe(result.run_dir / runs.RECIPE).optim.lr == 0.01
    holdout = runs.read_json(runs.metrics_path(recipe.output_dir / "sweep" / "lr_0.01", "digits", "holdout"))
    assert holdout["num_images"] == 8  # 25% of the 32 training images, held out


def test_push_to_hub_option_publishes_the_finished_run_through_vit_repro_train(tmp_path, monkeypatch):
    """`run.push_to_hub`: `vit-repro train` hands the loop `hub.push_run`, called once the run has
    finished (final/ written); training never imports the hub itself (tests/test_layout.py)."""
    import hf_vit_repro.hub as hub
    from hf_vit_repro.cli import main

    calls = []
    monkeypatch.setattr(hub, "push_run", lambda run_dir, repo_id, **kw: calls.append(
        (Path(run_dir), repo_id, (Path(run_dir) / runs.FINAL_DIR / "model.safetensors").is_file())))
    recipe = tiny_recipe(tmp_path, **{"train.steps": 1, "optim.warmup_steps": 0, "run.push_to_hub": True,
                                      "run.hub_repo_id": "me/tiny"})
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml(), encoding="utf-8")
    assert main(["train", str(path)]) == 0
    assert calls == [(recipe.output_dir, "me/tiny", True)]
    # From Python the caller passes the publisher; without one the recipe is refused before training.
    published = []
    train(recipe.replace(**{"run.output_dir": str(tmp_path / "py")}), publish=lambda *args: published.append(args))
    assert published == [(tmp_path / "py", "me/tiny")] and len(calls) == 1
    with pytest.raises(RecipeError, match=r"needs a publisher.*publish=hf_vit_repro\.hub\.push_run"):
        train(recipe.replace(**{"run.output_dir": str(tmp_path / "none")}))
    assert not (tmp_path / "none").exists()
    with pytest.raises(RecipeError, match="hub_repo_id"):
        tiny_recipe(tmp_path, **{"run.push_to_hub": True})


# ------------------------------------------------------------------ bad input, before training


def test_unknown_recipe_key_is_named_with_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: {variant: ViT-B/16}\ntrain: {steps: 10}\n")
    with pytest.raises(RecipeError, match=r"unknown recipe key 'optim.lrr'.*Did you mean 'optim.lr'"):
        load_recipe(path, ["optim.lrr=0.1"])
    path.write_text("name: x\ntrain: {stepz: 10}\n")
    with pytest.raises(RecipeError, match=r"'train.stepz'.*'train.steps'"):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"`optim.lr` must be a number, got 'fast'"):
        load_recipe(_write(tmp_path, "name: x\ntrain: {steps: 3}\n"), ["lr=fast"])
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_yaml_11_no_is_accelerates_word_in_an_override_and_a_quoting_hint_in_a_file(tmp_path):
    """YAML 1.1 reads a bare `no` as false; `run.mixed_precision=no` (Accelerate's own spelling) must
    still mean "no", a boolean field still reads yes/off, and a recipe file's bare `no` says to quote it."""
    path = _write(tmp_path, "name: x\ntrain: {steps: 3}\noptim: {warmup_steps: 1}\n")
    recipe = load_recipe(path, ["run.mixed_precision=no", "run.progress_bar=off", "run.push_to_hub=no"])
    assert (recipe.run.mixed_precision, recipe.run.progress_bar, recipe.run.push_to_hub) == ("no", False, False)
    assert load_recipe(path, ["run.progress_bar=yes"]).run.progress_bar is True
    assert load_recipe(path, ["optim.lr=1e-3"]).optim.lr == 1e-3  # other values are still read as YAML
    with pytest.raises(RecipeError, match=r"must be true or false, got 'maybe'"):
        load_recipe(path, ["run.progress_bar=maybe"])
    with pytest.raises(RecipeError, match=r"`run.mixed_precision` must be a string, got False \(YAML reads.*quote it"):
        load_recipe(_write(tmp_path, "name: x\ntrain: {steps: 3}\noptim: {warmup_steps: 1}\nrun: {mixed_precision: no}\n"))


def _write(tmp_path, text):
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    return path


def test_cli_reports_bad_key_without_traceback(tmp_path, capsys):
    from hf_vit_repro.cli import main

    path = _write(tmp_path, "name: x\ntrain: {steps: 3}\noptim: {warmup_steps: 1}\n")
    assert main(["train", str(path), "optim.momentun=0.5"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'optim.momentun'" in err and "Traceback" not in err
    assert main(["train", str(path), "lr=0.1", "--print"]) == 0
    assert "lr: 0.1" in capsys.readouterr().out


def test_invalid_values_are_rejected(tmp_path):
    with pytest.raises(RecipeError, match="multiple of `train.micro_batch_size`"):
        tiny_recipe(tmp_path, **{"train.global_batch_size": 12})
    with pytest.raises(RecipeError, match="warmup_steps"):
        tiny_recipe(tmp_path, **{"optim.warmup_steps": 4})
    with pytest.raises(RecipeError, match="exactly one of `train.steps` and `train.epochs`"):
        tiny_recipe(tmp_path, **{"train.epochs": 2.0})
    with pytest.raises(RecipeError, match="Unknown ViT variant"):
        tiny_recipe(tmp_path, **{"model.variant": "ViT-X/16"})
    with pytest.raises(RecipeError, match="val_split"):
        tiny_recipe(tmp_path, **{"optim.lr_sweep": [0.1]})


def test_missing_dataset_fails_before_training(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"data.task": "cifar10", "data.data_dir": str(tmp_path / "no-such-copy")})
    with pytest.raises(RecipeError, match=r"data.task='cifar10'.*no-such-copy"):
        train(recipe)
    with pytest.raises(RecipeError, match="Did you mean"):
        train(tiny_recipe(tmp_path, **{"data.task": "digitz"}))
    assert not recipe.output_dir.exists()  # nothing was written


def test_checkpoint_from_another_architecture_fails_before_training(tmp_path):
    pretrained = train(tiny_recipe(tmp_path, "pre", **{"train.steps": 2, "data.eval_split": None}))
    # Fine-tuning: the recipe's variant does not match the checkpoint.
    wrong = tiny_recipe(tmp_path, "ft", **{"mode": "finetune", "model.variant": "ViT-B/16", "model.config": {},
                                           "model.init_from": str(pretrained.run_dir)})
    with pytest.raises(RecipeError, match="different architecture.*width 32, 2 layers.*width 768, 12 layers"):
        train(wrong)
    assert not wrong.output_dir.exists()
    # Resuming a checkpoint of a narrower model.
    checkpoint = training.latest_checkpoint(pretrained.run_dir)
    wider = tiny_recipe(tmp_path, "wide", **{"model.config": {**TINY, "hidden_size": 48}, "run.resume": str(checkpoint)})
    with pytest.raises(RecipeError, match="another architecture.*width 32.*width 48"):
        train(wider)
    assert not wider.output_dir.exists()
    # Resuming (resume=auto) a folder that holds a run of other hyperparameters.
    changed = tiny_recipe(tmp_path, "pre", **{"train.steps": 2, "data.eval_split": None, "optim.lr": 0.5})
    with pytest.raises(RecipeError, match=r"another recipe \(optim.lr: 0.001 -> 0.5\)"):
        train(changed)
    assert training.latest_checkpoint(changed.output_dir).name == "step_0000002"  # left as it was
    # A checkpoint of another model type (a transformers ViT) is pointed at `vit-repro convert`.
    from transformers import ViTConfig, ViTForImageClassification

    ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=4, intermediate_size=64)).save_pretrained(tmp_path / "hf")
    foreign = tiny_recipe(tmp_path, "ft2", **{"mode": "finetune", "model.init_from": str(tmp_path / "hf")})
    with pytest.raises(RecipeError, match="vit-repro convert"):
        train(foreign)


def test_resume_never_refuses_an_existing_run(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"train.steps": 2, "data.eval_split": None})
    train(recipe)
    with pytest.raises(RecipeError, match="already holds a run"):
        train(recipe.replace(**{"run.resume": "never"}))


def test_missing_init_from_checkpoint_fails_before_data_and_training(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"mode": "finetune", "model.init_from": str(tmp_path / "no-such-run"),
                                      "data.task": "cifar10", "data.data_dir": str(tmp_path / "no-data")})
    # The checkpoint is checked before the (here also missing) dataset is read.
    with pytest.raises(RecipeError, match="`model.init_from` .*no-such-run.* is not a local folder"):
        train(recipe)
    assert not recipe.output_dir.exists()


# ------------------------------------------------------------------ trackers and their init options


def test_tracker_kwargs_reach_the_trackers_init_and_bad_ones_are_one_clear_error(tmp_path, monkeypatch):
    """`run.tracker_kwargs` goes to Accelerate's `init_trackers(init_kwargs=...)`: TensorBoard's
    SummaryWriter gets `filename_suffix`, visible in the event file's name."""
    recipe = tiny_recipe(tmp_path, **{"run.trackers": ["tensorboard"],
                                      "run.tracker_kwargs": {"tensorboard": {"filename_suffix": ".vit-repro-test"}}})
    result = train(recipe)
    events = list((result.run_dir / runs.LOGS_DIR / "tiny").glob("events.out.tfevents.*"))  # the run's writer
    assert len(events) == 1 and events[0].name.endswith(".vit-repro-test")

    def refused(**changes):
        with pytest.raises(RecipeError) as info:
            tiny_recipe(tmp_path, name="bad", **changes).validate()
        return str(info.value)

    assert "`run.tracker_kwargs` has options for 'wandb', which is not in `run.trackers`" in refused(
        **{"run.trackers": ["tensorboard"], "run.tracker_kwargs": {"wandb": {"entity": "x"}}})
    assert "`run.tracker_kwargs.tensorboard` must be a mapping" in refused(
        **{"run.trackers": ["tensorboard"], "run.tracker_kwargs": {"tensorboard": 30}})
    assert "'tensorbord' is not an Accelerate tracker (did you mean 'tensorboard'?)" in refused(**{"run.trackers": ["tensorbord"]})
    from accelerate import tracking

    monkeypatch.setattr(tracking, "_available_trackers", [t for t in tracking._available_trackers if str(t) != "tensorboard"])
    assert "names 'tensorboard', which is not installed: `pip install tensorboard`" in refused(**{"run.trackers": ["tensorboard"]})
    monkeypatch.undo()
    # an option the tracker's init does not take: one line naming the field, not a TypeError from inside it
    with pytest.raises(RecipeError, match=r"`run.tracker_kwargs`: a tracker refused its options .*flush_every"):
        train(tiny_recipe(tmp_path, name="typo", **{"run.trackers": ["tensorboard"],
                                                      "run.tracker_kwargs": {"tensorboard": {"flush_every": 3}}}))


def test_trackio_logs_a_run_to_a_local_store(tmp_path):
    """`run.trackers: [trackio]` (the Hub's tracker, Accelerate's log_with="trackio") with its init
    options from `run.tracker_kwargs`, pointed at a local store by TRACKIO_DIR (no Space, no
    network): the store holds the run under the recipe's name as project, with the run name
    given, the recipe as config and the losses the step log has. trackio reads TRACKIO_DIR when
    imported, so the run is in a fresh process."""
    import os
    import subprocess
    import sys
    import textwrap

    store = tmp_path / "trackio-store"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.test_training import tiny_recipe
        from pathlib import Path
        from hf_vit_repro.training import train
        recipe = tiny_recipe(Path({str(tmp_path)!r}), **{{"run.trackers": ["trackio"], "run.log_every": 1,
            "run.tracker_kwargs": {{"trackio": {{"name": "tiny-b16", "auto_log_cpu": False, "auto_log_gpu": False}}}}}})
        result = train(recipe)
        from trackio.sqlite_storage import SQLiteStorage
        print("RESULT " + json.dumps({{
            "projects": SQLiteStorage.get_projects(), "runs": SQLiteStorage.get_runs("tiny"),
            "logs": SQLiteStorage.get_logs("tiny", "tiny-b16"), "config": SQLiteStorage.get_run_config("tiny", "tiny-b16"),
            "run_dir": str(result.run_dir)}}, default=str))
    """)
    env = {**os.environ, "TRACKIO_DIR": str(store), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["projects"] == ["tiny"] and out["runs"] == ["tiny-b16"]
    assert [p.name for p in store.iterdir() if p.suffix == ".db"] == ["tiny.db"]  # the local store, nothing else
    losses = [entry["train/loss"] for entry in out["logs"] if "train/loss" in entry]
    assert len(losses) == 4 and losses == pytest.approx(logged_losses(Path(out["run_dir"])), rel=1e-6)
    assert out["config"]["optim.lr"] == 1e-3 and out["config"]["train.steps"] == 4
