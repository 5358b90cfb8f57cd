"""What a recipe trains: its data (`build_data`: splits, hold-out, transforms, the task's classes)
and its model (`build_model`: from scratch, or from a checkpoint with a new head and resampled
position embeddings), each checked before the first step so that bad input fails early with a
`RecipeError` saying what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from .recipe import DataRecipe, Recipe, RecipeError

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
    from ..data import load_task

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
    from ..data import stable_permutation

    order = stable_permutation(len(dataset), seed)
    n_val = max(1, int(round(fraction * len(dataset))))
    if n_val >= len(dataset):
        raise RecipeError(f"`data.val_fraction` {fraction} leaves no training rows out of {len(dataset)}.")
    return dataset.select(sorted(order[n_val:].tolist())), dataset.select(sorted(order[:n_val].tolist()))


def build_data(recipe: Recipe, train_dataset=None, eval_dataset=None) -> RunData:
    """Load the recipe's splits (or take the given datasets: any `datasets.Dataset` with "image"
    and "label" columns) and pick the transforms. Fails with `RecipeError` before training."""
    from ..data import eval_transform, finetune_transform, num_classes, pretrain_transform, task_transforms
    from ..data.registry import TASKS

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
    if d.subset is not None:  # after the hold-out: the validation images do not depend on the size
        from ..data import nested_subset

        try:
            train = train.select(nested_subset(len(train), d.subset, d.subset_seed).tolist())
        except ValueError as err:
            raise RecipeError(f"`data.subset`: {err}.") from None
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
    from ..configuration_vit_repro import ViTReproConfig
    from ..modeling_vit_repro import ViTReproForImageClassification

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
            from ..variants import variant_kwargs

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

    from ..configuration_vit_repro import ViTReproConfig

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

