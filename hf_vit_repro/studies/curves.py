"""Few-shot learning curves of a study's pretraining runs (`transfer.fewshot.curve`).

Every pretraining run of a study with a curve evaluates few-shot during training (its recipe's
`train.fewshot_eval`, `training.fewshot_curve`): at initialisation (step 0), every `every` updates
and at its last update, on the few-shot transfer's task and classes. The runner reads each run's
logs/fewshot_curve.jsonl into its study.json record (`read_run_curve`); the report draws

- STUDY_DIR/<study>_curves.png: few-shot accuracy against pretraining step, a panel per model (and
  augmentation/regularisation level in the augreg study), a line per data size (or per epochs in the
  compute study): the mean over the seeds that reached each step, with a band from the lowest to the
  highest seed;
- a table in study.md: per line, the accuracy at step 0 (no pretraining), the best along the run
  and at its end, each as "mean (min-max)" over seeds.

A record without a `curve` (a study.json written before curves were read) falls back to its
run folder's file, so `vit-repro study report` redraws older studies whose runs logged curves.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

CURVE_PLOTS = {"data-size": "data_size_curves.png", "compute": "compute_curves.png", "augreg": "augreg_curves.png"}


def read_run_curve(run_dir: str | Path, task: str, classes=None) -> dict[str, Any] | None:
    """A run's curve for `task` (and `classes`) as study.json keeps it: {"task": fewshot.json's name,
    "steps": [...], "accuracy": {"<k>": [one per step]}}; None when the run logged none."""
    from ..evaluation.fewshot import fewshot_task_name
    from ..training.fewshot_curve import read_curve

    name = fewshot_task_name(task, classes)
    rows = read_curve(run_dir)
    shots = sorted({key[len(name) + 1:-4] for row in rows for key in row
                    if key.startswith(f"{name}/") and key.endswith("shot")}, key=int)
    if not shots:
        return None
    rows = [row for row in rows if all(f"{name}/{k}shot" in row for k in shots)]
    return {"task": name, "steps": [row["step"] for row in rows],
            "accuracy": {k: [row[f"{name}/{k}shot"] for row in rows] for k in shots}}


def curve_of(record: dict[str, Any], study: dict[str, Any]) -> dict[str, Any] | None:
    """The record's curve; for a record written before curves were read, its run folder's."""
    if "curve" in record:
        return record["curve"]
    fewshot = study["config"]["transfer"].get("fewshot") or {}
    if not fewshot.get("curve") or not record.get("run_dir") or not Path(record["run_dir"]).is_dir():
        return None
    return read_run_curve(record["run_dir"], fewshot["task"], fewshot.get("classes"))


def curve_shots(study: dict[str, Any]) -> str | None:
    """The shot count the curves are drawn for: the plotted column where the curves have it, else their largest."""
    measured = {k for r in study["runs"] if (c := curve_of(r, study)) for k in c["accuracy"]}
    if not measured:
        return None
    wanted = str(study["config"]["plot"]["shots"])
    return wanted if wanted in measured else max(measured, key=int)


def seed_spread(curves: list[dict[str, Any]], shots: str) -> list[tuple[int, float, float, float, int]]:
    """(step, mean, min, max, n) in % at every step some seed's curve has, over the seeds that reached it."""
    at: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in zip(curve["steps"], curve["accuracy"].get(shots, [])):
            at.setdefault(step, []).append(value)
    return [(step, 100 * sum(v) / len(v), 100 * min(v), 100 * max(v), len(v)) for step, v in sorted(at.items())]


def _panels(study: dict[str, Any]):
    """{panel name: [(line label, [curves of its seeds], sort key)]}: a panel per model (and level),
    a line per point (data size, or epochs in the compute study)."""
    from .report import group_points, line_name

    compute = study["study"] == "compute"
    panels: dict[str, list] = {}
    for group in group_points(study["runs"]):
        curves = [c for r in group if (c := curve_of(r, study)) is not None]
        if not curves:
            continue
        first = group[0]
        if compute:
            label, key = f"{first['epochs']:g} epochs", first["epochs"] or 0
        else:
            examples = first.get("train_examples") or 0
            label, key = f"{examples:,} examples", examples
        panels.setdefault(line_name(first), []).append((label, curves, key))
    return {name: sorted(lines, key=lambda line: line[2]) for name, lines in panels.items()}


def curve_figure(study: dict[str, Any]):
    """The study's curves figure (module docstring), or None when no run logged a curve."""
    from ..figures import new_figure

    shots = curve_shots(study)
    panels = _panels(study)
    if shots is None or not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = new_figure(4.0 * columns, 3.2 * rows + 0.6)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    fewshot = study["config"]["transfer"]["fewshot"]
    task = next(c["task"] for r in study["runs"] if (c := curve_of(r, study)))
    seeds = 1
    for ax, (name, lines) in zip(axes, panels.items()):
        for label, curves, _ in lines:
            points = seed_spread(curves, shots)
            if not points:
                continue
            seeds = max(seeds, len(curves))
            steps = [p[0] for p in points]
            (line,) = ax.plot(steps, [p[1] for p in points], marker=".", markersize=3, linewidth=1, label=label)
            if any(p[3] > p[2] for p in points):  # the seeds' spread: a band from the lowest to the highest
                ax.fill_between(steps, [p[2] for p in points], [p[3] for p in points], color=line.get_color(),
                                alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("pretraining step (0: at initialisation)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in axes[: len(axes) : columns]:
        ax.set_ylabel(textwrap.fill(f"{shots}-shot linear accuracy on {task} (%)", 36), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    curve = fewshot.get("curve") or {}
    cap = curve.get("max_test_examples")
    spread = f"mean of {seeds} seeds, band min-max; " if seeds > 1 else ""
    figure.suptitle(textwrap.fill(
        f"{study['study']} study {study['name']}: few-shot accuracy during pretraining ({spread}every "
        f"{curve.get('every', '?')} updates, {curve.get('seeds', 1)} draw(s) of the shots, "
        f"{f'first {cap} test images' if cap else 'the whole test split'})", 40 * columns), fontsize=9)
    return figure


def plot_curves(study: dict[str, Any], path: str | Path) -> Path | None:
    """Draw `curve_figure` into `path` (PNG, atomically); None when the study has no curve."""
    from ..figures import save_figure

    figure = curve_figure(study)
    return None if figure is None else save_figure(figure, path)


def curve_table(study: dict[str, Any]) -> str:
    """study.md's curve table: per line, the k-shot accuracy at step 0, the best along the run (with
    the steps it was reached at) and at the end (with the last steps), "mean (min-max)" over seeds; "" without curves."""
    from ..evaluation.common import format_table

    from .report import pct_spread

    shots = curve_shots(study)
    panels = _panels(study)
    if shots is None or not panels:
        return ""
    rows = []
    for name, lines in panels.items():
        for label, curves, _ in lines:
            values = [(c["steps"], c["accuracy"].get(shots, [])) for c in curves]
            values = [(s, a) for s, a in values if a]
            start = [a[0] for s, a in values if s[0] == 0]
            best = [max(range(len(a)), key=lambda i: a[i]) for _, a in values]
            rows.append([name, label, str(len(values)), pct_spread(start),
                         pct_spread([a[i] for (_, a), i in zip(values, best)]),
                         ", ".join(str(s[i]) for (s, _), i in zip(values, best)),
                         pct_spread([a[-1] for _, a in values]), ", ".join(str(s[-1]) for s, _ in values)])
    task = next(c["task"] for r in study["runs"] if (c := curve_of(r, study)))
    header = ["model", "data", "seeds", "step 0 (%)", "best (%)", "best at step", "end (%)", "end step"]
    return (f"Few-shot during pretraining (`transfer.fewshot.curve`, {shots}-shot on {task}; figure "
            f"{CURVE_PLOTS[study['study']]}): at initialisation (step 0), the best along the run, and at its "
            "last update; mean (min-max) over seeds.\n\n" + format_table(header, rows))
