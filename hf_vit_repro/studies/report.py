"""A study's plots and table, drawn from its study.json alone (`vit-repro study report` redraws
them), in the paper's forms:

- data-size (Figures 3 and 4): accuracy against the number of pretraining examples (log scale),
  one line per model; a panel per measure the study has: few-shot linear accuracy (Figure 4),
  fine-tuned accuracy (Figure 3) and the best validation accuracy on the pretraining task.
- augreg (AugReg's Figure 1): as data-size, one line per model and augmentation/regularisation level.
- compute (Figure 5): transfer accuracy against pretraining exaFLOPs (log scale), one colour per
  family; beside it, in a panel of its own, the paper's Table 6 ("paper (JFT-300M)"): the
  reference is never drawn on the measured axes, whose scale it does not share.
- study.md: the measured runs as a table in Table 6's form (family, model, epochs, transfer
  accuracies, pretraining exaFLOPs, device time).
- with `transfer.fewshot.curve`: <study>_curves.png, few-shot accuracy against pretraining step, and
  its table in study.md (`studies.curves`).

A study run with several `seeds` has several runs per point (model and size, or model and epochs):
the plots draw their mean with a bar from the lowest to the highest seed, and the table writes
"mean (min-max)" with the number of seeds; a point of one seed is its value alone.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

PLOTS = {"data-size": "data_size.png", "compute": "compute.png", "augreg": "augreg.png"}
TABLE = "study.md"
REFERENCE_LABEL = "paper (JFT-300M)"
FAMILY_COLOURS = {"ViT": "tab:blue", "ResNet (BiT)": "tab:grey", "Hybrid": "tab:orange"}
FAMILY_MARKERS = {"ViT": "o", "ResNet (BiT)": "s", "Hybrid": "^"}
#: Table 6's transfer columns; "average5" is their mean without ReaL (our reading of the
#: paper's "average over 5 datasets", Sec. 4.4).
TABLE6_COLUMNS = ("imagenet", "imagenet_real", "cifar10", "cifar100", "pets", "flowers")
AVERAGE5 = ("imagenet", "cifar10", "cifar100", "pets", "flowers")


@functools.lru_cache(maxsize=1)
def paper_table6() -> tuple[dict[str, Any], ...]:
    """The paper's Table 6 (the scaling study): one dict per row with `family`, `model`,
    `epochs`, the six transfer accuracies (%) and `pretrain_exaflops`, numbers as floats.

    Read through `hf_vit_repro.paper_results` (the package's copy of the paper's tables,
    transcribed and checked against two renderings of the paper)."""
    from .. import paper_results

    return tuple(
        {key: (value if key in ("family", "model") else float(value)) for key, value in row.items()}
        for row in paper_results.table(6)
    )


def reference_points(column: str) -> dict[str, list[tuple[float, float, str]]]:
    """Table 6 per family: [(pretraining exaFLOPs, accuracy %, "model, epochs")] for `column`
    (a Table 6 column, or "average5")."""
    if column != "average5" and column not in TABLE6_COLUMNS:
        raise ValueError(f"plot.reference_column must be one of {', '.join(TABLE6_COLUMNS)} or average5, got {column!r}")
    points: dict[str, list[tuple[float, float, str]]] = {}
    for row in paper_table6():
        value = sum(row[c] for c in AVERAGE5) / len(AVERAGE5) if column == "average5" else row[column]
        points.setdefault(row["family"], []).append(
            (row["pretrain_exaflops"], value, f"{row['model']}, {row['epochs']:g} ep"))
    return points


def _ids(classes) -> str:
    return ",".join(str(c) for c in classes)


def _measures(study: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(key, axis label, record -> accuracy or None) for each measure the study's runs have."""
    config = study["config"]
    shots = str(config["plot"]["shots"])
    out = []
    fewshot = config["transfer"].get("fewshot")
    if fewshot:
        task = fewshot["task"]
        only = f", classes {_ids(fewshot['classes'])}" if fewshot.get("classes") else ""
        if shots not in {str(k) for k in fewshot["shots"]}:
            shots = str(max(fewshot["shots"]))
        out.append((f"fewshot_{shots}", f"{shots}-shot linear accuracy on {task}/{fewshot['test_split']}{only} (%)",
                    lambda r, s=shots: (r.get("fewshot") or {}).get("accuracy", {}).get(s)))
    if config["transfer"].get("finetune"):
        split = next((r["finetune"]["split"] for r in study["runs"] if r.get("finetune")), None)
        out.append(("finetune", f"fine-tuned accuracy{f' on {split}' if split else ''} (%)",
                    lambda r: (r.get("finetune") or {}).get("accuracy")))
    if study["study"] != "compute":
        classes = config["data"].get("classes")
        task = config["data"]["task"] + (f" classes {_ids(classes)}" if classes else "")
        out.append(("validation", f"best validation accuracy on {task} (%)",
                    lambda r: r.get("best_validation_accuracy")))
    return out


def group_points(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The runs of a study grouped by point (`point`: model and size or epochs; the seeds of one
    point together), in the order their first runs appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r.get("point") or r["run"], []).append(r)
    return list(groups.values())


def spread(values) -> tuple[float, float, float, int] | None:
    """(mean, min, max, n) of the values that are not None; None when there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return sum(values) / len(values), min(values), max(values), len(values)


def scratch_references(study: dict[str, Any], shots: str) -> dict[str, tuple[float, float, float, int]]:
    """Per model, (mean, min, max, n) over its seeds of the `shots`-shot accuracy at initialisation
    (`transfer.fewshot.scratch_reference`): what the features give with no pretraining."""
    out: dict[str, list[float]] = {}
    for ref in study.get("references") or []:
        out.setdefault(ref["model"], []).append(ref["accuracy"].get(shots))
    return {name: s for name, values in out.items() if (s := spread(values)) is not None}


def _line_of(study: dict[str, Any], model: str) -> str:
    """The name of `model`'s first plotted line."""
    return next((line_name(r) for r in study["runs"] if r["model"] == model), model)


def line_name(record) -> str:
    """A plotted line's name: the model, and its augmentation/regularisation level in the augreg study."""
    return record["model"] if not record.get("level") else f"{record['model']}, {record['level']}"


def _curve(group_list, value_of, x_of) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) in % per point, sorted by x (x: the mean over the point's runs)."""
    out = []
    for runs in group_list:
        y, x = spread([value_of(r) for r in runs]), spread([x_of(r) for r in runs])
        if y is not None and x is not None and x[0]:
            out.append((x[0], 100 * y[0], 100 * y[1], 100 * y[2]))
    return sorted(out)


def plot_study(study: dict[str, Any], path: str | Path) -> Path:
    """Draw the study's figure (module docstring) into `path` (PNG, written atomically)."""
    from ..figures import save_figure

    return save_figure(study_figure(study), path)


def study_figure(study: dict[str, Any]):
    """The study's matplotlib figure: one panel per measured accuracy, and for the compute study
    the paper's Table 6 in a last panel of its own."""
    from ..figures import new_figure

    measures = _measures(study)
    compute = study["study"] == "compute"
    reference = compute and study["config"]["plot"]["reference"]
    panels = len(measures) + (1 if reference else 0)
    figure = new_figure(4.2 * panels, 3.6)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    groups = group_points(study["runs"])
    seeds = max((len(g) for g in groups), default=1)
    for ax, (key, label, value_of) in zip(axes, measures):
        families_shown = set()
        for name in dict.fromkeys(line_name(g[0]) for g in groups):
            x_of = (lambda r: r["compute"]["training_exaflops"]) if compute else (lambda r: r["train_examples"])
            points = _curve([g for g in groups if line_name(g[0]) == name], value_of, x_of)
            if not points:
                continue
            family = next(g[0]["family"] for g in groups if line_name(g[0]) == name)
            xs, means = [p[0] for p in points], [p[1] for p in points]
            if compute:  # Figure 5: colour and legend by family, each model named at its last point
                (line,) = ax.plot(xs, means, marker=FAMILY_MARKERS.get(family, "o"), color=FAMILY_COLOURS.get(family),
                                  linewidth=1, label=family if family not in families_shown else None)
                ax.annotate(name, (xs[-1], means[-1]), textcoords="offset points", xytext=(4, -3), fontsize=6)
                families_shown.add(family)
            else:  # Figures 3 and 4: one line per model
                (line,) = ax.plot(xs, means, marker=FAMILY_MARKERS.get(family, "o"), label=name)
            if any(p[3] > p[2] for p in points):  # the seeds' spread: a bar from the lowest to the highest
                ax.vlines(xs, [p[2] for p in points], [p[3] for p in points], color=line.get_color(), linewidth=2, alpha=0.5)
        if key.startswith("fewshot_"):  # the no-pretraining reference, dashed, one line per model
            for name, (mean, *_) in scratch_references(study, key.split("_")[1]).items():
                colour = next((line.get_color() for line in ax.lines if line.get_label() in (name, _line_of(study, name))),
                              "tab:grey")
                ax.axhline(100 * mean, linestyle="--", linewidth=1, color=colour, label=f"{name} at initialisation")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining exaFLOPs (3 x forward x images seen)" if compute else "pretraining examples")
        ax.set_ylabel(textwrap.fill(label, 48), fontsize=8)
        spread_note = f"; mean of {seeds} seeds, bars min-max" if seeds > 1 else ""
        ax.set_title(f"{study['name']} (measured{spread_note})", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if reference:
        column = study["config"]["plot"]["reference_column"]
        ax = axes[-1]
        for family, points in reference_points(column).items():
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="none",
                    marker=FAMILY_MARKERS.get(family, "o"), color=FAMILY_COLOURS.get(family), label=family)
        ax.set_xscale("log")
        ax.set_xlabel("pretraining exaFLOPs")
        what = "average of 5 datasets" if column == "average5" else column
        ax.set_ylabel(f"fine-tuned accuracy, {what} (%)")
        ax.set_title(f"{REFERENCE_LABEL}, Table 6 (reference)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = study.get("description") or study["name"]
    figure.suptitle(textwrap.fill(f"{study['study']} study: {title}"[:300], 30 * panels), fontsize=9)
    return figure


def pct_spread(values) -> str:
    """"mean (min-max)" in % over a point's seeds, the value alone for one seed."""
    s = spread(values)
    return "" if s is None else _pct_spread_of(s)


def _pct_spread_of(s: tuple[float, float, float, int]) -> str:
    return f"{100 * s[0]:.1f}" if s[3] == 1 else f"{100 * s[0]:.1f} ({100 * s[1]:.1f}-{100 * s[2]:.1f})"


def _mean(values):
    s = spread(values)
    return None if s is None else s[0]


def _exaflops(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _seconds(value) -> str:
    return "" if value is None else f"{value:,.0f} s"


def study_table(study: dict[str, Any]) -> str:
    """The measured runs as a Markdown table: Table 6's form for the compute study (family,
    model, epochs, transfer accuracies, exaFLOPs, device time), and per model and data size
    for the data-size study."""
    from ..evaluation.common import format_table

    measures = [m for m in _measures(study) if m[0] != "validation"]
    records = study["runs"]
    groups = group_points(records)

    def costs(g):
        return [_exaflops(_mean([r["compute"]["training_exaflops"] for r in g])),
                _seconds(_mean([r["compute"]["device_seconds"] for r in g]))]

    if study["study"] == "compute":
        header = ["family", "model", "epochs", "parameters", "seeds"] + [m[1] for m in measures]
        header += ["pretraining exaFLOPs", "device time per run"]
        rows = []
        for g in sorted(groups, key=lambda g: (g[0]["family"], g[0]["model"], g[0]["epochs"] or 0)):
            r = g[0]
            rows.append([r["family"], r["model"], f"{r['epochs']:g}", f"{r['num_parameters']:,}", str(len(g))]
                        + [pct_spread([m[2](x) for x in g]) for m in measures] + costs(g))
    else:
        levels = study["study"] == "augreg"
        header = ["model", *(["level"] if levels else []), "family", "pretraining examples", "seeds", "steps (best at)",
                  "best validation (%)"]
        header += [m[1] for m in measures] + ["pretraining exaFLOPs", "device time per run"]
        rows = []
        for g in groups:
            r = g[0]
            steps = ", ".join(f"{x['steps']} ({x['best_step']})" for x in g)
            level = [r.get("level") or ""] if levels else []
            rows.append([r["model"], *level, r["family"], f"{r['train_examples']:,}", str(len(g)), steps,
                         pct_spread([x["best_validation_accuracy"] for x in g])]
                        + [pct_spread([m[2](x) for x in g]) for m in measures] + costs(g))
    devices = sorted({f"{r['compute']['num_devices']} x {r['compute']['device']}" for r in records})
    note = f"\n\nDevice time: training wall time x devices ({'; '.join(devices)})." if devices else ""
    fewshot = [m for m in measures if m[0].startswith("fewshot_")]
    references = scratch_references(study, fewshot[0][0].split("_")[1]) if fewshot else {}
    if references:
        note += (f"\n\nAt initialisation (no pretraining; `transfer.fewshot.scratch_reference`), "
                 f"{fewshot[0][0].split('_')[1]}-shot: "
                 + "; ".join(f"{name} {_pct_spread_of(s)}" for name, s in references.items()) + ".")
    if any(len(g) > 1 for g in groups):
        seeds = sorted({r.get("seed") for r in records if r.get("seed") is not None})
        note += (f"\n\nAccuracies: mean over the training seeds {seeds} (model initialisation, data order, "
                 "validation hold-out), with the lowest and highest seed in brackets (min-max).")
    return format_table(header, rows) + note


def write_report(study: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write the study's plot (and its curves figure when its runs logged curves) and study.md into
    `folder`; returns their paths."""
    from ..evaluation.common import write_text_atomic

    from .curves import CURVE_PLOTS, curve_table, plot_curves

    folder = Path(folder)
    written = []
    if study["runs"]:
        written.append(plot_study(study, folder / PLOTS[study["study"]]))
        curves = plot_curves(study, folder / CURVE_PLOTS[study["study"]])  # None without `transfer.fewshot.curve`
        written += [curves] if curves is not None else []
        title = f"# {study['study']} study: {study['name']}\n\n{study.get('description', '')}\n\nCommand: `{study['command']}`\n\n"
        curve_text = curve_table(study)
        text = title + study_table(study) + (f"\n\n{curve_text}" if curve_text else "") + "\n"
        written.append(write_text_atomic(folder / TABLE, text))
    return written
