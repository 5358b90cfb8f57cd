"""A study's plots and table, drawn from its study.json alone (`vit-repro study report` redraws
them), in the paper's forms:

- data-size (Figures 3 and 4): accuracy against the number of pretraining examples (log scale),
  one line per model; a panel per measure the study has: few-shot linear accuracy (Figure 4),
  fine-tuned accuracy (Figure 3) and the best validation accuracy on the pretraining task.
- compute (Figure 5): transfer accuracy against pretraining exaFLOPs (log scale), one colour per
  family; beside it, in a panel of its own, the paper's Table 6 ("paper (JFT-300M)"): the
  reference is never drawn on the measured axes, whose scale it does not share.
- study.md: the measured runs as a table in Table 6's form (family, model, epochs, transfer
  accuracies, pretraining exaFLOPs, device time).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

PLOTS = {"data-size": "data_size.png", "compute": "compute.png"}
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


def _measures(study: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(key, axis label, record -> accuracy or None) for each measure the study's runs have."""
    config = study["config"]
    shots = str(config["plot"]["shots"])
    out = []
    fewshot = config["transfer"].get("fewshot")
    if fewshot:
        task = fewshot["task"]
        if shots not in {str(k) for k in fewshot["shots"]}:
            shots = str(max(fewshot["shots"]))
        out.append((f"fewshot_{shots}", f"{shots}-shot linear accuracy on {task}/{fewshot['test_split']} (%)",
                    lambda r, s=shots: (r.get("fewshot") or {}).get("accuracy", {}).get(s)))
    if config["transfer"].get("finetune"):
        split = next((r["finetune"]["split"] for r in study["runs"] if r.get("finetune")), None)
        out.append(("finetune", f"fine-tuned accuracy{f' on {split}' if split else ''} (%)",
                    lambda r: (r.get("finetune") or {}).get("accuracy")))
    if study["study"] == "data-size":
        out.append(("validation", f"best validation accuracy on {config['data']['task']} (%)",
                    lambda r: r.get("best_validation_accuracy")))
    return out


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
    records = study["runs"]
    for ax, (_, label, value_of) in zip(axes, measures):
        families_shown = set()
        for name in dict.fromkeys(r["model"] for r in records):
            mine = [r for r in records if r["model"] == name]
            x_of = (lambda r: r["compute"]["training_exaflops"]) if compute else (lambda r: r["train_examples"])
            points = sorted((x_of(r), 100 * value_of(r)) for r in mine if value_of(r) is not None and x_of(r))
            if not points:
                continue
            family = mine[0]["family"]
            if compute:  # Figure 5: colour and legend by family, each model named at its last point
                ax.plot(*zip(*points), marker=FAMILY_MARKERS.get(family, "o"), color=FAMILY_COLOURS.get(family),
                        linewidth=1, label=family if family not in families_shown else None)
                ax.annotate(name, points[-1], textcoords="offset points", xytext=(4, -3), fontsize=6)
                families_shown.add(family)
            else:  # Figures 3 and 4: one line per model
                ax.plot(*zip(*points), marker=FAMILY_MARKERS.get(family, "o"), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("pretraining exaFLOPs (3 x forward x images seen)" if compute else "pretraining examples")
        ax.set_ylabel(label)
        ax.set_title(f"{study['name']} (measured)", fontsize=9)
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
    figure.suptitle(f"{study['study']} study: {title}"[:150], fontsize=9)
    return figure


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


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
    if study["study"] == "compute":
        header = ["family", "model", "epochs", "parameters"] + [m[1] for m in measures]
        header += ["pretraining exaFLOPs", "device time"]
        rows = []
        for r in sorted(records, key=lambda r: (r["family"], r["model"], r["epochs"] or 0)):
            c = r["compute"]
            rows.append([r["family"], r["model"], f"{r['epochs']:g}", f"{r['num_parameters']:,}"]
                        + [_pct(m[2](r)) for m in measures]
                        + [_exaflops(c["training_exaflops"]), _seconds(c["device_seconds"])])
    else:
        header = ["model", "family", "pretraining examples", "steps (best at)", "best validation (%)"]
        header += [m[1] for m in measures] + ["pretraining exaFLOPs", "device time"]
        rows = []
        for r in records:
            c = r["compute"]
            rows.append([r["model"], r["family"], f"{r['train_examples']:,}", f"{r['steps']} ({r['best_step']})",
                         _pct(r["best_validation_accuracy"])] + [_pct(m[2](r)) for m in measures]
                        + [_exaflops(c["training_exaflops"]), _seconds(c["device_seconds"])])
    devices = sorted({f"{r['compute']['num_devices']} x {r['compute']['device']}" for r in records})
    note = f"\n\nDevice time: training wall time x devices ({'; '.join(devices)})." if devices else ""
    return format_table(header, rows) + note


def write_report(study: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write the study's plot and study.md into `folder`; returns their paths."""
    from ..evaluation.common import write_text_atomic

    folder = Path(folder)
    written = []
    if study["runs"]:
        written.append(plot_study(study, folder / PLOTS[study["study"]]))
        title = f"# {study['study']} study: {study['name']}\n\n{study.get('description', '')}\n\nCommand: `{study['command']}`\n\n"
        written.append(write_text_atomic(folder / TABLE, title + study_table(study) + "\n"))
    return written
