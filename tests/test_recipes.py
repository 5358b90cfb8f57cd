"""Every recipe in recipes/ parses into a valid Recipe, says in its header the command that runs
it, and its smoke version (`smoke=true`) trains a few steps on the CPU on local data."""

import re
from pathlib import Path

import pytest

from hf_vit_repro import runs, training
from hf_vit_repro.training import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
#: `vit-repro study` configs (recipes/studies/): they name training recipes, they are not one.
STUDY_CONFIGS = [p for p in RECIPES if re.search(r"^study:", p.read_text(), re.MULTILINE)]
TRAINING_RECIPES = [p for p in RECIPES if "accelerate" not in p.parts and p not in STUDY_CONFIGS]
LAUNCH_CONFIGS = [p for p in RECIPES if "accelerate" in p.parts]


def ids(paths):
    return [str(p.relative_to(ROOT / "recipes")) for p in paths]


def test_the_paper_settings_are_all_there():
    names = {p.stem for p in TRAINING_RECIPES}
    for model in ("vit_b16", "vit_l16", "r50_vit_b16"):
        for data in ("imagenet21k", "imagenet1k"):
            assert f"pretrain_{model}_{data}" in names
    for task in ("imagenet1k", "cifar10", "cifar100", "pets", "flowers102", "vtab"):
        assert f"finetune_{task}" in names
    assert {p.stem for p in LAUNCH_CONFIGS} == {"single_gpu", "multi_gpu", "fsdp", "multi_node"}


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=ids(TRAINING_RECIPES))
def test_recipe_parses_and_states_its_command(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem or recipe.name == f"demo_{path.stem}"
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    relative = str(path.relative_to(ROOT))
    run = [line for line in header if line.startswith("# Run:")]
    assert run and relative in run[0] and re.search(r"(vit-repro train|-m hf_vit_repro train)", run[0])
    assert any(line.startswith("# Smoke:") and relative in line and "smoke=true" in line for line in header)


def test_recipes_hold_the_paper_settings():
    pre = load_recipe(ROOT / "recipes" / "pretrain_vit_b16_imagenet21k.yaml")
    assert (pre.optim.optimizer, pre.optim.betas, pre.optim.warmup_steps, pre.optim.grad_clip_norm) == \
        ("adamw", [0.9, 0.999], 10000, 1.0)
    assert (pre.train.global_batch_size, pre.model.image_size, pre.model.representation_size) == (4096, 224, 768)
    assert (pre.optim.lr, pre.optim.weight_decay, pre.optim.schedule, pre.model.dropout) == (1e-3, 0.03, "linear", 0.1)
    i1k = load_recipe(ROOT / "recipes" / "pretrain_vit_l16_imagenet1k.yaml")
    assert (i1k.optim.lr, i1k.optim.weight_decay, i1k.optim.schedule, i1k.train.epochs) == (3e-3, 0.3, "cosine", 300)
    assert load_recipe(ROOT / "recipes" / "pretrain_r50_vit_b16_imagenet21k.yaml").model.variant == "R50+ViT-B/16"
    steps = {"imagenet1k": 20000, "cifar10": 10000, "cifar100": 10000, "pets": 500, "flowers102": 500, "vtab": 2500}
    for task, n in steps.items():
        ft = load_recipe(ROOT / "recipes" / f"finetune_{task}.yaml")
        assert (ft.mode, ft.optim.optimizer, ft.optim.momentum, ft.optim.weight_decay) == ("finetune", "sgd", 0.9, 0.0)
        assert (ft.train.steps, ft.train.global_batch_size, ft.model.image_size, ft.optim.schedule) == \
            (n, 512, 384, "cosine")
        assert ft.model.representation_size is None and ft.optim.grad_clip_norm == 1.0
        if task == "vtab":
            assert ft.optim.lr == 0.01 and not ft.optim.lr_sweep and ft.data.train_split == "train800val200"
        else:
            assert ft.optim.lr_sweep == [0.001, 0.003, 0.01, 0.03] and ft.data.val_fraction > 0


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=ids(TRAINING_RECIPES))
def test_smoke_version_trains_a_few_steps_on_cpu(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative init_from paths of the recipes do not exist here
    recipe = load_recipe(path, ["smoke=true", f"run.output_dir={tmp_path / 'run'}", "run.progress_bar=false",
                                "run.trackers=[]"])
    assert recipe.run.smoke and recipe.data.task == "digits" and recipe.model.image_size == 32
    assert recipe.train.steps == 3 and recipe.run.mixed_precision == "no"
    result = training.run_recipe(recipe)
    assert result.steps == 3 and result.final_train_loss is not None and result.eval_accuracy is not None
    summary = runs.read_json(tmp_path / "run" / runs.TRAIN_SUMMARY)
    assert summary["gradient_accumulation_steps"] == 2  # global batch 8 from micro-batches of 4
    if recipe.optim.lr_sweep:
        assert runs.read_json(tmp_path / "run" / training.SWEEP)["best_lr"] in recipe.optim.lr_sweep
    hybrid = "+" in (recipe.model.variant or "") or "backbone_config" in recipe.model.config
    config = runs.read_json(tmp_path / "run" / runs.FINAL_DIR / "config.json")
    assert (config.get("backbone_config") is not None) == hybrid  # a hybrid recipe smokes a hybrid


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=ids(LAUNCH_CONFIGS))
def test_accelerate_launch_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision == "bf16"
    assert "-m hf_vit_repro train" in path.read_text()
    if path.stem == "fsdp":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "ViTReproLayer"
