"""Layer-wise learning-rate decay (`optim.layer_decay`, BEiT / MAE fine-tuning): each parameter's
group rate against the formula lr * decay ** (L + 1 - i), written out by name here, the schedule
keeping the ratios, decay 1 giving today's optimizer, a LoRA-wrapped model and bad values."""

import re

import pytest
import torch
from transformers import BitConfig, BitForImageClassification

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification
from hf_vit_repro.training import (Recipe, RecipeError, build_optimizer, build_scheduler, layer_decay_groups,
                                   lr_multiplier)
from hf_vit_repro.training.peft_methods import apply_method, config_updates

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, patch_size=8)
LR, DECAY = 0.1, 0.5


def tiny_vit(**changes):
    torch.manual_seed(0)
    config = ViTReproConfig(image_size=32, num_labels=3, representation_size=16, **{**TINY, **changes})
    return ViTReproForImageClassification(config)


def optim_recipe(**changes):
    optim = {"optimizer": "adamw", "lr": LR, "weight_decay": 0.05, "warmup_steps": 2, **changes}
    return Recipe.from_dict({
        "name": "llrd", "mode": "finetune", "model": {"variant": None, "image_size": 32, "config": dict(TINY)},
        "optim": optim, "train": {"steps": 10, "global_batch_size": 8, "micro_batch_size": 8},
    }).optim


def expected_layer(name: str, num_layers: int = 3) -> int:
    """The rule written by name (independent of the identity lookup in `optim.layer_index`)."""
    name = name.removeprefix("base_model.model.")
    if name.startswith("vit.embeddings."):
        return 0
    block = re.match(r"vit\.layers\.(\d+)\.", name)
    return int(block.group(1)) + 1 if block else num_layers + 1


def group_lr_by_name(model, optimizer) -> dict[str, float]:
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_each_parameters_group_lr_follows_the_formula_and_weight_decay_exemptions_stay():
    model = tiny_vit()
    optimizer = build_optimizer(model, optim_recipe(layer_decay=DECAY))
    lrs = group_lr_by_name(model, optimizer)
    assert set(lrs) == {n for n, _ in model.named_parameters()}
    for name, lr in lrs.items():
        assert lr == pytest.approx(LR * DECAY ** (3 + 1 - expected_layer(name))), name
    # the four kinds of layer are all there: embeddings at lr/16, blocks at lr/8, lr/4, lr/2, head at lr
    assert lrs["vit.embeddings.patch_embeddings.projection.weight"] == pytest.approx(LR / 16)
    assert lrs["vit.embeddings.cls_token"] == pytest.approx(LR / 16)
    assert lrs["vit.embeddings.position_embeddings"] == pytest.approx(LR / 16)
    assert lrs["vit.layers.0.attention.qkv.weight"] == pytest.approx(LR / 8)
    assert lrs["vit.layers.2.layernorm_before.weight"] == pytest.approx(LR / 2)
    assert lrs["vit.layernorm.weight"] == lrs["vit.pooler.dense.weight"] == lrs["classifier.weight"] == LR
    skip = model.no_weight_decay()
    wd = {n: g["weight_decay"] for g, names in zip(optimizer.param_groups, (
        g["names"] for g in layer_decay_groups(model, 0.05, DECAY, LR))) for n in names}
    assert wd == {n: 0.0 if n in skip else 0.05 for n, _ in model.named_parameters()}


def test_hybrid_cnn_and_vpt_prompts_are_layer_zero():
    hybrid = ViTReproForImageClassification(ViTReproConfig(
        image_size=32, num_labels=3, **{**TINY, "patch_size": 2},
        backbone_config={"depths": [1], "hidden_sizes": [32], "embedding_size": 16, "num_groups": 8}))
    lrs = group_lr_by_name(hybrid, build_optimizer(hybrid, optim_recipe(layer_decay=DECAY)))
    cnn = [n for n in lrs if ".patch_embeddings.backbone." in n]
    assert cnn and all(lrs[n] == pytest.approx(LR / 16) for n in cnn)

    vpt = apply_method(tiny_vit(**config_updates("vpt-deep", {"tokens": 2})), "vpt-deep", {"tokens": 2})
    lrs = group_lr_by_name(vpt, build_optimizer(vpt, optim_recipe(layer_decay=DECAY)))
    assert set(lrs) == {"vit.embeddings.prompt_embeddings", "classifier.weight", "classifier.bias"}
    assert lrs["vit.embeddings.prompt_embeddings"] == pytest.approx(LR / 16) and lrs["classifier.bias"] == LR


def test_the_schedule_keeps_the_ratios_between_layers():
    model = tiny_vit()
    optimizer = build_optimizer(model, optim_recipe(layer_decay=DECAY))
    built = [g["lr"] for g in optimizer.param_groups]  # the per-layer base rates
    assert len(set(round(lr / LR, 9) for lr in built)) == 5  # embeddings, 3 blocks, head: all different
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=2, schedule="cosine")
    assert [g["initial_lr"] for g in optimizer.param_groups] == built
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for step in range(1, 8):
        optimizer.step()
        scheduler.step()  # the rate for update step + 1
        factor = lr_multiplier(step + 1, 10, 2, "cosine")
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr * factor for lr in built], rel=1e-12)
    assert 0.0 < factor < 0.5  # well past warm-up, on the cosine's way down


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_decay_one_and_null_give_todays_optimizer(optimizer_name):
    model = tiny_vit()
    today = build_optimizer(model, optim_recipe(optimizer=optimizer_name))
    for decay in (1.0, None):
        other = build_optimizer(model, optim_recipe(optimizer=optimizer_name, layer_decay=decay))
        assert len(other.param_groups) == len(today.param_groups) == 2
        for a, b in zip(today.param_groups, other.param_groups):
            assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
            assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}


def test_lora_model_gets_the_per_layer_rates_under_peft_names():
    model = apply_method(tiny_vit(), "lora")
    optimizer = build_optimizer(model, optim_recipe(layer_decay=DECAY))
    lrs = group_lr_by_name(model, optimizer)
    lora = [n for n in lrs if ".lora_" in n]
    assert lora and all(n.startswith("base_model.model.vit.layers.") for n in lora)
    assert {expected_layer(n) for n in lora} == {1, 2, 3}
    for name, lr in lrs.items():
        assert lr == pytest.approx(LR * DECAY ** (3 + 1 - expected_layer(name))), name
    head = [n for n in lrs if ".modules_to_save." in n]
    assert head and all(lrs[n] == LR for n in head)


def test_bad_values_are_refused_in_one_line():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(RecipeError, match=re.escape(f"`optim.layer_decay` must lie in (0, 1]")) as err:
            optim_recipe(layer_decay=bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
    bit = BitForImageClassification(BitConfig(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16,
                                              num_groups=8, num_labels=3))
    with pytest.raises(RecipeError, match="`optim.layer_decay` needs a ViT.*BitForImageClassification.*null"):
        build_optimizer(bit, optim_recipe(layer_decay=0.75))
    build_optimizer(bit, optim_recipe(layer_decay=1.0))  # off: BiT trains as today


def test_a_run_with_layer_decay_logs_the_heads_rate_and_resumes(tmp_path):
    """Through the loop: the logged rate is the base schedule's (the head's group), and a run
    stopped after 2 steps resumes its per-layer optimizer groups to the same weights."""
    from safetensors.torch import load_file

    from hf_vit_repro import runs
    from hf_vit_repro.training import train

    def recipe(name, **changes):
        return Recipe.from_dict({
            "name": "llrd", "mode": "pretrain",
            "model": {"variant": None, "image_size": 16, "config": {**TINY, "num_hidden_layers": 2}},
            "data": {"task": "digits", "augmentation": "none", "max_train_examples": 32, "max_eval_examples": 16},
            "optim": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1, "layer_decay": 0.6},
            "train": {"steps": 4, "global_batch_size": 8, "micro_batch_size": 8},
            "run": {"output_dir": str(tmp_path / name), "checkpoint_every": 2, "progress_bar": False,
                    "trackers": []},
        }).replace(**changes)

    seen = []
    whole = train(recipe("whole"), callbacks=[lambda state: seen.append((state.step, state.lr))])
    assert seen == [(s, pytest.approx(1e-3 * lr_multiplier(s, 4, 1, "cosine"))) for s in range(1, 5)]
    train(recipe("split", **{"run.stop_after": 2}))
    split = train(recipe("split"))
    a, b = (load_file(str(r.run_dir / runs.FINAL_DIR / "model.safetensors")) for r in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
