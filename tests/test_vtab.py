"""The VTAB-1k runner on three tiny local tasks (one per group, each a copy of its Hub repo's
layout with 1000 training images, the VTAB-1k minimum), a tiny checkpoint and the smoke schedule
of the training loop: results JSON structure, group means from per-task numbers, resume after a
kill, both protocols; every task's settings under the paper's protocol against the table written
from the paper and task_adaptation (tests/vtab_protocol.py); the paper's Table 9 row beside this
run's only where it matches and is comparable; and the pure aggregation/table/selection helpers."""

import json

import pytest

from hf_vit_repro import cli, runs
from hf_vit_repro.data import get_task
from hf_vit_repro.vtab import aggregate, resolve_tasks, run_vtab, vtab_table
from hf_vit_repro.training import run_recipe

from .data_fixtures import HUB_LAYOUTS, write_layout
from .conftest import randomize_, tiny_kwargs
from .evaluation_fixtures import save_classifier
from .vtab_protocol import PAPER_VTAB_SETTING, VTAB_PROTOCOL

TASKS = ["vtab/dtd", "vtab/eurosat", "vtab/clevr_count"]  # natural, specialized, structured
SMOKE = ["smoke=true", "run.trackers=[]", "run.progress_bar=false"]


@pytest.fixture(scope="module")
def vtab_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    for task in TASKS:
        hub_id = get_task(task).hub_id
        write_layout(HUB_LAYOUTS[hub_id], root / hub_id, {"train": 1000, "test": 12})
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())))
    return save_classifier(model, tmp_path_factory.mktemp("pretrained") / "final")


class Killed(Exception):
    pass


def test_runner_structure_and_resume(vtab_data, checkpoint, tmp_path):
    out = tmp_path / "results"
    calls = []

    def killed_during_second(recipe):
        calls.append(recipe.data.task)
        if len(calls) == 2:
            raise Killed  # the process dies while fine-tuning the second task
        return run_recipe(recipe)

    with pytest.raises(Killed):
        run_vtab(checkpoint, TASKS, output_dir=out, overrides=SMOKE, data_root=vtab_data, finetune_fn=killed_during_second,
                 log=lambda _: None)
    after_kill = json.loads((out / runs.VTAB).read_text())
    assert list(after_kill["tasks"]) == ["vtab/dtd"]
    first = after_kill["tasks"]["vtab/dtd"]

    # Restart through the command line; the finished task must not be fine-tuned again.
    seen = []
    original = run_recipe

    def recording(recipe):
        seen.append(recipe.data.task)
        return original(recipe)

    import hf_vit_repro.training as training

    training_run_recipe = training.run_recipe
    training.run_recipe = recording
    try:
        code = cli.main(["vtab", str(checkpoint), *SMOKE[:1], "--tasks", "dtd", "eurosat", "clevr_count", *SMOKE[1:],
                         "--output-dir", str(out), "--data-root", str(vtab_data)])
    finally:
        training.run_recipe = training_run_recipe
    assert code == 0
    assert seen == ["vtab/eurosat", "vtab/clevr_count"]

    record = json.loads((out / runs.VTAB).read_text())
    assert list(record["tasks"]) == TASKS
    assert record["tasks"]["vtab/dtd"] == first
    groups = {task: entry["group"] for task, entry in record["tasks"].items()}
    assert groups == {"vtab/dtd": "natural", "vtab/eurosat": "specialized", "vtab/clevr_count": "structured"}
    accuracies = {task: entry["accuracy"] for task, entry in record["tasks"].items()}
    assert record["group_means"] == {
        "natural": accuracies["vtab/dtd"], "specialized": accuracies["vtab/eurosat"],
        "structured": accuracies["vtab/clevr_count"],
    }
    assert record["mean"] == pytest.approx(sum(accuracies.values()) / 3)
    # The paper's protocol by default, shrunk by smoke=true: its departures are on record.
    protocol = record["protocol"]
    assert protocol["name"] == "paper" and "smoke=true" in protocol["departures"]
    assert "train.steps=3 (paper: 2500)" in protocol["departures"]
    assert record["paper"]["row"] is None and not record["paper"]["comparable"]  # a tiny model: no Table 9 row
    for task, entry in record["tasks"].items():
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["num_test_images"] == 12  # the full test split
        h = entry["hyperparameters"]
        # one fixed rate, no selection run, trained on all 1000 images
        assert h["lr_candidates"] == [0.01] and h["lr"] == 0.01 and entry["val_accuracy_by_lr"] is None
        assert entry["train_split"] == "train800val200"
        assert (h["optimizer"], h["momentum"], h["steps"], h["resolution"]) == ("sgd", 0.9, 3, 32)
        crop, flip, val200, _ = VTAB_PROTOCOL[task]
        assert entry["preprocessing"] == {"random_crop": crop, "flip": flip} and val200 in entry["rows"]
        task_dir = out / "vtab" / task.split("/")[1]
        assert not (task_dir / "sweep").exists()
        metrics = json.loads(runs.metrics_path(task_dir, task, "test").read_text())
        assert metrics["metrics"]["accuracy"] == entry["accuracy"]
        assert (task_dir / runs.FINAL_DIR / "config.json").is_file()
        assert not (task_dir / runs.CHECKPOINTS_DIR).exists()  # pruned after the task finished
    report = (out / "vtab.md").read_text()
    assert "**Protocol: paper.**" in report and "Departures from the paper's setting" in report
    assert "no matching row" in report and "paper:" not in vtab_table(record)  # no paper column
    assert "mean natural" in report and f"{100 * record['mean']:.2f}" in report
    assert (out / "vtab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another protocol in the same folder is refused, not mixed in.
    with pytest.raises(ValueError, match="another protocol"):
        run_vtab(checkpoint, TASKS, output_dir=out, overrides=SMOKE + ["train.steps=4"], data_root=vtab_data,
                 log=lambda _: None)
    with pytest.raises(ValueError, match="another protocol"):
        run_vtab(checkpoint, TASKS, protocol="sweep", output_dir=out, overrides=SMOKE, data_root=vtab_data,
                 log=lambda _: None)


def test_sweep_protocol_is_labelled_and_picks_a_rate_per_task(vtab_data, checkpoint, tmp_path):
    """--protocol sweep: each task picks its rate on val200 after fine-tuning on train800, and
    the record and the report say "sweep"."""
    out = tmp_path / "sweep"
    code = cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--protocol", "sweep", "--output-dir", str(out),
                     "--data-root", str(vtab_data)])
    assert code == 0
    record = json.loads((out / runs.VTAB).read_text())
    assert record["protocol"]["name"] == "sweep" and record["protocol"]["departures"] is None
    entry = record["tasks"]["vtab/dtd"]
    h = entry["hyperparameters"]
    # smoke: the first two rates of the sweep, the best on val200 kept
    assert h["lr_candidates"] == [0.001, 0.003] and h["lr"] in (0.001, 0.003)
    assert set(entry["val_accuracy_by_lr"]) == {"0.001", "0.003"}
    best = max(sorted(entry["val_accuracy_by_lr"], key=float), key=lambda lr: (entry["val_accuracy_by_lr"][lr], -float(lr)))
    assert float(best) == h["lr"]
    report = (out / "vtab.md").read_text()
    assert "**Protocol: sweep.**" in report and "not the paper's protocol" in report
    assert "val200 accuracy by lr" in report


def test_aggregate_and_table():
    tasks = {
        "vtab/cifar100": {"group": "natural", "accuracy": 0.5},
        "vtab/dtd": {"group": "natural", "accuracy": 0.7},
        "vtab/svhn": {"group": "natural", "accuracy": 0.9},
        "vtab/eurosat": {"group": "specialized", "accuracy": 0.95},
        "vtab/dmlab": {"group": "structured", "accuracy": 0.4},
        "vtab/kitti_distance": {"group": "structured", "accuracy": 0.6},
    }
    result = aggregate(tasks)
    assert result["group_means"] == pytest.approx({"natural": 0.7, "specialized": 0.95, "structured": 0.5})
    assert result["mean"] == pytest.approx(4.05 / 6)  # over tasks, not over the three group means
    assert aggregate({}) == {"group_means": {}, "mean": None}
    hyper = {"lr": 0.01, "steps": 2500, "batch_size": 512, "resolution": 384}
    record = {"tasks": {t: {**e, "hyperparameters": hyper} for t, e in tasks.items()}, **result}
    table = vtab_table(record)
    assert "| svhn " in table and "90.00" in table and "mean structured" in table and "67.50" in table


def test_task_selection():
    assert len(resolve_tasks("all")) == 19
    assert resolve_tasks(["specialized"]) == [
        "vtab/patch_camelyon", "vtab/eurosat", "vtab/resisc45", "vtab/diabetic_retinopathy"]
    assert resolve_tasks(["clevr_count,dtd", "vtab/dtd"]) == ["vtab/dtd", "vtab/clevr_count"]
    with pytest.raises(KeyError, match="not a VTAB-1k task"):
        resolve_tasks(["cifar10"])
    with pytest.raises(KeyError, match="unknown task"):
        resolve_tasks(["dtdd"])


@pytest.mark.parametrize("task", sorted(VTAB_PROTOCOL))
def test_paper_protocol_settings_per_task(checkpoint, task):
    """`vit-repro vtab` with no options: every task gets the paper's one setting (lr 0.01, 2500
    steps, batch 512, 384 px, no selection), trains on all 1000 images, is scored on test, and
    is pre-processed with the crop and flip of the table written from the paper / BiT."""
    from hf_vit_repro.data import get_task, task_transforms
    from hf_vit_repro.vtab.runner import base_recipe, task_recipe

    recipe = task_recipe(base_recipe(checkpoint=str(checkpoint)), checkpoint, task, checkpoint.parent / "vtab", None)
    o, t, d = recipe.optim, recipe.train, recipe.data
    setting = {"lr": o.lr, "steps": t.steps, "batch_size": t.global_batch_size, "resolution": recipe.model.image_size}
    assert setting == PAPER_VTAB_SETTING and o.lr_sweep == []
    assert (o.optimizer, o.momentum, o.weight_decay, o.grad_clip_norm, o.schedule) == ("sgd", 0.9, 0.0, 1.0, "cosine")
    assert (d.train_split, d.eval_split, d.val_split, d.sweep_train_split) == ("train800val200", "test", None, None)
    assert recipe.model.init_from == str(checkpoint) and recipe.model.variant is None
    # The training loop's transform for this recipe (training.build_data: augmentation "finetune",
    # no flip override -> the task's own transforms).
    assert d.augmentation == "finetune" and d.flip is None
    crop, flip, val200, published = VTAB_PROTOCOL[task]
    train_transform, _ = task_transforms(d.task, recipe.model.image_size)
    assert (train_transform.random_crop, train_transform.flip) == (crop, flip)
    spec = get_task(task)
    assert spec.vtab_val200 == val200 and (spec.vtab_val_rows is not None) == published


def test_protocols_and_departures(checkpoint):
    """The sweep protocol adds the default sweep and the train800 / val200 splits; the paper's
    settings win over the recipe file; overrides of them are departures; runtime switches do not
    change the protocol."""
    from hf_vit_repro.vtab.runner import DEFAULT_LR_SWEEP, base_recipe, departures, protocol_of, task_recipe

    base = base_recipe(checkpoint=str(checkpoint))
    assert departures(base) == []
    sweep = base_recipe(checkpoint=str(checkpoint), protocol="sweep")
    assert sweep.optim.lr_sweep == list(DEFAULT_LR_SWEEP)
    recipe = task_recipe(sweep, checkpoint, "vtab/dtd", checkpoint.parent / "vtab", None)
    assert (recipe.data.sweep_train_split, recipe.data.val_split, recipe.data.train_split, recipe.data.eval_split) == (
        "train800", "val200", "train800val200", "test")
    assert protocol_of(sweep, checkpoint, "sweep")["name"] == "sweep"
    assert protocol_of(sweep, checkpoint, "sweep") != protocol_of(base, checkpoint)
    fixed = task_recipe(base_recipe(overrides=["optim.lr_sweep=[0.03]"], checkpoint=str(checkpoint)), checkpoint,
                        "vtab/dtd", checkpoint.parent / "vtab", None)
    assert fixed.optim.lr_sweep == [] and fixed.optim.lr == 0.03
    changed = base_recipe(overrides=["train.steps=1000"], checkpoint=str(checkpoint))
    assert departures(changed) == ["train.steps=1000 (paper: 2500)"]
    assert protocol_of(changed, checkpoint)["departures"] == ["train.steps=1000 (paper: 2500)"]
    assert protocol_of(changed, checkpoint) != protocol_of(base, checkpoint)
    quiet = base_recipe(overrides=["run.progress_bar=false", "run.num_workers=2"], checkpoint=str(checkpoint))
    assert protocol_of(quiet, checkpoint) == protocol_of(base, checkpoint)
    with pytest.raises(ValueError, match="unknown VTAB protocol"):
        base_recipe(checkpoint=str(checkpoint), protocol="best")


# Table 9 of the paper, typed from its text (ViT-L/16 pretrained on ImageNet-21k): DTD, SVHN, Mean.
PAPER_L16_I21K = {"vtab/dtd": 74.1, "vtab/svhn": 80.9, "mean": 72.7}


def _record(tasks, protocol="paper", identity=None, departures_=None):
    from hf_vit_repro.vtab.runner import paper_comparison

    settings = {"name": protocol, "departures": departures_ if protocol == "paper" else None}
    entries = {t: {"group": get_task(t).vtab_group, "accuracy": 0.5,
                   "hyperparameters": {"lr": 0.01, "steps": 2500, "batch_size": 512, "resolution": 384},
                   "preprocessing": {"random_crop": VTAB_PROTOCOL[t][0], "flip": VTAB_PROTOCOL[t][1]}} for t in tasks}
    record = {"checkpoint": "ckpt", "protocol": settings, "tasks": entries, **aggregate(entries)}
    record["paper"] = paper_comparison(settings, identity or {"model": None, "pretraining": None})
    return record


def test_paper_row_beside_this_run_only_where_it_matches():
    from hf_vit_repro.vtab.runner import vtab_report

    l16 = {"model": "ViT-L/16", "pretraining": "ImageNet-21k"}
    record = _record(["vtab/dtd", "vtab/svhn"], identity=l16)
    assert record["paper"]["row"] == "ViT-L/16 (I21k)" and record["paper"]["comparable"]
    table = vtab_table(record)
    header = table.splitlines()[0]
    assert "this run: test accuracy (%)" in header and "paper: ViT-L/16 (I21k), Table 9 (%)" in header
    dtd = next(line for line in table.splitlines() if line.startswith("| dtd "))
    cells = [c.strip() for c in dtd.strip("|").split("|")]
    assert cells[2] == "50.00" and cells[3] == f"{PAPER_L16_I21K['vtab/dtd']:.1f}"
    mean = next(line for line in table.splitlines() if "mean (2 tasks)" in line)
    assert "(all 19 tasks only)" in mean  # a 2-task mean is not set beside the paper's 19-task mean
    full = vtab_table(_record(list(VTAB_PROTOCOL), identity=l16))
    assert f"| {PAPER_L16_I21K['mean']:.1f} " in next(line for line in full.splitlines() if "mean (19 tasks)" in line)
    assert "Paper (Table 9):" in vtab_report(record)

    # Another variant or pretraining set: no matching row, no paper column.
    b16 = _record(["vtab/dtd"], identity={"model": "ViT-B/16", "pretraining": "ImageNet-21k"})
    assert b16["paper"]["row"] is None and "no matching row" in b16["paper"]["note"]
    assert "ViT-L/16 (I21k)" in b16["paper"]["note"] and "paper:" not in vtab_table(b16)
    unknown = _record(["vtab/dtd"], identity={"model": "ViT-L/16", "pretraining": None})
    assert unknown["paper"]["row"] is None and "--pretraining-data" in unknown["paper"]["note"]
    # A matching row under the sweep protocol, or with departures: named, but not comparable, no column.
    sweep = _record(["vtab/dtd"], protocol="sweep", identity=l16)
    assert sweep["paper"]["row"] == "ViT-L/16 (I21k)" and not sweep["paper"]["comparable"]
    assert "not comparable" in vtab_report(sweep) and "paper:" not in vtab_table(sweep)
    short = _record(["vtab/dtd"], identity=l16, departures_=["train.steps=500 (paper: 2500)"])
    assert not short["paper"]["comparable"] and "train.steps=500" in short["paper"]["note"]
    assert "paper:" not in vtab_table(short)


def test_checkpoint_identity_from_config_and_recipe(tmp_path):
    from hf_vit_repro import ViTReproConfig
    from hf_vit_repro.vtab.runner import checkpoint_identity

    run = tmp_path / "run"
    ViTReproConfig.from_variant("ViT-L/16").save_pretrained(run / "final")
    assert checkpoint_identity(str(run / "final"), run) == {"model": "ViT-L/16", "pretraining": None}
    (run / runs.RECIPE).write_text("mode: pretrain\ndata:\n  task: imagenet21k\n")
    assert checkpoint_identity(str(run / "final"), run) == {"model": "ViT-L/16", "pretraining": "ImageNet-21k"}
    assert checkpoint_identity(str(run / "final"), run, "JFT")["pretraining"] == "JFT-300M"
    (run / runs.RECIPE).write_text("mode: finetune\ndata:\n  task: vtab/dtd\n")  # not a pretraining run
    assert checkpoint_identity(str(run / "final"), run)["pretraining"] is None
    with pytest.raises(ValueError, match="pretraining-data"):
        checkpoint_identity(str(run / "final"), run, "laion")


def test_method_option_runs_a_parameter_efficient_transfer(vtab_data, checkpoint, tmp_path):
    """`--method bitfit`: recorded per task with the trainable-parameter count and fraction (as the
    run's own summary counts them), in the table, and as a departure from the paper's setting."""
    out = tmp_path / "bitfit"
    code = cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--method", "bitfit", "--output-dir", str(out),
                     "--data-root", str(vtab_data)])
    assert code == 0
    record = json.loads((out / runs.VTAB).read_text())
    entry = record["tasks"]["vtab/dtd"]
    summary = json.loads((out / "vtab" / "dtd" / runs.TRAIN_SUMMARY).read_text())
    assert entry["method"] == "bitfit" and summary["method"] == "bitfit"
    from hf_vit_repro import ViTReproForImageClassification

    model = ViTReproForImageClassification.from_pretrained(out / "vtab" / "dtd" / runs.FINAL_DIR)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") or n.startswith("classifier."))
    assert entry["trainable_parameters"] == summary["trainable_parameters"] == biases
    assert entry["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert entry["trainable_fraction"] == pytest.approx(biases / entry["num_parameters"])
    assert "train.method='bitfit' (paper: 'full')" in record["protocol"]["departures"]
    table = (out / "vtab.md").read_text()
    assert "| trainable params | trainable (%) |" in table and "| bitfit |" in table
    assert f"{100 * biases / entry['num_parameters']:.3g}" in table
