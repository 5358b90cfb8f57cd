"""Published BiT ResNet weights -> transformers' `BitForImageClassification` (model_type "bit").

Two sources, both reached through `hf_vit_repro.convert.convert` / `vit-repro convert`, which tells
them apart from the ViT sources:

- timm hub repos of BiT's released weights (`timm/resnetv2_50x1_bit.goog_in21k`, ...: config.json
  naming a `resnetv2_<depth>x<width>_bit` architecture, weights in timm's names);
- the original `.npz` files of google-research/big_transfer (`BiT-M-R50x1.npz`, `BiT-S-R101x3.npz`,
  `BiT-M-R50x1-ILSVRC2012.npz`...), arrays under `resnet/`:

      resnet/root_block/standardized_conv2d/kernel            stem, 7x7, HWIO
      resnet/block{s}/unit{u:02d}/{a,b,c}/group_norm/{gamma,beta}
      resnet/block{s}/unit{u:02d}/{a,b,c}/standardized_conv2d/kernel   1x1, 3x3, 1x1
      resnet/block{s}/unit{u:02d}/a/proj/standardized_conv2d/kernel    projection (first unit)
      resnet/group_norm/{gamma,beta}                           final GroupNorm
      resnet/head/conv2d/{kernel,bias}                         head, a 1x1 convolution

  (unit `a`'s GroupNorm is the pre-activation of the unit's input; s and u count from 1).

The architecture is read off the weights' shapes (blocks per stage, stem and stage widths, classes)
and checked against the name (timm architecture, or the `.npz` file name `BiT-M-R50x1`); BiT's
own settings, which weights cannot show, come from `variants.BIT_CONFIG_DEFAULTS` (pre-activation
units, fixed padding, 32 groups). Both BiT codebases feed images scaled to [-1, 1] (mean = std = 0.5).
Weights without a place in the model, and places without weights, are errors that name them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .convert_common import ConversionError, jax_to_torch, name_list, rename_keys
from .convert_common import image_processor, load_exactly, timm_image_processor

#: timm architecture names of BiT's ResNets: resnetv2_50x1_bit, resnetv2_152x4_bit, ...
TIMM_BIT_NAME = re.compile(r"^resnetv2_(\d+)x(\d+)_bit$")
#: BiT `.npz` file names: BiT-M-R50x1.npz, BiT-S-R101x3.npz, BiT-M-R152x4-ILSVRC2012.npz, ...
NPZ_BIT_NAME = re.compile(r"BiT-[SML]-R(\d+)x(\d+)", re.IGNORECASE)
NPZ_PREFIX = "resnet/"
NPZ_ROOT = NPZ_PREFIX + "root_block/standardized_conv2d/kernel"

_TIMM_RULES = [
    (r"^stem\.conv\.", "bit.embedder.convolution."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"bit.encoder.stages.\1.layers.\2."),
    (r"^norm\.", "bit.norm."),
    (r"^head\.fc\.", "classifier.1."),
]
#: timm ResNetV2 arguments (config.json "model_args") that describe a BiT ResNet, -> ours.
_TIMM_ARGS = {"layers", "channels", "stem_chs", "width_factor", "num_classes", "in_chans"}
#: ... and those that only change how timm runs or initialises.
_TIMM_RUNTIME_ARGS = {"drop_rate", "drop_path_rate", "zero_init_last", "global_pool"}


def _error(message: str) -> ConversionError:
    return ConversionError(message)


def is_bit_npz(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether `.npz` arrays are a BiT ResNet in google-research/big_transfer's layout."""
    return NPZ_ROOT in arrays


def is_timm_bit(timm_config: Mapping) -> bool:
    """Whether a timm config.json names one of BiT's ResNets (`resnetv2_*_bit`)."""
    pretrained = timm_config.get("pretrained_cfg") or {}
    name = str(timm_config.get("architecture") or pretrained.get("architecture") or "").split(".")[0]
    return name.startswith("resnetv2_") and name.endswith("_bit")


def _named_kwargs(depth: int, width: int, where: str) -> dict:
    """BitConfig kwargs of any BiT depth x width (the released R50x3 and R101x3 too); `where`
    names the source for the error about an unknown depth."""
    from .variants import BIT_CONFIG_DEFAULTS, BIT_DEPTHS, BIT_STAGE_WIDTHS, BIT_STEM_WIDTH

    if depth not in BIT_DEPTHS:
        raise _error(f"{where} names a ResNet-{depth}; BiT ResNets have depth {', '.join(map(str, BIT_DEPTHS))}.")
    return {
        **BIT_CONFIG_DEFAULTS,
        "depths": list(BIT_DEPTHS[depth]),
        "hidden_sizes": [w * width for w in BIT_STAGE_WIDTHS],
        "embedding_size": BIT_STEM_WIDTH * width,
    }


def _build(kwargs: dict, overrides: Mapping):
    from transformers import BitConfig

    from .variants import check_bit_config

    try:
        config = BitConfig(**{**kwargs, **overrides})
        check_bit_config(config)
    except (TypeError, ValueError) as err:
        raise _error(f"Cannot build the BiT ResNet: {err}") from None
    return config


# ============================================================================ timm


def bit_config_from_timm(timm_config: Mapping, **overrides):
    """A timm BiT config (a hub repo's config.json) -> `BitConfig`.

    The architecture name (tag after '.' ignored, e.g. 'resnetv2_50x1_bit.goog_in21k') gives depth
    and width factor; `model_args` (layers, channels, stem_chs, width_factor, in_chans) where timm
    recorded them, then `overrides` (BitConfig fields, e.g. a test's tiny `depths`), refine it. The
    input size becomes `image_size`; `num_classes` and `label_names` the head and labels."""
    cfg = dict(timm_config)
    pretrained = dict(cfg.get("pretrained_cfg") or {})
    name = str(cfg.get("architecture") or pretrained.get("architecture") or "").split(".")[0]
    match = TIMM_BIT_NAME.match(name)
    if match is None:
        raise _error(f"{name!r} is not one of timm's BiT ResNets (resnetv2_<depth>x<width>_bit).")
    from .variants import BIT_STAGE_WIDTHS, BIT_STEM_WIDTH

    depth, width = int(match.group(1)), int(match.group(2))
    kwargs = _named_kwargs(depth, width, f"timm architecture {name!r}")
    model_args = dict(cfg.get("model_args") or {})
    refused = sorted(k for k in model_args if k not in _TIMM_ARGS | _TIMM_RUNTIME_ARGS)
    if refused:
        raise _error(f"These timm ResNetV2 arguments have no counterpart in BiT: {', '.join(refused)}.")
    width = int(model_args.get("width_factor", width))
    if "layers" in model_args:
        kwargs["depths"] = list(model_args["layers"])
    kwargs["hidden_sizes"] = [int(c) * width for c in model_args.get("channels", BIT_STAGE_WIDTHS)]
    kwargs["embedding_size"] = int(model_args.get("stem_chs", BIT_STEM_WIDTH)) * width
    if "in_chans" in model_args:
        kwargs["num_channels"] = int(model_args["in_chans"])
    input_size = pretrained.get("input_size") or cfg.get("input_size")
    if input_size:
        height, width_px = input_size[-2:]
        kwargs["image_size"] = int(height) if height == width_px else [int(height), int(width_px)]
    num_classes = model_args.get("num_classes", cfg.get("num_classes", pretrained.get("num_classes")))
    if num_classes is not None:
        kwargs["num_labels"] = int(num_classes)
    labels = cfg.get("label_names", pretrained.get("label_names"))
    descriptions = cfg.get("label_descriptions", pretrained.get("label_descriptions")) or {}
    if labels:
        items = labels.items() if isinstance(labels, Mapping) else enumerate(labels)
        kwargs["id2label"] = {int(i): descriptions.get(label, label) for i, label in items}
        kwargs["label2id"] = {label: i for i, label in kwargs["id2label"].items()}
    return _build(kwargs, overrides)


def convert_timm_bit_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `ResNetV2` (BiT) state dict -> `BitForImageClassification`'s. Pure. The head, a 1x1
    convolution `(K, C, 1, 1)` in timm, becomes the dense layer `(K, C)`."""
    state, unmatched = rename_keys(dict(state_dict), _TIMM_RULES)
    if unmatched:
        raise _error(
            f"These timm keys have no counterpart in BitForImageClassification: {name_list(unmatched)}. Only "
            "BiT's pre-activation ResNets (resnetv2_*_bit) convert."
        )
    if "classifier.1.weight" in state:
        weight = state["classifier.1.weight"]
        state["classifier.1.weight"] = weight.reshape(weight.shape[0], -1)
    return state


def load_timm_bit(timm_config: Mapping, state_dict: Mapping[str, torch.Tensor], overrides: Mapping):
    """(model, image processor) from a timm BiT repo's config.json (or a bare weights file's
    architecture name alone) and weights. The class count comes from the head's weights, as for a
    timm ViT (a bare file has no config saying it); an explicit `num_labels` override still wins."""
    state = convert_timm_bit_state_dict(state_dict)
    num_labels = int(state["classifier.1.weight"].shape[0]) if "classifier.1.weight" in state else 0
    config = bit_config_from_timm(timm_config, **{"num_labels": num_labels, **overrides})
    model = load_bit_converted(config, state)
    pretrained = timm_config.get("pretrained_cfg") or timm_config
    return model, timm_image_processor(config, pretrained)


# ============================================================================ big_transfer .npz


def _units(arrays: Mapping[str, np.ndarray]) -> dict[int, list[int]]:
    """block number -> sorted unit numbers present in the arrays (both from 1)."""
    found: dict[int, set[int]] = {}
    for key in arrays:
        if m := re.match(re.escape(NPZ_PREFIX) + r"block(\d+)/unit(\d+)/", key):
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {block: sorted(units) for block, units in sorted(found.items())}


def bit_config_from_npz(arrays: Mapping[str, np.ndarray], **overrides):
    """The `BitConfig` of a big_transfer `.npz`, read off its shapes: stem width and input channels
    (root kernel 7x7xCxW), units per block, each block's output width (its first unit's `c` kernel),
    classes (the head kernel; none when the file has no head). GroupNorm groups cannot be read off
    the weights: BiT's 32 unless `overrides` say otherwise. Resolution: BiT pretrains at 224."""
    return _build(_npz_kwargs(arrays), overrides)


def _npz_kwargs(arrays: Mapping[str, np.ndarray]) -> dict:
    root = np.asarray(arrays[NPZ_ROOT])
    units = _units(arrays)
    if not units:
        raise _error("The BiT checkpoint has a root block but no 'resnet/blockN/unitNN' arrays.")
    widths = []
    for block, found in units.items():
        if found != list(range(1, len(found) + 1)):
            raise _error(f"Block {block} of the BiT checkpoint has units {found}; expected 1..{len(found)}.")
        kernel = arrays.get(f"{NPZ_PREFIX}block{block}/unit01/c/standardized_conv2d/kernel")
        if kernel is None:
            raise _error(f"Block {block} of the BiT checkpoint has no 'unit01/c/standardized_conv2d/kernel'.")
        widths.append(int(np.shape(kernel)[-1]))
    if list(units) != list(range(1, len(units) + 1)):
        raise _error(f"The BiT checkpoint has blocks {list(units)}; expected 1..{len(units)}.")
    from .variants import BIT_CONFIG_DEFAULTS

    return {
        **BIT_CONFIG_DEFAULTS,
        "num_channels": int(root.shape[2]),
        "embedding_size": int(root.shape[3]),
        "depths": [len(found) for found in units.values()],
        "hidden_sizes": widths,
        "image_size": 224,
        "num_labels": int(np.shape(arrays[NPZ_PREFIX + "head/conv2d/kernel"])[-1])
        if NPZ_PREFIX + "head/conv2d/kernel" in arrays else 0,
    }


def convert_bit_npz(arrays: Mapping[str, np.ndarray], config) -> dict[str, torch.Tensor]:
    """big_transfer `.npz` arrays -> `BitForImageClassification`'s state dict, for `config`'s
    blocks. Pure. Kernels HWIO -> OIHW, the head's 1x1 kernel (1, 1, C, K) -> (K, C); GroupNorm
    vectors flattened. Arrays the model has no place for raise, naming them."""
    used: set[str] = set()
    missing: list[str] = []
    state: dict[str, torch.Tensor] = {}

    def put(target: str, name: str, kind: str) -> None:
        key = NPZ_PREFIX + name
        if key not in arrays:
            missing.append(key)
            return
        used.add(key)
        state[target] = jax_to_torch(arrays[key], kind)

    put("bit.embedder.convolution.weight", "root_block/standardized_conv2d/kernel", "conv")
    for s, depth in enumerate(config.depths):
        for u in range(depth):
            source, target = f"block{s + 1}/unit{u + 1:02d}/", f"bit.encoder.stages.{s}.layers.{u}."
            for i, part in enumerate("abc", start=1):
                put(f"{target}conv{i}.weight", f"{source}{part}/standardized_conv2d/kernel", "conv")
                put(f"{target}norm{i}.weight", f"{source}{part}/group_norm/gamma", "vector")
                put(f"{target}norm{i}.bias", f"{source}{part}/group_norm/beta", "vector")
            if u == 0:
                put(f"{target}downsample.conv.weight", f"{source}a/proj/standardized_conv2d/kernel", "conv")
    put("bit.norm.weight", "group_norm/gamma", "vector")
    put("bit.norm.bias", "group_norm/beta", "vector")
    if config.num_labels > 0:
        put("classifier.1.weight", "head/conv2d/kernel", "raw")
        put("classifier.1.bias", "head/conv2d/bias", "vector")
        if "classifier.1.weight" in state:
            kernel = state["classifier.1.weight"]
            state["classifier.1.weight"] = kernel.reshape(-1, kernel.shape[-1]).T.contiguous()
    if missing:
        raise _error(f"The BiT checkpoint lacks arrays its ResNet needs: {name_list(missing)}.")
    unknown = [k for k in arrays if k not in used and not (config.num_labels == 0 and k.startswith(NPZ_PREFIX + "head/"))]
    if unknown:
        raise _error(f"The BiT checkpoint has arrays with no place in BitForImageClassification: {name_list(unknown)}.")
    return state


def check_npz_name(file_name: str, found: Mapping) -> None:
    """The architecture read off the arrays (`depths`, `hidden_sizes`, `embedding_size`) must be the
    one a BiT file name announces ('BiT-M-R50x1.npz': ResNet-50, width factor 1)."""
    match = NPZ_BIT_NAME.search(Path(file_name).name)
    if match is None:
        return
    depth, width = int(match.group(1)), int(match.group(2))
    expected = _named_kwargs(depth, width, Path(file_name).name)
    wrong = [
        f"{what}: arrays {found[key]}, name {expected[key]}"
        for what, key in (("blocks per stage", "depths"), ("stage widths", "hidden_sizes"), ("stem width", "embedding_size"))
        if list(np.atleast_1d(found[key])) != list(np.atleast_1d(expected[key]))
    ]
    if wrong:
        raise _error(
            f"{Path(file_name).name} is named as BiT-R{depth}x{width}, but its arrays say otherwise ({'; '.join(wrong)}). "
            "Rename the file if the name is wrong."
        )


def load_bit_npz(arrays: Mapping[str, np.ndarray], file_name: str, overrides: Mapping):
    """(model, image processor) from big_transfer `.npz` arrays; the file name is checked."""
    found = _npz_kwargs(arrays)
    check_npz_name(file_name, found)  # before building: a wrong name is the clearer message
    config = _build(found, overrides)
    model = load_bit_converted(config, convert_bit_npz(arrays, config))
    # BiT's input pipeline: images scaled to [-1, 1]; tf.image.resize, bilinear.
    return model, image_processor(config, (0.5,) * 3, (0.5,) * 3, resample=2)


# ============================================================================ shared


def load_bit_converted(config, state_dict: Mapping[str, torch.Tensor]):
    """`BitForImageClassification(config)` with exactly these weights: every missing key, unexpected
    key and shape disagreement is an error that names it."""
    from transformers import BitForImageClassification

    return load_exactly(BitForImageClassification(config), state_dict, "the BiT ResNet")


__all__ = [
    "is_bit_npz",
    "is_timm_bit",
    "bit_config_from_timm",
    "convert_timm_bit_state_dict",
    "load_timm_bit",
    "bit_config_from_npz",
    "convert_bit_npz",
    "check_npz_name",
    "load_bit_npz",
    "load_bit_converted",
]
