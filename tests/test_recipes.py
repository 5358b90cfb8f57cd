"""Every recipe in recipes/ parses into a valid Recipe, says in its header the command that runs
it, and its smoke version (`smoke=true`) trains a few steps on the CPU on local data."""

import re
from pathlib import Path

import pytest

from hf_vit_repro import paper_results, runs, training
from hf_vit_repro.paper_results import pretraining_name
from hf_vit_repro.training import load_recipe
from hf_vit_repro.variants import variant_names

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
    for task in ("imagenet1k", "cifar10", "cifar100", "pets", "flowers102", "vtab", "imagenet1k_vit_l16_512",
                 "imagenet1k_vit_h14_518"):
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


# The demo and the studies are the paper in miniature (digits at 16-32 px): no row of its tables applies.
PAPER_RECIPES = [p for p in TRAINING_RECIPES if "demo" not in p.parts and "studies" not in p.parts]
# The paper's text (Sec. 4.1, "Training & Fine-tuning"): Table 2's ImageNet numbers were fine-tuned
# at 512 px (ViT-L/16) and 518 px (ViT-H/14), with Polyak averaging of factor 0.9999.
TABLE2_IMAGENET_RESOLUTION = {"ViT-L/16": 512, "ViT-H/14": 518}
TABLE2_POLYAK = 0.9999


def header_fields(path: Path, key: str) -> list[str] | None:
    """The comma-separated fields of a recipe's `# <key>: ...` header line, or None."""
    line = next((line for line in path.read_text().splitlines() if line.startswith(f"# {key}:")), None)
    return None if line is None else [field.strip() for field in line.split(":", 1)[1].split(",")]


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=ids(PAPER_RECIPES))
def test_recipe_matches_its_row_of_table_3_or_4(path):
    """Every paper recipe names its row of Table 3 (pretraining) or Table 4 (fine-tuning) in a
    `# paper:` header line, and holds that row's values, read through hf_vit_repro.paper_results
    from the package's copy of the paper's tables."""
    recipe = load_recipe(path)
    fields = header_fields(path, "paper")
    assert fields, f"{path.name} names no row of the paper (a '# paper: Table N, ...' header line)"
    if fields[0].startswith("none"):  # a setting outside Tables 3 and 4 (the BiT recipes, tested below)
        assert len(fields[0]) > len("none: "), "say why no row applies"
        return
    o, t, m, d = recipe.optim, recipe.train, recipe.model, recipe.data
    if fields[0] == "Appendix B.1.2":
        # Masked patch prediction: the settings are in the paper's text (hf_vit_repro/paper_results/notes.md):
        # 50% corrupted, 80/10/10, 3-bit mean colour; Adam, lr 2e-4, 10k warm-up, cosine, batch 4096, 1M steps.
        assert (recipe.mode, t.objective, m.variant, m.image_size) == ("pretrain", "masked_patch_prediction",
                                                                      "ViT-B/16", 224)
        assert (o.optimizer, o.betas, o.lr, o.warmup_steps, o.schedule) == ("adamw", [0.9, 0.999], 2e-4, 10000,
                                                                            "cosine")
        assert (t.global_batch_size, t.steps, t.epochs) == (4096, 1_000_000, None)
        assert (m.config["mpp_corruption_rate"], m.config["mpp_corruption_split"], m.config["mpp_target"]) == \
            (0.5, [0.8, 0.1, 0.1], "mean_color_3bit")
        assert o.grad_clip_norm is None and pretraining_name(d.task) == "ImageNet-21k"  # clipping: ImageNet only
    elif fields[0] == "Table 3":
        row = paper_results.pretrain_hparams(fields[1], fields[2])
        assert row is not None, fields
        assert recipe.mode == "pretrain" and pretraining_name(d.task) == row["dataset"]
        assert (o.optimizer, o.betas) == ("adamw", [0.9, 0.999]) and "beta1=0.9, beta2=0.999" in row["optimizer"]
        assert t.epochs in row["epochs"] and t.steps is None
        assert (o.lr, o.schedule, o.weight_decay, m.dropout) == (row["base_lr"], row["lr_decay"], row["weight_decay"],
                                                                 row["dropout"])
        assert (t.global_batch_size, o.warmup_steps, m.image_size) == (row["batch_size"], row["lr_warmup_steps"],
                                                                       row["training_resolution"])
        assert o.grad_clip_norm == row["grad_clip_global_norm"]  # 1 on ImageNet only (Table 3's caption)
    else:
        assert fields[0] == "Table 4", fields
        row = paper_results.finetune_hparams(fields[1])
        assert row is not None, fields
        assert recipe.mode == "finetune" and (o.optimizer, o.momentum) == ("sgd", 0.9) and row["optimizer"] == "SGD, momentum 0.9"
        assert (t.steps, o.schedule, t.global_batch_size) == (row["steps"], row["lr_decay"], row["batch_size"])
        assert (o.weight_decay, o.grad_clip_norm) == (row["weight_decay"], row["grad_clip_global_norm"])
        if row["row"] == "VTAB (19 tasks)":  # one setting, no sweep, all 1000 images
            assert [o.lr] == row["base_lr_sweep"] and not o.lr_sweep and d.train_split == "train800val200"
            assert d.task.startswith("vtab/")
        else:
            assert o.lr_sweep == row["base_lr_sweep"] and d.val_fraction == row["dev_fraction"]
            assert paper_results.benchmark_name(d.task) == paper_results.benchmark_name(row["row"])
        if "Table 2 setting" in fields:
            assert row["row"] == "ImageNet"
            assert (m.image_size, t.ema_decay) == (TABLE2_IMAGENET_RESOLUTION[m.variant], TABLE2_POLYAK)
        else:
            assert (m.image_size, t.ema_decay) == (row["finetune_resolution"], None)


@pytest.mark.parametrize("path", [p for p in PAPER_RECIPES if p.stem.startswith("finetune")],
                         ids=ids([p for p in PAPER_RECIPES if p.stem.startswith("finetune")]))
def test_finetuning_recipe_names_the_result_it_reproduces(path):
    """`# reproduces: Table 5 (or 2), model, pretraining, benchmark`: a cell the paper prints, for
    the recipe's own model and task (or `none: why`)."""
    fields = header_fields(path, "reproduces")
    assert fields, f"{path.name} has no '# reproduces:' header line"
    if fields[0].startswith("none"):
        assert len(fields[0]) > len("none: "), "say why no row is reproduced"
        return
    table, model, data, benchmark = fields
    recipe = load_recipe(path)
    lookup = {"Table 5": paper_results.transfer_row, "Table 2": paper_results.sota_row}[table]
    cell = lookup(model, data, benchmark)
    assert cell is not None and cell.citation.startswith(f"paper, {table}")
    assert model == recipe.model.variant and paper_results.benchmark_name(recipe.data.task) == benchmark


def test_the_tables_recipes_and_variants_agree_on_the_hybrids():
    """The scaling study's stage-4 hybrids are in the variant table, and Table 3 has their rows."""
    for name in ("R50+ViT-B/32", "R50+ViT-L/32"):
        assert name in variant_names()
        assert paper_results.pretrain_hparams(name, "JFT-300M") is not None


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
    bit = (recipe.model.variant or "").startswith("BiT-")
    assert (config["model_type"] == "bit") == bit  # ... and a BiT recipe a (tiny) BiT ResNet


def test_bit_recipes_hold_the_papers_resnet_pretraining_and_bit_hyperrule():
    """Pretraining: the paper's settings for all models, with Table 3's ResNet learning rates and
    weight decay. Fine-tuning: BiT-HyperRule (BiT Sec. 3.3): lr 0.003, step decay, length and
    MixUp by training-set size, 128 px for images under 96x96, else 384."""
    for name, variant, row_name in (("r50x1", "BiT-R50x1", "R50x1"), ("r152x2", "BiT-R152x2", "R152x2")):
        pre = load_recipe(ROOT / "recipes" / f"pretrain_bit_{name}_imagenet21k.yaml")
        row = paper_results.pretrain_hparams(row_name, "JFT-300M")  # the only ResNet rows of Table 3
        o, t, m = pre.optim, pre.train, pre.model
        assert (m.variant, o.optimizer, o.betas) == (variant, "adamw", [0.9, 0.999]) and "beta1=0.9" in row["optimizer"]
        assert (o.lr, o.schedule, o.weight_decay, m.dropout) == (row["base_lr"], row["lr_decay"], row["weight_decay"],
                                                                 row["dropout"])
        assert (t.global_batch_size, o.warmup_steps, m.image_size) == (row["batch_size"], row["lr_warmup_steps"],
                                                                       row["training_resolution"])
        assert o.grad_clip_norm is None and row["grad_clip_global_norm"] is None
        assert (pretraining_name(pre.data.task), t.epochs, m.representation_size) == ("ImageNet-21k", 90, None)
    hyperrule = {"cifar10": (10000, 0.1, 128), "cifar100": (10000, 0.1, 128), "pets": (500, 0.0, 384),
                 "flowers102": (500, 0.0, 384), "imagenet1k": (20000, 0.1, 384), "vtab": (500, 0.0, 384)}
    for task, (steps, mixup, size) in hyperrule.items():
        ft = load_recipe(ROOT / "recipes" / f"finetune_bit_{task}.yaml")
        assert (ft.optim.optimizer, ft.optim.lr, ft.optim.momentum, ft.optim.schedule) == ("sgd", 0.003, 0.9, "step")
        assert (ft.optim.weight_decay, ft.optim.grad_clip_norm, ft.train.global_batch_size) == (0.0, None, 512)
        assert (ft.train.steps, ft.train.mixup_alpha, ft.model.image_size) == (steps, mixup, size)
        assert not ft.optim.lr_sweep and ft.model.variant == "BiT-R50x1"


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=ids(LAUNCH_CONFIGS))
def test_accelerate_launch_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision == "bf16"
    assert "-m hf_vit_repro train" in path.read_text()
    if path.stem == "fsdp":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "ViTReproLayer"


#: Every AugReg pretraining recipe -> (variant, source). The source is an AugReg file name, parsed
#: with `convert_augreg.parse_augreg_name` (its aug / wd / do / sd / epochs / lr must be the recipe's):
#: ImageNet-21k: the checkpoints google-research/vision_transformer README.md recommends ("We recommend
#: using the following checkpoints", commit c6de1e5378c9831a8477feb30994971bdc409e46); ImageNet-1k: the
#: AugReg files timm distributes as `vit_*_224.augreg_in1k` (huggingface/pytorch-image-models
#: timm/models/vision_transformer.py, commit aa4b5850c1543fa488abf260f18390eda46cf85d). Where no source
#: names a file, the source is big_vision's vit_i1k.py (commit 0127fb6b): (aug, wd, do, sd) with the row used.
AUGREG_RECIPES = {
    "pretrain_augreg_vit_ti16_imagenet21k": ("ViT-Ti/16", "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_s16_imagenet21k": ("ViT-S/16", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_b32_imagenet21k": ("ViT-B/32", "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_b16_imagenet21k": ("ViT-B/16", "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_l16_imagenet21k": ("ViT-L/16", "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0"),
    "pretrain_augreg_r26_vit_s32_imagenet21k": ("R26+ViT-S/32",
                                                "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_s16_imagenet1k": ("ViT-S/16", "S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"),
    "pretrain_augreg_vit_b32_imagenet1k": ("ViT-B/32", "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1"),
    "pretrain_augreg_vit_b16_imagenet1k": ("ViT-B/16", "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1"),
    # big_vision vit_i1k.py `aug_setting`; do/sd 0.1 for the models its docstring says regularisation helps
    # ("B/32, B/16, L/16 models in the paper (Figure 4)"), 0 for the others.
    "pretrain_augreg_vit_ti16_imagenet1k": ("ViT-Ti/16", ("Ti/16", "light1", 0.1, 0.0, 0.0)),
    "pretrain_augreg_vit_l16_imagenet1k": ("ViT-L/16", ("L/16", "medium2", 0.1, 0.1, 0.1)),
    "pretrain_augreg_r26_vit_s32_imagenet1k": ("R26+ViT-S/32", ("S/32", "medium1", 0.1, 0.0, 0.0)),  # no R26 row
}
#: big_vision configs/vit_i21k.py and vit_i1k.py (commit 0127fb6b): `aug_setting`, and RANDAUG_DEF /
#: MIXUP_DEF of the levels the recipes use (written out here, independent of data.augment.AUGREG_LEVELS).
BIG_VISION_AUG = {
    "imagenet21k": {"Ti/16": "none", "S/32": "none", "S/16": "light1", "B/32": "light2", "B/16": "light2", "L/16": "medium2"},
    "imagenet1k": {"Ti/16": "light1", "S/32": "medium1", "S/16": "medium2", "B/32": "medium2", "B/16": "medium2",
                   "L/16": "medium2"},
}
BIG_VISION_LEVELS = {"none": (None, 0.0), "light1": ((2, 0.0), 0.0), "medium1": ((2, 15.0), 0.2),
                     "medium2": ((2, 15.0), 0.5), "strong1": ((2, 20.0), 0.5), "strong2": ((2, 20.0), 0.8)}
AUGREG_PATHS = [p for p in TRAINING_RECIPES if p.stem.startswith("pretrain_augreg_")]


def test_every_augreg_recipe_has_a_source_in_the_table():
    assert {p.stem for p in AUGREG_PATHS} == set(AUGREG_RECIPES)
    # Ti/16, S/16, B/16, B/32, L/16 and the R26+S/32 hybrid, on both datasets (issue 26)
    assert len({v for v, _ in AUGREG_RECIPES.values()}) == 6 and all(v in variant_names() for v, _ in AUGREG_RECIPES.values())
    rows = {line.split("|")[1].strip(" `"): line for line in (ROOT / "recipes" / "README.md").read_text().splitlines()
            if line.startswith("| `pretrain_augreg_")}
    for stem, (variant, source) in AUGREG_RECIPES.items():  # recipes/README.md lists each with its source
        row = rows[f"{stem}.yaml"]
        assert f"| {variant} |" in row and (source if isinstance(source, str) else "vit_i1k.py") in row


@pytest.mark.parametrize("path", AUGREG_PATHS, ids=ids(AUGREG_PATHS))
def test_augreg_recipe_holds_its_augreg_file_or_big_vision_row(path):
    """Every AugReg recipe: the AugReg file name of its `# augreg:` header (the test table's) gives its
    variant, data, epochs, lr, augmentation level, weight decay, dropout and stochastic depth; without a
    file, big_vision's vit_i1k.py row does. The rest is big_vision's vit_i21k.py / vit_i1k.py (commit
    0127fb6b): batch 4096, sigmoid loss, Adam (0.9, 0.999), 10k warm-up, cosine, clipping at 1, Inception
    crop; the head is vit_jax's AUGREG_CONFIGS one: class token, no pre-logits layer."""
    from hf_vit_repro.convert_augreg import parse_augreg_name
    from hf_vit_repro.data.augment import resolved_augment

    recipe = load_recipe(path)
    o, t, m, d = recipe.optim, recipe.train, recipe.model, recipe.data
    variant, source = AUGREG_RECIPES[path.stem]
    data = "imagenet21k" if path.stem.endswith("imagenet21k") else "imagenet1k"
    header = header_fields(path, "augreg")
    assert header, f"{path.name} has no '# augreg:' header line"
    if isinstance(source, str):
        name = parse_augreg_name(source)
        assert name is not None and header == [source]
        assert (name.model, name.pretraining_dataset) == (variant, {"imagenet21k": "i21k", "imagenet1k": "i1k"}[data])
        expected = (name.augmentation, name.weight_decay, name.dropout, name.stochastic_depth, name.epochs, name.lr)
    else:
        row, level, wd, do, sd = source
        assert header[0].startswith("none: ") and "vit_i1k.py" in path.read_text() and data == "imagenet1k"
        assert BIG_VISION_AUG[data][row] == level
        expected = (level, wd, do, sd, 300, 1e-3)
    assert (d.augment_level, o.weight_decay, m.dropout, m.drop_path_rate, t.epochs, o.lr) == expected
    big_vision = BIG_VISION_AUG[data].get(variant.removeprefix("ViT-"))  # none for the hybrid
    if big_vision not in (None, d.augment_level):  # the file's level is not big_vision's: the header says both
        assert f"gives {variant} '{big_vision}'" in path.read_text(), "say in the header where big_vision differs"
    assert (m.variant, m.image_size, m.representation_size, m.config.get("pooling", "token")) == (variant, 224, None, "token")
    assert (t.global_batch_size, t.loss, t.steps) == (4096, "sigmoid_xent", None)
    assert (o.optimizer, o.betas, o.warmup_steps, o.schedule, o.grad_clip_norm) == ("adamw", [0.9, 0.999], 10000, "cosine", 1.0)
    ra, p = BIG_VISION_LEVELS[d.augment_level]
    assert d.augmentation == "inception_crop" and resolved_augment(d) == {"randaugment": ra, "mixup_p": p}
    assert pretraining_name(d.task) == {"imagenet21k": "ImageNet-21k", "imagenet1k": "ImageNet"}[data]
