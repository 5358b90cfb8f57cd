"""The one training loop: pretraining and fine-tuning with Accelerate, read from a typed recipe.

    vit-repro train recipes/finetune_cifar10.yaml optim.lr=0.003 run.output_dir=outputs/c10
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m hf_vit_repro train RECIPE ...

Both doors call `run_recipe(load_recipe(path, overrides))`. The story of one run (`train`),
top to bottom: accelerator -> data -> model -> optimizer -> schedule -> prepare -> resume ->
loop -> evaluate -> save -> publish. Only the main process writes files (Accelerate's
checkpoint writes one RNG file per process).

The paper's settings (shared/PAPER.md, "Training"; paper Appendix B.1):

- Pretraining: Adam (beta1 0.9, beta2 0.999) with decoupled weight decay scaled by the learning
  rate, `p <- p - lr * (adam_update + wd * p)` (flax.optim.Adam in the original code; PyTorch's
  AdamW), batch 4096, linear warm-up of 10k steps then linear or cosine decay, gradient clipping
  at global norm 1, dropout / label smoothing per recipe, a pre-logits "representation" layer.
- Fine-tuning: SGD momentum 0.9, no weight decay, clipping at 1, cosine decay with warm-up,
  batch 512, the pre-logits layer dropped and a zero-initialised K-way head attached, position
  embeddings resampled once at load for the higher resolution, learning rate swept over
  {0.001, 0.003, 0.01, 0.03} on a held-out split (`run_recipe`), optional Polyak (EMA) weights.

Surprises, each handled where it happens below:

- The global batch is `micro_batch_size x processes x accumulation steps`; accumulation is
  derived, and a global batch that does not divide is an error, not a silent change.
- The micro-batch losses are divided by the accumulation steps before `backward`, so k
  micro-batches give exactly the gradient of one k-times larger batch (tested).
- The learning rate of update t = 1..T follows the original code's formula (vit_jax
  `create_learning_rate_schedule`): `base * min(1, t / warmup) * decay(progress)` with
  `progress = clip((t - warmup) / (T - warmup), 0, 1)`: it reaches `base` exactly at the end of
  warm-up and 0 at the last update for linear and cosine decay.
- Exact resume: the data order and every augmentation are functions of (seed, epoch, row)
  (`hf_vit_repro.data.SeededSampler`), the position inside the epoch is recomputed from the
  step, and Accelerate restores model, optimizer, scheduler and RNG state, so an interrupted
  and resumed run ends with the same weights as an uninterrupted one (tested on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import json
import math
import os
import shlex
import shutil
import sys
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runs

MODES = ("pretrain", "finetune")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
LOSSES = ("softmax_xent", "sigmoid_xent")
AUGMENTATIONS = ("inception_crop", "finetune", "none")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
#: Name of the per-checkpoint file with the loop's own counters (beside Accelerate's state).
TRAINER_STATE = "trainer_state.json"
#: One JSON line per logged step: {"step", "loss", "lr", "grad_norm", "images_per_s"}.
TRAIN_LOG = "train_log.jsonl"
#: Learning-rate sweep results in a run folder (`run_recipe`).
SWEEP = "sweep.json"
SWEEP_DIR = "sweep"


class RecipeError(ValueError):
    """A recipe (file or `key=value` override) that cannot run; the message says how to fix it."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the bad update was applied."""


# =============================================================================================
# The recipe: a typed object, read from YAML, with key=value overrides and a smoke switch.
# =============================================================================================


@dataclass
class ModelRecipe:
    """The network. `variant` names a row of the variant table ("ViT-B/16", "R50+ViT-B/16");
    `config` sets any other `ViTReproConfig` field (a tiny demo model, `pooling: gap`...).
    `init_from` fine-tunes a checkpoint: a run folder (its `final/` is used), a `save_pretrained`
    folder or a Hub repo id. `representation_size` is the pre-logits width (pretraining; `null`
    drops it when fine-tuning). `image_size` differs from the checkpoint's when fine-tuning at a
    higher resolution: the position embeddings are then resampled once at load (paper Sec. 3.2).
    Memory options: `recompute_mlp_activation` (GELU recomputed in backward, 12 % less
    memory for ViT-S/16) and `gradient_checkpointing` (whole blocks recomputed).
    """

    variant: str | None = "ViT-B/16"
    init_from: str | None = None
    image_size: int = 224
    representation_size: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    config: dict = field(default_factory=dict)
    gradient_checkpointing: bool = False
    recompute_mlp_activation: bool = False


@dataclass
class DataRecipe:
    """Where images come from (`hf_vit_repro.data.load_task`). `task` is a registry name, a Hub
    dataset id or a local folder; `data_dir` a local copy laid out like the Hub repo.

    The learning-rate sweep trains on `sweep_train_split` (default `train_split`) and validates
    on `val_split`, or, when that is null, on a `val_fraction` of the training split held out
    with a fixed seed (paper Appendix B.1.1: 2% for CIFAR, 1% for ImageNet, 10% for Pets and
    Flowers). `holdout: true` is how a sweep member says "train on the rest, evaluate on the
    held-out part". `augmentation`: `inception_crop` (pretraining), `finetune` (the transfer
    preprocessing, VTAB-aware for registry tasks), `none` (resize only). `flip: null` keeps the
    task's own rule (no flips where they change the label).
    """

    task: str = "digits"
    data_dir: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    val_split: str | None = None
    sweep_train_split: str | None = None
    val_fraction: float = 0.0
    holdout: bool = False
    augmentation: str = "finetune"
    flip: bool | None = None
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    strict: bool = False


@dataclass
class OptimRecipe:
    """Optimizer and schedule. `adamw` is the paper's pretraining Adam with decoupled weight decay
    (multiplied by the learning rate, as the original code applies it); `sgd` uses `momentum` and
    the paper's fine-tuning has no weight decay. Parameters named by `model.no_weight_decay()`
    never decay. `lr_sweep` lists learning rates to choose from on the validation split before
    the final run (`run_recipe`). `grad_clip_norm: null` disables clipping. `fused` updates all
    parameters in one kernel (torch's fused AdamW / SGD, the default of transformers' Trainer
    too): a ViT-S/16 training step on CPU is about 4 % faster than with torch's default
    AdamW (benchmarks/README.md)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    lr_sweep: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0
    schedule: str = "cosine"
    warmup_steps: int = 500
    fused: bool = True


@dataclass
class TrainRecipe:
    """The optimisation problem: length (`steps`, or `epochs` of the training split), batch
    (`global_batch_size` images per update, reached with micro-batches of `micro_batch_size` per
    process and gradient accumulation), loss (`softmax_xent`, or `sigmoid_xent` on one-hot
    targets), label smoothing, Polyak averaging (`ema_decay`), seed, evaluation interval."""

    steps: int | None = None
    epochs: float | None = None
    global_batch_size: int = 512
    micro_batch_size: int = 64
    loss: str = "softmax_xent"
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    seed: int = 0
    eval_every: int = 0
    eval_batch_size: int = 256


@dataclass
class RunRecipe:
    """Runtime switches that do not change the result: folder, resume, precision, compilation,
    workers, checkpoint / log intervals, trackers, publishing. `resume`: `auto` continues the
    latest checkpoint in `output_dir` (or starts fresh), `never` refuses to touch a folder that
    holds a run, or a checkpoint folder path. `smoke: true` shrinks any recipe to a few CPU steps
    on local data. `mixed_precision: auto` is bf16 where the GPU has it, else fp32.
    `stop_after` ends this session after that many updates with a checkpoint (for time-limited
    jobs: run again with `resume=auto` to continue). `torch_threads` caps PyTorch's intra-op threads for the run (tiny models on a busy CPU run
    faster on one thread, with `num_workers: 1` loading data on another core). `trackers`:
    `tensorboard` (local, in `logs/`) and any other Accelerate tracker (`wandb`, `mlflow`...)."""

    output_dir: str | None = None
    resume: str = "auto"
    smoke: bool = False
    mixed_precision: str = "auto"
    compile: bool = False
    deterministic: bool = False
    num_workers: int = 0
    torch_threads: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    stop_after: int | None = None
    log_every: int = 10
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True
    push_to_hub: bool = False
    hub_repo_id: str | None = None


SECTIONS: dict[str, type] = {
    "model": ModelRecipe,
    "data": DataRecipe,
    "optim": OptimRecipe,
    "train": TrainRecipe,
    "run": RunRecipe,
}


@dataclass
class Recipe:
    """A training run, every choice explicit. `mode: pretrain` trains the recipe's model from
    scratch (or continues `init_from` with its head); `mode: finetune` replaces the head of
    `init_from` by a zero-initialised K-way one (paper Sec. 3.2); without `init_from` it trains
    the model from scratch with the fine-tuning protocol (a no-pretraining baseline)."""

    name: str = "run"
    mode: str = "finetune"
    description: str = ""
    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    run: RunRecipe = field(default_factory=RunRecipe)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe", validate: bool = True) -> "Recipe":
        """Build (and validate) a recipe from nested dicts (a parsed YAML file). Unknown keys and
        values of the wrong type raise `RecipeError` naming the key, with close matches."""
        if not isinstance(values, dict):
            raise RecipeError(f"{source}: a recipe is a mapping of sections, got {type(values).__name__}.")
        recipe = cls()
        for key, value in values.items():
            if key in SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise RecipeError(f"{source}: section `{key}` must be a mapping of fields, got {value!r}.")
                for sub_key, sub_value in value.items():
                    recipe.set(f"{key}.{sub_key}", sub_value, source=source)
            else:
                recipe.set(key, value, source=source)
        return recipe.validate() if validate else recipe

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def replace(self, **dotted: Any) -> "Recipe":
        """A validated copy with fields changed: `recipe.replace(**{"optim.lr": 0.01})`."""
        new = copy.deepcopy(self)
        for key, value in dotted.items():
            new.set(key, value, source="replace")
        new.validate()
        return new

    def set(self, key: str, value: Any, source: str = "override") -> None:
        """Set one field by dotted (`optim.lr`) or unambiguous bare (`lr`, `smoke`) name,
        coercing `value` to the field's type."""
        section, name = resolve_key(key, source)
        target = self if section is None else getattr(self, section)
        hints = _type_hints(type(target))
        dotted = name if section is None else f"{section}.{name}"
        setattr(target, name, _coerce(value, hints[name], f"{source}: `{dotted}`"))

    # ------------------------------------------------------------------ derived values
    @property
    def output_dir(self) -> Path:
        """`run.output_dir`, or `outputs/<name>` (`outputs/smoke/<name>` in smoke mode)."""
        if self.run.output_dir:
            return Path(self.run.output_dir)
        return Path("outputs") / ("smoke" if self.run.smoke else "") / self.name

    # ------------------------------------------------------------------ validation
    def validate(self) -> "Recipe":
        """Check every field against its allowed values; raise `RecipeError` saying what to change."""
        m, d, o, t, r = self.model, self.data, self.optim, self.train, self.run

        def choice(key, value, allowed):
            if value not in allowed:
                raise RecipeError(f"`{key}` must be one of {', '.join(map(repr, allowed))}; got {value!r}.")

        def positive(key, value, allow_none=False, allow_zero=False):
            if value is None and allow_none:
                return
            if value is None or value < 0 or (value == 0 and not allow_zero):
                raise RecipeError(f"`{key}` must be {'>= 0' if allow_zero else '> 0'}, got {value!r}.")

        choice("mode", self.mode, MODES)
        choice("optim.optimizer", o.optimizer, OPTIMIZERS)
        choice("optim.schedule", o.schedule, SCHEDULES)
        choice("train.loss", t.loss, LOSSES)
        choice("data.augmentation", d.augmentation, AUGMENTATIONS)
        choice("run.mixed_precision", r.mixed_precision, MIXED_PRECISIONS)
        if not self.name or any(c in self.name for c in "/\\"):
            raise RecipeError(f"`name` must be a non-empty name without slashes, got {self.name!r}.")
        if m.variant is not None:
            from .variants import canonical_name

            try:
                m.variant = canonical_name(m.variant)
            except ValueError as err:
                raise RecipeError(f"`model.variant`: {err}") from None
        elif m.init_from is None and not m.config:
            raise RecipeError(
                "The recipe names no model: set `model.variant` (e.g. 'ViT-B/16'), `model.config` "
                "(ViTReproConfig fields) or `model.init_from` (a checkpoint to fine-tune)."
            )
        positive("model.image_size", m.image_size)
        positive("model.representation_size", m.representation_size, allow_none=True)
        for key, p in (("model.dropout", m.dropout), ("model.attention_dropout", m.attention_dropout)):
            if not 0.0 <= p < 1.0:
                raise RecipeError(f"`{key}` must be a probability in [0, 1), got {p}.")
        for key in ("image_size", "num_labels", "representation_size", "hidden_dropout_prob",
                    "attention_probs_dropout_prob", "id2label", "label2id"):
            if key in m.config:
                raise RecipeError(
                    f"`model.config.{key}` is set by the recipe itself; use "
                    f"{_CONFIG_KEY_OWNERS.get(key, 'the data task (classes come from it)')} instead."
                )
        if len(d.mean) != 3 or len(d.std) != 3 or any(s <= 0 for s in d.std):
            raise RecipeError(f"`data.mean` and `data.std` need 3 values (std > 0), got {d.mean} / {d.std}.")
        if not 0.0 <= d.val_fraction < 1.0:
            raise RecipeError(f"`data.val_fraction` must lie in [0, 1), got {d.val_fraction}.")
        if d.holdout and d.val_fraction <= 0:
            raise RecipeError("`data.holdout: true` needs `data.val_fraction` > 0 (the part held out for validation).")
        positive("data.max_train_examples", d.max_train_examples, allow_none=True)
        positive("data.max_eval_examples", d.max_eval_examples, allow_none=True)
        positive("optim.lr", o.lr)
        for lr in o.lr_sweep:
            positive("optim.lr_sweep[...]", lr)
        if o.lr_sweep and d.val_split is None and d.val_fraction <= 0:
            raise RecipeError(
                "`optim.lr_sweep` needs a validation split to choose on: set `data.val_split` or "
                "`data.val_fraction` (e.g. 0.02 as the paper holds out of CIFAR's training set)."
            )
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise RecipeError(f"`optim.betas` must be two numbers in [0, 1), got {o.betas}.")
        positive("optim.eps", o.eps)
        positive("optim.weight_decay", o.weight_decay, allow_zero=True)
        if not 0.0 <= o.momentum < 1.0:
            raise RecipeError(f"`optim.momentum` must lie in [0, 1), got {o.momentum}.")
        positive("optim.grad_clip_norm", o.grad_clip_norm, allow_none=True)
        positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
        if (t.steps is None) == (t.epochs is None):
            raise RecipeError(
                f"Give exactly one of `train.steps` and `train.epochs` (got steps={t.steps}, epochs={t.epochs})."
            )
        positive("train.steps", t.steps, allow_none=True)
        positive("train.epochs", t.epochs, allow_none=True)
        if t.steps is not None and o.warmup_steps >= t.steps and t.steps > 1:
            raise RecipeError(
                f"`optim.warmup_steps` ({o.warmup_steps}) must be smaller than `train.steps` ({t.steps})."
            )
        positive("train.global_batch_size", t.global_batch_size)
        positive("train.micro_batch_size", t.micro_batch_size)
        if t.global_batch_size % t.micro_batch_size:
            raise RecipeError(
                f"`train.global_batch_size` ({t.global_batch_size}) must be a multiple of "
                f"`train.micro_batch_size` ({t.micro_batch_size}): the difference is made up by gradient accumulation."
            )
        if not 0.0 <= t.label_smoothing < 1.0:
            raise RecipeError(f"`train.label_smoothing` must lie in [0, 1), got {t.label_smoothing}.")
        if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
            raise RecipeError(f"`train.ema_decay` must lie in (0, 1) or be null, got {t.ema_decay}.")
        positive("train.eval_every", t.eval_every, allow_zero=True)
        positive("train.eval_batch_size", t.eval_batch_size)
        positive("run.checkpoint_every", r.checkpoint_every, allow_zero=True)
        positive("run.keep_checkpoints", r.keep_checkpoints)
        positive("run.stop_after", r.stop_after, allow_none=True)
        positive("run.log_every", r.log_every)
        positive("run.num_workers", r.num_workers, allow_zero=True)
        positive("run.torch_threads", r.torch_threads, allow_none=True)
        if r.push_to_hub and not r.hub_repo_id:
            raise RecipeError("`run.push_to_hub: true` needs `run.hub_repo_id` ('user/name').")
        if r.hub_repo_id is not None and r.hub_repo_id.count("/") != 1:
            raise RecipeError(f"`run.hub_repo_id` must look like 'user/name', got {r.hub_repo_id!r}.")
        if r.resume not in ("auto", "never") and not Path(r.resume).is_dir():
            raise RecipeError(
                f"`run.resume` must be 'auto', 'never' or an existing checkpoint folder; {r.resume!r} is none of these."
            )
        return self


_CONFIG_KEY_OWNERS = {
    "image_size": "`model.image_size`",
    "representation_size": "`model.representation_size`",
    "hidden_dropout_prob": "`model.dropout`",
    "attention_probs_dropout_prob": "`model.attention_dropout`",
}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys() -> dict[str, tuple[str | None, str]]:
    """Every accepted key -> (section, field); bare names resolve when unambiguous."""
    keys: dict[str, tuple[str | None, str]] = {}
    bare: dict[str, list[tuple[str | None, str]]] = {}
    for f in dataclasses.fields(Recipe):
        if f.name not in SECTIONS:
            keys[f.name] = (None, f.name)
            bare.setdefault(f.name, []).append((None, f.name))
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            keys[f"{section}.{f.name}"] = (section, f.name)
            bare.setdefault(f.name, []).append((section, f.name))
    for name, owners in bare.items():
        if len(owners) == 1:
            keys.setdefault(name, owners[0])
    return keys


def resolve_key(key: str, source: str = "override") -> tuple[str | None, str]:
    """`"optim.lr"` or `"lr"` -> `("optim", "lr")`; unknown keys raise `RecipeError` with close matches.
    (`model.config.<field>` is handled by `apply_overrides`.)"""
    keys = _all_keys()
    if key in keys:
        return keys[key]
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise RecipeError(
        f"{source}: unknown recipe key {key!r}.{hint} Keys are `section.field` with sections "
        f"{', '.join(SECTIONS)} (see `vit-repro train --help` or recipes/README.md)."
    )


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation` (str, int, float, bool, list[float], list[str], dict, X | None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where} must be true or false, got {value!r}.")
    if annotation in (int, float):
        if isinstance(value, str):
            try:
                value = float(value.replace("_", "")) if annotation is float else int(value.replace("_", ""))
            except ValueError:
                raise RecipeError(f"{where} must be a number, got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where} must be {'an integer' if annotation is int else 'a number'}, got {value!r}.")
        if annotation is int:
            if float(value) != int(value):
                raise RecipeError(f"{where} must be an integer, got {value!r}.")
            return int(value)
        return float(value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where} must be a string, got {value!r}.")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list, got {value!r}.")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where} must be a mapping, got {value!r}.")
        return dict(value)
    raise TypeError(f"unsupported recipe field type {annotation!r}")  # a bug in this module


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """`["optim.lr=0.01", "smoke=true"]` -> `[("optim.lr", 0.01), ("smoke", True)]`; values are
    read as YAML (numbers, true/false, null, [lists], {mappings}), anything else as a string."""
    import yaml

    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"Override {item!r} is not of the form key=value (e.g. optim.lr=0.01).")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        pairs.append((key.strip(), value))
    return pairs


def apply_overrides(recipe: Recipe, overrides: Sequence[tuple[str, Any]], source: str = "override") -> Recipe:
    """Set each `(key, value)`; `model.config.<field>=value` sets one ViTReproConfig field."""
    for key, value in overrides:
        if key.startswith("model.config."):
            recipe.model.config[key[len("model.config.") :]] = value
        else:
            recipe.set(key, value, source=source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] | Sequence[tuple[str, Any]] = ()) -> Recipe:
    """Read a YAML recipe, apply `key=value` overrides, then the smoke switch if on. A relative
    path that is not found from the working directory is looked up in the source checkout
    (`recipes/finetune_cifar10.yaml` works from anywhere).

    Under `smoke=true` the user's own overrides still win over the smoke values (so
    `smoke=true train.steps=5` runs 5 steps). Raises `RecipeError` (a ValueError) for a missing
    file, bad YAML, unknown keys or invalid values, before anything is trained.
    """
    import yaml

    path = Path(path)
    checkout = Path(__file__).resolve().parents[1]
    if not path.is_file() and not path.is_absolute() and (checkout / path).is_file():
        path = checkout / path  # "recipes/..." from outside the source checkout
    if not path.is_file():
        raise RecipeError(f"Recipe file {str(path)!r} does not exist. The recipes are listed in recipes/README.md.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    pairs = [item if isinstance(item, tuple) else parse_overrides([str(item)])[0] for item in overrides]
    recipe = Recipe.from_dict(values, source=str(path), validate=False)
    apply_overrides(recipe, pairs)
    if recipe.run.smoke:
        recipe = smoke_recipe(recipe)
        apply_overrides(recipe, pairs)
    recipe.validate()
    recipe.source = str(path)  # type: ignore[attr-defined]
    return recipe


#: The tiny model of DESIGN.md (image 32, patch 8, width 32, 2 layers) that smoke runs train.
SMOKE_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)
#: ... and its hybrid version: a one-stage BiT ResNet (stride 4) under 2 x 2 "patches".
SMOKE_BACKBONE = dict(depths=[1], hidden_sizes=[64], embedding_size=32, num_groups=8)


def smoke_recipe(recipe: Recipe) -> Recipe:
    """The same recipe shrunk to a few CPU steps: tiny model (hybrid stays hybrid), 32-pixel
    images, scikit-learn's digits unless a local `data.data_dir` is given, 3 steps of global
    batch 8 in micro-batches of 4 (so accumulation runs), checkpoint every 2 steps, a sweep over
    at most 2 learning rates. `init_from` is dropped unless it exists locally."""
    new = copy.deepcopy(recipe)
    m, d, o, t, r = new.model, new.data, new.optim, new.train, new.run
    hybrid = bool(m.config.get("backbone_config")) or (m.variant is not None and "+" in m.variant)
    if m.init_from is not None and not Path(m.init_from).exists():
        m.init_from = None
    if m.init_from is None:
        m.config = {**m.config, **SMOKE_MODEL}
        if hybrid:
            m.config.update(patch_size=2, backbone_config=dict(SMOKE_BACKBONE))
        if m.representation_size:
            m.representation_size = 16
    m.image_size = 32
    if d.data_dir is None:
        d.task, d.train_split, d.eval_split, d.image_column, d.label_column = "digits", "train", "test", None, None
        if d.val_split is not None or d.sweep_train_split is not None:
            d.val_split, d.sweep_train_split = None, None
            d.val_fraction = d.val_fraction or 0.25
    d.max_train_examples = min(d.max_train_examples or 48, 48)
    d.max_eval_examples = min(d.max_eval_examples or 32, 32)
    o.lr_sweep = o.lr_sweep[:2]
    o.warmup_steps = 1
    t.steps, t.epochs = 3, None
    t.global_batch_size, t.micro_batch_size, t.eval_batch_size = 8, 4, 16
    t.eval_every = 0
    r.mixed_precision, r.compile, r.num_workers = "no", False, 0
    r.checkpoint_every, r.log_every, r.push_to_hub = 2, 1, False
    return new


# =============================================================================================
# Optimizer and schedules.
# =============================================================================================


def parameter_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: parameters named by `model.no_weight_decay()` (biases, norms,
    position embeddings, class token) with weight decay 0, all others with `weight_decay`.
    Frozen parameters are left out. Each group carries `names` for inspection."""
    skip = set(model.no_weight_decay())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = skip - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"no_weight_decay() names parameters the model does not have: {sorted(unknown)[:5]}")
    decay = [(n, p) for n, p in named if n not in skip]
    no_decay = [(n, p) for n, p in named if n in skip]
    return [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]},
    ]


def build_optimizer(model, optim: OptimRecipe, lr: float | None = None):
    """`torch.optim.AdamW` (paper pretraining) or `SGD` with momentum (paper fine-tuning) over
    `parameter_groups`. The learning rate set here is the base rate the schedule multiplies."""
    import torch

    lr = optim.lr if lr is None else lr
    groups = [{k: v for k, v in g.items() if k != "names"} for g in parameter_groups(model, optim.weight_decay)]
    fused = optim.fused or None  # None: torch's own default implementation
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), eps=optim.eps, fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum, fused=fused)


def lr_multiplier(update: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The factor on the base learning rate for update `update` = 1..total_steps (vit_jax's
    `create_learning_rate_schedule`): `min(1, update / warmup) * decay(progress)`, with
    `progress = clip((update - warmup) / (total - warmup), 0, 1)` and decay `1 - progress`
    (linear), `(1 + cos(pi * progress)) / 2` (cosine) or 1 (constant). It is exactly 1 at the
    end of warm-up and 0 at the last update for linear and cosine decay."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; one of {SCHEDULES}")
    factor = min(1.0, update / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant" or total_steps <= warmup_steps:
        return factor
    progress = min(max((update - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    if schedule == "linear":
        return factor * (1.0 - progress)
    return factor * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, schedule: str):
    """`LambdaLR` applying `lr_multiplier`; PyTorch counts from 0 before the first update, so the
    update t = epoch + 1."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_multiplier(epoch + 1, total_steps, warmup_steps, schedule)
    )


class EMA:
    """Polyak averaging of the weights (paper Appendix B.1.1, optional in fine-tuning):
    `ema <- decay * ema + (1 - decay) * param` after every update, in float32. Saved in
    checkpoints (`state_dict`), copied into the model at the end (`copy_to`)."""

    def __init__(self, model, decay: float):
        import torch

        self.decay = float(decay)
        self.shadow = {n: p.detach().to(torch.float32).clone() for n, p in model.named_parameters()}

    def update(self, model) -> None:
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                self.shadow[name].lerp_(param.detach().to(torch.float32), 1.0 - self.decay)

    def copy_to(self, model) -> None:
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.shadow = {n: t.clone() for n, t in state["shadow"].items()}


def classification_loss(logits, labels, loss: str = "softmax_xent", label_smoothing: float = 0.0):
    """Mean over the batch of softmax cross-entropy, or of sigmoid cross-entropy summed over the
    K classes on (smoothed) one-hot targets. Computed in float32. logits (B, K), labels (B,)."""
    import torch.nn.functional as F

    logits = logits.float()
    if loss == "softmax_xent":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    num_classes = logits.shape[-1]
    targets = F.one_hot(labels, num_classes).float()
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()


# =============================================================================================
# Data and model, from the recipe.
# =============================================================================================


@dataclass
class RunData:
    """What `build_data` returns: datasets, their transforms, and the task's facts."""

    train: Any
    eval: Any | None
    train_transform: Any
    num_classes: int
    id2label: dict[int, str]
    eval_name: str | None
    dataset_name: str


def _load_split(d: DataRecipe, split: str):
    from .data import load_task

    try:
        return load_task(d.task, split, d.data_dir, image_column=d.image_column, label_column=d.label_column)
    except (KeyError, ValueError, OSError, ImportError) as err:
        where = f" from data.data_dir={d.data_dir!r}" if d.data_dir else ""
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise RecipeError(
            f"Cannot load split {split!r} of data.task={d.task!r}{where}: {message}. Check `data.task` and the "
            "split names, or point `data.data_dir` at a local copy (the Hub is needed otherwise)."
        ) from None
    except Exception as err:  # datasets / huggingface_hub errors for an unreachable or missing dataset
        raise RecipeError(
            f"Cannot load split {split!r} of data.task={d.task!r}: {type(err).__name__}: {err}. Without network "
            "access, point `data.data_dir` at a local copy laid out like the Hub repository."
        ) from None


def _holdout_split(dataset, fraction: float, seed: int):
    """(rest, held-out) of a dataset: `fraction` of its rows drawn with `stable_permutation`."""
    from .data import stable_permutation

    order = stable_permutation(len(dataset), seed)
    n_val = max(1, int(round(fraction * len(dataset))))
    if n_val >= len(dataset):
        raise RecipeError(f"`data.val_fraction` {fraction} leaves no training rows out of {len(dataset)}.")
    return dataset.select(sorted(order[n_val:].tolist())), dataset.select(sorted(order[:n_val].tolist()))


def build_data(recipe: Recipe, train_dataset=None, eval_dataset=None) -> RunData:
    """Load the recipe's splits (or take the given datasets: any `datasets.Dataset` with "image"
    and "label" columns) and pick the transforms. Fails with `RecipeError` before training."""
    from .data import eval_transform, finetune_transform, num_classes, pretrain_transform, task_transforms
    from .data.registry import TASKS

    d, size = recipe.data, recipe.model.image_size
    train = train_dataset if train_dataset is not None else _load_split(d, d.train_split)
    if d.max_train_examples and len(train) > d.max_train_examples:
        train = train.select(range(d.max_train_examples))
    eval_name = None
    if d.holdout:
        train, evaluation = _holdout_split(train, d.val_fraction, recipe.train.seed)
        eval_name = f"{d.train_split}[holdout {d.val_fraction:g}]"
    elif eval_dataset is not None:
        evaluation, eval_name = eval_dataset, d.eval_split or "eval"
    elif d.eval_split:
        evaluation, eval_name = _load_split(d, d.eval_split), d.eval_split
    else:
        evaluation = None
    if evaluation is not None and d.max_eval_examples and len(evaluation) > d.max_eval_examples:
        evaluation = evaluation.select(range(d.max_eval_examples))
    try:
        k = num_classes(train)
        names = list(train.features["label"].names)
    except (KeyError, AttributeError, TypeError):
        k = int(max(train["label"])) + 1
        names = [str(i) for i in range(k)]
    spec = TASKS.get(d.task)
    mean, std = tuple(d.mean), tuple(d.std)
    if d.augmentation == "inception_crop":
        train_tf = pretrain_transform(size, mean, std)
    elif d.augmentation == "finetune" and spec is not None and d.flip is None:
        train_tf = task_transforms(spec, size, mean, std)[0]
    elif d.augmentation == "finetune":
        train_tf = finetune_transform(size, mean, std, flip=True if d.flip is None else d.flip)
    else:
        train_tf = eval_transform(size, mean, std)
    dataset_name = (spec.hub_id or f"{spec.name} (local)") if spec is not None else d.task
    return RunData(
        train=train,
        eval=evaluation,
        train_transform=train_tf,
        num_classes=k,
        id2label={i: n for i, n in enumerate(names)},
        eval_name=eval_name,
        dataset_name=dataset_name,
    )


#: Config fields that decide the shapes of the weights (what must match to load a checkpoint).
ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "num_channels",
    "pooling",
    "qkv_bias",
)


def architecture(config) -> dict[str, Any]:
    """The shape-deciding part of a config: width, depth, heads, MLP, patch, channels, pooling,
    and the hybrid's ResNet stages (None for a plain ViT)."""
    arch = {key: getattr(config, key, None) for key in ARCHITECTURE_FIELDS}
    arch["patch_size"] = list(config.patch_hw) if hasattr(config, "patch_hw") else arch["patch_size"]
    backbone = getattr(config, "backbone_config", None)
    arch["backbone"] = None if backbone is None else {"depths": list(backbone.depths), "hidden_sizes": list(backbone.hidden_sizes)}
    return arch


def describe_architecture(arch: dict[str, Any]) -> str:
    text = (
        f"width {arch['hidden_size']}, {arch['num_hidden_layers']} layers, {arch['num_attention_heads']} heads, "
        f"MLP {arch['intermediate_size']}, patch {arch['patch_size']}, pooling {arch['pooling']}"
    )
    if arch.get("backbone"):
        text += f", hybrid ResNet stages {arch['backbone']['depths']}"
    return text


def resolve_checkpoint(path_or_id: str) -> str:
    """`model.init_from` -> what `from_pretrained` loads: a run folder's `final/`, a `save_pretrained`
    folder or a Hub repo id as given (`runs.resolve_checkpoint`)."""
    try:
        return runs.resolve_checkpoint(path_or_id)[0]
    except FileNotFoundError as err:
        raise RecipeError(f"`model.init_from`: {err} Has its pretraining run finished?") from err


def _recipe_config_kwargs(recipe: Recipe, num_classes: int) -> dict[str, Any]:
    m = recipe.model
    return {
        **m.config,
        "image_size": m.image_size,
        "num_labels": num_classes,
        "representation_size": m.representation_size,
        "hidden_dropout_prob": m.dropout,
        "attention_probs_dropout_prob": m.attention_dropout,
    }


def build_model(recipe: Recipe, num_classes: int, id2label: dict[int, str] | None = None):
    """The model a recipe trains. From scratch: `ViTReproConfig.from_variant(variant, ...)` (or
    `ViTReproConfig(**model.config)`). From `init_from`: the checkpoint, with dropout from the
    recipe; in fine-tuning mode its head is replaced by a zero-initialised K-way one (the pre-
    logits layer dropped unless `representation_size` is set) and its position embeddings are
    resampled to `model.image_size` once (paper Sec. 3.2). A checkpoint whose architecture
    differs from `model.variant` / `model.config` raises `RecipeError`."""
    from .configuration_vit_repro import ViTReproConfig
    from .modeling_vit_repro import ViTReproForImageClassification

    m = recipe.model
    id2label = id2label or {i: str(i) for i in range(num_classes)}
    if m.init_from is None:
        kwargs = _recipe_config_kwargs(recipe, num_classes)
        kwargs.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
        try:
            config = ViTReproConfig.from_variant(m.variant, **kwargs) if m.variant else ViTReproConfig(**kwargs)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"`model`: cannot build the model: {err}") from None
        model = ViTReproForImageClassification(config)
    else:
        source = resolve_checkpoint(m.init_from)
        config = load_checkpoint_config(source)
        wanted = None
        if m.variant is not None or m.config:
            from .variants import variant_kwargs

            expected = {"backbone_config": None, **variant_kwargs(m.variant)} if m.variant else {}
            wanted = architecture(ViTReproConfig(**{**config.to_dict(), **expected, **m.config}))
        found = architecture(config)
        if wanted is not None and wanted != found:
            raise RecipeError(
                f"`model.init_from` {m.init_from!r} holds a different architecture than the recipe asks for: "
                f"checkpoint: {describe_architecture(found)}; recipe ({m.variant or 'model.config'}): "
                f"{describe_architecture(wanted)}. Point init_from at a matching checkpoint or change model.variant."
            )
        config.hidden_dropout_prob, config.attention_probs_dropout_prob = m.dropout, m.attention_dropout
        model = ViTReproForImageClassification.from_pretrained(source, config=config)
        if recipe.mode == "finetune":
            keep = m.representation_size is not None and config.representation_size is not None
            model.reset_classifier(num_classes, id2label=id2label, keep_representation=keep)
        elif model.config.num_labels != num_classes:
            raise RecipeError(
                f"`mode: pretrain` continues {m.init_from!r} with its {model.config.num_labels}-way head, but the data "
                f"has {num_classes} classes; use `mode: finetune` to attach a new head."
            )
        if tuple(model.config.image_hw) != (m.image_size, m.image_size):
            model.resize_position_embeddings(m.image_size)
    if m.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if m.recompute_mlp_activation:
        model.set_mlp_activation_recompute()
    return model


def load_checkpoint_config(source: str):
    """The `ViTReproConfig` of a checkpoint folder or Hub id; a checkpoint of another model type
    (a transformers or timm ViT, a ResNet...) raises `RecipeError` pointing at `vit-repro convert`."""
    from transformers import AutoConfig

    from .configuration_vit_repro import ViTReproConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        if not Path(source).exists():
            raise RecipeError(
                f"`model.init_from` {source!r} is not a local folder, and reading it as a Hub repo id failed "
                f"({str(err).splitlines()[0]}). Run the recipe that writes it first (a run folder's final/ is used), "
                "or point model.init_from at a checkpoint."
            ) from None
        raise RecipeError(f"`model.init_from`: cannot read a model config from {source!r}: {err}") from None
    if not isinstance(config, ViTReproConfig):
        raise RecipeError(
            f"`model.init_from` {source!r} is a {type(config).__name__} (model_type {config.model_type!r}), not a "
            "vit_repro checkpoint. Convert it first: `vit-repro convert SOURCE OUTPUT_DIR`."
        )
    return config


# =============================================================================================
# Checkpoints: Accelerate state, written atomically; found again by `resume=auto`.
# =============================================================================================


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first (a checkpoint is complete when its
    folder has its final name: it is written under a temporary name and renamed)."""
    folder = Path(run_dir) / runs.CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def recipe_differences(a: Recipe, b: Recipe) -> list[str]:
    """`section.field: a -> b` for every hyperparameter that differs (`mode` and the model, data,
    optim and train sections; names and the runtime `run` section do not count)."""
    da, db = a.to_dict(), b.to_dict()
    changes = [f"mode: {da['mode']!r} -> {db['mode']!r}"] if da["mode"] != db["mode"] else []
    for section in ("model", "data", "optim", "train"):
        for key in da[section]:
            if da[section][key] != db[section][key]:
                changes.append(f"{section}.{key}: {da[section][key]!r} -> {db[section][key]!r}")
    return changes


def check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Before `resume=auto` continues a run folder: raise `RecipeError` if the folder's
    recipe.yaml has other hyperparameters than `recipe` (continuing would silently mix two runs,
    or report a finished run of the old recipe as the new one's)."""
    saved_file = Path(run_dir) / runs.RECIPE
    if not saved_file.is_file():
        return
    import yaml

    saved = Recipe.from_dict(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}, str(saved_file),
                             validate=False)
    changes = recipe_differences(saved, recipe)
    if changes:
        shown = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
        raise RecipeError(
            f"{run_dir} holds a run of another recipe ({shown}); resume=auto would continue it. Choose another "
            "run.output_dir, or delete the folder to start over."
        )


def check_checkpoint_compatible(checkpoint: Path, model) -> None:
    """Raise `RecipeError` before loading if `checkpoint` was written for another architecture
    (its config.json) or holds weights of other shapes (its safetensors header)."""
    config_file = checkpoint / "config.json"
    if config_file.is_file():
        from .configuration_vit_repro import ViTReproConfig

        saved = json.loads(config_file.read_text())
        if saved.get("model_type") != "vit_repro":
            raise RecipeError(f"Checkpoint {checkpoint} is not a vit_repro checkpoint (model_type {saved.get('model_type')!r}).")
        theirs = architecture(ViTReproConfig.from_dict(saved))
        ours = architecture(model.config)
        if theirs != ours:
            raise RecipeError(
                f"Checkpoint {checkpoint} was written for another architecture ({describe_architecture(theirs)}) than "
                f"this recipe builds ({describe_architecture(ours)}). Use another run.output_dir, or resume=never "
                "with a fresh folder."
            )
    weights = checkpoint / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        def bare(name: str) -> str:  # Accelerate saves the wrapped model: DDP "module.", compile "_orig_mod."
            for prefix in ("module.", "_orig_mod."):
                name = name[len(prefix) :] if name.startswith(prefix) else name
            return name

        shapes = {bare(name): tuple(t.shape) for name, t in model.state_dict().items()}
        with safe_open(str(weights), framework="pt") as f:
            saved_shapes = {bare(name): tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        bad = [
            f"{name}: checkpoint {saved_shapes.get(name)} vs model {shape}"
            for name, shape in shapes.items()
            if saved_shapes.get(name) != shape
        ]
        if bad:
            raise RecipeError(
                f"Checkpoint {checkpoint} does not fit this model ({len(bad)} tensors differ, e.g. {bad[0]}). "
                "Was it written by another recipe? Use another run.output_dir."
            )


# =============================================================================================
# The loop.
# =============================================================================================


@dataclass
class TrainState:
    """What callbacks see after every update (on every process)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    run_dir: Path
    checkpoint: Path | None = None


@dataclass
class TrainResult:
    """What `train` returns: the run folder and the figures of its summary."""

    run_dir: Path
    steps: int
    final_train_loss: float | None
    eval_accuracy: float | None
    train_time_s: float
    num_parameters: int
    losses: list[tuple[int, float]]
    completed: bool = True


def _resolve_mixed_precision(value: str) -> str:
    """`run.mixed_precision`; "auto" takes the launcher's choice (`accelerate launch` config /
    ACCELERATE_MIXED_PRECISION), else bf16 where the GPU supports it, else fp32 ("no")."""
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return os.environ["ACCELERATE_MIXED_PRECISION"]
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _make_accelerator(recipe: Recipe, run_dir: Path):
    """A fresh Accelerator (its singleton state reset, so one process can train several runs)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    import torch

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    trackers = list(recipe.run.trackers) or None
    return Accelerator(
        # Without a GPU, asking for the CPU is what makes Accelerate join torchrun's processes
        # (gloo, MULTI_CPU) instead of letting each train alone.
        cpu=not torch.cuda.is_available(),
        mixed_precision=_resolve_mixed_precision(recipe.run.mixed_precision),
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / runs.LOGS_DIR)),
        # Samplers Accelerate does not know (ours is one) are kept; a plain RandomSampler becomes
        # seedable, which exact resume needs (DESIGN.md, pitfalls).
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if recipe.run.compile else None,
    )


def _micro_batches(accelerator, dataloader, start: int) -> Iterator[dict]:
    """Endless micro-batches from position `start` (counted in this process's batches since the
    run began): epoch = start // batches-per-epoch, the rest skipped inside that epoch. Each epoch
    pins the sampler's epoch (`set_epoch`), so order and augmentations depend on it alone."""
    per_epoch = len(dataloader)
    if per_epoch == 0:
        raise RecipeError(
            "The training split is smaller than one micro-batch; lower train.micro_batch_size or use more data."
        )
    epoch, offset = divmod(start, per_epoch)
    while True:
        loader = accelerator.skip_first_batches(dataloader, offset) if offset else dataloader
        _pin_epoch(loader, epoch)
        yield from loader
        epoch, offset = epoch + 1, 0


def _pin_epoch(loader, epoch: int) -> None:
    """`set_epoch` on the loader and on every sampler nested in it. Surprise: Accelerate's own
    `set_epoch` looks two levels deep, but a resumed multi-process loader nests three
    (SkipBatchSampler > BatchSamplerShard > BatchSampler > our sampler), so the sampler would
    keep counting epochs by itself and shuffle the resumed epoch differently."""
    loader.set_epoch(epoch)
    stack, seen = [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if hasattr(node, "set_epoch"):
            node.set_epoch(epoch)
        stack += [getattr(node, "batch_sampler", None), getattr(node, "sampler", None)]


def evaluate(model, dataset, recipe: Recipe, accelerator) -> dict[str, Any]:
    """Score `model` on `dataset` with `hf_vit_repro.evaluation.evaluate_model` (accuracy,
    top-5, per-class; data-parallel) at the recipe's resolution, mean and std. Leaves the model
    in training mode."""
    from .evaluation import evaluate_model

    unwrapped = accelerator.unwrap_model(model)
    result = evaluate_model(
        unwrapped, dataset, batch_size=recipe.train.eval_batch_size, mean=recipe.data.mean, std=recipe.data.std,
        num_workers=recipe.run.num_workers, accelerator=accelerator, progress=False,
    )
    model.train()
    return result


def _default_command(recipe: Recipe) -> str:
    source = getattr(recipe, "source", None)
    return f"vit-repro train {shlex.quote(str(source or recipe.output_dir / runs.RECIPE))}"


def train(
    recipe: Recipe,
    *,
    train_dataset=None,
    eval_dataset=None,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    command: str | None = None,
) -> TrainResult:
    """Run one recipe (no sweep: see `run_recipe`) and write its run folder.

    `train_dataset` / `eval_dataset` replace the recipe's data (any `datasets.Dataset` with
    "image" and "label"). `callbacks` run after every update on every process. Raises
    `RecipeError` for bad input before the first update, `TrainingDivergedError` if the loss
    stops being finite (the last checkpoint stays the last good one).
    """
    import torch

    recipe.validate()
    threads = torch.get_num_threads()
    if recipe.run.torch_threads:
        torch.set_num_threads(recipe.run.torch_threads)
    try:
        return _train(recipe, train_dataset, eval_dataset, callbacks, command)
    finally:
        torch.set_num_threads(threads)


def _train(recipe, train_dataset, eval_dataset, callbacks, command) -> TrainResult:
    import torch
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .data import make_dataloader

    r, t, o = recipe.run, recipe.train, recipe.optim
    run_dir = recipe.output_dir
    accelerator = _make_accelerator(recipe, run_dir)
    main = accelerator.is_main_process
    n_proc = accelerator.num_processes
    per_step = t.micro_batch_size * n_proc
    if t.global_batch_size % per_step:
        raise RecipeError(
            f"train.global_batch_size {t.global_batch_size} is not a multiple of micro_batch_size x processes = "
            f"{t.micro_batch_size} x {n_proc}; change one of them."
        )
    accumulation = t.global_batch_size // per_step

    # ---- resume decision (before any file is written)
    checkpoint = None
    if r.resume == "auto":
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None:
            check_same_recipe(run_dir, recipe)
    elif r.resume == "never":
        if list_checkpoints(run_dir) or (run_dir / runs.FINAL_DIR).exists():
            raise RecipeError(
                f"{run_dir} already holds a run; pass run.resume=auto to continue it or choose another run.output_dir."
            )
    else:
        checkpoint = Path(r.resume)
        if not (checkpoint / TRAINER_STATE).is_file():
            raise RecipeError(f"run.resume={r.resume!r} is not a checkpoint folder (no {TRAINER_STATE}).")

    # ---- data and model (a checkpoint to start from is checked first: it is cheaper than data)
    if recipe.model.init_from is not None:
        load_checkpoint_config(resolve_checkpoint(recipe.model.init_from))
    set_seed(t.seed, deterministic=r.deterministic)
    data = build_data(recipe, train_dataset, eval_dataset)
    total_steps = t.steps or max(1, math.ceil(t.epochs * len(data.train) / t.global_batch_size))
    if o.warmup_steps >= total_steps > 1:
        raise RecipeError(f"optim.warmup_steps ({o.warmup_steps}) must be smaller than the run's {total_steps} steps.")
    model = build_model(recipe, data.num_classes, data.id2label)
    if checkpoint is not None:
        check_checkpoint_compatible(checkpoint, model)
    num_parameters = sum(p.numel() for p in model.parameters())

    train_dl = make_dataloader(
        data.train, data.train_transform, t.micro_batch_size, shuffle=True, num_workers=r.num_workers,
        seed=t.seed, drop_last=True, strict=recipe.data.strict,
    )
    optimizer = build_optimizer(model, o)
    scheduler = build_scheduler(optimizer, total_steps, o.warmup_steps, o.schedule)
    model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)
    ema = EMA(accelerator.unwrap_model(model), t.ema_decay) if t.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # ---- run folder, trackers
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / runs.RECIPE).write_text(recipe.to_yaml(), encoding="utf-8")
    accelerator.wait_for_everyone()
    if r.trackers:
        hyper = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for s in SECTIONS for k, v in dataclasses.asdict(getattr(recipe, s)).items()}
        accelerator.init_trackers(recipe.name, config=hyper)

    step, images_seen, train_time = 0, 0, 0.0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = runs.read_json(checkpoint / TRAINER_STATE)
        step, images_seen, train_time = state["step"], state["images_seen"], state["train_time_s"]
        if main:
            print(f"Resuming {recipe.name} from {checkpoint} (step {step}/{total_steps}).")

    def save_checkpoint(at_step: int) -> Path:
        final = run_dir / runs.CHECKPOINTS_DIR / checkpoint_name(at_step)
        tmp = final.with_name(f".{final.name}.tmp")
        if main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            accelerator.unwrap_model(model).config.to_json_file(str(tmp / "config.json"))
            runs.write_json(tmp / TRAINER_STATE, {
                "step": at_step, "images_seen": images_seen, "train_time_s": train_time,
                "micro_batches_per_process": at_step * accumulation, "total_steps": total_steps,
            })
            runs.replace_dir(tmp, final)
            for old in list_checkpoints(run_dir)[: -r.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    # ---- the loop
    batches = _micro_batches(accelerator, train_dl, step * accumulation)
    log_file = run_dir / runs.LOGS_DIR / TRAIN_LOG
    losses: list[tuple[int, float]] = []
    last_checkpoint = checkpoint
    last_loss = None
    bar = tqdm(total=total_steps, initial=step, desc=f"train {recipe.name}", unit="step",
               disable=not (main and r.progress_bar), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)  # logs get a line every few seconds
    session_start, session_images, start_step = time.perf_counter(), 0, step
    model.train()
    while step < total_steps:
        tic = time.perf_counter()
        totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, images
        for micro in range(accumulation):
            batch = next(batches)
            sync = contextlib.nullcontext() if micro == accumulation - 1 else accelerator.no_sync(model)
            with sync:
                if batch["labels"].numel() == 0:  # every image of the batch was unreadable (skipped)
                    loss = sum(p.sum() for p in model.parameters()) * 0.0
                else:
                    logits = model(pixel_values=batch["pixel_values"]).logits
                    loss = classification_loss(logits, batch["labels"], t.loss, t.label_smoothing)
                # Mean of k micro-batch means = the mean over the k-times larger batch.
                accelerator.backward(loss / accumulation)
            totals[0] += loss.detach().double() / accumulation
            totals[1] += batch["labels"].numel()
        totals = accelerator.reduce(totals, reduction="sum")
        mean_loss = float(totals[0]) / n_proc
        if not math.isfinite(mean_loss):
            bar.close()
            where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
            raise TrainingDivergedError(
                f"{recipe.name}: the training loss became {mean_loss} at step {step + 1} (before that update was "
                f"applied); {where}. Lower optim.lr, raise optim.warmup_steps or check the data."
            )
        grad_norm = None
        if o.grad_clip_norm:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), o.grad_clip_norm))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        step += 1
        images = int(totals[1])
        images_seen += images
        session_images += images
        elapsed = time.perf_counter() - tic
        train_time += elapsed
        last_loss = mean_loss
        losses.append((step, mean_loss))
        images_per_s = session_images / max(time.perf_counter() - session_start, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}")
        if step % r.log_every == 0 or step == total_steps:
            record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm, "images_per_s": images_per_s}
            if main:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if r.trackers:
                accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}, step=step)
        if t.eval_every and step % t.eval_every == 0 and step < total_steps and data.eval is not None:
            metrics = evaluate(model, data.eval, recipe, accelerator)["metrics"]
            if r.trackers:
                accelerator.log({f"eval/{data.eval_name}/{k}": v for k, v in metrics.items()}, step=step)
        saved = None
        stopping = bool(r.stop_after) and step - start_step >= r.stop_after and step < total_steps
        if (r.checkpoint_every and step % r.checkpoint_every == 0) or step == total_steps or stopping:
            saved = last_checkpoint = save_checkpoint(step)
        for callback in callbacks:
            callback(TrainState(step, total_steps, mean_loss, lr, run_dir, saved))
        if stopping:
            bar.close()
            if r.trackers:
                accelerator.end_training()
            if main:
                print(f"{recipe.name}: stopped after {r.stop_after} steps at step {step}/{total_steps} "
                      f"(run.stop_after); run again with resume=auto to continue from {saved}.")
            return TrainResult(run_dir, step, last_loss, None, train_time, num_parameters, losses, completed=False)
    bar.close()

    # ---- save the final model first (an evaluation that fails must not cost the weights), then
    # evaluate it and write the summary and metrics
    unwrapped = accelerator.unwrap_model(model)
    if ema is not None:
        ema.copy_to(unwrapped)
    # The full state dict is a collective under FSDP / DeepSpeed: every process takes part.
    state_dict = accelerator.get_state_dict(model)
    final_dir = run_dir / runs.FINAL_DIR
    if main:
        from transformers import ViTImageProcessor

        size = recipe.model.image_size
        tmp = run_dir / f".{runs.FINAL_DIR}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped.save_pretrained(str(tmp), state_dict=state_dict)
        ViTImageProcessor(
            do_resize=True, size={"height": size, "width": size}, do_normalize=True,
            image_mean=list(recipe.data.mean), image_std=list(recipe.data.std),
        ).save_pretrained(str(tmp))
        (tmp / runs.RECIPE).write_text(recipe.to_yaml(), encoding="utf-8")
        runs.replace_dir(tmp, final_dir)
    accelerator.wait_for_everyone()
    accuracy = evaluation = None
    if data.eval is not None:
        evaluation = evaluate(model, data.eval, recipe, accelerator)
        accuracy = evaluation["metrics"]["accuracy"]
        if r.trackers:
            accelerator.log({f"eval/{data.eval_name}/{k}": v for k, v in evaluation["metrics"].items()}, step=step)
    if last_loss is None and checkpoint is not None:  # resumed a finished run: read its last logged loss
        last_loss = _last_logged_loss(log_file)
    summary = {
        "name": recipe.name,
        "mode": recipe.mode,
        "steps": step,
        "images_seen": images_seen,
        "train_time_s": round(train_time, 3),
        "hardware": {
            "device": _device_name(accelerator.device),
            "num_processes": n_proc,
            "mixed_precision": accelerator.mixed_precision,
        },
        "command": command or _default_command(recipe),
        "final_train_loss": last_loss,
        "num_parameters": num_parameters,
        "global_batch_size": t.global_batch_size,
        "gradient_accumulation_steps": accumulation,
        "eval": None if evaluation is None else {"split": data.eval_name, **evaluation["metrics"],
                                                 "num_images": evaluation["num_images"]},
    }
    if main:
        runs.write_json(final_dir / runs.TRAIN_SUMMARY, summary)
        runs.write_json(run_dir / runs.TRAIN_SUMMARY, summary)
        if evaluation is not None:
            task = recipe.data.task
            split = data.eval_name if not recipe.data.holdout else "holdout"
            runs.write_json(
                runs.metrics_path(run_dir, task, split),
                runs.metrics_record(
                    checkpoint=str(final_dir), task=task, dataset=data.dataset_name, split=split,
                    resolution=recipe.model.image_size, num_images=evaluation["num_images"],
                    metrics=evaluation["metrics"], per_class_accuracy=evaluation.get("per_class_accuracy"),
                ),
            )
    accelerator.wait_for_everyone()
    if r.trackers:
        accelerator.end_training()
    if r.push_to_hub and main:
        push_run_to_hub(run_dir, r.hub_repo_id)
    return TrainResult(run_dir, step, last_loss, accuracy, train_time, num_parameters, losses)


def _last_logged_loss(log_file: Path) -> float | None:
    if not log_file.is_file():
        return None
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["loss"] if lines else None


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def push_run_to_hub(run_dir: Path, repo_id: str) -> Any:
    """Publish a finished run with `hf_vit_repro.hub.push_run` (imported here, on demand)."""
    try:
        from .hub import push_run
    except ImportError as err:
        raise RecipeError(f"run.push_to_hub needs hf_vit_repro.hub.push_run, which is not available: {err}") from None
    return push_run(run_dir, repo_id)


# =============================================================================================
# Recipes with a learning-rate sweep (the paper's fine-tuning protocol).
# =============================================================================================


def sweep_member(recipe: Recipe, lr: float) -> Recipe:
    """The recipe of one sweep run: learning rate `lr`, trained on the sweep's training split and
    evaluated on the validation split (or the held-out fraction), in `RUN_DIR/sweep/lr_<lr>/`,
    never published."""
    d = recipe.data
    changes: dict[str, Any] = {
        "optim.lr": lr,
        "optim.lr_sweep": [],
        "run.output_dir": str(recipe.output_dir / SWEEP_DIR / f"lr_{lr:g}"),
        "run.push_to_hub": False,
        "name": f"{recipe.name}-lr_{lr:g}",
    }
    if d.sweep_train_split:
        changes["data.train_split"] = d.sweep_train_split
    if d.val_split:
        changes["data.eval_split"] = d.val_split
    else:
        changes["data.holdout"] = True
    return recipe.replace(**changes)


def run_recipe(recipe: Recipe, *, command: str | None = None, **train_kwargs) -> TrainResult:
    """Run a recipe. With `optim.lr_sweep`, first train one sweep member per learning rate, pick
    the best validation accuracy (ties: the smaller rate), record it in `RUN_DIR/sweep.json`, then
    train the final run on the full training split with that rate (paper Appendix B.1.1; VTAB:
    800 + 200 to choose, all 1000 for the final run)."""
    o = recipe.optim
    if not o.lr_sweep:
        return train(recipe, command=command, **train_kwargs)
    results = {}
    for lr in o.lr_sweep:
        member = sweep_member(recipe, lr)
        result = train(member, command=command, **train_kwargs)
        if not result.completed:  # run.stop_after ended the session inside the sweep
            return result
        results[lr] = result.eval_accuracy
    best = max(sorted(results), key=lambda lr: (results[lr], -lr))
    from accelerate import PartialState

    if PartialState().is_main_process:
        recipe.output_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(recipe.output_dir / SWEEP, {
            "validation": recipe.data.val_split or f"{recipe.data.train_split}[holdout {recipe.data.val_fraction:g}]",
            "accuracy_by_lr": {f"{lr:g}": acc for lr, acc in results.items()},
            "best_lr": best,
        })
        print(f"{recipe.name}: learning-rate sweep {results} -> {best:g}")
    return train(recipe.replace(**{"optim.lr": best, "optim.lr_sweep": []}), command=command, **train_kwargs)


# =============================================================================================
# `vit-repro train`.
# =============================================================================================


def _cmd_train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.print_recipe:
        print(recipe.to_yaml(), end="")
        return 0
    launcher = "accelerate launch -m hf_vit_repro" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "vit-repro"
    command = " ".join([launcher, "train", shlex.quote(args.recipe), *map(shlex.quote, args.overrides)])
    try:
        result = run_recipe(recipe, command=command)
    except TrainingDivergedError as err:
        print(f"vit-repro train: error: {err}", file=sys.stderr)
        return 3
    from accelerate import PartialState

    if PartialState().is_main_process and result.completed:
        loss = "n/a" if result.final_train_loss is None else f"{result.final_train_loss:.4f}"
        acc = "" if result.eval_accuracy is None else f", eval accuracy {result.eval_accuracy:.4f}"
        print(f"Wrote {result.run_dir} ({result.steps} steps, final train loss {loss}{acc}).")
    return 0


def add_cli(subparsers) -> None:
    keys = ", ".join(sorted(k for k in _all_keys() if "." in k))
    p = subparsers.add_parser(
        "train",
        help="train a recipe (pretraining or fine-tuning) with Accelerate",
        description="Run a recipe from recipes/ (pretraining or fine-tuning, the paper's settings). In one "
        "process: `vit-repro train RECIPE [key=value ...]`; data-parallel: `accelerate launch [--config_file "
        "recipes/accelerate/...] -m hf_vit_repro train RECIPE ...`. Overrides are `section.field=value` (YAML "
        "values; bare field names work where unambiguous, e.g. `smoke=true`, `resume=auto`, `lr=0.003`). "
        "The run folder (run.output_dir, default outputs/<name>) receives recipe.yaml, checkpoints/, final/, "
        "logs/ (TensorBoard), metrics/ and train_summary.json.",
        epilog=f"Recipe keys: {keys}; and model.config.<any ViTReproConfig field>.",
    )
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/finetune_cifar10.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=0.01 smoke=true")
    p.add_argument("--print", dest="print_recipe", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=_cmd_train)
