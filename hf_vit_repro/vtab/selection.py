"""VPT's selection protocol for VTAB-1k (Jia et al., "Visual Prompt Tuning", ECCV 2022), the `select` protocol:

    vit-repro vtab B16 --method vpt-deep --select                 # VPT's 10 x 4 grid per task
    vit-repro vtab B16 --method vpt-shallow --select --select-lr 5 1 --select-weight-decay 0.001

Per task: one fine-tuning per (learning rate, weight decay) of the grid on train800, scored on val200;
the best val200 accuracy chooses (ties: the smaller rate, then the larger weight decay, the order in
which VPT's `find_best_lrwd` keeps them); then one fine-tuning with that setting on train800val200,
scored on the test split. Everything below is read from VPT's code at github.com/KMnP/vpt, commit
4410440ec1b489f24f66b9fad3d9b10ff3443567:

- the grid: tune_vtab.py `get_lrwd_range`, `train_type == "prompt"` (lines 245-251): rates 50, 25, 10,
  5, 2.5, 1, 0.5, 0.25, 0.1, 0.05 and weight decays 0.01, 0.001, 0.0001, 0.0; each rate is multiplied
  by batch size / 256 before training (line 100: `lr = lr / 256 * cfg.DATA.BATCH_SIZE`);
- choosing on val200 after training on train800, then the final runs on train800val200
  (tune_vtab.py's docstring, `find_best_lrwd` lines 47-79, `construct_trainval_loader` line 166);
- the schedule: configs/base-prompt.yaml: SGD, momentum 0.9, cosine decay, 100 epochs with 10 of
  warm-up, batch 128; no gradient clipping (src/solver has none); 224 px (src/configs/config.py
  `DATA.CROPSIZE = 224`).

Departures, stated in vtab.json: VPT repeats the final run with 5 seeds (42, 44, 82, 100, 800; lines
284-285) and reports their mean, this protocol runs one (`train.seed`); VPT chooses the prompt length per
task too (its README links the chosen values in a spreadsheet, not found as text): here the length is
`train.method_options.tokens` (default 10) for every task; the pre-processing is the registry's (BiT's
crop and flip rules), not VPT's resize-only TF pipeline; steps are `ceil(epochs x images / batch)`.

Resumable: each grid member trains in TASK/select/lr_<lr>_wd_<wd>/ with `run.resume=auto`, and
TASK/select.json records each finished member's val200 accuracy as it ends, so a rerun skips them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import runs

VPT_COMMIT = "4410440ec1b489f24f66b9fad3d9b10ff3443567"
#: VPT's grid for prompt tuning (tune_vtab.py `get_lrwd_range`, "prompt"), rates before the batch scaling.
VPT_LRS: tuple[float, ...] = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
VPT_WEIGHT_DECAYS: tuple[float, ...] = (0.01, 0.001, 0.0001, 0.0)
#: The methods `select` runs: VPT's prompt grid (`train_type == "prompt"`) with configs/base-prompt.yaml. VPT's
#: tune_vtab.py has grids for its full and linear baselines too, trained from their own base configs, not carried here.
SELECTABLE = ("vpt-shallow", "vpt-deep")
#: VPT's rates are per 256 images: each is multiplied by global batch / LR_BATCH.
LR_BATCH = 256
WARMUP_FRACTION = 0.1  # 10 of 100 epochs
#: configs/base-prompt.yaml and src/configs/config.py: the recipe keys `select` sets before overrides.
VPT_SETTING: dict[str, Any] = {
    "optim.optimizer": "sgd",
    "optim.momentum": 0.9,
    "optim.schedule": "cosine",
    "optim.grad_clip_norm": None,
    "optim.lr_sweep": [],
    "train.epochs": 100,
    "train.global_batch_size": 128,
    "model.image_size": 224,
}
SELECT = "select.json"
SELECT_DIR = "select"
MEMBER_SPLITS = ("train800", "val200")
FINAL_SPLIT = "train800val200"
#: The number of images in each split (VTAB-1k), for the warm-up in steps.
SPLIT_IMAGES = {"train800": 800, "train800val200": 1000}
PROTOCOL_TEXT = (
    "VPT's (Jia et al. 2022, github.com/KMnP/vpt tune_vtab.py): per task, a grid of learning rates x weight decays "
    "fine-tuned on train800 and chosen on val200, then one fine-tuning with the chosen setting on train800val200 "
    "(1000 images), scored on the full test split; SGD, cosine, 100 epochs with 10 of warm-up, batch 128, 224 px; "
    "one final run instead of VPT's five seeds"
)


def default_grid() -> dict[str, list[float]]:
    return {"lr": list(VPT_LRS), "weight_decay": list(VPT_WEIGHT_DECAYS)}


def grid_problem(method: str, grid: Mapping[str, Sequence[float]]) -> str | None:
    """None, or why `--select` cannot run: a method without a published grid, an empty or negative grid."""
    if method not in SELECTABLE:
        return (f"--select runs VPT's selection protocol with its prompt-tuning grid and schedule, for "
                f"{' and '.join(SELECTABLE)} only; for method {method!r} use --protocol sweep to choose the learning "
                "rate on val200")
    if not grid.get("lr") or not grid.get("weight_decay"):
        return "--select needs at least one learning rate and one weight decay (--select-lr, --select-weight-decay)"
    if any(v <= 0 for v in grid["lr"]) or any(v < 0 for v in grid["weight_decay"]):
        return "--select-lr values must be > 0 and --select-weight-decay values >= 0"
    return None


def checked_grid(method: str, grid: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]]:
    """`grid` (default VPT's) as floats, or ValueError with `grid_problem`'s message."""
    grid = {k: [float(v) for v in values] for k, values in (grid or default_grid()).items()}
    if problem := grid_problem(method, grid):
        raise ValueError(problem)
    return grid


def member_name(lr: float, weight_decay: float) -> str:
    return f"lr_{lr:g}_wd_{weight_decay:g}"


def _warmup(recipe, split: str) -> dict[str, Any]:
    """VPT's 10 warm-up epochs of 100 in steps, when the recipe counts epochs (a recipe with `train.steps`,
    e.g. smoke=true, keeps its own warm-up)."""
    t = recipe.train
    if t.steps or not t.epochs:
        return {}
    return {"optim.warmup_steps": math.ceil(WARMUP_FRACTION * t.epochs * SPLIT_IMAGES[split] / t.global_batch_size)}


def best_setting(accuracy: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The member with the best val200 accuracy; ties: the smaller rate, then the larger weight decay."""
    return dict(max(accuracy.values(), key=lambda m: (m["val_accuracy"], -m["lr"], m["weight_decay"])))


def selecting_finetune(grid: Mapping[str, Sequence[float]],
                       train: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """A `finetune_fn` for `run_vtab`: the grid on train800 / val200, then the chosen setting on the task
    recipe's own splits (train800val200, test). `train(recipe) -> TrainResult` (default the loop's)."""

    def finetune(recipe):
        from accelerate import PartialState

        nonlocal train
        if train is None:
            from ..training import loop

            train = loop.train
        out = recipe.output_dir
        path = out / SELECT
        scale = recipe.train.global_batch_size / LR_BATCH
        record = runs.read_json(path) if path.is_file() else {}
        if record.get("grid") != dict(grid) or record.get("lr_scale") != scale:
            record = {"grid": {k: list(v) for k, v in grid.items()}, "lr_scale": scale, "members": {}}
        main = PartialState().is_main_process
        for lr in sorted(grid["lr"], reverse=True):  # VPT's order: rates and decays from the largest
            for wd in sorted(grid["weight_decay"], reverse=True):
                name = member_name(lr, wd)
                if name in record["members"]:
                    continue
                member = recipe.replace(**{
                    "name": f"{recipe.name}-{name}", "optim.lr": lr * scale, "optim.weight_decay": wd,
                    "data.train_split": MEMBER_SPLITS[0], "data.eval_split": MEMBER_SPLITS[1],
                    "data.sweep_train_split": None, "data.val_split": None,
                    "run.output_dir": str(out / SELECT_DIR / name), "run.push_to_hub": False,
                    **_warmup(recipe, MEMBER_SPLITS[0]),
                })
                result = train(member)
                if not result.completed:  # run.stop_after ended the session inside the grid
                    return result
                record["members"][name] = {"lr": lr, "scaled_lr": lr * scale, "weight_decay": wd,
                                           "val_accuracy": result.eval_accuracy}
                if main:
                    out.mkdir(parents=True, exist_ok=True)
                    runs.write_json(path, record)
        best = best_setting(record["members"])
        final = {"optim.lr": best["scaled_lr"], "optim.weight_decay": best["weight_decay"],
                 **_warmup(recipe, recipe.data.train_split if recipe.data.train_split in SPLIT_IMAGES else FINAL_SPLIT)}
        record["best"] = best
        record["final"] = {"lr": best["scaled_lr"], "weight_decay": best["weight_decay"],
                           "warmup_steps": final.get("optim.warmup_steps", recipe.optim.warmup_steps),
                           "train_split": recipe.data.train_split, "eval_split": recipe.data.eval_split}
        if main:
            runs.write_json(path, record)
        return train(recipe.replace(**final))

    return finetune


def entry_updates(task_dir: Path) -> dict[str, Any]:
    """What a task's vtab.json entry takes from TASK/select.json (empty without one): the chosen rate,
    weight decay and warm-up, the grid's val200 accuracies and how the setting was chosen."""
    path = Path(task_dir) / SELECT
    if not path.is_file():
        return {}
    record = runs.read_json(path)
    final = record["final"]
    return {
        "hyperparameters": {"lr": final["lr"], "weight_decay": final["weight_decay"], "warmup_steps": final["warmup_steps"],
                            "lr_candidates": sorted({m["scaled_lr"] for m in record["members"].values()}),
                            "weight_decay_candidates": sorted({m["weight_decay"] for m in record["members"].values()})},
        "val_accuracy_by_setting": {name: m["val_accuracy"] for name, m in record["members"].items()},
        "selection": "VPT's grid: the best val200 accuracy after fine-tuning on train800 (ties: smaller lr)",
    }


__all__ = ["LR_BATCH", "SELECTABLE", "SELECT", "SELECT_DIR", "VPT_LRS", "VPT_SETTING", "VPT_WEIGHT_DECAYS", "best_setting",
           "default_grid", "entry_updates", "grid_problem", "member_name", "selecting_finetune"]
