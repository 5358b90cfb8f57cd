"""Published VTAB-1k numbers of parameter-efficient transfer on ViT-B/16 pretrained on ImageNet-21k, per task,
as data, to set beside a `vit-repro vtab --method ...` run.

    from hf_vit_repro.paper_results import peft_vtab

    peft_vtab.reference_row("lora").tasks["vtab/dtd"]        # 69.4 (V-PETL Bench, README table)
    peft_vtab.rows(source="noah-table1")                    # NOAH's Table 1, as printed

`peft_vtab.csv` holds one row per (source, printed label): the 19 tasks under Table 9's column names
(`paper_results.VTAB_COLUMNS`), the group means where the source prints them, its overall mean and
what that mean is over (`tasks`: the 19 tasks; `groups`: the mean of the Natural, Specialized and
Structured means, VPT's and NOAH's convention), the trainable parameters in millions as printed, and
`method`, the `train.method` the row measures (empty for a method this package has no name for).
`peft_vtab_sources.csv` says where each source's numbers were read: repository, file, lines and
commit. Nothing was typed from memory; where a number was not found in a source's text it is not in
the file. What was not found:

- VPT's own per-task table could not be read as text here (its repository's README has none); its
  Full and VPT-deep numbers are the Convpass README's (whose VPT row links the VPT repository) and
  the other two sources'. LoRA is in NOAH's table and V-PETL Bench's; BitFit and VPT-shallow only in V-PETL Bench's.
- AdaptFormer's repository (ShoufaChen/AdaptFormer) has no VTAB-1k table; its row (`adapter`) is
  V-PETL Bench's.
- VPT's per-task prompt lengths and chosen rates are in a spreadsheet linked from its README
  (Dropbox / Google Drive), not in any text read here.

Known inconsistencies inside the sources (kept as printed; tests/test_paper_results_peft.py holds
them against the other sources): NOAH's Table 1 prints Full's Flowers102 as 87.2 where VPT (through
Convpass) and V-PETL print 97.2, and its printed Full average 68.9 fits 97.2; NOAH's Linear row has
CIFAR-100 64.4 and Resisc45 68.5 where V-PETL has 63.4 and 68.6; NOAH's LoRA average 74.5 is 0.1
below the mean its per-task numbers give (74.60).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
ROWS_FILE = "peft_vtab.csv"
SOURCES_FILE = "peft_vtab_sources.csv"
#: The source whose table has a row for every method of `training.peft_methods` (and is text).
REFERENCE_SOURCE = "vpetl-bench"
MODEL = "ViT-B/16"
PRETRAINING = "ImageNet-21k"
GROUP_COLUMNS = ("natural", "specialized", "structured")
#: VTAB-1k's three groups as the published tables print them (Table 9's column names).
GROUP_TASKS: dict[str, tuple[str, ...]] = {
    "natural": ("Caltech101", "CIFAR-100", "DTD", "Flowers102", "Pets", "Sun397", "SVHN"),
    "specialized": ("Camelyon", "EuroSAT", "Resisc45", "Retinopathy"),
    "structured": ("Clevr-Count", "Clevr-Dist", "DMLab", "dSpr-Loc", "dSpr-Ori", "KITTI-Dist", "sNORB-Azim", "sNORB-Elev"),
}


@dataclass(frozen=True)
class PeftRow:
    """One published row: `label` as printed, `method` (a `train.method` name, or "" for one this
    package does not implement), `source` (a key of `sources()`), per-task accuracy (%) keyed by
    the task registry's names, the printed group means (empty when the source prints none), the
    printed `mean` and `mean_over` ("tasks" or "groups"), `params_m` (trainable parameters in
    millions as printed, None where not printed) and a `citation` naming source, table and row."""

    source: str
    label: str
    method: str
    tasks: dict[str, float] = field(default_factory=dict)
    group_means: dict[str, float] = field(default_factory=dict)
    mean: float = float("nan")
    mean_over: str = "tasks"
    params_m: float | None = None
    citation: str = ""


def _float(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


@functools.lru_cache(maxsize=None)
def sources() -> dict[str, dict[str, str]]:
    """Source key -> {"reports", "document", "location", "commit", "transcribed_from", "mean_over"}."""
    with open(DATA_DIR / SOURCES_FILE, newline="", encoding="utf-8") as f:
        return {row["source"]: dict(row) for row in csv.DictReader(f)}


@functools.lru_cache(maxsize=None)
def _rows() -> tuple[PeftRow, ...]:
    from . import VTAB_COLUMNS

    known = sources()
    out = []
    with open(DATA_DIR / ROWS_FILE, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["source"] not in known:
                raise ValueError(f"{ROWS_FILE}: source {row['source']!r} is not in {SOURCES_FILE}")
            where = known[row["source"]]
            citation = (f"{where['reports']}, row {row['label']!r} ({where['document']}, {where['location']}, "
                        f"commit {where['commit'][:7]})")
            groups = {g: _float(row[g]) for g in GROUP_COLUMNS if _float(row[g]) is not None}
            out.append(PeftRow(row["source"], row["label"], row["method"],
                               {task: float(row[column]) for column, task in VTAB_COLUMNS.items()}, groups,
                               float(row["mean"]), row["mean_over"], _float(row["params_m"]), citation))
    return tuple(out)


def rows(source: str | None = None, method: str | None = None) -> list[PeftRow]:
    """Every published row, or those of one `source` and/or one `method` (a `train.method` name)."""
    return [r for r in _rows() if (source is None or r.source == source) and (method is None or r.method == method)]


def reference_row(method: str) -> PeftRow | None:
    """The row a results table puts beside `method`: V-PETL Bench's (`REFERENCE_SOURCE`, the one text
    table with every method), else None (a method no source reports)."""
    found = rows(REFERENCE_SOURCE, method)
    return found[0] if found else None


def recomputed_means(row: PeftRow) -> dict[str, float]:
    """Group means and the overall mean (by the row's own `mean_over` convention) from its per-task
    numbers: {"natural", "specialized", "structured", "mean"}."""
    from . import VTAB_COLUMNS

    means = {group: sum(row.tasks[VTAB_COLUMNS[c]] for c in columns) / len(columns) for group, columns in GROUP_TASKS.items()}
    if row.mean_over == "groups":
        means["mean"] = sum(means[g] for g in GROUP_COLUMNS) / len(GROUP_COLUMNS)
    else:
        means["mean"] = sum(row.tasks.values()) / len(row.tasks)
    return means


__all__ = ["GROUP_COLUMNS", "GROUP_TASKS", "MODEL", "PRETRAINING", "REFERENCE_SOURCE", "PeftRow", "recomputed_means",
           "reference_row", "rows", "sources"]
