"""The paper's numbers as data: Tables 1-9 of Dosovitskiy et al., "An Image is Worth 16x16 Words"
(ICLR 2021, arXiv:2010.11929 v2), so that a report can put the paper's row beside a measured one.

    from hf_vit_repro import paper_results

    paper_results.table(5)[0]                         # {"pretraining_dataset": "ImageNet", "model": "ViT-B/16", ...}
    paper_results.transfer_row("ViT-L/16", "imagenet21k", "cifar10")   # PaperNumber(99.16, ..., "paper, Table 5: ...")
    paper_results.vtab_row("ViT-L/16", "ImageNet-21k").tasks["vtab/dtd"]  # 74.1
    paper_results.sota_row("ViT-H/14", "JFT-300M", "imagenet")           # 88.55 +- 0.04
    paper_results.finetune_hparams("cifar10")["base_lr_sweep"]           # [0.001, 0.003, 0.01, 0.03]

The CSVs beside this file (`table1_model_variants.csv` ... `table9_vtab.csv`, described in
README.md here; `notes.md` holds the numbers the paper gives only in its text) were transcribed
from the paper and checked cell by cell against two renderings of it. They ship in the wheel as
package data. Accuracies are percentages as printed (Table 8: fractions); an empty cell is one the
paper prints as "-" or "N/A".

Every lookup returns the value together with a citation label that says which table, row and
column it is (`PaperNumber.citation`, `PaperRow.citation`), or None when the paper has no such
cell: a caller never has to invent a label, and "no matching row" is a None, never a guess.
Names are forgiving: models go through `variants.canonical_name` ("vit_l_16", "L/16" ->
"ViT-L/16"), pretraining data through `pretraining_name` ("imagenet21k", "I21k" ->
"ImageNet-21k"), benchmarks through `benchmark_name` ("imagenet1k", "oxford_iiit_pets" ->
"imagenet", "pets"), VTAB tasks through the task registry's names ("vtab/dtd").

Surprises (README.md): Table 5's ViT-H/14 (JFT) differs slightly from Table 6's (88.04 vs 88.08
on ImageNet); Table 5's ViT-L/16 (JFT) row is Table 6's 14-epoch row. Lookups read the table
they name and nothing else.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER = 'Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021'
ARXIV = "arXiv:2010.11929 (v2)"
CITATION = f"{PAPER}, {ARXIV}"
DATA_DIR = Path(__file__).resolve().parent

#: Table number -> CSV file next to this module.
TABLE_FILES: dict[int, str] = {
    1: "table1_model_variants.csv",
    2: "table2_sota.csv",
    3: "table3_pretrain_hparams.csv",
    4: "table4_finetune_hparams.csv",
    5: "table5_transfer.csv",
    6: "table6_scaling.csv",
    7: "table7_adam_vs_sgd.csv",
    8: "table8_pos_emb.csv",
    9: "table9_vtab.csv",
}

#: The three pretraining sets, as the paper spells them, and the spellings accepted for each
#: (compared in lower case with everything but letters and digits removed).
PRETRAINING = {
    "ImageNet": ("imagenet", "imagenet1k", "in1k", "i1k", "ilsvrc2012", "imagenet2012"),
    "ImageNet-21k": ("imagenet21k", "in21k", "i21k", "imagenet22k", "in22k"),
    "JFT-300M": ("jft300m", "jft"),
}
#: Table 9 writes the pretraining data in its row labels: "ViT-L/16 (I21k)".
_TABLE9_DATA = {"JFT": "JFT-300M", "I21k": "ImageNet-21k"}

#: The transfer benchmarks of Tables 2 and 5 (our key -> accepted spellings). A VTAB-1k task such
#: as "vtab/cifar100" is not the full benchmark and matches none of them.
BENCHMARKS = {
    "imagenet": ("imagenet", "imagenet1k", "ilsvrc2012", "imagenet2012", "imagenetval"),
    "imagenet_real": ("imagenetreal", "real", "imagenet1kreal", "imagenet2012real"),
    "cifar10": ("cifar10",),
    "cifar100": ("cifar100",),
    "pets": ("pets", "oxfordpets", "oxfordiiitpet", "oxfordiiitpets"),
    "flowers102": ("flowers", "flowers102", "oxfordflowers", "oxfordflowers102"),
    "vtab": ("vtab", "vtab19", "vtab1k", "vtab19tasks"),
}
# Each table's column for a benchmark key, and how the paper names the benchmark.
_TABLE2_COLUMNS = {"imagenet": "imagenet", "imagenet_real": "imagenet_real", "cifar10": "cifar10", "cifar100": "cifar100",
                   "pets": "oxford_iiit_pets", "flowers102": "oxford_flowers102", "vtab": "vtab19"}
_TABLE5_COLUMNS = {"imagenet": "imagenet", "imagenet_real": "imagenet_real", "cifar10": "cifar10", "cifar100": "cifar100",
                   "pets": "oxford_iiit_pets", "flowers102": "oxford_flowers102"}
_TABLE4_DATASETS = {"imagenet": "ImageNet", "cifar10": "CIFAR10", "cifar100": "CIFAR100", "pets": "Oxford-IIIT Pets",
                    "flowers102": "Oxford Flowers-102", "vtab": "VTAB (19 tasks)"}
_PRINTED = {"imagenet": "ImageNet", "imagenet_real": "ImageNet ReaL", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
            "pets": "Oxford-IIIT Pets", "flowers102": "Oxford Flowers-102", "vtab": "VTAB (19 tasks)"}

#: Table 9's columns -> the task registry's VTAB-1k names (`hf_vit_repro.data.VTAB_TASKS`).
VTAB_COLUMNS: dict[str, str] = {
    "Caltech101": "vtab/caltech101",
    "CIFAR-100": "vtab/cifar100",
    "DTD": "vtab/dtd",
    "Flowers102": "vtab/flowers102",
    "Pets": "vtab/pets",
    "Sun397": "vtab/sun397",
    "SVHN": "vtab/svhn",
    "Camelyon": "vtab/patch_camelyon",
    "EuroSAT": "vtab/eurosat",
    "Resisc45": "vtab/resisc45",
    "Retinopathy": "vtab/diabetic_retinopathy",
    "Clevr-Count": "vtab/clevr_count",
    "Clevr-Dist": "vtab/clevr_distance",
    "DMLab": "vtab/dmlab",
    "dSpr-Loc": "vtab/dsprites_location",
    "dSpr-Ori": "vtab/dsprites_orientation",
    "KITTI-Dist": "vtab/kitti_distance",
    "sNORB-Azim": "vtab/smallnorb_azimuth",
    "sNORB-Elev": "vtab/smallnorb_elevation",
}


@dataclass(frozen=True)
class PaperNumber:
    """One cell of the paper: `value` (as printed: % accuracy), its `std` where the paper gives
    one, and `citation`, a label naming the table, row and column ("paper, Table 5: ...")."""

    value: float
    std: float | None
    citation: str

    def __str__(self) -> str:
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        return f"{self.value:.2f}{spread} ({self.citation})"


@dataclass(frozen=True)
class PaperRow:
    """One row of Table 9 (VTAB-1k per task): `label` as printed ("ViT-L/16 (I21k)"), `model`,
    `pretraining`, per-task accuracy (%) keyed by registry name, the printed `mean`, `citation`."""

    label: str
    model: str
    pretraining: str
    tasks: dict[str, float] = field(default_factory=dict)
    mean: float = float("nan")
    citation: str = ""


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _float(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


@functools.lru_cache(maxsize=None)
def _read(number: int) -> tuple[dict[str, str], ...]:
    if number not in TABLE_FILES:
        raise KeyError(f"the paper has Tables 1-9; there is no Table {number!r}")
    with open(DATA_DIR / TABLE_FILES[number], newline="", encoding="utf-8") as f:
        return tuple(dict(row) for row in csv.DictReader(f))


def table(number: int) -> list[dict[str, str]]:
    """Table `number` (1-9) as printed: one dict per row, column name -> cell text ("" where the
    paper prints "-"). A fresh copy each call."""
    return [dict(row) for row in _read(int(number))]


def pretraining_name(name: str | None) -> str | None:
    """The paper's name of a pretraining set ("ImageNet", "ImageNet-21k", "JFT-300M") for any
    accepted spelling (task registry names included: "imagenet21k"), else None."""
    if not name:
        return None
    key = _key(name)
    for canonical, spellings in PRETRAINING.items():
        if key == _key(canonical) or key in spellings:
            return canonical
    return None


def benchmark_name(name: str | None) -> str | None:
    """Our key of a Table 2 / Table 5 benchmark ("imagenet", "imagenet_real", "cifar10",
    "cifar100", "pets", "flowers102", "vtab") for a task or column name, else None."""
    if not name:
        return None
    key = _key(name)
    for canonical, spellings in BENCHMARKS.items():
        if key in spellings:
            return canonical
    return None


def _model_name(model: str | None) -> str | None:
    """A ViT or hybrid name in its canonical spelling; other names (ResNets) as given: the tables
    spell them their own way ("R50x1" in Table 3, "ResNet152x4" in Table 2), which
    `variants.canonical_name` would turn into the package's "BiT-R50x1"."""
    if not model:
        return None
    from ..variants import BIT_VARIANTS, canonical_name

    try:
        canonical = canonical_name(str(model))
    except ValueError:
        return str(model).strip()
    return str(model).strip() if canonical in BIT_VARIANTS else canonical


def transfer_row(model: str, pretraining: str, task: str) -> PaperNumber | None:
    """Table 5: fine-tuned accuracy (%) of a ViT (B/32, B/16, L/32, L/16, H/14) pretrained on
    ImageNet, ImageNet-21k or JFT-300M, on ImageNet, ImageNet ReaL, CIFAR-10/100, Pets or
    Flowers-102. None when the paper has no such cell (other models, tasks, or its "-" cells)."""
    model, data, bench = _model_name(model), pretraining_name(pretraining), benchmark_name(task)
    column = _TABLE5_COLUMNS.get(bench or "")
    if not (model and data and column):
        return None
    for row in _read(5):
        if row["model"] == model and row["pretraining_dataset"] == data:
            value = _float(row[column])
            if value is None:
                return None
            return PaperNumber(value, None, f"paper, Table 5: {model} pretrained on {data}, fine-tuned on {_PRINTED[bench]}")
    return None


def sota_row(model: str, pretraining: str, benchmark: str) -> PaperNumber | None:
    """Table 2: the headline numbers (% accuracy, mean ± std over three fine-tuning runs) of
    ViT-H/14 (JFT-300M), ViT-L/16 (JFT-300M), ViT-L/16 (ImageNet-21k) and the baselines (BiT-L
    "ResNet152x4", Noisy Student "EfficientNet-L2"), on ImageNet, ImageNet ReaL, CIFAR-10/100,
    Pets, Flowers-102 and VTAB (19 tasks). None where the paper has no such cell."""
    model, data, bench = _model_name(model), pretraining_name(pretraining), benchmark_name(benchmark)
    column = _TABLE2_COLUMNS.get(bench or "")
    if not (model and column):
        return None
    for row in _read(2):
        same_data = data is not None and pretraining_name(row["pretraining_data"]) == data
        if _key(row["model"]) == _key(model) and same_data:
            value = _float(row[column])
            if value is None:
                return None
            label = f"paper, Table 2: {row['model']} ({row['pretraining_data']}), {_PRINTED[bench]}"
            return PaperNumber(value, _float(row.get(f"{column}_std", "")), label)
    return None


def vtab_rows() -> list[PaperRow]:
    """Every row of Table 9: ViT-H/14 (JFT), ViT-L/16 (JFT), ViT-L/16 (I21k)."""
    rows = []
    for row in _read(9):
        label = row["model"]
        match = re.fullmatch(r"(.+) \((\w+)\)", label)
        if match is None:
            raise ValueError(f"{TABLE_FILES[9]}: cannot read model and data from the row label {label!r}")
        model, data = match.group(1), _TABLE9_DATA[match.group(2)]
        tasks = {VTAB_COLUMNS[column]: float(row[column]) for column in VTAB_COLUMNS}
        citation = f"paper, Table 9: {label}, VTAB-1k per task (lr 0.01, 2500 steps, 384 px)"
        rows.append(PaperRow(label, model, data, tasks, float(row["Mean"]), citation))
    return rows


def vtab_row(model: str, pretraining: str) -> PaperRow | None:
    """Table 9: the VTAB-1k row (per-task accuracy %, mean) of `model` pretrained on
    `pretraining`, or None: the paper reports VTAB per task only for ViT-H/14 and ViT-L/16 on
    JFT-300M and ViT-L/16 on ImageNet-21k."""
    model, data = _model_name(model), pretraining_name(pretraining)
    for row in vtab_rows():
        if row.model == model and row.pretraining == data:
            return row
    return None


def _expanded_models(row: dict[str, str]) -> list[str]:
    return [m.strip() for m in row["models_expanded"].split(";")]


def pretrain_hparams(model: str, pretraining: str) -> dict[str, Any] | None:
    """Table 3: the pretraining hyperparameters of `model` on `pretraining`, parsed: `epochs`
    (a list: the paper prints "7/14", "30/90" where it ran both), `base_lr`, `lr_decay`,
    `weight_decay`, `dropout`, `batch_size`, `lr_warmup_steps`, `grad_clip_global_norm` (None
    where the paper clips only on ImageNet, its caption), `training_resolution`, `optimizer`,
    plus `row` (the models as printed) and `citation`. None when Table 3 has no row for it (the
    hybrids were pretrained on JFT-300M only)."""
    model, data = _model_name(model), pretraining_name(pretraining)
    plain_vit = bool(model) and model.startswith("ViT-")
    for row in _read(3):
        if pretraining_name(row["dataset"]) != data:
            continue
        if model in _expanded_models(row) or (row["models_expanded"] == "all ViT variants" and plain_vit):
            clip = row["grad_clip_global_norm"].strip()
            return {
                "row": row["models_as_printed"],
                "dataset": row["dataset"],
                "epochs": [int(e) for e in row["epochs"].split("/")],
                "base_lr": float(row["base_lr"]),
                "lr_decay": row["lr_decay"],
                "weight_decay": float(row["weight_decay"]),
                "dropout": float(row["dropout"]),
                "batch_size": int(row["batch_size"]),
                "lr_warmup_steps": int(row["lr_warmup_steps"]),
                "grad_clip_global_norm": None if clip == "none" else float(clip),
                "training_resolution": int(row["training_resolution"]),
                "optimizer": row["optimizer"],
                "citation": f"paper, Table 3: {row['models_as_printed']} on {row['dataset']}",
            }
    return None


def finetune_hparams(dataset: str) -> dict[str, Any] | None:
    """Table 4: the fine-tuning hyperparameters for `dataset` (ImageNet, CIFAR-10/100, Pets,
    Flowers-102, VTAB), parsed: `steps`, `base_lr_sweep` (list), `lr_decay`, `batch_size`,
    `weight_decay`, `grad_clip_global_norm`, `finetune_resolution` (384 "if not mentioned
    otherwise": Table 2's ImageNet runs use 512 / 518), `optimizer`, `dev_fraction` (the part of
    the training set held out to choose the rate, Appendix B.1.1; None for VTAB, which chooses on
    its 200-image validation sets), plus `row` and `citation`. None for other datasets."""
    name = _TABLE4_DATASETS.get(benchmark_name(dataset) or "")
    for row in _read(4):
        if row["dataset"] == name:
            dev = re.match(r"(\d+)% of train", row["dev_split_for_lr_selection"])
            return {
                "row": row["dataset"],
                "steps": int(row["steps"]),
                "base_lr_sweep": [float(v) for v in row["base_lr_sweep"].split(";")],
                "lr_decay": row["lr_decay"],
                "batch_size": int(row["batch_size"]),
                "weight_decay": float(row["weight_decay"].split()[0]),
                "grad_clip_global_norm": float(row["grad_clip_global_norm"]),
                "finetune_resolution": int(row["finetune_resolution"].split()[0]),
                "optimizer": row["optimizer"],
                "dev_fraction": int(dev.group(1)) / 100 if dev else None,
                "citation": f"paper, Table 4: {row['dataset']}",
            }
    return None


__all__ = [
    "CITATION",
    "PAPER",
    "ARXIV",
    "TABLE_FILES",
    "VTAB_COLUMNS",
    "PaperNumber",
    "PaperRow",
    "table",
    "pretraining_name",
    "benchmark_name",
    "transfer_row",
    "sota_row",
    "vtab_row",
    "vtab_rows",
    "pretrain_hparams",
    "finetune_hparams",
]
