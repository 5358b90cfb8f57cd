"""What every converter shares (`convert` for the ViTs, `convert_bit` for the BiT ResNets): the
error type, key renaming by rules, the JAX -> torch array layouts, timm's resampling names."""

from __future__ import annotations

import re

import numpy as np
import torch

#: timm's `interpolation` names -> PIL resampling codes (what `ViTImageProcessor` takes).
_TIMM_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


class ConversionError(ValueError):
    """A source checkpoint does not fit the target layout; the message names the keys."""


def _name_list(names, limit: int = 20) -> str:
    """Sorted names for an error message, the first `limit` of them and a count of the rest."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def _rename(state_dict: dict[str, torch.Tensor], rules) -> tuple[dict[str, torch.Tensor], list[str]]:
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


def _jax_to_torch(array: np.ndarray, kind: str) -> torch.Tensor:
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
        problems = [f"{label}: {_name_list(items)}." for label, items in
                    (("Shapes differ", mismatched), ("Missing", missing), ("Unexpected", unexpected)) if items]
        raise ConversionError(f"Converted weights do not fit {what}. " + " ".join(problems))
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def image_processor(config, mean, std, resample=None):
    """transformers' stock `ViTImageProcessor` at the model's resolution (a ViT's `image_size`; a
    BiT ResNet's recorded `image_size`, 224 when there is none) with the source's mean/std and
    resampling filter (a PIL code: 2 bilinear, 3 bicubic). It resizes straight to the model's size;
    a center crop (timm's `crop_pct`) has no counterpart in it."""
    from transformers import ViTImageProcessor

    from .models import image_size, is_bit

    if is_bit(config):
        height = width = image_size(config) or 224
    else:
        height, width = config.image_hw
    kwargs = {} if resample is None else {"resample": resample}
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=list(mean), image_std=list(std), **kwargs
    )
