"""What every converter shares (`convert` for the ViTs, `convert_bit` for the BiT ResNets,
`convert_native` for the way back): the error type, key renaming by rules (one table of names
read in either direction), the JAX -> torch array layouts, and the image processors that carry a
source's preprocessing (timm's resampling names, `crop_pct`)."""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from .variants import R50_FOUR_STAGES

#: timm's `interpolation` names -> PIL resampling codes (what `ViTImageProcessor` takes).
_TIMM_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}

logger = logging.getLogger(__name__)

# ============================================================================ name tables, both ways

HYBRID_BACKBONE_PREFIX = "vit.embeddings.patch_embeddings.backbone.bit."
#: timm's names <-> ours, read timm -> ours by `convert_timm_state_dict` and ours -> timm by
#: `convert_native.to_timm_state_dict` (`name_rules`: "{}" is a number, a trailing "." a prefix).
TIMM_NAMES = [
    # hybrid: timm's ResNetV2 (preact=False) <-> transformers' BitBackbone (layer_type="bottleneck")
    ("patch_embed.backbone.stem.conv.", HYBRID_BACKBONE_PREFIX + "embedder.convolution."),
    ("patch_embed.backbone.stem.norm.", HYBRID_BACKBONE_PREFIX + "embedder.norm."),
    ("patch_embed.backbone.stages.{}.blocks.{}.", HYBRID_BACKBONE_PREFIX + "encoder.stages.{}.layers.{}."),
    ("cls_token", "vit.embeddings.cls_token"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("patch_embed.proj.", "vit.embeddings.patch_embeddings.projection."),
    ("blocks.{}.norm1.", "vit.layers.{}.layernorm_before."),
    ("blocks.{}.attn.qkv.", "vit.layers.{}.attention.qkv."),
    ("blocks.{}.attn.proj.", "vit.layers.{}.attention.o_proj."),
    ("blocks.{}.norm2.", "vit.layers.{}.layernorm_after."),
    ("blocks.{}.mlp.fc1.", "vit.layers.{}.mlp.fc1."),
    ("blocks.{}.mlp.fc2.", "vit.layers.{}.mlp.fc2."),
    ("norm.", "vit.layernorm."),
    ("pre_logits.fc.", "vit.pooler.dense."),  # timm < 0.9's in21k models kept the representation layer
    ("head.", "classifier."),
]
#: The fields `ViTConfig` and `ViTReproConfig` share, with one meaning (read both ways).
TRANSFORMERS_SHARED_FIELDS = (
    "image_size patch_size num_channels hidden_size num_hidden_layers num_attention_heads intermediate_size "
    "hidden_act layer_norm_eps hidden_dropout_prob attention_probs_dropout_prob qkv_bias initializer_range "
    "id2label label2id problem_type"
).split()
#: timm's size names -> the paper's.
TIMM_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
#: timm's BiT hybrids (timm/models/vision_transformer_hybrid.py) -> (ViT size, backbone, resolutions).
#: The backbone is a named one of `variants.BACKBONES` or explicit (depths, hidden_sizes).
TIMM_HYBRIDS: dict[str, tuple[str, str | tuple, tuple[int, ...]]] = {
    "vit_base_r50_s16": ("B", "R50", (224, 384)),  # the paper's R50+ViT-B/16
    "vit_small_r26_s32": ("S", "R26", (224, 384)),  # AugReg
    "vit_base_r26_s32": ("B", "R26", (224,)),  # AugReg
    # the paper's (and AugReg's) R50+ViT-L/32: the full four-stage ResNet-50 (3, 4, 6, 3), so
    # stride 32, unlike the three-stage R50 (3, 4, 9) of stride 16 under the /16 hybrids.
    "vit_large_r50_s32": ("L", R50_FOUR_STAGES, (224, 384)),
}

#: timm's `act_layer` names -> our `hidden_act` (the MLP's GELU, exact or tanh-approximated).
TIMM_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


class ConversionError(ValueError):
    """A source checkpoint does not fit the target layout; the message names the keys."""


def name_list(names, limit: int = 20) -> str:
    """Sorted names for an error message, the first `limit` of them and a count of the rest."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def rename_keys(state_dict: dict[str, torch.Tensor], rules) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply the first matching (pattern, replacement) rule to each key; returns (renamed, unmatched)."""
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                renamed[new_key] = value
                break
        else:
            unmatched.append(key)
    return renamed, unmatched


def name_rules(pairs, reverse: bool = False) -> list[tuple[str, str]]:
    """`rename_keys` rules from a table of (source name, our name) templates, read left to right or,
    with `reverse`, right to left: one table serves both directions of a conversion.

    A template ending in "." is a prefix (what follows is kept), any other an exact name; "{}"
    stands for a number, carried across in order. E.g. ("blocks.{}.norm1.",
    "vit.layers.{}.layernorm_before.") renames "blocks.3.norm1.weight" to
    "vit.layers.3.layernorm_before.weight" and, reversed, back.
    """
    rules = []
    for source, target in pairs:
        if reverse:
            source, target = target, source
        pattern = r"(\d+)".join(re.escape(part) for part in source.split("{}"))
        pattern = "^" + pattern + ("" if source.endswith(".") else "$")
        parts = target.split("{}")
        replacement = parts[0] + "".join(f"\\g<{i}>{part}" for i, part in enumerate(parts[1:], start=1))
        rules.append((pattern, replacement))
    return rules


def jax_to_torch(array: np.ndarray, kind: str) -> torch.Tensor:
    """One JAX array -> the torch layout: "conv" HWIO -> OIHW, "dense" (in, out) -> (out, in),
    "vector" flattened (GroupNorm scales are stored (1, 1, 1, C) in some BiT files), "raw" as is."""
    array = np.asarray(array, dtype=np.float32)
    if kind == "conv":
        array = array.transpose(3, 2, 0, 1)
    elif kind == "dense":
        array = array.T
    elif kind == "vector":
        array = array.reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(array))


def load_exactly(model: torch.nn.Module, state_dict, what: str = "the model") -> torch.nn.Module:
    """Load a converted state dict into `model` (in eval mode) only if it fits exactly: every missing
    key, unexpected key and shape disagreement is a `ConversionError` that names it (nothing is
    dropped silently and no parameter keeps its random initialisation)."""
    expected = model.state_dict()
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
    if mismatched or missing or unexpected:
        problems = [f"{label}: {name_list(items)}." for label, items in
                    (("Shapes differ", mismatched), ("Missing", missing), ("Unexpected", unexpected)) if items]
        raise ConversionError(f"Converted weights do not fit {what}. " + " ".join(problems))
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def image_processor(config, mean, std, resample=None):
    """transformers' stock `ViTImageProcessor` at the model's resolution (a ViT's `image_size`; a
    BiT ResNet's recorded `image_size`, 224 when there is none) with the source's mean/std and
    resampling filter (a PIL code: 2 bilinear, 3 bicubic). It resizes straight to the model's size,
    as the original JAX code evaluates; timm's sources get `timm_image_processor` instead."""
    from transformers import ViTImageProcessor

    height, width = _model_hw(config)
    kwargs = {} if resample is None else {"resample": resample}
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=list(mean), image_std=list(std), **kwargs
    )


def _model_hw(config) -> tuple[int, int]:
    from .models import BIT_DEFAULT_IMAGE_SIZE, family_of

    return family_of(config).image_hw(config) or (BIT_DEFAULT_IMAGE_SIZE, BIT_DEFAULT_IMAGE_SIZE)


#: timm's default `crop_pct` where a pretrained config gives none (timm.data.DEFAULT_CROP_PCT).
TIMM_DEFAULT_CROP_PCT = 0.875


def timm_image_processor(config, pretrained_cfg):
    """timm's evaluation transform as transformers' stock `BitImageProcessor`, at the model's
    resolution (H, W): resize the shortest edge to floor(H / crop_pct) with the source's filter
    (`interpolation`: bicubic, bilinear...), centre-crop H x W, scale to [0, 1], normalise with the
    source's mean/std (timm.data.create_transform with crop_mode "center", its default).
    `crop_mode="squash"` resizes both edges to floor(size / crop_pct) instead, then crops.
    `crop_pct` and `crop_mode` are recorded beside (BitImageProcessor ignores them) so that a new
    resolution keeps them (`set_processor_size`).

    Why this class: it loads through `AutoImageProcessor` without remote code, resizes the shortest
    edge at every resolution (transformers' `ConvNextImageProcessor` has a `crop_pct` but squashes
    the image to a square from 384 px up, where timm still keeps the aspect ratio), and its PIL
    backend's resize equals timm's exactly (the torchvision backend within one grey level). One
    difference remains: transformers places the crop at floor(margin / 2), torchvision's
    `CenterCrop` at round-half-to-even(margin / 2), so when the margin left by the resize is 3
    modulo 4 pixels the crop sits one pixel over (tests/test_convert_timm.py measures both).
    timm's `crop_mode="border"` (letterboxing) and non-square sizes with crop_mode "center" have no
    counterpart: they are written as "squash" with a warning.
    """
    from transformers import BitImageProcessor

    height, width = _model_hw(config)
    crop_pct = float(pretrained_cfg.get("crop_pct") or TIMM_DEFAULT_CROP_PCT)
    crop_mode = pretrained_cfg.get("crop_mode") or "center"
    if crop_mode not in ("center", "squash") or (crop_mode == "center" and height != width):
        logger.warning(
            "timm's crop_mode=%r at %dx%d has no counterpart in transformers' image processors; the converted "
            "processor resizes both edges to size / crop_pct and crops (timm's 'squash').", crop_mode, height, width,
        )
        crop_mode = "squash"
    interpolation = pretrained_cfg.get("interpolation", "bicubic")
    processor = BitImageProcessor(
        image_mean=list(pretrained_cfg.get("mean", (0.5, 0.5, 0.5))),
        image_std=list(pretrained_cfg.get("std", (0.5, 0.5, 0.5))),
        resample=_TIMM_RESAMPLE.get(interpolation, 3),
        crop_pct=crop_pct,
        crop_mode=crop_mode,
    )
    return set_processor_size(processor, height, width)


def set_processor_size(processor, height: int, width: int):
    """Make `processor` prepare images for a model at `height` x `width`, keeping how it gets
    there: a `ViTImageProcessor`-like one (size = height/width, no crop) resizes straight to it; a
    cropping one (`timm_image_processor`'s) keeps its `crop_pct`: shortest edge (or, squashing,
    both edges) resized to floor(size / crop_pct), then the centre crop. Returns `processor`."""
    if not getattr(processor, "do_center_crop", False) or getattr(processor, "crop_size", None) is None:
        processor.size = {"height": height, "width": width}
        return processor
    crop_pct = getattr(processor, "crop_pct", None)
    if crop_pct is None:  # a cropping processor from elsewhere: keep its ratio of crop to resize
        crop_pct = processor.crop_size["height"] / (processor.size.get("shortest_edge") or processor.size["height"])
    squash = getattr(processor, "crop_mode", None) == "squash" or "height" in (processor.size or {})
    if squash:
        processor.size = {"height": math.floor(height / crop_pct), "width": math.floor(width / crop_pct)}
    else:
        processor.size = {"shortest_edge": math.floor(height / crop_pct)}
    processor.crop_size = {"height": height, "width": width}
    return processor


def timm_preprocessing(processor) -> dict:
    """The `pretrained_cfg` preprocessing fields (mean, std, interpolation, crop_pct, crop_mode) of
    timm's evaluation transform doing what `processor` does: the inverse of `timm_image_processor`.
    A processor that resizes straight to the model's size (`ViTImageProcessor`) is timm's
    crop_mode "squash" at crop_pct 1.0 (both edges to the size, then a crop that removes nothing)."""
    names = {code: name for name, code in _TIMM_RESAMPLE.items()}
    resample = int(getattr(processor, "resample", 3))
    if resample not in names:
        raise ConversionError(f"The image processor's resampling filter (PIL code {resample}) has no timm name.")
    cropping = getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) is not None
    if cropping:
        crop_pct = getattr(processor, "crop_pct", None)
        if crop_pct is None:
            crop_pct = processor.crop_size["height"] / (processor.size.get("shortest_edge") or processor.size["height"])
        squash = getattr(processor, "crop_mode", None) == "squash" or "height" in processor.size
        crop = {"crop_pct": float(crop_pct), "crop_mode": "squash" if squash else "center"}
    else:
        crop = {"crop_pct": 1.0, "crop_mode": "squash"}
    return {
        "interpolation": names[resample],
        **crop,
        "mean": [float(m) for m in processor.image_mean],
        "std": [float(s) for s in processor.image_std],
    }


def write_atomically(output_dir: Path, write) -> None:
    """Call `write(folder)` on a temporary sibling folder, then move each file it wrote into
    `output_dir` (`os.replace`), so an interrupted conversion never leaves a half-written file there."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"{output_dir} exists and is not a folder.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-") as tmp:
        write(Path(tmp))
        output_dir.mkdir(exist_ok=True)
        for path in Path(tmp).iterdir():
            os.replace(path, output_dir / path.name)
