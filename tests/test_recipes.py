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
    if fields[0] == "AugReg":  # the AugReg recipes: checked against AugReg's settings (below)
        check_augreg_paper_settings(recipe, fields, path.read_text())
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


# --- AugReg's settings (hf_vit_repro/paper_results/augreg_settings.csv) ---------------------------------------
#: The variant names of the recipes -> the model names AugReg's files and tables use.
AUGREG_MODEL = {"ViT-Ti/16": "Ti/16", "ViT-S/16": "S/16", "ViT-S/32": "S/32", "ViT-B/16": "B/16", "ViT-B/32": "B/32",
                "ViT-L/16": "L/16", "R26+ViT-S/32": "R26+S/32"}


def check_augreg_paper_settings(recipe, fields, header_text: str, rows=None) -> None:
    """Assert that an AugReg recipe (`# paper: AugReg, <i21k|i1k>, <variant>`) holds AugReg's settings as
    hf_vit_repro.paper_results.augreg reads them (`rows`: another copy of the CSV's rows, for the tests that
    change one): optimiser and betas, batch, lr, warm-up, schedule, clipping, epochs, resolution and crop, loss,
    weight decay / dropout / stochastic depth among the values the released file names take, and the
    augmentation level expanded as big_vision's RANDAUG_DEF / MIXUP_DEF define it. Weight decay: the recipe's
    is the file names' convention (x lr); the header states the big_vision value it converts to."""
    from hf_vit_repro.data.augment import resolved_augment
    from hf_vit_repro.paper_results import augreg

    def get(name, data="all", model=""):
        return augreg.setting(name, data, model, rows=rows)

    o, t, m, d = recipe.optim, recipe.train, recipe.model, recipe.data
    assert len(fields) == 3 and fields[0] == "AugReg", fields
    data = fields[1]
    assert data == augreg.data_key(d.task) and fields[2] == m.variant, (fields, d.task, m.variant)
    assert recipe.mode == "pretrain" and t.steps is None
    model = AUGREG_MODEL[m.variant]
    assert model in get("models", "i21k").values, f"{model} is not among the models AugReg released"
    assert get("optimizer", data).value == "scale_by_adam" and o.optimizer == "adamw"  # Adam, decoupled decay
    assert o.betas == list(get("betas").numbers)
    assert t.global_batch_size == get("batch_size", data).numbers[0]
    assert o.lr == get("lr", data).numbers[0]
    if data == "i21k":
        assert o.lr == get("file_name_lr", data).numbers[0]
    assert o.warmup_steps == get("warmup_steps", data).numbers[0]
    assert o.schedule == get("schedule", data).value
    assert o.grad_clip_norm == get("grad_clip_norm", data).numbers[0]
    assert t.epochs in get("epochs", data).numbers and t.epochs == get("big_vision_epochs", data).numbers[0]
    assert m.image_size == get("resolution", data).numbers[0] and d.augmentation == get("crop", data).value
    assert t.loss == get("loss", data).value
    # The file names' values (the recommended ImageNet-21k files; the ImageNet-1k files of AUGREG_RECIPES take
    # the same ones), and the conversion to big_vision's decay, which the header states.
    assert o.weight_decay in get("weight_decay_values", "i21k").numbers
    assert m.dropout in get("dropout_values", "i21k").numbers
    assert m.drop_path_rate in get("stochastic_depth_values", "i21k").numbers
    big_vision_wd = get("big_vision_weight_decay", data).numbers[0]
    header_text = re.sub(r"\s*\n#\s*", " ", header_text)  # the header's comment lines as one text
    assert f"wd {o.weight_decay:g} here = {o.weight_decay * o.lr:g} in big_vision's convention (wd x lr)" in header_text
    if abs(o.weight_decay * o.lr - big_vision_wd) > 1e-12:
        assert f"big_vision's config has {big_vision_wd:g} ({big_vision_wd / o.lr:g} here)" in header_text
    levels = {r.model for r in (rows or augreg.settings()) if r.setting == "randaugment"}
    assert d.augment_level in levels, f"data.augment_level {d.augment_level!r} is not one of AugReg's {sorted(levels)}"
    randaugment = get("randaugment", model=d.augment_level).numbers
    expected = {"randaugment": tuple(randaugment) if randaugment else None,
                "mixup_p": get("mixup_p", model=d.augment_level).numbers[0]}
    assert resolved_augment(d) == expected, (d.augment_level, resolved_augment(d), expected)


def test_augreg_settings_csv_cites_and_quotes_every_value():
    """Every row of augreg_settings.csv names a known source and a place in it, quotes it in under 25 words,
    and its value can be read in the quote; the settings the recipe check uses exist for both datasets."""
    from hf_vit_repro.paper_results import augreg

    rows, sources = augreg.settings(), augreg.sources()
    assert set(sources) == {"augreg-paper", "vision-transformer", "big-vision", "optax"}
    for row in rows:
        assert row.source in sources and row.location and row.data in ("i21k", "i1k", "all"), row
        assert 0 < len(row.quote.split()) < 25, row
        quote = row.quote.replace("10_000", "10000")
        if row.setting == "randaugment":
            assert (f"randaug({int(row.numbers[0])},{int(row.numbers[1])})" if row.values else "''") in quote, row
        elif row.setting == "mixup_p":
            assert f"p={row.value}" in quote and f"'{row.model}'" in quote, row
        elif row.setting == "aug_setting":
            assert f"'{row.model}': '{row.value}'" in quote, row
        elif row.setting == "weight_decay_rule":  # decay added after the lr scaling, then the schedule
            assert quote.index("*lr_mult_txs") < quote.index("*weight_decay_txs") < quote.index("*schedule_txs")
        else:
            assert all(value in quote for value in row.values), row
    for name in ("optimizer", "batch_size", "lr", "warmup_steps", "schedule", "grad_clip_norm", "epochs",
                 "big_vision_epochs", "resolution", "crop", "loss", "big_vision_weight_decay"):
        assert augreg.setting(name, "i21k") and augreg.setting(name, "i1k")
    levels = {"none", "light1", "light2", "medium1", "medium2", "strong1", "strong2"}
    assert {r.model for r in rows if r.setting == "randaugment"} == levels == {r.model for r in rows if r.setting == "mixup_p"}
    # The paper's own text was read for footnote 1 only; the settings come from the code it names there.
    assert {r.setting for r in rows if r.source == "augreg-paper"} == {"reproduction_code", "released_models"}
    # The stated conversion: the file names' wd 0.1 at lr 0.001 is big_vision's 0.0001, on both datasets.
    for data in ("i21k", "i1k"):
        wd = augreg.setting("big_vision_weight_decay", data).numbers[0]
        assert abs(0.1 * augreg.setting("lr", data).numbers[0] - wd) < 1e-12
    with pytest.raises(ValueError, match="use 'i21k' or 'i1k'"):
        augreg.data_key("jft300m")
    with pytest.raises(KeyError, match="no AugReg setting 'batch_size' for data 'i21k', model 'B/16'"):
        augreg.setting("batch_size", "i21k", "B/16")


def test_every_augreg_recipe_names_augreg_in_its_paper_line():
    for path in AUGREG_PATHS:
        fields = header_fields(path, "paper")
        assert fields and fields[0] == "AugReg", f"{path.name}: '# paper: AugReg, <i21k|i1k>, <variant>'"


AUGREG_MUTATED = "pretrain_augreg_vit_b16_imagenet1k.yaml"  # the one with dropout, stochastic depth and strong2


@pytest.mark.parametrize("old,new", [
    ("lr: 1.0e-3", "lr: 3.0e-3"), ("betas: [0.9, 0.999]", "betas: [0.9, 0.95]"),
    ("global_batch_size: 4096", "global_batch_size: 1024"), ("warmup_steps: 10000", "warmup_steps: 5000"),
    ("schedule: cosine", "schedule: linear"), ("grad_clip_norm: 1.0", "grad_clip_norm: 2.0"),
    ("epochs: 300", "epochs: 90"), ("weight_decay: 0.1", "weight_decay: 0.05"), ("dropout: 0.1", "dropout: 0.2"),
    ("drop_path_rate: 0.1", "drop_path_rate: 0.2"), ("image_size: 224", "image_size: 384"),
    ("augmentation: inception_crop", "augmentation: finetune"), ("loss: sigmoid_xent", "loss: softmax_xent"),
    ("augment_level: strong2", "augment_level: null\n  randaugment: [2, 20]\n  mixup_p: 0.8"),  # no AugReg level
    ("# paper: AugReg, i1k, ViT-B/16", "# paper: AugReg, i21k, ViT-B/16"),
    ("here = 0.0001 in big_vision's", "here = 0.001 in big_vision's"),
])
def test_augreg_paper_check_fails_when_a_recipe_value_changes(old, new, tmp_path):
    """The check above is not vacuous: the recipe passes it, and a copy with one value changed fails it."""
    text = (ROOT / "recipes" / AUGREG_MUTATED).read_text()
    fields = header_fields(ROOT / "recipes" / AUGREG_MUTATED, "paper")
    check_augreg_paper_settings(load_recipe(ROOT / "recipes" / AUGREG_MUTATED), fields, text)
    assert text.count(old) == 1, old
    copy = tmp_path / AUGREG_MUTATED
    copy.write_text(text.replace(old, new))
    with pytest.raises(AssertionError):
        check_augreg_paper_settings(load_recipe(copy), header_fields(copy, "paper"), copy.read_text())


@pytest.mark.parametrize("setting,old,new", [
    ("batch_size", "4096", "1024"), ("warmup_steps", "10000", "5000"), ("mixup_p", "0.8", "0.5"),
    ("weight_decay_values", "0.03;0.1", "0.03;0.3"), ("betas", "0.9;0.999", "0.9;0.95"),
])
def test_augreg_paper_check_reads_the_csv(setting, old, new, tmp_path):
    """... and it compares with the CSV: a copy of the CSV with one setting changed fails the same recipe."""
    import csv

    from hf_vit_repro.paper_results import augreg

    with open(augreg.DATA_DIR / augreg.SETTINGS_FILE, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    changed = 0
    for row in table:
        if row["setting"] == setting and row["value"] == old and row["model"] in ("", "strong2"):
            row["value"], changed = new, changed + 1
    assert changed >= 1, setting
    copy = tmp_path / augreg.SETTINGS_FILE
    with open(copy, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    path = ROOT / "recipes" / AUGREG_MUTATED
    with pytest.raises(AssertionError):
        check_augreg_paper_settings(load_recipe(path), header_fields(path, "paper"), path.read_text(),
                                    rows=augreg.settings(copy))


def test_augreg_paper_check_holds_the_packages_levels_to_the_csv(monkeypatch):
    """A recipe names a level; the package expands it (data.augment.AUGREG_LEVELS). Changing that
    expansion makes the recipe fail the check: the levels are compared with the CSV, not with themselves."""
    from hf_vit_repro.data import augment

    path = ROOT / "recipes" / AUGREG_MUTATED
    monkeypatch.setitem(augment.AUGREG_LEVELS, "strong2", ((2, 10), 0.8))
    with pytest.raises(AssertionError, match="strong2"):
        check_augreg_paper_settings(load_recipe(path), header_fields(path, "paper"), path.read_text())
