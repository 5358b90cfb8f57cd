"""What a recipe trains: its data (`build_data`: splits, hold-out, transforms, the task's classes)
and its model (`build_model`: from scratch, or from a checkpoint with a new head and resampled
position embeddings), each checked before the first step so that bad input fails early with a
`RecipeError` saying what to change. The objective (`train.objective`) decides whether labels
are read and which model class is built (`objectives.objective_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassError

from .. import runs
from ..models import family_for_variant, family_of
from . import peft_methods
from .objectives import objective_for
from .recipe import DataRecipe, Recipe, RecipeError

@dataclass
class RunData:
    """What `build_data` returns: datasets, their transforms, and the task's facts."""

    train: Any
    eval: Any | None
    train_transform: Any
    num_classes: int  # 0 for an objective without labels
    id2label: dict[int, str]
    eval_name: str | None
    dataset_name: str


def _load_split(d: DataRecipe, split: str, labels: bool = True):
    from ..data import load_task

    try:
        return load_task(d.task, split, d.data_dir, image_column=d.image_column, label_column=d.label_column,
                         labels=labels)
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


def _classes(d: DataRecipe, dataset, split: str):
    """`dataset` restricted to `data.classes` and relabelled 0..K-1 (itself when that is null)."""
    if d.classes is None:
        return dataset
    from ..data import DataError, select_classes

    try:
        return select_classes(dataset, d.classes)
    except DataError as err:
        raise RecipeError(f"`data.classes` on {d.task}/{split}: {err}; list label ids the task has.") from None


def _holdout_split(dataset, fraction: float, seed: int):
    """(rest, held-out) of a dataset: `fraction` of its rows drawn with `stable_permutation`."""
    from ..data import stable_permutation

    order = stable_permutation(len(dataset), seed)
    n_val = max(1, int(round(fraction * len(dataset))))
    if n_val >= len(dataset):
        raise RecipeError(f"`data.val_fraction` {fraction} leaves no training rows out of {len(dataset)}.")
    return dataset.select(sorted(order[n_val:].tolist())), dataset.select(sorted(order[:n_val].tolist()))


def build_data(recipe: Recipe, train_dataset=None, eval_dataset=None) -> RunData:
    """Load the recipe's splits (or take the given datasets: any `datasets.Dataset` with "image"
    and "label" columns; "image" alone for an objective without labels, which never reads them)
    and pick the transforms. Fails with `RecipeError` before training."""
    from ..data import eval_transform, finetune_transform, num_classes, pretrain_transform, task_transforms
    from ..data.augment import train_augmentation
    from ..data.transforms import FINETUNE_AUGMENTATIONS
    from ..data.registry import TASKS

    d, size = recipe.data, recipe.model.image_size
    labels = objective_for(recipe).needs_labels
    train = train_dataset if train_dataset is not None else _load_split(d, d.train_split, labels)
    train = _classes(d, train, d.train_split) if labels else train
    if d.max_train_examples and len(train) > d.max_train_examples:
        train = train.select(range(d.max_train_examples))
    eval_name = None
    if d.holdout:
        train, evaluation = _holdout_split(train, d.val_fraction, recipe.train.seed)
        eval_name = f"{d.train_split}[holdout {d.val_fraction:g}]"
    elif eval_dataset is not None:
        evaluation, eval_name = _classes(d, eval_dataset, "eval") if labels else eval_dataset, d.eval_split or "eval"
    elif d.eval_split:
        evaluation, eval_name = _load_split(d, d.eval_split, labels), d.eval_split
        evaluation = _classes(d, evaluation, d.eval_split) if labels else evaluation
    else:
        evaluation = None
    if d.subset is not None:  # after the hold-out: the validation images do not depend on the size
        from ..data import nested_subset

        try:
            train = train.select(nested_subset(len(train), d.subset, d.subset_seed).tolist())
        except ValueError as err:
            raise RecipeError(f"`data.subset`: {err}.") from None
    if evaluation is not None and d.max_eval_examples and len(evaluation) > d.max_eval_examples:
        evaluation = evaluation.select(range(d.max_eval_examples))
    if not labels:
        k, names = 0, []
    else:
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
    elif (crop := FINETUNE_AUGMENTATIONS.get(d.augmentation)) and spec is not None and d.flip is None:
        train_tf = task_transforms(spec, size, mean, std, crop=crop, resize_size=d.resize_size)[0]
    elif crop:
        train_tf = finetune_transform(size, mean, std, True if d.flip is None else d.flip, crop=crop, resize_size=d.resize_size)
    else:
        train_tf = eval_transform(size, mean, std)
    train_tf = train_augmentation(train_tf, d)  # RandAugment, random erasing (data.augment)
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


def architecture(config) -> dict[str, Any]:
    """The shape-deciding part of a config (what must match to load a checkpoint): width, depth,
    heads, MLP, patch, channels, pooling (`models.ARCHITECTURE_FIELDS`) and the hybrid's ResNet stages
    (None for a plain ViT); for a BiT ResNet its blocks per stage, widths, channels, block type, groups
    and padding (with `"family": "BiT ResNet"`). Its family's `architecture`."""
    return family_of(config).architecture(config)


def describe_architecture(arch: dict[str, Any]) -> str:
    if arch.get("family") == "BiT ResNet":
        return (f"BiT ResNet, blocks per stage {arch['depths']}, stage widths {arch['hidden_sizes']}, "
                f"stem {arch['embedding_size']}, {arch['layer_type']} blocks, {arch['num_groups']} groups")
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
        "drop_path_rate": m.drop_path_rate,
    }


def build_model(recipe: Recipe, num_classes: int, id2label: dict[int, str] | None = None):
    """The model a recipe trains: the objective's class for the config's family
    (`objectives.Objective.model_class_for`: `ViTReproForImageClassification` or transformers'
    `BitForImageClassification` for a BiT ResNet; `ViTReproForMaskedPatchPrediction`, with the
    data's mean/std as `mpp_image_mean` / `_std`, for masked patch prediction).
    From scratch: `models.config_from_variant(variant, ...)` (a `ViTReproConfig`, or transformers'
    `BitConfig` for a BiT ResNet such as "BiT-R50x1"), or `ViTReproConfig(**model.config)` without
    a variant. From `init_from`: the checkpoint (either family), with dropout, stochastic depth (and `mpp_*` fields)
    from the recipe; in fine-tuning mode its head is replaced by a zero-initialised K-way one (a
    ViT's pre-logits layer dropped unless `representation_size` is set; a masked-patch-prediction
    checkpoint's prediction head and mask token are left behind) and a ViT's position embeddings
    are resampled to `model.image_size` once (paper Sec. 3.2; a ResNet runs at any size). A
    checkpoint whose architecture differs from `model.variant` / `model.config` raises
    `RecipeError`.

    Last, `train.method` (`peft_methods`): its config fields (VPT's prompts, AdaptFormer's
    adapters, new and initialised as their papers do when the checkpoint has none) are set before
    the model is built, then the parameters it does not train are frozen (`lora`: the model is
    returned wrapped in a `peft.PeftModel`)."""
    from ..configuration_vit_repro import ViTReproConfig
    from ..models import config_from_variant

    m, method = recipe.model, recipe.train.method
    objective = objective_for(recipe)
    method_config = peft_methods.config_updates(method, recipe.train.method_options)
    id2label = id2label or {i: str(i) for i in range(num_classes)}
    if m.init_from is None:
        kwargs = _recipe_config_kwargs(recipe, num_classes)
        kwargs.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
        kwargs.update(objective.config_updates())
        kwargs.update(method_config)
        try:
            config = config_from_variant(m.variant, **kwargs) if m.variant else ViTReproConfig(**kwargs)
            model = objective.model_class_for(config)(config)
        except (TypeError, ValueError, StrictDataclassError) as err:
            raise RecipeError(f"`model`: cannot build the model: {_reason(err)}") from None
    else:
        source = resolve_checkpoint(m.init_from)
        config = load_checkpoint_config(source)
        wanted = None
        if m.variant is not None or m.config:
            wanted = _recipe_architecture(m, config)
        found = architecture(config)
        if wanted is not None and wanted != found:
            raise RecipeError(
                f"`model.init_from` {m.init_from!r} holds a different architecture than the recipe asks for: "
                f"checkpoint: {describe_architecture(found)}; recipe ({m.variant or 'model.config'}): "
                f"{describe_architecture(wanted)}. Point init_from at a matching checkpoint or change model.variant."
            )
        family = family_of(config)
        if problem := family.recipe_problem(m, f"`model.init_from` {m.init_from!r}"):
            raise RecipeError(problem)
        if method in peft_methods.VIT_ONLY and not family.has_blocks:
            raise RecipeError(f"`train.method: {method}` adapts a ViT's blocks; `model.init_from` {m.init_from!r} is "
                              f"a {family.name}: use full, linear or bitfit.")
        family.apply_recipe_fields(config, {"hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.attention_dropout,
                                            "drop_path_rate": m.drop_path_rate, **method_config})
        try:  # the recipe's own settings first: an error there is the recipe's, not the checkpoint's
            for key, value in objective.config_updates().items():
                setattr(config, key, value)
            config.validate()
        except (ValueError, StrictDataclassError) as err:
            raise RecipeError(f"`model`: {_reason(err)}") from None
        try:
            model = runs.load_pretrained(objective.model_class_for(config), source, config=config)
        except runs.CheckpointError:
            raise
        except ValueError as err:  # the objective's model refuses this checkpoint (e.g. MPP: a pre-logits layer)
            raise RecipeError(f"`model.init_from` {m.init_from!r}: cannot build the model: {err}") from None
        if recipe.mode == "finetune":
            keep = m.representation_size is not None and getattr(config, "representation_size", None) is not None
            family.reset_head(model, num_classes, id2label=id2label, keep_representation=keep)
        elif objective.needs_labels and model.config.num_labels != num_classes:
            raise RecipeError(
                f"`mode: pretrain` continues {m.init_from!r} with its {model.config.num_labels}-way head, but the data "
                f"has {num_classes} classes; use `mode: finetune` to attach a new head."
            )
        family.set_image_size(model, m.image_size)  # a ViT resamples its position embeddings; a ResNet records it
    if m.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if m.recompute_mlp_activation:
        model.set_mlp_activation_recompute()
    return _apply_method(model, recipe)


def _apply_method(model, recipe: Recipe):
    """`peft_methods.apply_method` with its refusals as `RecipeError`s naming `train.method`."""
    method = recipe.train.method
    try:
        return peft_methods.apply_method(model, method, recipe.train.method_options)
    except ImportError as err:
        raise RecipeError(f"`train.method: {method}` needs Hugging Face peft ({err}): pip install 'hf-vit-repro[peft]'."
                          ) from None
    except ValueError as err:
        raise RecipeError(f"`train.method`: {err}.") from None


def _reason(err: Exception) -> Exception:
    """The config's own message: transformers' strict-dataclass validation wraps it as the cause."""
    return err.__cause__ if isinstance(err, StrictDataclassError) and err.__cause__ is not None else err


def _recipe_architecture(m, checkpoint_config) -> dict[str, Any]:
    """The architecture a recipe's `model.variant` / `model.config` asks for, completed by the
    checkpoint's config where the recipe says nothing (to compare with the checkpoint's)."""
    try:
        family = family_for_variant(m.variant, m.config) if m.variant else family_of(checkpoint_config)
        return architecture(family.completed_config(m.variant, m.config, checkpoint_config))
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise RecipeError(f"`model`: cannot build the model the recipe names: {_reason(err)}") from None


def load_checkpoint_config(source: str):
    """The config of a checkpoint folder or Hub id: `ViTReproConfig`, or transformers' `BitConfig`
    for a BiT ResNet; a checkpoint of another model type (a transformers or timm ViT...) raises
    `RecipeError` pointing at `vit-repro convert`."""
    from transformers import AutoConfig

    from ..models import MODEL_TYPES

    try:
        config = runs.load_pretrained(AutoConfig, source)
    except (OSError, ValueError) as err:
        if not Path(source).exists():
            raise RecipeError(
                f"`model.init_from` {source!r} is not a local folder, and reading it as a Hub repo id failed "
                f"({str(err).splitlines()[0]}). Run the recipe that writes it first (a run folder's final/ is used), "
                "or point model.init_from at a checkpoint."
            ) from None
        raise RecipeError(f"`model.init_from`: cannot read a model config from {source!r}: {err}") from None
    if config.model_type not in MODEL_TYPES:
        raise RecipeError(
            f"`model.init_from` {source!r} is a {type(config).__name__} (model_type {config.model_type!r}), not a "
            "vit_repro or BiT (bit) checkpoint. Convert it first: `vit-repro convert SOURCE OUTPUT_DIR`."
        )
    return config
