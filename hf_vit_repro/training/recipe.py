"""The recipe: a training run as a typed object, read from YAML, with `key=value` overrides and a
smoke switch.

    recipe = load_recipe("recipes/finetune_cifar10.yaml", ["optim.lr=0.003", "smoke=true"])

A recipe has five sections (`model`, `data`, `optim`, `train`: the hyperparameters; `run`: the
runtime switches that do not change the result), each a dataclass whose docstring documents its
fields. Every value is validated in one place (`Recipe.validate`); a key that does not exist is an
error naming the closest ones, a value of the wrong type or out of range names the key and what it
accepts (`RecipeError`, a ValueError the CLI prints as one line).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.augment import AugmentRecipe, augment_problem

MODES = ("pretrain", "finetune")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "step", "step_bit_code")  # optim.lr_multiplier
LOSSES = ("softmax_xent", "sigmoid_xent")
OBJECTIVES = ("classification", "masked_patch_prediction")
AUGMENTATIONS = ("inception_crop", "finetune", "finetune_inception", "none")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
EMA_CORRECTIONS = ("none", "debias", "warmup")  # train.ema_correction: see optim.EMA


class RecipeError(ValueError):
    """A recipe (file or `key=value` override) that cannot run; the message says how to fix it."""


@dataclass
class ModelRecipe:
    """The network. `variant` names a row of the variant table ("ViT-B/16", "R50+ViT-B/16", or a
    BiT ResNet such as "BiT-R50x1", built as transformers' `BitConfig`); `config` sets any other
    field of that config (a tiny demo model, `pooling: gap`, a BiT's `depths` / `hidden_sizes` /
    `embedding_size` / `num_groups`...). `drop_path_rate`: stochastic depth (AugReg's `sd`), the last block's
    rate, linear from 0 at the first. A BiT ResNet has no dropout, stochastic depth, pre-logits layer or memory
    options: `dropout`, `attention_dropout`, `drop_path_rate` must be 0 and `representation_size` null for it.
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
    drop_path_rate: float = 0.0
    config: dict = field(default_factory=dict)
    gradient_checkpointing: bool = False
    recompute_mlp_activation: bool = False


@dataclass
class DataRecipe(AugmentRecipe):
    """Where images come from (`hf_vit_repro.data.load_task`). `task` is a registry name, a Hub
    dataset id or a local folder; `data_dir` a local copy laid out like the Hub repo.

    The learning-rate sweep trains on `sweep_train_split` (default `train_split`) and validates
    on `val_split`, or, when that is null, on a `val_fraction` of the training split held out
    with a fixed seed (paper Appendix B.1.1: 2% for CIFAR, 1% for ImageNet, 10% for Pets and
    Flowers). `holdout: true` is how a sweep member says "train on the rest, evaluate on the
    held-out part". `augmentation`: `inception_crop` (pretraining), `finetune` (transfer: resize to `resize_size`, null: 7/6
    of the resolution, random crop; VTAB-aware), `finetune_inception` (vit_jax's crop), `none`; `augment_level`,
    RandAugment, MixUp...: `data.augment.AugmentRecipe`. `flip: null` keeps the task's own rule (no flips where they change
    the label). `strict: false` (the default) skips images that cannot be decoded, in training and in the end-of-run
    evaluation, and counts them (`skipped_images` in train_summary.json, `num_skipped` in the metrics); `true` stops at the
    first one, naming its row and file.

    `subset` trains on a seeded random part of the training split (the paper's data-size study,
    Sec. 4.3: 9M, 30M, 90M of JFT-300M): a value in (0, 1] is a fraction, a larger one a number of
    images; drawn after the `holdout` part is set aside, so the validation images are the same for
    every size. Subsets of one `subset_seed` are nested: the 10% subset is inside the 30% one
    (`hf_vit_repro.data.nested_subset`). `classes` (null: all) keeps only those label ids of the task,
    relabelled 0..K-1 in the order given, in every split (`hf_vit_repro.data.select_classes`), before the hold-out.
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
    resize_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    subset: float | None = None
    subset_seed: int = 0
    classes: list[int] | None = None
    strict: bool = False


@dataclass
class OptimRecipe:
    """Optimizer and schedule. `adamw` is the paper's pretraining Adam with decoupled weight decay (multiplied by
    the learning rate, as the original code applies it); `sgd` uses `momentum` and the paper's fine-tuning has
    no weight decay. Parameters named by `model.no_weight_decay()` never decay (for a BiT ResNet: every 1-D
    parameter). `schedule`: `cosine`, `linear`, `constant`, or `step` (BiT-HyperRule: the rate divided by 10
    after 30%, 60% and 90% of the steps; `step_bit_code`: as BiT's code runs 500 steps). `lr_sweep` lists learning rates to choose from on the validation split
    before the final run (`run_recipe`). `grad_clip_norm: null` disables clipping. `fused` updates all
    parameters in one kernel (torch's fused AdamW / SGD, the default of transformers' Trainer too): a ViT-S/16
    training step on CPU is about 4 % faster than with torch's default AdamW (benchmarks/README.md). Under FSDP
    SGD is never fused (torch has no sharded fused SGD). `layer_decay` (BEiT / MAE fine-tuning, e.g. 0.75; null:
    off): layer i of L blocks gets `lr * layer_decay ** (L + 1 - i)` (`optim.layer_decay_groups`, ViTs only)."""

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
    layer_decay: float | None = None


@dataclass
class TrainRecipe:
    """The optimisation problem: length (`steps`, or `epochs` of the training split), batch
    (`global_batch_size` images per update, reached with micro-batches of `micro_batch_size` per
    process and gradient accumulation), objective, loss (`softmax_xent`, or `sigmoid_xent` on
    one-hot targets), label smoothing, Polyak averaging (`ema_decay`, `ema_correction`), seed, evaluation interval,
    few-shot probes during training (`fewshot_eval: {every, tasks, shots, seeds, ...}`, `training.fewshot_curve`).
    `mixup_alpha` > 0 turns on MixUp as BiT-HyperRule uses it (alpha 0.1 for 20k+ training images):
    each update draws lambda ~ Beta(alpha, alpha), every micro-batch is mixed with a permutation of
    itself and the loss is lambda L(y) + (1 - lambda) L(y_permuted) (`optim.mixup`).

    `early_stopping_patience` (the paper's data-size setting, Sec. 4.3): every `eval_every` steps
    and at the last one the model is scored on the evaluation set (use `data.holdout: true` for a
    validation part of the training split); the best-scoring model is kept in RUN_DIR/best/ and
    becomes final/, and training stops after that many evaluations without a better accuracy
    (the objective's accuracy metric).

    `objective`: `classification` (labels, the classifier's loss and accuracy) or
    `masked_patch_prediction`, the paper's self-supervised pretraining (Sec. 4.6, Appendix
    B.1.2): no labels, a `ViTReproForMaskedPatchPrediction` whose corruption is drawn per image in
    the data pipeline, evaluated by its loss and accuracy on the corrupted patches
    (`hf_vit_repro.training.objectives`). It pretrains (`mode: pretrain`); its `model.config`
    takes the `mpp_*` fields (rate, split, target).

    `method`: which parameters fine-tuning trains (`hf_vit_repro.training.peft_methods`): `full`
    (all, the paper's fine-tuning), `linear` (the head), `bitfit` (biases and head), `lora` (peft's
    LoRA on every block's dense layers), `vpt-shallow` / `vpt-deep` (learned prompt tokens),
    `adapter` (AdaptFormer's parallel adapters). `method_options` sets the method's own settings
    (`lora`: r, alpha, dropout; `vpt-*`: tokens; `adapter`: bottleneck, scale), the method's
    defaults otherwise."""

    objective: str = "classification"
    method: str = "full"
    method_options: dict = field(default_factory=dict)
    steps: int | None = None
    epochs: float | None = None
    global_batch_size: int = 512
    micro_batch_size: int = 64
    loss: str = "softmax_xent"
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    ema_decay: float | None = None
    ema_correction: str = "none"
    seed: int = 0
    eval_every: int = 0
    eval_batch_size: int = 256
    early_stopping_patience: int | None = None
    fewshot_eval: dict = field(default_factory=dict)


@dataclass
class RunRecipe:
    """Runtime switches that do not change the result: folder, resume, precision, compilation,
    workers, checkpoint / log intervals, trackers, publishing. `resume`: `auto` continues the
    latest checkpoint in `output_dir` (or starts fresh), `never` refuses to touch a folder that
    holds a run, or a checkpoint folder path. `smoke: true` shrinks any recipe to a few CPU steps
    on local data. `mixed_precision: auto` is bf16 where the GPU has it, bf16 on a CPU with AMX or
    AVX512-BF16 (`hf_vit_repro.precision`), else fp32 ("no"); `no` / `bf16` / `fp16` force one.
    `stop_after` ends this session after that many updates with a checkpoint (for time-limited
    jobs: run again with `resume=auto` to continue). `torch_threads` caps PyTorch's intra-op threads for the run (tiny models on a busy CPU run
    faster on one thread, with `num_workers: 1` loading data on another core). `trackers`:
    `tensorboard` (local, in `logs/`) and any other installed Accelerate tracker (`trackio`, the
    Hub's own, `wandb`, `mlflow`...). `tracker_kwargs`: a tracker's init options, through
    Accelerate's `init_trackers(init_kwargs=...)`, e.g. `{trackio: {space_id: you/runs, name: b16}}`
    (without `space_id` trackio logs to `$TRACKIO_DIR`, default ~/.cache/huggingface/trackio) or
    `{wandb: {entity: team}}`; the project is the recipe's `name`."""

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
    tracker_kwargs: dict = field(default_factory=dict)
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
    the model from scratch with the fine-tuning protocol (a no-pretraining baseline).
    `train.objective` says what is learned: classification, or masked patch prediction
    (self-supervised pretraining, `mode: pretrain` only)."""

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
        setattr(target, name, coerce_value(value, hints[name], f"{source}: `{dotted}`"))

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
        choice("train.objective", t.objective, OBJECTIVES)
        if m.variant is not None:
            from ..models import family_for_variant
            from ..variants import canonical_name

            try:
                m.variant = canonical_name(m.variant)
            except ValueError as err:
                raise RecipeError(f"`model.variant`: {err}") from None
            if problem := family_for_variant(m.variant, m.config).recipe_problem(m):
                raise RecipeError(problem)
        self._validate_method()
        choice("train.loss", t.loss, LOSSES)
        choice("data.augmentation", d.augmentation, AUGMENTATIONS)
        choice("run.mixed_precision", r.mixed_precision, MIXED_PRECISIONS)
        if not self.name or any(c in self.name for c in "/\\"):
            raise RecipeError(f"`name` must be a non-empty name without slashes, got {self.name!r}.")
        if m.variant is None and m.init_from is None and not m.config:
            raise RecipeError(
                "The recipe names no model: set `model.variant` (e.g. 'ViT-B/16'), `model.config` "
                "(ViTReproConfig fields) or `model.init_from` (a checkpoint to fine-tune)."
            )
        positive("model.image_size", m.image_size)
        positive("model.representation_size", m.representation_size, allow_none=True)
        for key in ("dropout", "attention_dropout", "drop_path_rate"):
            if not 0.0 <= (p := getattr(m, key)) < 1.0:
                raise RecipeError(f"`model.{key}` must be a probability in [0, 1), got {p}.")
        for key in ("image_size", "num_labels", "representation_size", "hidden_dropout_prob", "drop_path_rate",
                    "attention_probs_dropout_prob", "id2label", "label2id", "mpp_image_mean", "mpp_image_std"):
            if key in m.config:
                raise RecipeError(
                    f"`model.config.{key}` is set by the recipe itself; use "
                    f"{_CONFIG_KEY_OWNERS.get(key, 'the data task (classes come from it)')} instead."
                )
        from .recipe_checks import recipe_problem

        if (problem := recipe_problem(self)) is not None:
            raise RecipeError(problem)
        if not 0.0 <= d.val_fraction < 1.0:
            raise RecipeError(f"`data.val_fraction` must lie in [0, 1), got {d.val_fraction}.")
        if d.holdout and d.val_fraction <= 0:
            raise RecipeError("`data.holdout: true` needs `data.val_fraction` > 0 (the part held out for validation).")
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
        if o.layer_decay is not None and not 0.0 < o.layer_decay <= 1.0:
            raise RecipeError(f"`optim.layer_decay` must lie in (0, 1] (e.g. 0.75) or be null, got {o.layer_decay}.")
        if (t.steps is None) == (t.epochs is None):
            raise RecipeError(
                f"Give exactly one of `train.steps` and `train.epochs` (got steps={t.steps}, epochs={t.epochs})."
            )
        positive("train.steps", t.steps, allow_none=True)
        positive("train.epochs", t.epochs, allow_none=True)
        if t.steps is not None and o.warmup_steps >= t.steps and t.steps > 1:
            raise RecipeError(f"`optim.warmup_steps` ({o.warmup_steps}) must be smaller than `train.steps` ({t.steps}).")
        positive("train.global_batch_size", t.global_batch_size)
        positive("train.micro_batch_size", t.micro_batch_size)
        if t.global_batch_size % t.micro_batch_size:
            raise RecipeError(f"`train.global_batch_size` ({t.global_batch_size}) must be a multiple of `train.micro_batch_size` "
                              f"({t.micro_batch_size}): the difference is made up by gradient accumulation.")
        if not 0.0 <= t.label_smoothing < 1.0:
            raise RecipeError(f"`train.label_smoothing` must lie in [0, 1), got {t.label_smoothing}.")
        positive("train.mixup_alpha", t.mixup_alpha, allow_zero=True)
        if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
            raise RecipeError(f"`train.ema_decay` must lie in (0, 1) or be null, got {t.ema_decay}.")
        choice("train.ema_correction", t.ema_correction, EMA_CORRECTIONS)
        if t.objective == "masked_patch_prediction":
            self._validate_masked_patch_prediction()
        positive("train.eval_every", t.eval_every, allow_zero=True)
        positive("train.eval_batch_size", t.eval_batch_size)
        positive("train.early_stopping_patience", t.early_stopping_patience, allow_none=True)
        if t.early_stopping_patience is not None and not t.eval_every:
            raise RecipeError("`train.early_stopping_patience` needs `train.eval_every` > 0 (how often to validate).")
        if t.early_stopping_patience is not None and t.ema_decay is not None:
            raise RecipeError("`train.early_stopping_patience` keeps the best training weights; it cannot be combined "
                              "with `train.ema_decay` (set one of them to null).")
        positive("run.checkpoint_every", r.checkpoint_every, allow_zero=True)
        positive("run.keep_checkpoints", r.keep_checkpoints)
        positive("run.stop_after", r.stop_after, allow_none=True)
        positive("run.log_every", r.log_every)
        positive("run.num_workers", r.num_workers, allow_zero=True)
        positive("run.torch_threads", r.torch_threads, allow_none=True)
        self._validate_trackers_and_augment()
        if r.push_to_hub and not r.hub_repo_id:
            raise RecipeError("`run.push_to_hub: true` needs `run.hub_repo_id` ('user/name').")
        if r.hub_repo_id is not None and r.hub_repo_id.count("/") != 1:
            raise RecipeError(f"`run.hub_repo_id` must look like 'user/name', got {r.hub_repo_id!r}.")
        if r.resume not in ("auto", "never") and not Path(r.resume).is_dir():
            raise RecipeError(f"`run.resume` must be 'auto', 'never' or an existing checkpoint folder; "
                              f"{r.resume!r} is none of these.")
        return self

    def _validate_method(self) -> None:
        """`train.method` and its options (`peft_methods.recipe_problem`)."""
        from . import peft_methods

        if problem := peft_methods.recipe_problem(self.train, self.model.variant):
            raise RecipeError(problem)

    def _validate_trackers_and_augment(self) -> None:
        """`run.trackers`, `run.tracker_kwargs` (`trackers.trackers_problem`), augmentation (`augment_problem`)."""
        from .trackers import trackers_problem

        if problem := trackers_problem(self.run.trackers, self.run.tracker_kwargs) or augment_problem(self.data, self.train):
            raise RecipeError(problem)

    def _validate_masked_patch_prediction(self) -> None:
        """What `train.objective: masked_patch_prediction` rules out: it pretrains a plain ViT
        without labels, a classifier head or a pre-logits layer."""
        from ..models import family_for_variant

        m, t, o = self.model, self.train, self.optim
        what = "`train.objective: masked_patch_prediction`"
        if self.mode != "pretrain":
            raise RecipeError(
                f"{what} pretrains (`mode: pretrain`); `mode: {self.mode}` attaches a classifier. Fine-tune its "
                "checkpoint with a classification recipe (`model.init_from` = the MPP run folder)."
            )
        if m.representation_size is not None:
            raise RecipeError(
                f"{what} trains no pre-logits layer: set `model.representation_size: null` (got "
                f"{m.representation_size}); fine-tuning adds the classifier head."
            )
        family = family_for_variant(m.variant, m.config)
        if problem := family.masked_patch_prediction_problem(m.variant or "a backbone_config"):
            raise RecipeError(f"{what} is {problem}")
        if t.mixup_alpha:
            raise RecipeError(f"{what} mixes no labels: set `train.mixup_alpha: 0` (got {t.mixup_alpha}).")
        if t.loss != "softmax_xent" or t.label_smoothing:
            raise RecipeError(
                f"{what} has its own loss (from `model.config.mpp_target`): leave `train.loss` at 'softmax_xent' and "
                f"`train.label_smoothing` at 0 (got {t.loss!r}, {t.label_smoothing})."
            )
        if o.lr_sweep:
            raise RecipeError(
                f"{what} has no validation accuracy to sweep the learning rate on: set one `optim.lr` (the paper "
                "uses 2e-4) and leave `optim.lr_sweep` empty."
            )


_CONFIG_KEY_OWNERS = {
    "image_size": "`model.image_size`",
    "representation_size": "`model.representation_size`",
    "hidden_dropout_prob": "`model.dropout`",
    "attention_probs_dropout_prob": "`model.attention_dropout`",
    "drop_path_rate": "`model.drop_path_rate`",
    "mpp_image_mean": "`data.mean` (the targets are de-normalised with it)",
    "mpp_image_std": "`data.std` (the targets are de-normalised with it)",
}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys() -> dict[str, tuple[str | None, str]]:
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
    keys = all_keys()
    if key in keys:
        return keys[key]
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise RecipeError(
        f"{source}: unknown recipe key {key!r}.{hint} Keys are `section.field` with sections "
        f"{', '.join(SECTIONS)} (see `vit-repro train --help` or recipes/README.md)."
    )


# The words YAML 1.1 (PyYAML) reads as booleans, besides true/false.
_YAML11_BOOLS = {"yes": True, "on": True, "no": False, "off": False}


def coerce_value(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation` (str, int, float, bool, list[float], list[str], dict, X | None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:  # an override's yes/no/on/off, kept as text
            return _YAML11_BOOLS[value.lower()]
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
        hint = ""
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/yes/on/off as a boolean
            hint = ' (YAML reads an unquoted no, yes, on or off as true/false: quote it, e.g. mixed_precision: "no")'
        raise RecipeError(f"{where} must be a string, got {value!r}{hint}.")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list, got {value!r}.")
        return [coerce_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
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
        if isinstance(value, bool) and raw.strip().lower() in _YAML11_BOOLS:
            # YAML 1.1 reads yes/no/on/off as booleans; `run.mixed_precision=no` (Accelerate's own word) means
            # the string. Kept as text, a boolean field still reads it as true/false (`coerce_value`).
            value = raw.strip()
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


def read_yaml_file(path: str | os.PathLike, what: str = "Recipe file",
                   listed: str = "The recipes are listed in recipes/README.md.") -> tuple[Path, Any]:
    """`(path, parsed YAML)` of a config file; a relative path that is not found from the working
    directory is looked up in the source checkout. `RecipeError` for a missing file or bad YAML."""
    import yaml

    path = Path(path)
    checkout = Path(__file__).resolve().parents[2]
    if not path.is_file() and not path.is_absolute() and (checkout / path).is_file():
        path = checkout / path  # "recipes/..." from outside the source checkout
    if not path.is_file():
        raise RecipeError(f"{what} {str(path)!r} does not exist. {listed}")
    try:
        return path, yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] | Sequence[tuple[str, Any]] = ()) -> Recipe:
    """Read a YAML recipe, apply `key=value` overrides, then the smoke switch if on. A relative
    path that is not found from the working directory is looked up in the source checkout
    (`recipes/finetune_cifar10.yaml` works from anywhere).

    Under `smoke=true` the user's own overrides still win over the smoke values (so
    `smoke=true train.steps=5` runs 5 steps). Raises `RecipeError` (a ValueError) for a missing
    file, bad YAML, unknown keys or invalid values, before anything is trained.
    """
    path, values = read_yaml_file(path)
    pairs = [item if isinstance(item, tuple) else parse_overrides([str(item)])[0] for item in overrides]
    recipe = Recipe.from_dict(values, source=str(path), validate=False)
    apply_overrides(recipe, pairs)
    if recipe.run.smoke:
        recipe = smoke_recipe(recipe)
        apply_overrides(recipe, pairs)
    recipe.validate()
    recipe.source = str(path)  # type: ignore[attr-defined]
    return recipe


def smoke_recipe(recipe: Recipe) -> Recipe:
    """The same recipe shrunk to a few CPU steps: the tiny model of its family (`models.SMOKE_*`: a
    hybrid stays hybrid, a BiT ResNet a tiny BiT ResNet), 32-pixel
    images, scikit-learn's digits unless a local `data.data_dir` is given, 3 steps of global
    batch 8 in micro-batches of 4 (so accumulation runs), checkpoint every 2 steps, a sweep over
    at most 2 learning rates. `init_from` is dropped unless it exists locally."""
    new = copy.deepcopy(recipe)
    m, d, o, t, r = new.model, new.data, new.optim, new.train, new.run
    if m.init_from is not None and not Path(m.init_from).exists():
        m.init_from = None
    from ..models import family_for_variant

    if m.init_from is None:
        m.config = family_for_variant(m.variant, m.config).smoke_config(m.config)
        if m.representation_size:  # a ViT's (a BiT ResNet has none)
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
    t.eval_every = 1 if t.early_stopping_patience else 0
    r.mixed_precision, r.compile, r.num_workers = "no", False, 0
    r.checkpoint_every, r.log_every, r.push_to_hub = 2, 1, False
    return new

