"""The parameter-efficient transfer table: one row per method, this package's VTAB-1k runs beside the
published numbers (`paper_results.peft_vtab`), as PEFT papers print it.

    vit-repro vtab B16 --method lora --output-dir out/lora          # one vtab.json per method
    vit-repro vtab B16 --method vpt-deep --output-dir out/vpt-deep
    vit-repro vtab-methods out/lora out/vpt-deep --output-dir out   # vtab_methods.md / .csv

Per method (one vtab.json each): the trainable parameters (mean over the tasks run, as the PEFT tables
print it: the head's size changes with the number of classes) and their fraction of the model, the
Natural / Specialized / Structured means, the mean over the tasks (the ViT paper's "VTAB (19 tasks)"
number) and the mean of the three group means (VPT's and NOAH's convention), then the same means of
the published row for that method (`peft_vtab.reference_row`: V-PETL Bench's table) over the same
tasks, in their own labelled columns. `vtab_methods_tasks.csv` has one line per method and task: this
run's accuracy and the published one. Published numbers are ViT-B/16 pretrained on ImageNet-21k; a run
of another checkpoint or setting is listed beside them all the same, with its checkpoint, protocol and
departures named in the CSV, so a reader sees what was compared.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import runs
from ..evaluation.common import format_table, write_text_atomic

TABLE = "vtab_methods.md"
SUMMARY_CSV = "vtab_methods.csv"
TASKS_CSV = "vtab_methods_tasks.csv"
GROUPS = ("natural", "specialized", "structured")


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """A vtab.json, or the folder holding one (a `vit-repro vtab` output folder)."""
    path = Path(path)
    file = path / runs.VTAB if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no VTAB-1k results at {str(file)!r}: give a `vit-repro vtab` output folder or its {runs.VTAB}")
    record = runs.read_json(file)
    if not record.get("tasks"):
        raise ValueError(f"{file} holds no finished task: run `vit-repro vtab` there first")
    return record


def record_method(record: Mapping[str, Any]) -> str:
    """The one `train.method` of a record's tasks (every task of one vtab.json runs the same recipe)."""
    methods = {entry.get("method", "full") for entry in record["tasks"].values()}
    if len(methods) != 1:
        raise ValueError(f"VTAB results of {record.get('checkpoint')!r} mix methods {sorted(methods)}; one vtab.json "
                         "per method")
    return methods.pop()


def _means(values: Mapping[str, float]) -> dict[str, float | None]:
    """Group means over the tasks present, the mean over the tasks, and the mean of the group means
    (None unless all three groups are present)."""
    from ..data import get_task
    from .runner import aggregate

    summary = aggregate({task: {"accuracy": value, "group": get_task(task).vtab_group} for task, value in values.items()})
    out: dict[str, float | None] = {g: summary["group_means"].get(g) for g in GROUPS}
    out["mean"] = summary["mean"]
    out["mean_of_groups"] = (sum(out[g] for g in GROUPS) / 3) if all(out[g] is not None for g in GROUPS) else None
    return out


def method_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the table as numbers (accuracies in %): method, tasks, trainable parameters (mean
    over tasks), trainable fraction (mean), this run's means (`ours`), the published row's means over
    the same tasks (`published`, None when no source reports the method) and that row's citation."""
    from ..paper_results import peft_vtab

    method = record_method(record)
    tasks = record["tasks"]
    ours = _means({task: 100 * float(entry["accuracy"]) for task, entry in tasks.items()})
    counts = [entry["trainable_parameters"] for entry in tasks.values() if entry.get("trainable_parameters") is not None]
    fractions = [entry["trainable_fraction"] for entry in tasks.values() if entry.get("trainable_fraction") is not None]
    row = peft_vtab.reference_row(method)
    published = _means({task: row.tasks[task] for task in tasks}) if row is not None else None
    protocol = record.get("protocol") or {}
    return {
        "method": method,
        "num_tasks": len(tasks),
        "trainable_parameters": sum(counts) / len(counts) if counts else None,
        "trainable_fraction": sum(fractions) / len(fractions) if fractions else None,
        "ours": ours,
        "published": published,
        "published_label": row.label if row is not None else None,
        "published_params_m": row.params_m if row is not None else None,
        "citation": row.citation if row is not None else None,
        "checkpoint": record.get("checkpoint"),
        "protocol": protocol.get("name"),
        "departures": "; ".join(protocol.get("departures") or []),
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _count(value: float | None) -> str:
    """Parameters in millions with two decimals, as the PEFT tables print them (0.29M)."""
    return "" if value is None else f"{value / 1e6:.2f}M"


_COLUMNS = ("natural", "specialized", "structured", "mean", "mean_of_groups")
_COLUMN_TEXT = {"natural": "Natural", "specialized": "Specialized", "structured": "Structured", "mean": "mean (tasks)",
                "mean_of_groups": "mean (groups)"}


def methods_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per method (this run's trainable parameters, fraction, group means, mean
    over tasks and mean of groups), then the published row's means over the same tasks in columns
    labelled "published", and the published parameter count."""
    header = ["method", "tasks", "trainable params", "trainable (%)"]
    header += [f"this run: {_COLUMN_TEXT[c]} (%)" for c in _COLUMNS]
    header += [f"published: {_COLUMN_TEXT[c]} (%)" for c in _COLUMNS] + ["published params", "published row"]
    rows = []
    for s in summaries:
        pub = s["published"] or {}
        fraction = "" if s["trainable_fraction"] is None else f"{100 * s['trainable_fraction']:.3g}"
        rows.append([s["method"], s["num_tasks"], _count(s["trainable_parameters"]), fraction]
                    + [_pct(s["ours"][c]) for c in _COLUMNS] + [_pct(pub.get(c)) for c in _COLUMNS]
                    + ["" if s["published_params_m"] is None else f"{s['published_params_m']:.2f}M",
                       s["published_label"] or "none published"])
    return format_table(header, rows)


def methods_report(summaries: Sequence[Mapping[str, Any]]) -> str:
    """vtab_methods.md: the table, what the published columns are and where they come from."""
    from ..paper_results import peft_vtab

    lines = ["# VTAB-1k by parameter-efficient method", "", methods_table(summaries), "",
             f"Published: {peft_vtab.MODEL} pretrained on {peft_vtab.PRETRAINING}, each source's own protocol "
             "(e.g. VPT's learning-rate x weight-decay grid chosen on val200), means taken over the tasks this run "
             "has. A run of another checkpoint, resolution or protocol is not that setting: see the protocol "
             "columns of vtab_methods.csv.", ""]
    lines += [f"- {s['method']}: {s['citation']}" for s in summaries if s["citation"]]
    return "\n".join(lines) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def summary_csv(summaries: Sequence[Mapping[str, Any]]) -> str:
    header = ["method", "num_tasks", "trainable_parameters", "trainable_fraction"]
    header += [f"ours_{c}" for c in _COLUMNS] + [f"published_{c}" for c in _COLUMNS]
    header += ["published_label", "published_params_m", "published_citation", "checkpoint", "protocol", "departures"]
    rows = []
    for s in summaries:
        pub = s["published"] or {}
        rows.append([s["method"], s["num_tasks"], s["trainable_parameters"], s["trainable_fraction"]]
                    + [s["ours"][c] for c in _COLUMNS] + [pub.get(c) for c in _COLUMNS]
                    + [s["published_label"], s["published_params_m"], s["citation"], s["checkpoint"], s["protocol"],
                       s["departures"]])
    return _csv(header, rows)


def tasks_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per method and task: group, this run's accuracy (%), the published one, trainable
    parameters and fraction."""
    from ..data import VTAB_TASKS
    from ..paper_results import peft_vtab

    header = ["method", "task", "group", "accuracy", "published_accuracy", "published_label", "trainable_parameters",
              "trainable_fraction", "num_parameters"]
    rows = []
    for record in records:
        method = record_method(record)
        row = peft_vtab.reference_row(method)
        for task in sorted(record["tasks"], key=VTAB_TASKS.index):
            entry = record["tasks"][task]
            rows.append([method, task, entry["group"], 100 * float(entry["accuracy"]),
                         row.tasks[task] if row is not None else None, row.label if row is not None else None,
                         entry.get("trainable_parameters"), entry.get("trainable_fraction"), entry.get("num_parameters")])
    return _csv(header, rows)


def write_methods_table(results: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Read each vtab.json (or its folder) of `results`, one method each, and write vtab_methods.md,
    vtab_methods.csv and vtab_methods_tasks.csv to `output_dir`. Returns the paths."""
    records = [load_record(path) for path in results]
    summaries = [method_summary(record) for record in records]
    seen: dict[str, int] = {}
    for s in summaries:
        seen[s["method"]] = seen.get(s["method"], 0) + 1
    twice = [m for m, n in seen.items() if n > 1]
    if twice:
        raise ValueError(f"method(s) {', '.join(twice)} given more than once; give one vtab.json per method")
    out = Path(output_dir)
    return {
        "table": write_text_atomic(out / TABLE, methods_report(summaries)),
        "summary": write_text_atomic(out / SUMMARY_CSV, summary_csv(summaries)),
        "tasks": write_text_atomic(out / TASKS_CSV, tasks_csv(records)),
    }


__all__ = ["SUMMARY_CSV", "TABLE", "TASKS_CSV", "load_record", "method_summary", "methods_report", "methods_table",
           "record_method", "summary_csv", "tasks_csv", "write_methods_table"]
