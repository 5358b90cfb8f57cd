"""The VTAB-1k benchmark (Zhai et al. 2019) as the paper runs it (Sec. 4.1, Appendix B.1.1).

    vit-repro vtab RUN_OR_CHECKPOINT [--tasks all|natural|specialized|structured|NAME ...]
    vit-repro vtab RUN train.steps=1000 --recipe recipes/my_vtab.yaml --data-root /data/hub-copies
    vit-repro vtab RUN smoke=true --tasks dtd eurosat clevr_count      # a few CPU steps per task

Per task: fine-tune the checkpoint (zero-initialised head, pre-logits dropped, position
embeddings resampled to the recipe's resolution) once per learning rate of the sweep on
train800 and score it on val200; fine-tune again with the best rate on all 1000 images
(train800val200); report top-1 accuracy on the task's full test split. The fine-tuning is the
package's one training loop (`training.run_recipe`, which implements this sweep-then-final
protocol); the per-task recipe is the base recipe with the task's data fields set.

The base recipe (recipes/finetune_vtab.yaml, or a file given with --recipe, plus key=value
overrides as for `vit-repro train`) holds the paper's settings: SGD with momentum 0.9, no weight
decay, gradient clipping at global norm 1, cosine decay, batch 512, 2500 steps, resolution 384.
The learning rate is chosen per task from `DEFAULT_LR_SWEEP` = {0.001, 0.003, 0.01, 0.03} (the
paper's fine-tuning sweep) unless the recipe has a sweep of its own. The paper itself settled on
0.01 for every VTAB task after a sweep over two rates and two schedules on the val200 sets;
`optim.lr_sweep=[0.01]` runs that fixed setting, one fine-tune per task on all 1000 images.

Results: `OUT/vtab.json` (`runs.VTAB`) with each task's accuracy, group, hyperparameters and
validation accuracy per learning rate, the three group means and the overall mean (the mean over
tasks, the paper's "VTAB (19 tasks)" number); `vtab.md` (the table) and `vtab.png` (bar plot).
The JSON is rewritten atomically after every task: a finished task is never re-run, and an
interrupted one resumes from its last training checkpoint (`run.resume=auto`). Results of a
different protocol (checkpoint or base recipe) in the same folder are an error, not a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import runs
from .common import default_output_dir, format_table, write_text_atomic

#: The learning rates each task chooses from on val200 when the base recipe has no sweep of its
#: own: the paper's fine-tuning sweep (Appendix B.1.1).
DEFAULT_LR_SWEEP: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
TABLE = "vtab.md"
PLOT = "vtab.png"
_GROUP_COLOURS = {"natural": "#4c72b0", "specialized": "#dd8452", "structured": "#55a868"}


# ============================================================================ tasks and recipes


def resolve_tasks(selection: str | Sequence[str] = "all") -> list[str]:
    """Registry names of the VTAB tasks selected by "all", a group name, or task names (with or
    without the "vtab/" prefix; comma-separated works too), in registry order."""
    from ..data import TASKS, VTAB_GROUPS, VTAB_TASKS, get_task

    items = [selection] if isinstance(selection, str) else list(selection)
    items = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    chosen: list[str] = []
    for item in items or ["all"]:
        if item == "all":
            chosen += list(VTAB_TASKS)
        elif item in VTAB_GROUPS:
            chosen += [t for t in VTAB_TASKS if get_task(t).vtab_group == item]
        else:
            name = item if item.startswith("vtab/") else f"vtab/{item}"
            if name not in TASKS and item in TASKS:
                raise KeyError(f"{item!r} is not a VTAB-1k task; VTAB tasks: {', '.join(VTAB_TASKS)}")
            get_task(name)  # an unknown name: KeyError with close matches
            chosen.append(name)
    order = {name: i for i, name in enumerate(VTAB_TASKS)}
    return sorted(dict.fromkeys(chosen), key=order.__getitem__)


def default_recipe_path(checkpoint: str | os.PathLike | None = None) -> Path:
    """recipes/finetune_vtab.yaml of the source tree (the paper's VTAB-1k fine-tuning settings), or
    for a BiT ResNet checkpoint recipes/finetune_bit_vtab.yaml (BiT-HyperRule, as BiT-L's VTAB
    number in the paper's Table 2)."""
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    config = Path(checkpoint) / "config.json" if checkpoint is not None else None
    if config is not None and config.is_file() and runs.read_json(config).get("model_type") == "bit":
        return recipes / "finetune_bit_vtab.yaml"
    return recipes / "finetune_vtab.yaml"


def base_recipe(recipe: str | os.PathLike | None = None, overrides: Sequence[str] = (), checkpoint: str | None = None):
    """The recipe every task starts from: `recipe` (default `default_recipe_path(checkpoint)`) with
    the VTAB-1k splits (sweep on train800, validate on val200), `DEFAULT_LR_SWEEP` when the file
    has no `optim.lr_sweep` (an explicit empty list keeps the file's one rate), `checkpoint` as
    `model.init_from`, then `key=value` overrides and the smoke switch applied exactly as
    `vit-repro train` applies them (`training.load_recipe`)."""
    import yaml

    from ..training import load_recipe

    path = Path(recipe) if recipe is not None else default_recipe_path(checkpoint)
    if not path.is_file():
        raise ValueError(
            f"no VTAB recipe at {str(path)!r}; pass --recipe with a fine-tuning recipe (the source tree's "
            "recipes/finetune_vtab.yaml holds the paper's settings)"
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    for section in ("optim", "data", "model"):
        values[section] = dict(values.get(section) or {})
    optim, data, model = values["optim"], values["data"], values["model"]
    if "lr_sweep" not in optim:
        optim["lr_sweep"] = list(DEFAULT_LR_SWEEP)
    data.update(train_split="train800val200", sweep_train_split="train800", val_split="val200", eval_split="test", holdout=False)
    if checkpoint is not None:
        model["init_from"] = str(checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        resolved = Path(folder) / path.name
        resolved.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        loaded = load_recipe(resolved, list(overrides))
    loaded.source = str(path)  # type: ignore[attr-defined]
    return loaded


def task_slug(task: str) -> str:
    return task.split("/")[-1]


def task_recipe(base, checkpoint: str | os.PathLike, task: str, output_dir: Path, data_dir: str | os.PathLike | None):
    """The base recipe with one task's data and folders: fine-tune `checkpoint` (its own
    architecture), sweep on train800 -> val200, final run on train800val200, test split scored."""
    changes: dict[str, Any] = {
        "name": f"vtab-{task_slug(task)}",
        "mode": "finetune",
        "model.init_from": str(checkpoint),
        "model.variant": None,
        "model.config": {},
        "data.task": task,
        "data.data_dir": None if data_dir is None else str(data_dir),
        "data.image_column": None,
        "data.label_column": None,
        "data.train_split": "train800val200",
        "data.sweep_train_split": "train800",
        "data.val_split": "val200",
        "data.eval_split": "test",
        "data.holdout": False,
        "run.output_dir": str(output_dir / task_slug(task)),
        "run.resume": "auto",
        "run.push_to_hub": False,
    }
    if len(base.optim.lr_sweep) == 1:  # one candidate: nothing to select, no train800 run
        changes.update({"optim.lr": base.optim.lr_sweep[0], "optim.lr_sweep": []})
    return base.replace(**changes)


def protocol_of(base, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What decides the numbers: the checkpoint and every hyperparameter of the base recipe
    (not the runtime switches of its `run` section, except smoke)."""
    import json

    values = base.to_dict()
    smoke = values.pop("run")["smoke"]
    for key in ("name", "description"):
        values.pop(key, None)
    values["model"].pop("init_from", None)  # the checkpoint is recorded once, below
    values["data"] = {k: v for k, v in values["data"].items() if k not in ("task", "data_dir")}
    return json.loads(json.dumps({"checkpoint": str(checkpoint), "smoke": smoke, "recipe": values}))


# ============================================================================ aggregation


def aggregate(tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Group means (each over the group's tasks present) and the overall mean (over all tasks,
    not over groups, as the paper's VTAB score) of per-task accuracies."""
    from ..data import VTAB_GROUPS

    groups = {}
    for group in VTAB_GROUPS:
        values = [float(entry["accuracy"]) for entry in tasks.values() if entry.get("group") == group]
        if values:
            groups[group] = sum(values) / len(values)
    values = [float(entry["accuracy"]) for entry in tasks.values()]
    return {"group_means": groups, "mean": sum(values) / len(values) if values else None}


def _fmt_lr(value: float) -> str:
    return f"{value:g}"


def vtab_table(record: Mapping[str, Any]) -> str:
    """Markdown: one row per task (accuracy, hyperparameters, validation accuracy per rate), then
    the group means and the overall mean."""
    from ..data import VTAB_GROUPS

    tasks = record.get("tasks", {})
    order = sorted(tasks, key=lambda t: (VTAB_GROUPS.index(tasks[t]["group"]), t))
    rows = []
    for task in order:
        entry = tasks[task]
        h = entry["hyperparameters"]
        val = entry.get("val_accuracy_by_lr") or {}
        val_text = ", ".join(f"{lr}: {100 * acc:.1f}" for lr, acc in val.items()) or "-"
        rows.append([
            task_slug(task), entry["group"], f"{100 * entry['accuracy']:.2f}", _fmt_lr(h["lr"]), h["steps"],
            h["batch_size"], h["resolution"], val_text,
        ])
    for group, value in record.get("group_means", {}).items():
        rows.append([f"**mean {group}**", "", f"{100 * value:.2f}", "", "", "", "", ""])
    if record.get("mean") is not None:
        rows.append([f"**mean ({len(tasks)} tasks)**", "", f"{100 * record['mean']:.2f}", "", "", "", "", ""])
    header = ["task", "group", "test accuracy (%)", "lr", "steps", "batch", "resolution", "val200 accuracy by lr (%)"]
    return format_table(header, rows)


def plot_vtab(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Bar plot: one bar per task coloured by group, dashed lines at the group means, a solid line
    at the overall mean. Written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data import VTAB_GROUPS

    tasks = record["tasks"]
    order = sorted(tasks, key=lambda t: (VTAB_GROUPS.index(tasks[t]["group"]), t))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(order) + 2), 4.0))
    colours = [_GROUP_COLOURS[tasks[t]["group"]] for t in order]
    ax.bar(range(len(order)), [100 * tasks[t]["accuracy"] for t in order], color=colours)
    for group, value in record.get("group_means", {}).items():
        positions = [i for i, t in enumerate(order) if tasks[t]["group"] == group]
        ax.hlines(100 * value, positions[0] - 0.4, positions[-1] + 0.4, colors=_GROUP_COLOURS[group], linestyles="--",
                  label=f"{group} mean {100 * value:.1f}")
    if record.get("mean") is not None:
        ax.axhline(100 * record["mean"], color="black", linewidth=1, label=f"mean {100 * record['mean']:.1f}")
    ax.set_xticks(range(len(order)), [task_slug(t) for t in order], rotation=60, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 115)  # room above the bars for the legend
    ax.set_yticks(range(0, 101, 20))
    where = Path(str(record.get("checkpoint", "")))
    name = where.parent.name if where.name == runs.FINAL_DIR else where.name
    ax.set_title(f"VTAB-1k: {name or 'checkpoint'}")
    ax.legend(fontsize=8, loc="upper center", ncol=4, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ============================================================================ the runner


def _task_entry(task: str, recipe, result, task_dir: Path, seconds: float) -> dict[str, Any]:
    from ..data import get_task
    from ..training import SWEEP

    summary = runs.read_json(task_dir / runs.TRAIN_SUMMARY) if (task_dir / runs.TRAIN_SUMMARY).is_file() else {}
    sweep = runs.read_json(task_dir / SWEEP) if (task_dir / SWEEP).is_file() else None
    evaluation = summary.get("eval") or {}
    if result.eval_accuracy is None:
        raise RuntimeError(f"{task}: the final fine-tune reported no test accuracy (is data.eval_split set?)")
    o, t = recipe.optim, recipe.train
    lr = float(sweep["best_lr"]) if sweep else float(o.lr)
    return {
        "group": get_task(task).vtab_group,
        "accuracy": float(result.eval_accuracy),
        "num_test_images": evaluation.get("num_images"),
        "hyperparameters": {
            "lr": lr,
            "lr_candidates": sorted(float(v) for v in (sweep["accuracy_by_lr"] if sweep else [o.lr])),
            "steps": result.steps,
            "batch_size": t.global_batch_size,
            "resolution": recipe.model.image_size,
            "optimizer": o.optimizer,
            "dropout": recipe.model.dropout,
            "momentum": o.momentum if o.optimizer == "sgd" else None,
            "weight_decay": o.weight_decay,
            "schedule": o.schedule,
            "warmup_steps": o.warmup_steps,
            "grad_clip_norm": o.grad_clip_norm,
        },
        "val_accuracy_by_lr": sweep["accuracy_by_lr"] if sweep else None,
        "selection": "val200 accuracy after fine-tuning on train800" if sweep else "fixed learning rate",
        "run_dir": str(task_dir),
        "wall_time_s": round(seconds, 1),
    }


def _prune(task_dir: Path) -> None:
    """Drop what a finished task no longer needs: training checkpoints and the sweep members'
    models (their summaries and metrics stay); the final fine-tuned model stays."""
    from ..training import SWEEP_DIR

    doomed = [task_dir / runs.CHECKPOINTS_DIR]
    if (task_dir / SWEEP_DIR).is_dir():
        for member in (task_dir / SWEEP_DIR).iterdir():
            doomed += [member / runs.CHECKPOINTS_DIR, member / runs.FINAL_DIR]
    for folder in doomed:
        if folder.is_dir():
            shutil.rmtree(folder)


def run_vtab(
    checkpoint: str | os.PathLike,
    tasks: str | Sequence[str] = "all",
    *,
    output_dir: str | os.PathLike | None = None,
    recipe: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike | None = None,
    data_dirs: Mapping[str, str | os.PathLike] | None = None,
    finetune_fn: Callable[[Any], Any] | None = None,
    keep_checkpoints: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the VTAB-1k protocol for `tasks` and write vtab.json / vtab.md / vtab.png to
    `output_dir` (default: the run folder of `checkpoint`, else outputs/vtab/<checkpoint>);
    per-task training runs go to `output_dir/vtab/<task>/`.

    Data: `data_dirs[task]`, else `data_root/<Hub id of the task>` when that folder exists (local
    copies laid out like the Hub repos), else the Hub. `finetune_fn(recipe) -> TrainResult` does
    one task's fine-tuning protocol (default `training.run_recipe`). Finished tasks found in an
    existing vtab.json of the same protocol are skipped. Returns the results record.
    """
    from accelerate import PartialState

    from ..runs import resolve_checkpoint
    from ..data import get_task

    if finetune_fn is None:
        from ..training import run_recipe as finetune_fn
    names = resolve_tasks(tasks)
    source, run_dir = resolve_checkpoint(checkpoint)
    base = base_recipe(recipe, overrides, source)
    out = Path(output_dir) if output_dir is not None else default_output_dir(checkpoint, run_dir, "vtab")
    path = out / runs.VTAB
    protocol = protocol_of(base, source)
    record: dict[str, Any] = {"checkpoint": str(checkpoint), "protocol": protocol, "tasks": {}}
    if path.is_file():
        previous = runs.read_json(path)
        if previous.get("protocol") != protocol:
            raise ValueError(
                f"{path} holds VTAB results of another protocol (checkpoint or recipe differ); choose another "
                "--output folder, or move that file away to start over"
            )
        record["tasks"] = dict(previous.get("tasks", {}))
    main = PartialState().is_main_process

    def save() -> None:
        record.update(aggregate(record["tasks"]))
        record["versions"] = runs.software_versions()
        if main and record["tasks"]:
            runs.write_json(path, record)
            write_text_atomic(out / TABLE, vtab_table(record) + "\n")
            plot_vtab(record, out / PLOT)

    for number, task in enumerate(names, 1):
        if task in record["tasks"]:
            log(f"[{number}/{len(names)}] {task}: done earlier ({100 * record['tasks'][task]['accuracy']:.2f}%), skipped")
            continue
        data_dir = (data_dirs or {}).get(task)
        if data_dir is None and data_root is not None:
            candidate = Path(data_root) / str(get_task(task).hub_id)
            data_dir = candidate if candidate.is_dir() else None
        task_dir = out / "vtab" / task_slug(task)
        recipe_t = task_recipe(base, source, task, out / "vtab", data_dir)
        log(f"[{number}/{len(names)}] {task}: fine-tuning (lr sweep {recipe_t.optim.lr_sweep or [recipe_t.optim.lr]}) "
            f"in {task_dir}")
        start = time.perf_counter()
        result = finetune_fn(recipe_t)
        record["tasks"][task] = _task_entry(task, recipe_t, result, task_dir, time.perf_counter() - start)
        save()
        if main and not keep_checkpoints:
            _prune(task_dir)
        log(f"[{number}/{len(names)}] {task}: {100 * record['tasks'][task]['accuracy']:.2f}% "
            f"(lr {record['tasks'][task]['hyperparameters']['lr']:g})")
    save()
    record["path"] = str(path)
    return record


def _cmd_vtab(args) -> int:
    data_dirs = {}
    for item in args.data_dir or []:
        task, sep, folder = item.partition("=")
        if not sep:
            raise ValueError(f"--data-dir takes TASK=FOLDER, got {item!r}")
        data_dirs[resolve_tasks(task)[0]] = folder
    # `--tasks a b key=value` also works: overrides typed after the task names are overrides.
    tasks = [t for t in args.tasks if "=" not in t] or ["all"]
    overrides = list(args.overrides) + [t for t in args.tasks if "=" in t]
    record = run_vtab(
        args.checkpoint, tasks, output_dir=args.output, recipe=args.recipe, overrides=overrides,
        data_root=args.data_root, data_dirs=data_dirs, keep_checkpoints=args.keep_checkpoints,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(vtab_table(record))
        print(f"Wrote {record['path']}, {TABLE} and {PLOT}")
    return 0


def add_vtab_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "vtab",
        help="the VTAB-1k benchmark: per-task fine-tuning with learning-rate selection, resumable",
        description="Run VTAB-1k for a checkpoint: per task, fine-tune on train800 for each learning rate of the "
        "sweep, pick the best on val200, fine-tune on all 1000 images and score the full test split. Writes "
        "vtab.json (per-task accuracy and hyperparameters, group means, overall mean), vtab.md and vtab.png; a "
        "finished task is not re-run. key=value arguments after the checkpoint (or after the task names) override "
        "the recipe as in `vit-repro train` (e.g. optim.lr_sweep=[0.01] for the paper's fixed rate, "
        "train.steps=500, smoke=true).",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id")
    p.add_argument("--tasks", nargs="+", default=["all"],
                   help="all (default), natural, specialized, structured, or task names (dtd, vtab/eurosat, ...)")
    p.add_argument("--recipe", default=None, help="base fine-tuning recipe (default: recipes/finetune_vtab.yaml)")
    p.add_argument("--data-root", default=None, help="folder holding local copies at <root>/<Hub id of the task>")
    p.add_argument("--data-dir", action="append", metavar="TASK=FOLDER", help="local copy of one task (repeatable)")
    p.add_argument("--output", default=None, help="results folder (default: the run folder, else outputs/vtab/...)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep training checkpoints and sweep models of finished tasks (default: deleted)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (right after the checkpoint)")
    p.set_defaults(func=_cmd_vtab)


__all__ = [
    "DEFAULT_LR_SWEEP",
    "default_recipe_path",
    "resolve_tasks",
    "base_recipe",
    "task_recipe",
    "protocol_of",
    "aggregate",
    "vtab_table",
    "plot_vtab",
    "run_vtab",
    "add_vtab_cli",
]


#: `vit-repro vtab` (hf_vit_repro.cli adds each module's subcommands through `add_cli`).
add_cli = add_vtab_cli
