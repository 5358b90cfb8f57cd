"""The two model families the package trains and evaluates, behind one set of functions.

- This package's ViT and its hybrid (`ViTReproConfig`, `ViTReproForImageClassification`; model_type
  "vit_repro", shipped with remote code).
- The paper's CNN baselines, BiT ResNets (Kolesnikov et al., ECCV 2020), as transformers' own
  `BitConfig` / `BitForImageClassification` (model_type "bit"): their checkpoints load in any
  transformers installation without this package or remote code. `variants.bit_config` builds them;
  `config_from_variant` builds either family by name.

Training, evaluation and publishing call these functions instead of asking which family a model
is. What BiT lacks compared with the ViT, and how it is filled in here:

- Resolution: a ResNet has no position embeddings and runs at any size; the size it is trained at is
  kept as an extra `image_size` entry of its `BitConfig` (saved in config.json), which evaluation,
  cards and FLOPs counts read (`image_size`, `set_image_size`).
- Fine-tuning head (BiT Sec. 3.3, paper Sec. 3.2): a new zero-initialised K-way dense layer on the
  pooled features (`reset_classifier`); BiT has no pre-logits layer to drop.
- Weight decay: parameters with one dimension (GroupNorm scales and shifts, the head's bias) skip it,
  as the ViT's biases and norms do (`no_weight_decay`).
- Pre-logits features (few-shot): the globally average-pooled output of BiT's final GroupNorm + ReLU,
  (B, C) (`pre_logits`).
"""

from __future__ import annotations

from typing import Any

#: model_type of each family's config, as written to config.json.
VIT_MODEL_TYPE = "vit_repro"
BIT_MODEL_TYPE = "bit"
MODEL_TYPES = (VIT_MODEL_TYPE, BIT_MODEL_TYPE)


def is_bit(config_or_model: Any) -> bool:
    """Whether a config or model (or a config.json dict) is a BiT ResNet."""
    config = getattr(config_or_model, "config", config_or_model)
    if isinstance(config, dict):
        return config.get("model_type") == BIT_MODEL_TYPE
    return getattr(config, "model_type", None) == BIT_MODEL_TYPE


def family_name(config_or_model: Any) -> str:
    """"BiT ResNet" or "ViT" (a hybrid is a ViT with a CNN under its patch embedding)."""
    return "BiT ResNet" if is_bit(config_or_model) else "ViT"


def config_from_dict(values: dict[str, Any]):
    """The config a config.json dict describes: `BitConfig` for model_type "bit", `ViTReproConfig`
    for "vit_repro"; any other model_type raises ValueError."""
    model_type = values.get("model_type")
    if model_type == BIT_MODEL_TYPE:
        from transformers import BitConfig

        return BitConfig.from_dict(values)
    if model_type == VIT_MODEL_TYPE:
        from .configuration_vit_repro import ViTReproConfig

        return ViTReproConfig.from_dict(values)
    raise ValueError(f"model_type {model_type!r} is neither {VIT_MODEL_TYPE!r} nor {BIT_MODEL_TYPE!r}.")


def config_from_variant(name: str, **overrides):
    """The config of any named model: transformers' `BitConfig` for a BiT ResNet ("BiT-R50x1",
    `variants.bit_config`), else `ViTReproConfig` for a ViT or hybrid ("ViT-B/16", "R50+ViT-B/16").
    `overrides` are fields of that config (plus `image_size` for BiT, see `variants.bit_config`)."""
    from .variants import bit_config, is_bit_variant

    if is_bit_variant(name):
        return bit_config(name, **overrides)
    from .configuration_vit_repro import ViTReproConfig

    return ViTReproConfig.from_variant(name, **overrides)


def classifier_class(config):
    """The image classifier class of a config: `BitForImageClassification` or
    `ViTReproForImageClassification`."""
    if is_bit(config):
        from transformers import BitForImageClassification

        return BitForImageClassification
    from .modeling_vit_repro import ViTReproForImageClassification

    return ViTReproForImageClassification


def image_size(config_or_model: Any) -> int | None:
    """The square resolution a model runs at: a ViT's `image_size`, a BiT's stored `image_size`
    (None when its config has none, e.g. a checkpoint from elsewhere). A non-square ViT raises."""
    config = getattr(config_or_model, "config", config_or_model)
    if is_bit(config):
        size = getattr(config, "image_size", None)
        if isinstance(size, (list, tuple)):
            size = size[0] if len(set(size)) == 1 else None
        return int(size) if size else None
    height, width = config.image_hw
    if height != width:
        raise ValueError(f"the model's image_size is {height}x{width}; a square resolution is needed here")
    return int(height)


def set_image_size(model, size: int) -> None:
    """Run `model` at `size` from now on: a ViT resamples its position embeddings once (paper Sec.
    3.2); a BiT ResNet only records the new size in its config (convolutions run at any size)."""
    if is_bit(model):
        model.config.image_size = int(size)
    else:
        model.resize_position_embeddings(int(size))


def reset_classifier(model, num_labels: int, id2label: dict[int, str] | None = None,
                     keep_representation: bool = False) -> None:
    """The fine-tuning step: a zero-initialised `num_labels`-way head (paper Sec. 3.2; BiT Sec. 3.3
    initialises its new head to zero as well). A ViT also drops its pre-logits layer unless
    `keep_representation`; a BiT ResNet has none."""
    if not is_bit(model):
        model.reset_classifier(num_labels, id2label=id2label, keep_representation=keep_representation)
        return
    import torch
    from torch import nn

    if num_labels < 0:
        raise ValueError(f"`num_labels` must be >= 0, got {num_labels}.")
    if id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"`id2label` has {len(id2label)} entries but num_labels={num_labels}.")
    config = model.config
    config.id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    config.label2id = {label: i for i, label in config.id2label.items()}
    reference = model.bit.norm.weight
    if num_labels > 0:
        head = nn.Linear(config.hidden_sizes[-1], num_labels, device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
    else:
        head = nn.Identity()
    model.classifier[1] = head
    model.num_labels = num_labels


def no_weight_decay(model) -> list[str]:
    """Names of the parameters that skip weight decay: the ViT's `no_weight_decay()` (biases,
    norms, position embeddings, class token); for a BiT ResNet every 1-D parameter (GroupNorm
    scales and shifts, the head's bias): its convolution and dense kernels decay. A peft model
    (`train.method: lora`) answers for the model it wraps, under the wrapper's names."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(inner, "no_weight_decay"):
        skip = set(inner.no_weight_decay())
    else:
        skip = {name for name, param in inner.named_parameters() if param.ndim <= 1}
    if inner is model:
        return list(skip)
    chosen = {id(param) for name, param in inner.named_parameters() if name in skip}
    return [name for name, param in model.named_parameters() if id(param) in chosen]


def pre_logits(model, pixel_values, interpolate_pos_encoding: bool = False):
    """The frozen representation few-shot evaluation reads, (B, D): a ViT's `pooler_output` (the
    final class-token state, or the pre-logits layer's output); a BiT ResNet's globally average-
    pooled final features (after its last GroupNorm + ReLU), flattened."""
    if is_bit(model):
        return model.bit(pixel_values).pooler_output.flatten(1)
    base = getattr(model, "base_model", model)
    return base(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).pooler_output


__all__ = [
    "MODEL_TYPES",
    "is_bit",
    "family_name",
    "config_from_dict",
    "config_from_variant",
    "classifier_class",
    "image_size",
    "set_image_size",
    "reset_classifier",
    "no_weight_decay",
    "pre_logits",
]
