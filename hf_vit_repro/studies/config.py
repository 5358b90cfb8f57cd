"""A study config: which models to pretrain on what, how long, and how to transfer them.

    study: data-size                      # or compute, augreg (must match the command)
    name: data_size_digits                # folder outputs/studies/<name> unless output_dir is set
    recipe: pretrain_digits.yaml          # the base pretraining recipe (relative to this file)
    overrides: {optim.lr: 0.001}          # recipe keys set for every pretraining run
    data:                                 # the pretraining data
      task: digits                        # registry task, Hub dataset id or local folder
      val_fraction: 0.1                   # held out of the training split to validate on
      sizes: [0.1, 0.3, 1.0]              # data-size: nested subsets, fractions (<= 1) or counts
      classes: [0, 1, 2, 3, 4]            # pretrain on these label ids only (null: all)
    seeds: [0, 1, 2]                      # each run once per seed (train.seed: init, data order)
    early_stopping: {patience: 3, eval_every: 20}   # required by data-size (paper Sec. 4.3)
    epochs: [10, 30]                      # compute: every model for each (or per model)
    levels:                               # augreg: every size at each augmentation/regularisation level
      - {name: none, overrides: {data.augment_level: none}}
      - {name: medium1+reg, overrides: {data.augment_level: medium1, model.dropout: 0.1, model.drop_path_rate: 0.1}}
    models:
      - {name: ViT-tiny, family: ViT, config: {hidden_size: 32, ...}}
      - {name: R50x1, variant: BiT-R50x1, overrides: {optim.lr: 0.003}}
    transfer:
      fewshot: {task: digits, classes: [5, 6, 7, 8, 9], shots: [1, 5, 10], seeds: 3,
                curve: {every: 25, shots: [5], seeds: 1, max_test_examples: null}}   # few-shot during pretraining
      finetune: {recipe: finetune_digits.yaml, classes: [5, 6, 7, 8, 9], overrides: {train.steps: 100}}
      allow_class_overlap: false          # true: transfer to classes pretraining saw (nothing is transferred)
    plot: {shots: 5, reference: true, reference_column: imagenet}

Every key is checked when the file is read (`load_study_config`): an unknown one is an error
naming the closest ones, so a typo never silently drops part of a study. A transfer to the
pretraining task must use classes pretraining never saw (`data.classes` and the transfer's
`classes` disjoint) unless `transfer.allow_class_overlap` is true.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("data-size", "compute", "augreg")
#: The studies that pretrain on nested data sizes with early stopping (augreg: sizes x levels).
SIZED = ("data-size", "augreg")
#: The families of the paper's Table 6 (and Figure 5's legend).
FAMILIES = ("ViT", "ResNet (BiT)", "Hybrid")


class StudyConfigError(ValueError):
    """A study config that cannot run; the message says what to change."""


@dataclass
class ModelEntry:
    """One model of a study: `name` labels it in study.json, plots and tables (and names its run
    folders); `variant` and `config` become the recipe's `model.variant` / `model.config` (a
    tiny model is a `config` of ViTReproConfig fields, or a variant with `config` overrides);
    `overrides` sets any other recipe key for this model's runs; `family` is one of FAMILIES
    (inferred from the variant and config when left out); `epochs` replaces the study's list in
    the compute study."""

    name: str
    variant: str | None = None
    config: dict = field(default_factory=dict)
    family: str | None = None
    overrides: dict = field(default_factory=dict)
    epochs: list[float] | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.name).strip("-") or "model"

    def resolved_family(self) -> str:
        if self.family:
            return self.family
        from ..models import family_for_variant

        return family_for_variant(self.variant, self.config).paper_label


@dataclass
class LevelEntry:
    """One augmentation / regularisation level of the augreg study (AugReg, Steiner et al. 2022,
    Figure 1): `name` labels it (and names its run folders), `overrides` are the recipe keys it
    sets for every run at that level (`data.augment_level`, `model.dropout`, `model.drop_path_rate`, ...)."""

    name: str
    overrides: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.+]+", "-", self.name).strip("-") or "level"


@dataclass
class PretrainData:
    """The pretraining data (`load_task`): `task`, `data_dir`, columns, `train_split`;
    `val_fraction` of it is held out (seeded, the same for every size) to validate on; `sizes`
    are the data-size study's nested subsets of the rest (fractions in (0, 1] or image counts),
    drawn with `subset_seed`. `classes`: the label ids pretrained on (`data.classes` of the
    recipe: relabelled 0..K-1), null for all."""

    task: str = "digits"
    data_dir: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    val_fraction: float = 0.1
    sizes: list[float] = field(default_factory=lambda: [1.0])
    subset_seed: int = 0
    classes: list[int] | None = None


@dataclass
class EarlyStoppingSpec:
    """`train.early_stopping_patience` and `train.eval_every` of every pretraining run."""

    patience: int = 3
    eval_every: int = 100


@dataclass
class CurveSpec:
    """Few-shot evaluation during every pretraining run (`train.fewshot_eval` of its recipe): every
    `every` updates, at initialisation (step 0) and at the run's last update, on the few-shot
    transfer's task and classes (its `l2_reg`), `shots` per class (null: the plotted column,
    `plot.shots`) drawn `seeds` times, scoring at most `max_test_examples` test images (null: all).
    The report draws these curves (few-shot accuracy against pretraining step)."""

    every: int = 25
    shots: list[int] | None = None
    seeds: int = 1
    max_test_examples: int | None = None


@dataclass
class FewshotSpec:
    """Few-shot linear evaluation of every pretrained model (`vit-repro fewshot`; paper
    Sec. 4.1, Figure 4): `shots` per class, the first `seeds` seeds, on `task`'s
    `train_split` (shots) and `test_split` (scored). `l2_reg`: null keeps the evaluator's
    default, a number fixes it. `resolution`: null is the pretraining resolution. `classes`: the
    label ids of `task` evaluated on (relabelled 0..K-1; null: all). `scratch_reference`: also
    evaluate every model and seed at its initialisation (the weights its run starts from), the
    no-pretraining reference the plot draws dashed beside the pretrained points. `curve`: also
    evaluate few-shot during pretraining (`CurveSpec`; null: not)."""

    task: str = "digits"
    data_dir: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    shots: list[int] = field(default_factory=lambda: [1, 5, 10, 25])
    seeds: int = 3
    l2_reg: float | None = None
    resolution: int | None = None
    batch_size: int = 64
    classes: list[int] | None = None
    scratch_reference: bool = False
    curve: CurveSpec | None = None


@dataclass
class FinetuneSpec:
    """Fine-tuning of every pretrained model (paper Figure 3 / Table 6): a fine-tuning recipe
    (path relative to the study config) whose `model.init_from` the study sets, plus overrides.
    Its evaluation split is the reported fine-tuned accuracy. `classes`: the recipe's `data.classes`
    (the label ids fine-tuned and scored on; null keeps the recipe's)."""

    recipe: str = ""
    overrides: dict = field(default_factory=dict)
    classes: list[int] | None = None


@dataclass
class TransferSpec:
    """How every pretrained model is transferred. `allow_class_overlap: true` lets a transfer to the
    pretraining task use classes pretraining saw (then nothing new is learnt from few examples)."""

    fewshot: FewshotSpec | None = None
    finetune: FinetuneSpec | None = None
    allow_class_overlap: bool = False


@dataclass
class PlotSpec:
    """`shots`: the few-shot column plotted (the paper's Figure 4 is 5-shot); `reference`: draw
    the paper's Table 6 beside the compute plot (its own panel, labelled "paper (JFT-300M)"),
    `reference_column` the Table 6 column it plots ("imagenet", "cifar10", ... or "average5")."""

    shots: int = 5
    reference: bool = True
    reference_column: str = "imagenet"


@dataclass
class StudyConfig:
    """A whole study (see the module docstring). `source` is the file it was read from."""

    study: str
    name: str
    recipe: str
    models: list[ModelEntry]
    description: str = ""
    output_dir: str | None = None
    overrides: dict = field(default_factory=dict)
    data: PretrainData = field(default_factory=PretrainData)
    early_stopping: EarlyStoppingSpec | None = None
    epochs: list[float] = field(default_factory=list)
    levels: list[LevelEntry] = field(default_factory=list)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    plot: PlotSpec = field(default_factory=PlotSpec)
    seeds: list[int] | None = None
    source: str = ""

    @property
    def folder(self) -> Path:
        """Where the study writes: `output_dir`, else outputs/studies/<name>."""
        return Path(self.output_dir) if self.output_dir else Path("outputs") / "studies" / self.name

    def resolve_path(self, path: str) -> Path:
        """A recipe path as written in the config: relative to the config file, else to the
        working directory, else to the source checkout (as `load_recipe` does)."""
        candidate = Path(path)
        if candidate.is_absolute():
            return candidate
        here = Path(self.source).parent / candidate if self.source else candidate
        if here.is_file():
            return here
        return candidate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> StudyConfig:
        if self.study not in KINDS:
            raise StudyConfigError(f"`study` must be one of {', '.join(KINDS)}, got {self.study!r}.")
        if not self.name or any(c in self.name for c in "/\\"):
            raise StudyConfigError(f"`name` must be a non-empty name without slashes, got {self.name!r}.")
        if not self.models:
            raise StudyConfigError("`models` is empty: list at least one model (name + variant or config).")
        slugs = [m.slug for m in self.models]
        if len(set(slugs)) != len(slugs):
            raise StudyConfigError(f"model names must differ (they name run folders): {[m.name for m in self.models]}")
        for m in self.models:
            if m.variant is None and not m.config:
                raise StudyConfigError(f"model {m.name!r} has neither `variant` nor `config`.")
            try:
                family = m.resolved_family()
            except ValueError as err:  # an unknown variant name
                raise StudyConfigError(f"model {m.name!r}: `variant`: {err}") from None
            if family not in FAMILIES:
                raise StudyConfigError(f"model {m.name!r}: `family` must be one of {', '.join(FAMILIES)}, got {m.family!r}.")
        d = self.data
        if not 0.0 <= d.val_fraction < 1.0:
            raise StudyConfigError(f"`data.val_fraction` must lie in [0, 1), got {d.val_fraction}.")
        if not d.sizes or any(not s > 0 or (s > 1 and s != int(s)) for s in d.sizes):
            raise StudyConfigError(f"`data.sizes` are fractions in (0, 1] or whole image counts, got {d.sizes}.")
        if self.study in SIZED:
            if self.early_stopping is None or d.val_fraction <= 0:
                raise StudyConfigError(
                    f"the {self.study} study validates on held-out data with early stopping (paper Sec. 4.3): set "
                    "`early_stopping: {patience: ..., eval_every: ...}` and `data.val_fraction` > 0."
                )
            slugs = [level.slug for level in self.levels]
            if (self.study == "augreg") != bool(self.levels) or len(set(slugs)) != len(slugs):
                raise StudyConfigError(
                    "`levels` (distinct names) belongs to the augreg study and it needs them, e.g. `levels: [{name: none, "
                    "overrides: {data.augment_level: none}}, {name: medium1, overrides: {data.augment_level: medium1}}]`."
                )
        else:
            epochs = [e for m in self.models for e in (m.epochs or self.epochs)]
            if any(not m.epochs for m in self.models) and not self.epochs:
                raise StudyConfigError("the compute study needs `epochs` (a list, e.g. [7, 14]) or `epochs` per model.")
            if any(not e > 0 for e in epochs):
                raise StudyConfigError(f"epochs must be > 0, got {epochs}.")
            if len(d.sizes) != 1:
                raise StudyConfigError("`data.sizes` belongs to the data-size study; the compute study trains on one size.")
        if self.early_stopping is not None and (self.early_stopping.patience < 1 or self.early_stopping.eval_every < 1):
            raise StudyConfigError("`early_stopping.patience` and `early_stopping.eval_every` must be >= 1.")
        if self.transfer.fewshot is None and self.transfer.finetune is None:
            raise StudyConfigError("`transfer` names no evaluation: give `fewshot`, `finetune` or both.")
        f = self.transfer.fewshot
        if f is not None and (not f.shots or min(f.shots) < 1 or f.seeds < 1):
            raise StudyConfigError(f"`transfer.fewshot` needs shots >= 1 and seeds >= 1, got {f.shots} / {f.seeds}.")
        if f is not None and f.curve is not None and (problem := self.curve_problem()):
            raise StudyConfigError(problem)
        if self.transfer.finetune is not None and not self.transfer.finetune.recipe:
            raise StudyConfigError("`transfer.finetune.recipe` names no fine-tuning recipe.")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise StudyConfigError(f"`seeds` lists distinct training seeds (e.g. [0, 1, 2]) or is left out, got {self.seeds}.")
        from ..data import classes_problem

        for where, classes in (("data.classes", d.classes), ("transfer.fewshot.classes", f and f.classes),
                               ("transfer.finetune.classes", self.transfer.finetune and self.transfer.finetune.classes)):
            if classes is not None and (problem := classes_problem(classes)):
                raise StudyConfigError(f"`{where}` {problem}")
        if not self.transfer.allow_class_overlap and (problem := self.class_overlap()):
            raise StudyConfigError(problem)
        return self

    def curve_shots(self) -> list[int]:
        """The shot counts of the curves: `transfer.fewshot.curve.shots`, else the plotted column
        (`plot.shots` when the few-shot transfer measures it, else its largest)."""
        f = self.transfer.fewshot
        if f.curve.shots:
            return list(f.curve.shots)
        return [self.plot.shots if self.plot.shots in f.shots else max(f.shots)]

    def curve_problem(self) -> str | None:
        """What keeps `transfer.fewshot.curve` from running, or None. The curve reads the task's train
        and test splits at the model's resolution (`train.fewshot_eval`), from the pretraining
        `data_dir` when it is the pretraining task, else from the registry."""
        f, c = self.transfer.fewshot, self.transfer.fewshot.curve
        if c.every < 1 or c.seeds < 1 or (c.shots is not None and (not c.shots or min(c.shots) < 1)):
            return (f"`transfer.fewshot.curve` needs every >= 1, seeds >= 1 and shots >= 1 (or null), got every {c.every}, "
                    f"seeds {c.seeds}, shots {c.shots}.")
        if c.max_test_examples is not None and c.max_test_examples < 1:
            return f"`transfer.fewshot.curve.max_test_examples` is null or >= 1, got {c.max_test_examples}."
        data_dir = self.data.data_dir if f.task == self.data.task else None
        if (f.train_split, f.test_split) != ("train", "test") or f.resolution is not None or f.data_dir != data_dir:
            return ("`transfer.fewshot.curve` evaluates on the task's train and test splits at the pretraining resolution"
                    f"{', from the pretraining data_dir' if data_dir else ''}: leave `transfer.fewshot`'s train_split, "
                    "test_split, resolution and data_dir at their defaults, or set `curve: null`.")
        return None

    def curve_options(self) -> dict[str, Any] | None:
        """The `train.fewshot_eval` every pretraining run of the study gets (None: no curve)."""
        f = self.transfer.fewshot
        if f is None or f.curve is None:
            return None
        c = f.curve
        options = {"every": c.every, "tasks": [f.task], "shots": self.curve_shots(), "seeds": list(range(c.seeds)),
                   "max_test_examples": c.max_test_examples, "classes": f.classes, "at_start": True}
        return options if f.l2_reg is None else {**options, "l2_reg": f.l2_reg}

    def transfer_tasks(self) -> list[tuple[str, str, str | None, list[int] | None]]:
        """(section, task, data_dir, classes) of each transfer; a fine-tuning recipe's task is read from its file."""
        out = []
        f, t = self.transfer.fewshot, self.transfer.finetune
        if f is not None:
            out.append(("transfer.fewshot", f.task, f.data_dir, f.classes))
        if t is not None:
            import yaml

            path = self.resolve_path(t.recipe)
            data = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}) if path.is_file() else {}
            task = t.overrides.get("data.task", data.get("task", "digits"))
            data_dir = t.overrides.get("data.data_dir", data.get("data_dir"))
            out.append(("transfer.finetune", task, data_dir, t.classes or t.overrides.get("data.classes", data.get("classes"))))
        return out

    def class_overlap(self) -> str | None:
        """Why a transfer would measure classes pretraining saw (same task, overlapping classes), or None."""
        d = self.data
        for section, task, data_dir, classes in self.transfer_tasks():
            if task != d.task or data_dir != d.data_dir:
                continue  # another task: its labels are other classes
            if d.classes is not None and classes is not None:
                shared = sorted(set(d.classes) & set(classes))
            else:
                shared = sorted(d.classes or classes or []) or "all"
            if shared:
                saw = shared if shared != "all" else "all of them"
                return (f"`{section}` transfers to {task} classes pretraining saw ({saw}): "
                        f"nothing is transferred. Pretrain on some classes and transfer to the others, e.g. `data.classes: "
                        f"[0, 1, 2, 3, 4]` and `{section}.classes: [5, 6, 7, 8, 9]`, or set `transfer.allow_class_overlap: "
                        "true` to measure it knowingly.")
        return None


def _build(cls, values: Any, where: str):
    """A dataclass from a mapping, each field coerced to its annotation; unknown keys raise."""
    if not isinstance(values, dict):
        raise StudyConfigError(f"{where} must be a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise StudyConfigError(f"{where}: unknown key {key!r}.{hint} Keys: {', '.join(names)}.")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "study config" else key)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise StudyConfigError(f"{where}: missing {', '.join(map(repr, missing))}.") from err


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation`: the study's own sections (dataclasses, possibly optional) here,
    plain values by the recipe's coercion (`RecipeError`, a ValueError, names the key)."""
    from ..training.recipe import coerce_value

    if typing.get_origin(annotation) is list and dataclasses.is_dataclass(typing.get_args(annotation)[0]):
        if not isinstance(value, list):
            raise StudyConfigError(f"{where} must be a list of mappings, got {value!r}.")
        return [_build(typing.get_args(annotation)[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if dataclasses.is_dataclass(options[0]):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        return _build(options[0], {} if value is None else value, where)
    if value is None and annotation is dict:
        return {}
    if typing.get_origin(annotation) is list and isinstance(value, (int, float, str)):
        value = [value]  # `sizes: 0.5` is a list of one
    return coerce_value(value, annotation, where)


def load_study_config(path: str | os.PathLike, kind: str | None = None) -> StudyConfig:
    """Read and validate a study config (YAML). `kind` ("data-size", "compute" or "augreg", the command
    that runs it) fills a missing `study:` key and must match a present one. Raises
    a ValueError (`RecipeError` for a missing file or bad YAML, `StudyConfigError` for unknown keys
    or bad values) before anything runs."""
    from ..training.recipe import read_yaml_file

    path, values = read_yaml_file(path, "Study config", "The shipped ones are in recipes/studies/.")
    if not isinstance(values, dict):
        raise StudyConfigError(f"{path}: a study config is a mapping, got {type(values).__name__}.")
    if kind is not None:
        if values.setdefault("study", kind) != kind:
            raise StudyConfigError(
                f"{path} is a {values['study']!r} study; run it with `vit-repro study {values['study']}`."
            )
    config = _build(StudyConfig, values, "study config")
    config.source = str(path)
    return config.validate()
