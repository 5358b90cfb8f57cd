"""The VTAB-1k benchmark (Zhai et al. 2019) as the paper runs it (Sec. 4.1, Appendix B.1.1).

    vit-repro vtab RUN_OR_CHECKPOINT [--tasks all|natural|specialized|structured|NAME ...]
    vit-repro vtab RUN --protocol sweep                       # per-task learning-rate selection
    vit-repro vtab CHECKPOINT --pretraining-data ImageNet-21k  # to find the paper's Table 9 row
    vit-repro vtab RUN smoke=true --tasks dtd eurosat clevr_count      # a few CPU steps per task
    vit-repro vtab BIT_RUN --protocol bit-hyperrule           # a BiT ResNet as BiT fine-tunes it
    vit-repro vtab CHECKPOINT --method lora                   # parameter-efficient transfer (see below)

Four protocols, recorded by name in vtab.json (`protocol.name`) and vtab.md:

- `paper` (the default): the paper's ONE setting for all 19 tasks, learning rate 0.01, 2500
  steps, batch 512, 384 px (`PAPER_SETTING`; the paper chose it once, from two rates and two
  schedules, by the mean VTAB score on the 200-image validation sets, Appendix B.1.1 and Table
  4). Per task: fine-tune the checkpoint on all 1000 images (train800val200) and score the
  task's full test split; no per-task choice. Other key=value overrides still apply, and every
  change to those five settings (or `smoke=true`) is listed as a departure, which makes the run
  not comparable with the paper's numbers.
- `sweep` (ours, not the paper's): per task, fine-tune once per rate of `DEFAULT_LR_SWEEP`
  (0.001, 0.003, 0.01, 0.03, the paper's sweep for the other transfer sets) on train800, keep the
  best on val200, fine-tune with it on train800val200 and score the test split. Its numbers are
  never put beside the paper's: vtab.md says the paper's row is not comparable.
- `bit-hyperrule` (BiT's, for BiT ResNets): the one setting of recipes/finetune_bit_vtab.yaml,
  BiT-HyperRule for 1000 images (Kolesnikov et al. 2020, Sec. 3.3; how the paper's BiT-L VTAB
  number in Table 2 was obtained): learning rate 0.003, 500 steps, the rate divided by 10 after
  30/60/90% of them, no clipping, no per-task sweep. Not the paper's ViT protocol either.

`--method` (the recipe's `train.method`, `training.peft_methods`) chooses which parameters are
trained: `full` (the default, the paper's), `linear`, `bitfit`, `lora`, `vpt-shallow`, `vpt-deep`,
`adapter`; each task's entry and vtab.md give the trainable parameters and their fraction of the
model. Under the paper protocol another method is listed as a departure (the paper's numbers are
full fine-tuning). `select` (`--select`, `vtab.selection`) is VPT's own protocol for `vpt-shallow` /
`vpt-deep`: per task a grid of learning rates x weight decays on train800, chosen on val200, then
train800val200 with VPT's schedule (SGD, cosine, 100 epochs, batch 128, 224 px); the grid and the
choice are in TASK/select.json and each task's entry. `vit-repro vtab-methods` (`vtab.methods`) puts
one vtab.json per method into one table beside the published numbers.

A BiT ResNet checkpoint runs under any of them; the recipe's ViT-only settings (dropout, a
pre-logits layer) are switched off for it, as a ResNet has neither.

Both fine-tune with the package's one training loop (`training.run_recipe`): a zero-initialised
head, the pre-logits layer dropped, position embeddings resampled to the recipe's resolution,
SGD with momentum 0.9, no weight decay, clipping at global norm 1, cosine decay (the base recipe
recipes/finetune_vtab.yaml, or --recipe). Pre-processing per task is the registry's (BiT's rule:
random crop and flip except where they change the label, `TaskSpec.crop` / `TaskSpec.flip`), and
the VTAB-1k rows are the registry's (`TaskSpec.vtab_rows`: task_adaptation's train[:800], its
val200 where published, else a seeded draw); vtab.json records both per task.

Results: `OUT/vtab.json` (`runs.VTAB`) with the protocol, each task's accuracy, group,
hyperparameters, pre-processing and rows (and, for `sweep`, validation accuracy per learning
rate), the three group means and the overall mean (over tasks, the paper's "VTAB (19 tasks)"
number), and `paper`: the matching row of the paper's Table 9 (`paper_results.vtab_row`) for
the checkpoint's variant and pretraining data, whether it is comparable, and why not. `vtab.md`
puts "this run" and "paper" in separate, labelled columns (per task, and the mean only when all
19 tasks ran) or says "no matching row"; `vtab.png` is a bar plot. The JSON is rewritten
atomically after every task: a finished task is never re-run, and an interrupted one resumes
from its last training checkpoint (`run.resume=auto`). Results of a different protocol
(checkpoint, protocol name or base recipe) in the same folder are an error, not a mix.
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
from ..evaluation.common import default_output_dir, format_table, write_text_atomic
from . import selection

PROTOCOLS = ("paper", "sweep", "bit-hyperrule", "select")
DEFAULT_PROTOCOL = "paper"
#: The paper's one VTAB-1k setting (Appendix B.1.1; Table 4, row "VTAB (19 tasks)"): recipe key ->
#: value, the same for every task, no per-task selection.
PAPER_SETTING: dict[str, Any] = {
    "optim.lr": 0.01,
    "optim.lr_sweep": [],
    "train.steps": 2500,
    "train.global_batch_size": 512,
    "model.image_size": 384,
    "train.method": "full",  # the paper fine-tunes every parameter; any other --method is a departure
}
#: The `sweep` protocol's candidates when the base recipe has no sweep of its own: the paper's
#: fine-tuning sweep for CIFAR, Pets and Flowers (Table 4), not its VTAB protocol.
DEFAULT_LR_SWEEP: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
PROTOCOL_TEXT = {
    "paper": "the paper's: one setting for all tasks (learning rate 0.01, 2500 steps, batch 512, 384 px, no per-task "
    "sweep), fine-tuned on train800val200 (1000 images), scored on the full test split (Appendix B.1.1, Table 4)",
    "sweep": "not the paper's protocol: per task, the learning rate is chosen on val200 after fine-tuning on "
    "train800, then the task is fine-tuned on train800val200 and scored on the full test split",
    "bit-hyperrule": "BiT-HyperRule (Kolesnikov et al. 2020), not the paper's ViT protocol: one setting for all tasks "
    "(learning rate 0.003 divided by 10 after 30/60/90% of 500 steps, batch 512, 384 px, no per-task sweep), "
    "fine-tuned on train800val200 (1000 images), scored on the full test split",
    "select": selection.PROTOCOL_TEXT,
}
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


def default_recipe_path(protocol: str = DEFAULT_PROTOCOL) -> Path:
    """recipes/finetune_vtab.yaml (the paper's VTAB-1k fine-tuning settings), or
    recipes/finetune_bit_vtab.yaml for the `bit-hyperrule` protocol, as the package carries them
    (links into recipes/ in a checkout, copies in a wheel), so an installed package has them too."""
    name = "finetune_bit_vtab.yaml" if protocol == "bit-hyperrule" else "finetune_vtab.yaml"
    return Path(__file__).resolve().parent / "recipes" / name


def base_recipe(
    recipe: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    checkpoint: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
):
    """The recipe every task starts from: `recipe` (default `default_recipe_path()`) with the
    VTAB-1k splits and the `protocol`'s settings, `checkpoint` as `model.init_from`, then
    `key=value` overrides and the smoke switch applied exactly as `vit-repro train` applies them
    (`training.load_recipe`).

    `paper`: `PAPER_SETTING` (whatever the file says), train on train800val200, no sweep.
    `sweep`: the file's `optim.lr_sweep` (`DEFAULT_LR_SWEEP` when it has none), sweep members
    trained on train800 and compared on val200, the final run on train800val200.
    """
    import yaml

    from ..training import load_recipe

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown VTAB protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    path = Path(recipe) if recipe is not None else default_recipe_path(protocol)
    if not path.is_file():
        raise ValueError(
            f"no VTAB recipe at {str(path)!r}; pass --recipe with a fine-tuning recipe (the source tree's "
            "recipes/finetune_vtab.yaml holds the paper's settings)"
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    for section in ("optim", "data", "model", "train"):
        values[section] = dict(values.get(section) or {})
    # The splits a sweep would use are set under both protocols (an `optim.lr_sweep` override of
    # the paper's protocol is then a valid, recorded departure); `task_recipe` drops them when
    # there is nothing to choose.
    values["data"].update(train_split="train800val200", eval_split="test", holdout=False, sweep_train_split="train800",
                          val_split="val200")
    if protocol == "paper":
        for key, value in PAPER_SETTING.items():
            section, name = key.split(".")
            values[section][name] = list(value) if isinstance(value, list) else value
        values["train"].pop("epochs", None)
    elif protocol == "bit-hyperrule":
        values["optim"]["lr_sweep"] = []  # BiT-HyperRule tunes nothing per task
    elif protocol == "select":  # VPT's schedule; its grid runs in `selection.selecting_finetune`
        for key, value in selection.VPT_SETTING.items():
            values[key.split(".")[0]][key.split(".")[1]] = value
        values["train"].pop("steps", None)
    elif not values["optim"].get("lr_sweep"):
        values["optim"]["lr_sweep"] = list(DEFAULT_LR_SWEEP)
    if checkpoint is not None:
        values["model"]["init_from"] = str(checkpoint)
        values["model"].update(_fixed_model_fields(checkpoint))  # a ResNet: no dropout, no pre-logits layer
    with tempfile.TemporaryDirectory() as folder:
        resolved = Path(folder) / path.name
        resolved.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        loaded = load_recipe(resolved, list(overrides))
    loaded.source = str(path)  # type: ignore[attr-defined]
    return loaded


def _fixed_model_fields(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The recipe's `model.*` settings the checkpoint's family has no use for, at the values it accepts."""
    from ..models import find_family

    config = Path(checkpoint) / "config.json"
    family = find_family(runs.read_json(config)) if config.is_file() else None
    return dict(family.fixed_model_fields) if family is not None else {}


def _value(recipe, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(recipe, section), name)


def departures(base) -> list[str]:
    """How a base recipe differs from the paper's VTAB setting: "key=value (paper: value)" for
    each `PAPER_SETTING` entry it changes, plus "smoke=true". Empty: the paper's setting."""
    found = [f"{key}={_value(base, key)!r} (paper: {value!r})" for key, value in PAPER_SETTING.items()
             if _value(base, key) != value]
    if base.run.smoke:
        found.append("smoke=true")
    return found


def task_slug(task: str) -> str:
    return task.split("/")[-1]


def task_recipe(base, checkpoint: str | os.PathLike, task: str, output_dir: Path, data_dir: str | os.PathLike | None,
                resolution: str = "paper"):
    """The base recipe with one task's data and folders: fine-tune `checkpoint` (its own
    architecture) on train800val200 and score the test split; with a sweep of two or more rates,
    sweep members train on train800 and are compared on val200 first. `resolution="bit-hyperrule"`
    sets the task's resolution (and the random crop's square) by BiT's rule (`bit_resolution`)."""
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
    if resolution == "bit-hyperrule":
        from .bit_resolution import task_resolution

        precrop, crop = task_resolution(task)
        changes["model.image_size"] = crop
        if base.data.augmentation == "finetune":  # the square the random crop is taken from
            changes["data.resize_size"] = precrop
    if len(base.optim.lr_sweep) <= 1:  # nothing to select: no train800 runs, no val200
        lr = base.optim.lr_sweep[0] if base.optim.lr_sweep else base.optim.lr
        changes.update({"optim.lr": lr, "optim.lr_sweep": [], "data.sweep_train_split": None, "data.val_split": None})
    return base.replace(**changes)


def protocol_of(base, checkpoint: str | os.PathLike, protocol: str = DEFAULT_PROTOCOL,
                resolution: str = "paper") -> dict[str, Any]:
    """What decides the numbers: the protocol's name, the checkpoint, every hyperparameter of the
    base recipe (not the runtime switches of its `run` section, except smoke), for `paper` the
    departures from the paper's setting (`departures`), and a per-task `resolution` rule other than
    the paper's."""
    import json

    values = base.to_dict()
    smoke = values.pop("run")["smoke"]
    for key in ("name", "description"):
        values.pop(key, None)
    values["model"].pop("init_from", None)  # the checkpoint is recorded once, below
    values["data"] = {k: v for k, v in values["data"].items() if k not in ("task", "data_dir")}
    record = {"name": protocol, "description": PROTOCOL_TEXT[protocol], "checkpoint": str(checkpoint), "smoke": smoke,
              "departures": departures(base) if protocol == "paper" else None, "recipe": values}
    if resolution != "paper":
        from .bit_resolution import RESOLUTION_TEXT

        record["resolution"] = {"rule": resolution, "description": RESOLUTION_TEXT[resolution]}
    return json.loads(json.dumps(record))


# ============================================================================ the paper's row


def checkpoint_identity(source: str, run_dir: Path | None, pretraining: str | None = None) -> dict[str, str | None]:
    """{"model", "pretraining"}: the checkpoint's variant name (`variants.variant_of` its config,
    None for an architecture outside the table or a config that cannot be read) and its
    pretraining data in the paper's spelling: `pretraining` when given, else the `data.task` of
    the run's recipe when that run was a pretraining run (imagenet21k -> "ImageNet-21k"), else
    None."""
    from .. import paper_results
    from ..variants import variant_of

    model = None
    try:
        from ..configuration_vit_repro import ViTReproConfig

        model = variant_of(ViTReproConfig.from_pretrained(source))
    except (OSError, ValueError):
        model = None
    data = paper_results.pretraining_name(pretraining) if pretraining else None
    if pretraining and data is None:
        raise ValueError(f"--pretraining-data {pretraining!r} is not one of the paper's: ImageNet, ImageNet-21k, JFT-300M")
    if data is None and run_dir is not None and (Path(run_dir) / runs.RECIPE).is_file():
        import yaml

        recipe = yaml.safe_load((Path(run_dir) / runs.RECIPE).read_text(encoding="utf-8")) or {}
        if recipe.get("mode") == "pretrain":
            data = paper_results.pretraining_name((recipe.get("data") or {}).get("task"))
    return {"model": model, "pretraining": data}


def paper_comparison(protocol: Mapping[str, Any], identity: Mapping[str, str | None]) -> dict[str, Any]:
    """vtab.json's `paper` entry: the Table 9 row (`paper_results.vtab_row`) matching the
    checkpoint's variant and pretraining data (`row`: its label, or None), `comparable` (the
    paper protocol, no departures, a row), and `note`, the sentence vtab.md prints."""
    from .. import paper_results

    model, data = identity.get("model"), identity.get("pretraining")
    row = paper_results.vtab_row(model, data) if model and data else None
    labels = ", ".join(r.label for r in paper_results.vtab_rows())
    this = f"{model or 'an architecture outside the variant table'} pretrained on {data or 'unknown data'}"
    if row is None:
        note = (f"no matching row: the paper's Table 9 reports {labels}; this checkpoint is {this}"
                + ("" if data else " (give --pretraining-data)") + ".")
    elif protocol["name"] != "paper":
        how = ("chose a learning rate per task (sweep protocol)" if protocol["name"] == "sweep"
               else f"used another setting ({protocol['name']} protocol)")
        note = f"the paper's row {row.label} is not comparable: this run {how}, the paper used one setting for all tasks."
    elif protocol.get("departures"):
        note = (f"the paper's row {row.label} is not comparable: this run departs from the paper's setting "
                f"({'; '.join(protocol['departures'])}).")
    else:
        note = f"{row.citation}; {paper_results.CITATION}."
    comparable = row is not None and protocol["name"] == "paper" and not protocol.get("departures")
    return {"row": row.label if row else None, "model": model, "pretraining": data, "comparable": comparable,
            "citation": row.citation if row else None, "note": note}


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


def _fmt_count(value: int | None) -> str:
    """A parameter count as PEFT tables print it: 0.29M, 85.8M, 7.7K."""
    if value is None:
        return ""
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}K" if value >= 1e3 else str(value)


def _fmt_fraction(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.3g}"


def vtab_table(record: Mapping[str, Any]) -> str:
    """Markdown: one row per task (this run's test accuracy, then the paper's Table 9 number in
    its own labelled column when `record["paper"]` names a comparable row, then the settings:
    learning rate, steps, batch, resolution, random crop, flip, and for a sweep the validation
    accuracy per rate), then the group means and the overall mean. The paper's mean is shown only
    beside a mean over all 19 tasks (Table 9's "Mean")."""
    from .. import paper_results
    from ..data import VTAB_GROUPS, VTAB_TASKS

    tasks = record.get("tasks", {})
    paper = record.get("paper") or {}
    row = next((r for r in paper_results.vtab_rows() if r.label == paper.get("row")), None) if paper.get("comparable") else None
    sweep = any(entry.get("val_accuracy_by_lr") or entry.get("val_accuracy_by_setting") for entry in tasks.values())
    order = sorted(tasks, key=lambda t: (VTAB_GROUPS.index(tasks[t]["group"]), t))

    def yes_no(value):
        return "" if value is None else ("yes" if value else "no")

    rows = []
    for task in order:
        entry = tasks[task]
        h = entry["hyperparameters"]
        pre = entry.get("preprocessing") or {}
        cells = [task_slug(task), entry["group"], f"{100 * entry['accuracy']:.2f}"]
        if row is not None:
            cells.append(f"{row.tasks[task]:.1f}" if task in row.tasks else "")
        cells += [entry.get("method", "full"), _fmt_count(entry.get("trainable_parameters")),
                  _fmt_fraction(entry.get("trainable_fraction")), _fmt_lr(h["lr"]), h["steps"], h["batch_size"], h["resolution"], yes_no(pre.get("random_crop")),
                  yes_no(pre.get("flip"))]
        if sweep:
            val = entry.get("val_accuracy_by_lr") or entry.get("val_accuracy_by_setting") or {}
            cells.append(", ".join(f"{lr}: {100 * acc:.1f}" for lr, acc in val.items()) or "-")
        rows.append(cells)
    blank = [""] * (len(rows[0]) - 3 - (row is not None)) if rows else []
    for group, value in record.get("group_means", {}).items():
        rows.append([f"**mean {group}**", "", f"{100 * value:.2f}"] + ([""] if row is not None else []) + blank)
    if record.get("mean") is not None:
        complete = set(VTAB_TASKS) <= set(tasks)
        paper_mean = ([f"{row.mean:.1f}" if complete else "(all 19 tasks only)"] if row is not None else [])
        rows.append([f"**mean ({len(tasks)} tasks)**", "", f"{100 * record['mean']:.2f}"] + paper_mean + blank)
    header = ["task", "group", "this run: test accuracy (%)"]
    if row is not None:
        header.append(f"paper: {row.label}, Table 9 (%)")
    header += ["method", "trainable params", "trainable (%)", "lr", "steps", "batch", "resolution", "random crop",
               "flip"]
    if sweep:
        by = "setting" if (record.get("protocol") or {}).get("name") == "select" else "lr"
        header.append(f"val200 accuracy by {by} (%)")
    return format_table(header, rows)


def vtab_report(record: Mapping[str, Any]) -> str:
    """vtab.md: which protocol ran (and its departures from the paper's setting), which row of
    the paper's Table 9 it is set beside ("no matching row", or why it is not comparable), the
    table (`vtab_table`) and where the VTAB-1k rows came from."""
    protocol = record.get("protocol") or {}
    name = protocol.get("name", "?")
    lines = [f"# VTAB-1k: {record.get('checkpoint', '')}", "",
             f"**Protocol: {name}.** {PROTOCOL_TEXT.get(name, '')}."]
    if protocol.get("departures"):
        lines.append(f"Departures from the paper's setting: {'; '.join(protocol['departures'])}.")
    if protocol.get("resolution"):
        lines.append(f"Resolution per task, in place of the 384 px above: {protocol['resolution']['description']}.")
    paper = record.get("paper") or {}
    if paper:
        label = "**Paper (Table 9):**" if paper.get("comparable") else "**Paper:**"
        lines += ["", f"{label} {paper.get('note', '')}"]
    lines += ["", vtab_table(record), ""]
    if {entry.get("method", "full") for entry in record.get("tasks", {}).values()} - {"full"}:
        from .methods import method_summary, methods_table

        summary = method_summary(record)  # the method's published row (ViT-B/16, I21k) over the same tasks
        lines += [f"**Published ({summary['method']}):** {summary['citation'] or 'no published row'}.", "",
                  methods_table([summary]), ""]
    rows = {entry.get("rows") for entry in record.get("tasks", {}).values() if entry.get("rows")}
    if rows:
        lines.append("VTAB-1k rows per task: see `rows` in vtab.json (train800 = train[:800] everywhere; val200 "
                     "official where the published splits hold it, else a seeded draw).")
    return "\n".join(lines) + "\n"


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
    protocol = (record.get("protocol") or {}).get("name")
    ax.set_title(f"VTAB-1k: {name or 'checkpoint'}" + (f" ({protocol} protocol)" if protocol else ""))
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


def check_resolution(protocol: str, resolution: str) -> None:
    """BiT's per-task resolution is for BiT ResNets fine-tuned as BiT does (`bit-hyperrule`); the
    paper's ViT protocols train every task at 384 px."""
    from .bit_resolution import RESOLUTION_RULES

    if resolution not in RESOLUTION_RULES:
        raise ValueError(f"unknown resolution rule {resolution!r}; choose one of {', '.join(RESOLUTION_RULES)}")
    if resolution != "paper" and protocol != "bit-hyperrule":
        raise ValueError(f"--resolution-rule {resolution} goes with --protocol bit-hyperrule (BiT ResNets fine-tuned as BiT "
                         f"does); the {protocol!r} protocol trains every task at the recipe's resolution")


def _task_entry(task: str, recipe, result, task_dir: Path, seconds: float) -> dict[str, Any]:
    from ..data import get_task
    from ..training import SWEEP

    spec = get_task(task)
    summary = runs.read_json(task_dir / runs.TRAIN_SUMMARY) if (task_dir / runs.TRAIN_SUMMARY).is_file() else {}
    sweep = runs.read_json(task_dir / SWEEP) if (task_dir / SWEEP).is_file() else None
    evaluation = summary.get("eval") or {}
    if result.eval_accuracy is None:
        raise RuntimeError(f"{task}: the final fine-tune reported no test accuracy (is data.eval_split set?)")
    o, t = recipe.optim, recipe.train
    lr = float(sweep["best_lr"]) if sweep else float(o.lr)
    trainable, total = summary.get("trainable_parameters"), summary.get("num_parameters")
    entry = {
        "group": spec.vtab_group,
        "accuracy": float(result.eval_accuracy),
        "method": t.method,
        "trainable_parameters": trainable,
        "num_parameters": total,
        "trainable_fraction": trainable / total if trainable is not None and total else None,
        "num_test_images": evaluation.get("num_images"),
        "hyperparameters": {
            "lr": lr,
            "lr_candidates": sorted(float(v) for v in (sweep["accuracy_by_lr"] if sweep else [o.lr])),
            "steps": result.steps,
            "method_options": dict(t.method_options),
            "batch_size": t.global_batch_size,
            "resolution": recipe.model.image_size,
            "resize_size": recipe.data.resize_size,
            "optimizer": o.optimizer,
            "dropout": recipe.model.dropout,
            "momentum": o.momentum if o.optimizer == "sgd" else None,
            "weight_decay": o.weight_decay,
            "schedule": o.schedule,
            "warmup_steps": o.warmup_steps,
            "grad_clip_norm": o.grad_clip_norm,
        },
        "preprocessing": {"random_crop": spec.crop, "flip": spec.flip},
        # Accelerate's name for the fine-tuning's ("no" = fp32), the evaluation's as it ran
        "precision": {"training": summary.get("hardware", {}).get("mixed_precision"),
                      "evaluation": evaluation.get("precision")},
        "rows": spec.vtab_rows,
        "train_split": recipe.data.train_split,
        "val_accuracy_by_lr": sweep["accuracy_by_lr"] if sweep else None,
        "selection": "val200 accuracy after fine-tuning on train800" if sweep else "none: one fixed setting",
        "run_dir": str(task_dir),
        "wall_time_s": round(seconds, 1),
    }
    chosen = selection.entry_updates(task_dir)  # the `select` protocol's grid and choice
    entry["hyperparameters"].update(chosen.pop("hyperparameters", {}))
    return {**entry, **chosen}


def _prune(task_dir: Path) -> None:
    """Drop what a finished task no longer needs: training checkpoints and the sweep members'
    models (their summaries and metrics stay); the final fine-tuned model stays."""
    from ..training import SWEEP_DIR

    doomed = [task_dir / runs.CHECKPOINTS_DIR]
    for members in (task_dir / SWEEP_DIR, task_dir / selection.SELECT_DIR):
        for member in members.iterdir() if members.is_dir() else ():
            doomed += [member / runs.CHECKPOINTS_DIR, member / runs.FINAL_DIR]
    for folder in doomed:
        if folder.is_dir():
            shutil.rmtree(folder)


def run_vtab(
    checkpoint: str | os.PathLike,
    tasks: str | Sequence[str] = "all",
    *,
    protocol: str = DEFAULT_PROTOCOL,
    output_dir: str | os.PathLike | None = None,
    recipe: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike | None = None,
    data_dirs: Mapping[str, str | os.PathLike] | None = None,
    pretraining_data: str | None = None,
    finetune_fn: Callable[[Any], Any] | None = None,
    keep_checkpoints: bool = False,
    selection_grid: Mapping[str, Sequence[float]] | None = None,
    log: Callable[[str], None] = print,
    resolution: str = "paper",
) -> dict[str, Any]:
    """Run the VTAB-1k `protocol` ("paper", "sweep" or "bit-hyperrule", module docstring) for `tasks` and write
    vtab.json / vtab.md / vtab.png to `output_dir` (default: the run folder of `checkpoint`, else
    outputs/vtab/<checkpoint>); per-task training runs go to `output_dir/vtab/<task>/`.

    Data: `data_dirs[task]`, else `data_root/<Hub id of the task>` when that folder exists (local
    copies laid out like the Hub repos), else the Hub. `pretraining_data` names the checkpoint's
    pretraining set for finding the paper's Table 9 row (default: the run's recipe, when it was a
    pretraining run). `finetune_fn(recipe) -> TrainResult` does one task's fine-tuning (default
    `training.run_recipe`). Finished tasks found in an existing vtab.json of the same protocol are
    skipped. `selection_grid` ({"lr": [...], "weight_decay": [...]}) is the `select` protocol's grid
    (default VPT's, `selection.default_grid()`). `resolution` ("paper" or "bit-hyperrule", `bit_resolution`): one 384 px
    for every task, or, with the `bit-hyperrule` protocol only, BiT's code's rule per task (128 px below 96 x 96 images,
    else 480). Returns the results record.
    """
    from accelerate import PartialState

    from ..runs import resolve_checkpoint
    from ..data import get_task

    if finetune_fn is None and protocol != "select":
        from ..training import run_recipe as finetune_fn
    names = resolve_tasks(tasks)
    check_resolution(protocol, resolution)
    source, run_dir = resolve_checkpoint(checkpoint)
    base = base_recipe(recipe, overrides, source, protocol)
    out = Path(output_dir) if output_dir is not None else default_output_dir(checkpoint, run_dir, "vtab")
    path = out / runs.VTAB
    settings = protocol_of(base, source, protocol, resolution)
    if protocol == "select":
        settings["selection_grid"] = grid = selection.checked_grid(base.train.method, selection_grid)
        finetune_fn = finetune_fn or selection.selecting_finetune(grid)
    paper = paper_comparison(settings, checkpoint_identity(source, run_dir, pretraining_data))
    record: dict[str, Any] = {"checkpoint": str(checkpoint), "protocol": settings, "paper": paper, "tasks": {}}
    if path.is_file():
        previous = runs.read_json(path)
        if previous.get("protocol") != settings:
            raise ValueError(
                f"{path} holds VTAB results of another protocol (protocol name, checkpoint or recipe differ); choose "
                "another --output-dir folder, or move that file away to start over"
            )
        record["tasks"] = dict(previous.get("tasks", {}))
    main = PartialState().is_main_process
    log(f"VTAB-1k, protocol {protocol}: {PROTOCOL_TEXT[protocol]}")
    if settings.get("departures"):
        log(f"departures from the paper's setting: {'; '.join(settings['departures'])}")

    def save() -> None:
        record.update(aggregate(record["tasks"]))
        record["versions"] = runs.software_versions()
        if main and record["tasks"]:
            runs.write_json(path, record)
            write_text_atomic(out / TABLE, vtab_report(record))
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
        recipe_t = task_recipe(base, source, task, out / "vtab", data_dir, resolution)
        log(f"[{number}/{len(names)}] {task}: fine-tuning (lr {recipe_t.optim.lr_sweep or [recipe_t.optim.lr]}) "
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


__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "PAPER_SETTING",
    "DEFAULT_LR_SWEEP",
    "default_recipe_path",
    "resolve_tasks",
    "base_recipe",
    "departures",
    "task_recipe",
    "protocol_of",
    "checkpoint_identity",
    "paper_comparison",
    "aggregate",
    "vtab_table",
    "vtab_report",
    "plot_vtab",
    "run_vtab",
    "check_resolution",
]
