"""The VTAB-1k runner on three tiny local tasks (one per group, each a copy of its Hub repo's
layout with 1000 training images, the VTAB-1k minimum), a tiny checkpoint and the smoke schedule
of the training loop: results JSON structure, group means from per-task numbers, resume after a
kill, and the pure aggregation/table/selection helpers."""

import json

import pytest

from hf_vit_repro import cli, runs
from hf_vit_repro.data import get_task
from hf_vit_repro.evaluation import aggregate, resolve_tasks, run_vtab, vtab_table
from hf_vit_repro.training import run_recipe

from .data_fixtures import HUB_LAYOUTS, write_layout
from .conftest import randomize_, tiny_kwargs
from .evaluation_fixtures import save_classifier

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
                         "--output", str(out), "--data-root", str(vtab_data)])
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
    for task, entry in record["tasks"].items():
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["num_test_images"] == 12  # the full test split
        h = entry["hyperparameters"]
        # smoke: the first two rates of the paper's sweep, the best on val200 kept
        assert h["lr_candidates"] == [0.001, 0.003] and h["lr"] in (0.001, 0.003)
        assert set(entry["val_accuracy_by_lr"]) == {"0.001", "0.003"}
        best = max(sorted(entry["val_accuracy_by_lr"], key=float), key=lambda lr: (entry["val_accuracy_by_lr"][lr], -float(lr)))
        assert float(best) == h["lr"]
        assert (h["optimizer"], h["momentum"], h["steps"], h["resolution"]) == ("sgd", 0.9, 3, 32)
        task_dir = out / "vtab" / task.split("/")[1]
        metrics = json.loads(runs.metrics_path(task_dir, task, "test").read_text())
        assert metrics["metrics"]["accuracy"] == entry["accuracy"]
        assert (task_dir / runs.FINAL_DIR / "config.json").is_file()
        assert not (task_dir / runs.CHECKPOINTS_DIR).exists()  # pruned after the task finished
    table = (out / "vtab.md").read_text()
    assert "mean natural" in table and f"{100 * record['mean']:.2f}" in table
    assert (out / "vtab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another protocol in the same folder is refused, not mixed in.
    with pytest.raises(ValueError, match="another protocol"):
        run_vtab(checkpoint, TASKS, output_dir=out, overrides=SMOKE + ["train.steps=4"], data_root=vtab_data,
                 log=lambda _: None)


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


def test_recipes_per_task(checkpoint):
    """The base recipe gains the default sweep and the VTAB-1k splits; one learning rate means no
    selection run; runtime switches do not change the protocol."""
    from hf_vit_repro.evaluation.vtab import DEFAULT_LR_SWEEP, base_recipe, protocol_of, task_recipe

    base = base_recipe(checkpoint=str(checkpoint))
    assert base.optim.lr_sweep == list(DEFAULT_LR_SWEEP)
    assert (base.train.steps, base.train.global_batch_size, base.model.image_size) == (2500, 512, 384)
    recipe = task_recipe(base, checkpoint, "vtab/dtd", checkpoint.parent / "vtab", None)
    assert (recipe.data.sweep_train_split, recipe.data.val_split, recipe.data.train_split, recipe.data.eval_split) == (
        "train800", "val200", "train800val200", "test")
    assert recipe.model.init_from == str(checkpoint) and recipe.model.variant is None
    fixed = task_recipe(base_recipe(overrides=["optim.lr_sweep=[0.01]"], checkpoint=str(checkpoint)), checkpoint,
                        "vtab/dtd", checkpoint.parent / "vtab", None)
    assert fixed.optim.lr_sweep == [] and fixed.optim.lr == 0.01
    quiet = base_recipe(overrides=["run.progress_bar=false", "run.num_workers=2"], checkpoint=str(checkpoint))
    assert protocol_of(quiet, checkpoint) == protocol_of(base, checkpoint)
    assert protocol_of(base_recipe(overrides=["train.steps=1000"], checkpoint=str(checkpoint)), checkpoint) != protocol_of(
        base, checkpoint)
