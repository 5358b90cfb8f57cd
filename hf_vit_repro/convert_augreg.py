"""What an AugReg checkpoint's file name says about how it was trained (Steiner et al., "How to train
your ViT? Data, Augmentation, and Regularization in Vision Transformers", TMLR 2022).

The AugReg files in `gs://vit_models/augreg` are named by their training settings (google-research/
vision_transformer: README "Available ViT models", `vit_jax/configs/augreg.py`, and the columns of the
`index.csv` that `vit_jax/checkpoint.py:get_augreg_df` documents):

    S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0                         pretrained
    S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384   fine-tuned

- model: `configs/models.py` registers each AugReg model as its paper name with "ViT-" dropped and "+"
  replaced by "_": `Ti_16`, `S_32`, `B_8`, `R_Ti_16` (R+Ti/16), `R26_S_32` (R26+S/32), `R50_L_32`;
- pretraining (the index's `ds`, `lr`, `aug`, `wd`, `do`, `sd` columns): dataset `i21k` (ImageNet-21k) or
  `i1k` (ImageNet-1k), epochs (`300ep`; the index's `i21k_30` rows are the 30-epoch runs), learning rate,
  augmentation level (`none`, `light0`, `light1`, ... `strong2`; "refer to paper for details"), weight
  decay, dropout, stochastic depth;
- after `--`, the fine-tuning (the `adapt_*` columns): the TFDS name of the dataset (`imagenet2012`,
  `cifar100`, `oxford_iiit_pet`, ...), steps in thousands, rounded (`steps_20k`; Pets' 500 steps read
  `steps_0k`), learning rate and resolution.

`parse_augreg_name` reads a name (a path, with or without `.npz`) into an `AugRegName`, or returns None
for any other name: nothing is claimed about a file whose name does not follow this pattern exactly.
`config_settings` gives the `ViTReproConfig` fields the name decides, `card_rows` the model card's lines.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

_NUMBER = r"\d+(?:\.\d+)?(?:e-?\d+)?"
_UPSTREAM = (
    rf"(?P<model>(?:(?P<backbone>R26|R50|R)_)?(?P<size>Ti|S|B|L|H)_(?P<patch>\d+))"
    rf"-(?P<ds>i21k|i1k)-(?P<epochs>\d+)ep-lr_(?P<lr>{_NUMBER})-aug_(?P<aug>[a-z]+\d*)"
    rf"-wd_(?P<wd>{_NUMBER})-do_(?P<do>{_NUMBER})-sd_(?P<sd>{_NUMBER})"
)
_ADAPT = rf"--(?P<adapt_ds>[a-z][a-z0-9_]*)-steps_(?P<steps>\d+)k-lr_(?P<adapt_lr>{_NUMBER})-res_(?P<res>\d+)"
# The name may follow a prefix that is not a letter or digit ("augreg_Ti_16-..."), never another word.
_NAME = re.compile(rf"(?:^|(?<=[^A-Za-z0-9])){_UPSTREAM}(?:{_ADAPT})?$")

#: The index's `ds` values, in words (`vit_jax/checkpoint.py:get_augreg_df`).
PRETRAINING_DATASETS = {"i21k": "ImageNet-21k", "i1k": "ImageNet-1k (ILSVRC-2012)"}
#: Where the rule "no dropout when fine-tuning" comes from.
FINETUNE_REGULARISATION_SOURCE = (
    "google-research/vision_transformer vit_jax/configs/augreg.py sets dropout_rate = 0 when fine-tuning an "
    "AugReg checkpoint (\"No AugReg during fine-tuning\")"
)


@dataclasses.dataclass(frozen=True)
class AugRegFinetune:
    """The fine-tuning part of a name (after "--"). `steps` is None for `steps_0k` (fewer than 500:
    the name rounds to thousands, e.g. Pets' 500 steps); `steps_text` is the name's own spelling."""

    dataset: str
    steps: int | None
    steps_text: str
    lr: float
    resolution: int


@dataclasses.dataclass(frozen=True)
class AugRegName:
    """One AugReg file name, read. `model` in the paper's spelling ("ViT-S/16", "R26+ViT-S/32");
    `pretraining_dataset` the index's `ds` ("i21k", "i1k"); `finetune` None for a pretrained file."""

    filename: str
    model: str
    pretraining_dataset: str
    epochs: int
    lr: float
    augmentation: str
    weight_decay: float
    dropout: float
    stochastic_depth: float
    finetune: AugRegFinetune | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AugRegName":
        values = dict(values)
        finetune = values.pop("finetune", None)
        return cls(**values, finetune=AugRegFinetune(**finetune) if finetune else None)


def parse_augreg_name(name: str | Path) -> AugRegName | None:
    """An AugReg file name (or path; ".npz" optional) -> `AugRegName`; None for any other name,
    and for a name whose rates are not probabilities (dropout, stochastic depth in [0, 1))."""
    stem = Path(str(name)).name
    stem = stem[: -len(".npz")] if stem.endswith(".npz") else stem
    match = _NAME.search(stem)
    if match is None:
        return None
    g = match.groupdict()
    dropout, depth = float(g["do"]), float(g["sd"])
    if not (0.0 <= dropout < 1.0 and 0.0 <= depth < 1.0):
        return None
    backbone = f"{g['backbone']}+" if g["backbone"] else ""
    finetune = None
    if g["adapt_ds"] is not None:
        thousands = int(g["steps"])
        finetune = AugRegFinetune(
            dataset=g["adapt_ds"], steps=thousands * 1000 or None, steps_text=f"{thousands}k",
            lr=float(g["adapt_lr"]), resolution=int(g["res"]),
        )
    return AugRegName(
        filename=match.group(0),
        model=f"{backbone}ViT-{g['size']}/{g['patch']}",
        pretraining_dataset=g["ds"],
        epochs=int(g["epochs"]),
        lr=float(g["lr"]),
        augmentation=g["aug"],
        weight_decay=float(g["wd"]),
        dropout=dropout,
        stochastic_depth=depth,
        finetune=finetune,
    )


def config_settings(name: AugRegName) -> dict[str, float]:
    """The `ViTReproConfig` fields the name decides: a pretrained file keeps its pretraining's
    dropout (`hidden_dropout_prob`, AugReg's `do`: after the dense layers and the position
    embeddings, as `vit_jax/models_vit.py` places it) and stochastic depth (`drop_path_rate`, `sd`);
    a fine-tuned file was fine-tuned with neither (`FINETUNE_REGULARISATION_SOURCE`), so both are 0."""
    if name.finetune is not None:
        return {"hidden_dropout_prob": 0.0, "drop_path_rate": 0.0}
    return {"hidden_dropout_prob": name.dropout, "drop_path_rate": name.stochastic_depth}


def _rate(value: float) -> str:
    return f"{value:g}"


def card_rows(values: dict[str, Any] | AugRegName) -> list[tuple[str, str]]:
    """The model card's lines for an AugReg name (an `AugRegName` or its `to_dict()`, as config.json
    stores it under `augreg`): what the file name says, labelled as such."""
    name = values if isinstance(values, AugRegName) else AugRegName.from_dict(values)
    dataset = PRETRAINING_DATASETS.get(name.pretraining_dataset, name.pretraining_dataset)
    rows = [
        ("AugReg file", f"`{name.filename}`"),
        ("Model (from the name)", name.model),
        ("Pretraining data", f"{dataset} (`{name.pretraining_dataset}`), {name.epochs} epochs"),
        ("Pretraining learning rate", _rate(name.lr)),
        ("Augmentation level", f"`{name.augmentation}` (AugReg's RandAugment / MixUp level)"),
        ("Weight decay", _rate(name.weight_decay)),
        ("Dropout", _rate(name.dropout)),
        ("Stochastic depth", _rate(name.stochastic_depth)),
    ]
    if name.finetune is not None:
        f = name.finetune
        steps = f"{f.steps:,}" if f.steps else "fewer than 1,000 (the name rounds to thousands: `steps_0k`)"
        rows += [
            ("Fine-tuned on", f"`{f.dataset}` (TFDS name)"),
            ("Fine-tuning steps", steps),
            ("Fine-tuning learning rate", _rate(f.lr)),
            ("Fine-tuning resolution", f"{f.resolution} x {f.resolution}"),
            ("Regularisation when fine-tuning", "none (dropout 0, as vit_jax/configs/augreg.py fine-tunes AugReg files)"),
        ]
    return rows


__all__ = [
    "AugRegFinetune",
    "AugRegName",
    "PRETRAINING_DATASETS",
    "card_rows",
    "config_settings",
    "parse_augreg_name",
]
