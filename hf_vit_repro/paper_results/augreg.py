"""AugReg's pretraining settings as data: Steiner et al., "How to train your ViT? Data, Augmentation,
and Regularization in Vision Transformers" (TMLR 2022, arXiv:2106.10270), with where each is stated.

    from hf_vit_repro.paper_results import augreg

    augreg.setting("batch_size", "i1k").value            # "4096"
    augreg.setting("randaugment", model="medium2").numbers  # (2.0, 15.0)
    augreg.setting("epochs", "i21k").numbers                # (30.0, 300.0)
    augreg.sources()["big-vision"]["commit"]                # "0127fb6b..."

`augreg_settings.csv` holds one row per setting: `setting`, `data` (`i21k`, `i1k` or `all`), `model`
(a model or augmentation level where the row is about one), `value` (several separated by `;`),
`source` (a key of `augreg_sources.csv`), `location` in that source, and `quote`, a short extract of
the source's text typed from it. `augreg_sources.csv` says what each source is and its commit.

What the paper itself could be read for here is its abstract and footnote 1: the models are released
in google-research/vision_transformer and "the code for full reproduction of model training" is
google-research/big_vision. The paper's setup sections (optimiser, schedule, the weight-decay,
dropout and stochastic-depth grids, the definitions of the augmentation levels) could not be read
here; nothing in the CSV cites them. The settings therefore come from the two repositories the
paper names, each row labelled with its file: vision_transformer (the epochs per dataset, the
recommended files and the values their names take) and big_vision's `vit_i21k.py` / `vit_i1k.py`
(optimiser, batch, learning rate, warm-up, schedule, clipping, resolution, loss, the levels'
RandAugment and MixUp, the level per model); the Adam betas are optax's `scale_by_adam` defaults,
which big_vision's configs use without overriding them.

Weight decay has two conventions. The file names' `wd` (0.03 or 0.1) is the one this package's
recipes use (decay multiplied by the learning rate, as torch's AdamW does); big_vision's
`config.wd = 0.0001` is added after the learning-rate scaling and multiplied by the schedule only
(`big_vision/optax.py`, `make`). `big_vision_weight_decay` converts one to the other:
wd(big_vision) = wd(file) x lr, so a file's `wd_0.1` at lr 0.001 is big_vision's 0.0001. That
reading is an inference (it is the only one under which big_vision's value is one of the file
names'), not a sentence of the paper.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SETTINGS_FILE = "augreg_settings.csv"
SOURCES_FILE = "augreg_sources.csv"
PAPER = ('Steiner et al., "How to train your ViT? Data, Augmentation, and Regularization in Vision '
         'Transformers", TMLR 2022, arXiv:2106.10270')


@dataclass(frozen=True)
class Setting:
    """One row of `augreg_settings.csv`; `citation` names the source file and place."""

    setting: str
    data: str
    model: str
    value: str
    source: str
    location: str
    quote: str

    @property
    def values(self) -> tuple[str, ...]:
        """`value` split at `;` (empty for an empty value)."""
        return tuple(v for v in self.value.split(";") if v)

    @property
    def numbers(self) -> tuple[float, ...]:
        """`values` as floats; ValueError for a row whose value is not numeric."""
        try:
            return tuple(float(v) for v in self.values)
        except ValueError:
            raise ValueError(f"AugReg setting {self.setting!r} ({self.data}) is not numeric: {self.value!r}") from None

    @property
    def citation(self) -> str:
        return f"{self.source}, {self.location}"


@functools.lru_cache(maxsize=None)
def settings(path: Path | None = None) -> tuple[Setting, ...]:
    """Every row of the settings CSV (the package's own unless `path` names another copy)."""
    with open(path or DATA_DIR / SETTINGS_FILE, newline="", encoding="utf-8") as handle:
        return tuple(Setting(**row) for row in csv.DictReader(handle))


@functools.lru_cache(maxsize=None)
def sources() -> dict[str, dict[str, str]]:
    """`augreg_sources.csv` keyed by source name."""
    with open(DATA_DIR / SOURCES_FILE, newline="", encoding="utf-8") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


def data_key(name: str) -> str:
    """"imagenet21k" / "i21k" -> "i21k"; "imagenet1k" / "imagenet" / "i1k" -> "i1k" (any spelling
    `paper_results.pretraining_name` accepts for the two)."""
    from . import pretraining_name

    key = {"ImageNet-21k": "i21k", "ImageNet": "i1k"}.get(pretraining_name(name))
    if key is None:
        raise ValueError(f"AugReg pretrains on ImageNet-21k or ImageNet-1k, not {name!r}: use 'i21k' or 'i1k'")
    return key


def setting(name: str, data: str = "all", model: str = "", rows: tuple[Setting, ...] | None = None) -> Setting:
    """The row for `name` on `data` ("i21k", "i1k"; a row for "all" serves both) and `model`.
    KeyError, naming what exists, when there is none."""
    key = "all" if data == "all" else data_key(data)
    found = [r for r in (rows or settings()) if r.setting == name and r.model == model and r.data in (key, "all")]
    if not found:
        known = sorted({(r.setting, r.data, r.model) for r in (rows or settings()) if r.setting == name})
        raise KeyError(f"no AugReg setting {name!r} for data {data!r}, model {model!r}; the CSV has {known or 'none'}")
    exact = [r for r in found if r.data == key]
    return (exact or found)[0]
