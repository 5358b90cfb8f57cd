"""This package's models -> the ecosystem's own forms: transformers' ViT classes (model_type "vit":
no remote code, no `auto_map`) and timm folders (what `timm.create_model("local-dir:FOLDER",
pretrained=True)` loads). `convert(..., to="transformers" | "timm")` and `vit-repro convert --to`
reach these; every model is checked first and one that does not map exactly is refused with the
reason (a `ConversionError` naming what does not map), before anything is written.

What maps to transformers (v5 `ViTConfig`: class-token pooling, optional pooler dense + activation,
`qkv_bias`, any activation of `ACT2FN`, any LayerNorm epsilon):

- `ViTReproForImageClassification`, token pooling, no pre-logits layer -> `ViTForImageClassification`
  (with `num_labels=0` both return the class token's final state as logits);
- the same with a pre-logits layer (`representation_size`) and no head -> `ViTModel`, whose pooler
  (dense + tanh on the class token) is that layer: `pooler_output` equals ours;
- `ViTReproForMaskedImageModeling` on a square token grid -> `ViTForMaskedImageModeling`;
- a BiT ResNet is transformers' own `BitForImageClassification` already and passes through.

Refused: global average pooling (transformers' ViT always reads the class token), the hybrids
(transformers' ViT has no CNN stem), a pre-logits layer under a classification head
(`ViTForImageClassification` puts the head on the class token directly), masked patch prediction
(no transformers class), and masked image modeling on a non-square grid (transformers lays the
tokens out on a square). Differences that leave the weights' function at the trained resolution
unchanged are not refused but worth knowing: transformers resamples position embeddings bicubically
(without antialiasing) for `interpolate_pos_encoding`, whatever our
`position_embedding_interpolation` was, and has no dropout after the MLP's first layer (training only).

What maps to timm (`VisionTransformer`, timm 1.0): plain ViTs with a class token or with global
average pooling (`class_token=False, global_pool="avg", fc_norm=False`: the final norm on every
token, then the mean, as ours), exact or tanh GELU, and the hybrids whose CNN is one of timm's
hybrid entry points (`convert_common.TIMM_HYBRIDS`: timm builds their ResNets from fixed tables, 64-wide
stem, 32 groups). Refused: a pre-logits layer (timm >= 0.9 has none), LayerNorm epsilon other than
timm's 1e-6, other activations, other hybrid CNNs, the self-supervised heads and BiT ResNets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .convert_common import (
    TIMM_SIZES,
    TIMM_ACTIVATIONS,
    TIMM_HYBRIDS,
    TIMM_NAMES,
    TRANSFORMERS_SHARED_FIELDS,
    ConversionError,
    name_list,
    rename_keys,
    load_exactly,
    name_rules,
    timm_preprocessing,
    write_atomically,
)
from .modeling_vit_repro import (
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
)
from .configuration_vit_repro import HYBRID_BACKBONE_DEFAULTS
from .variants import BACKBONES, SIZES

# ============================================================================ transformers


def auto_class_name(architectures) -> str:
    """The Auto class that loads a checkpoint saved from one of `architectures` (config.json):
    this package's classes through `AUTO_MAP`, transformers' own (`ViTForImageClassification`,
    `BitForImageClassification`, `ViTModel`...) by their task suffix."""
    from .modeling_vit_repro import AUTO_MAP

    for auto_class, target in AUTO_MAP.items():
        if target.rsplit(".", 1)[-1] in architectures:
            return auto_class
    for suffix in ("ForImageClassification", "ForMaskedImageModeling"):
        if any(name.endswith(suffix) for name in architectures):
            return "AutoModel" + suffix
    return "AutoModel"


def transformers_refusals(model) -> list[str]:
    """Why `model` has no exact counterpart among transformers' ViT classes (empty: it has one)."""
    from .models import family_of

    if family_of(model).native_to_transformers:
        return []
    config = model.config
    reasons = []
    if isinstance(model, ViTReproForMaskedPatchPrediction):
        reasons.append("the masked patch prediction head (paper Sec. 4.6) has no transformers class")
    if config.is_hybrid:
        reasons.append("the hybrid's ResNet stem: transformers' ViT embeds image patches only (--to timm keeps it)")
    if config.pooling != "token":
        reasons.append(
            f"pooling={config.pooling!r} (no class token, mean of the patch tokens): transformers' ViT reads the "
            "class token (--to timm keeps it)"
        )
    if isinstance(model, ViTReproForImageClassification) and config.representation_size and config.num_labels:
        reasons.append(
            f"the pre-logits layer (representation_size={config.representation_size}) under the classification head: "
            "ViTForImageClassification has none (--num-labels K drops it with the head)"
        )
    if isinstance(model, ViTReproForMaskedImageModeling) and (
        len(set(config.grid_size)) != 1 or len(set(config.patch_hw)) != 1
    ):
        reasons.append(
            f"masked image modeling on a {config.grid_size[0]}x{config.grid_size[1]} token grid of "
            f"{config.patch_hw[0]}x{config.patch_hw[1]} patches: ViTForMaskedImageModeling needs a square grid "
            "of square patches"
        )
    return reasons


def transformers_config(model):
    """The `ViTConfig` of `model` (a model `transformers_refusals` accepts)."""
    from transformers import ViTConfig

    config = model.config
    kwargs = {name: getattr(config, name) for name in TRANSFORMERS_SHARED_FIELDS if getattr(config, name, None) is not None}
    kwargs = {name: list(value) if isinstance(value, tuple) else value for name, value in kwargs.items()}
    patch = config.patch_hw[0]
    kwargs["encoder_stride"] = getattr(model, "encoder_stride", patch)
    if config.representation_size:
        kwargs.update(pooler_output_size=config.representation_size, pooler_act="tanh")
    return ViTConfig(**kwargs)


def split_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our fused `qkv` tensors -> transformers' `q_proj` / `k_proj` / `v_proj` (q, k, v order);
    the inverse of `convert._fuse_qkv`."""
    split = {}
    for key, value in state_dict.items():
        if ".attention.qkv." in key:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                split[key.replace(".qkv.", f".{name}.")] = part.contiguous()
        else:
            split[key] = value
    return split


def to_transformers(model):
    """`model` (this package's, or a BiT ResNet) -> the transformers model with the same weights
    and function (in eval mode): `ViTForImageClassification`, `ViTModel` (a pre-logits layer and no
    head) or `ViTForMaskedImageModeling`; a BiT ResNet is returned as it is. Raises
    `ConversionError` listing every part that does not map (see the module docstring)."""
    from transformers import ViTForImageClassification, ViTForMaskedImageModeling, ViTModel

    from .models import family_of

    if family_of(model).native_to_transformers:
        return model
    reasons = transformers_refusals(model)
    if reasons:
        raise ConversionError("transformers' own ViT cannot hold this model exactly: " + "; ".join(reasons) + ".")
    config = transformers_config(model)
    state = split_qkv({k: v.detach() for k, v in model.state_dict().items()})
    if isinstance(model, ViTReproForMaskedImageModeling):
        native = ViTForMaskedImageModeling(config)
    elif model.config.representation_size:  # no head (refused above otherwise): the pooler is the layer
        native = ViTModel(config)
        state = {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith("classifier.")}
    else:
        native = ViTForImageClassification(config)
    return load_exactly(native, state, f"transformers' {type(native).__name__}")


# ============================================================================ timm

#: timm entry points of plain ViTs, `vit_{size}_patch{P}_{resolution}` (timm/models/vision_transformer.py,
#: timm 1.0; tests/test_convert_native.py checks each is registered). A model that is none of them is
#: written under the ViT-B/16 entry point with `model_args` giving every size, as timm's own
#: `save_for_hf` records a model built with keyword arguments.
TIMM_PLAIN_ENTRY_POINTS = frozenset(
    f"vit_{size}_patch{patch}_{resolution}"
    for size, patch, resolution in [
        ("tiny", 16, 224), ("tiny", 16, 384), ("small", 32, 224), ("small", 32, 384), ("small", 16, 224),
        ("small", 16, 384), ("small", 8, 224), ("base", 32, 224), ("base", 32, 384), ("base", 16, 224),
        ("base", 16, 384), ("base", 8, 224), ("large", 32, 384), ("large", 16, 224),
        ("large", 16, 384), ("large", 14, 224), ("huge", 14, 224),
    ]
)
_OURS_TO_TIMM = name_rules(TIMM_NAMES, reverse=True)
#: timm's defaults that `VisionTransformer` hard-codes and this package makes a config field of.
TIMM_LAYER_NORM_EPS = 1e-6


def _timm_hybrid_name(config) -> str | None:
    """The timm entry point (with a resolution it registers) building `config`'s hybrid CNN, or None."""
    backbone = config.backbone_config
    shape = (list(backbone.depths), list(backbone.hidden_sizes))
    fixed = {key: getattr(backbone, key) for key in ("embedding_size", "num_groups", "layer_type", "global_padding")}
    if fixed != {key: HYBRID_BACKBONE_DEFAULTS[key] for key in fixed} or backbone.width_factor != 1:
        return None
    height = config.image_hw[0]
    for name, (_, cnn, resolutions) in TIMM_HYBRIDS.items():
        depths, widths = BACKBONES[cnn] if isinstance(cnn, str) else cnn
        if shape == (list(depths), list(widths)):
            return f"{name}_{height if height in resolutions else resolutions[0]}"
    return None


def timm_refusals(model) -> list[str]:
    """Why `model` has no exact counterpart among timm's ViTs (empty: it has one)."""
    from .models import family_of

    if refusal := family_of(model).timm_refusal():
        return [refusal]
    config = model.config
    reasons = []
    if not isinstance(model, ViTReproForImageClassification):
        reasons.append(f"the {type(model).__name__} head: timm's VisionTransformer is a classifier")
    if config.representation_size:
        reasons.append(f"the pre-logits layer (representation_size={config.representation_size}): timm >= 0.9's "
                       "VisionTransformer has none (--num-labels K drops it with the head)")
    if config.layer_norm_eps != TIMM_LAYER_NORM_EPS:
        reasons.append(f"layer_norm_eps={config.layer_norm_eps:g}: timm's VisionTransformer uses 1e-6")
    if config.hidden_act not in TIMM_ACTIVATIONS.values():
        reasons.append(f"hidden_act={config.hidden_act!r}: timm's act_layer names map 'gelu' and 'gelu_pytorch_tanh' only")
    if config.intermediate_size != int(config.hidden_size * (config.intermediate_size / config.hidden_size)):
        reasons.append(f"an MLP width {config.intermediate_size} that timm's mlp_ratio cannot give exactly")
    if config.is_hybrid and _timm_hybrid_name(config) is None:
        known = ", ".join(f"{name} ({BACKBONES[c][0] if isinstance(c, str) else c[0]} blocks)"
                          for name, (_, c, _) in TIMM_HYBRIDS.items())
        reasons.append(
            f"the hybrid's ResNet (blocks {list(config.backbone_config.depths)}, widths "
            f"{list(config.backbone_config.hidden_sizes)}): timm builds its hybrids' ResNets from fixed tables "
            f"(64-wide stem, 32 groups): {known}"
        )
    return reasons


def _timm_architecture(config) -> str:
    if config.is_hybrid:
        return _timm_hybrid_name(config)
    sizes = {v: k for k, v in TIMM_SIZES.items()}
    size = next((sizes[name] for name, shape in SIZES.items() if shape == (
        config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size)), None)
    patch, height = config.patch_hw[0], config.image_hw[0]
    for resolution in (height, 224, 384):
        name = f"vit_{size}_patch{patch}_{resolution}"
        if name in TIMM_PLAIN_ENTRY_POINTS:
            return name
    return "vit_base_patch16_224"


def _pair_or_int(pair):
    return pair[0] if pair[0] == pair[1] else list(pair)


def timm_config(model, processor) -> dict:
    """The config.json of a timm folder holding `model` (a model `timm_refusals` accepts), as
    timm's hub repos have it: `architecture`, `num_classes`, `num_features`, `global_pool`,
    `label_names`, `model_args` (every size, so the entry point's own defaults do not matter) and
    `pretrained_cfg` (input size; mean, std, interpolation, crop_pct and crop_mode from `processor`:
    a processor that resizes straight to the model's size is timm's crop_mode "squash" at crop_pct 1)."""
    config = model.config
    token = config.pooling == "token"
    args = {
        "img_size": _pair_or_int(config.image_hw),
        "patch_size": _pair_or_int(config.patch_hw),
        "in_chans": config.num_channels,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "qkv_bias": config.qkv_bias,
        "class_token": token,
        "global_pool": "token" if token else "avg",
        "num_classes": config.num_labels,
    }
    if not token:
        args["fc_norm"] = False
    activation = {ours: theirs for theirs, ours in TIMM_ACTIVATIONS.items()}[config.hidden_act]
    if activation != "gelu":
        args["act_layer"] = activation
    for name, value in (("proj_drop_rate", config.hidden_dropout_prob), ("pos_drop_rate", config.hidden_dropout_prob),
                        ("attn_drop_rate", config.attention_probs_dropout_prob)):
        if value:
            args[name] = value
    labels = [config.id2label[i] for i in range(config.num_labels)] if config.num_labels else []
    default_labels = [f"LABEL_{i}" for i in range(config.num_labels)]
    pretrained_cfg = {
        "custom_load": False,
        "input_size": [config.num_channels, *config.image_hw],
        "fixed_input_size": True,
        **timm_preprocessing(processor),
        "num_classes": config.num_labels,
        "pool_size": None,
        "first_conv": "patch_embed.backbone.stem.conv" if config.is_hybrid else "patch_embed.proj",
        "classifier": "head",
    }
    out = {
        "architecture": _timm_architecture(config),
        "num_classes": config.num_labels,
        "num_features": config.hidden_size,
        "global_pool": args["global_pool"],
    }
    if labels and labels != default_labels:
        out["label_names"] = labels
    return {**out, "model_args": args, "pretrained_cfg": pretrained_cfg}


def to_timm_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights in timm's names (`convert_common.TIMM_NAMES` read right to left). Every weight
    must find a name: otherwise a `ConversionError` lists those that do not."""
    state, unmatched = rename_keys({k: v.detach().contiguous() for k, v in model.state_dict().items()}, _OURS_TO_TIMM)
    if unmatched:
        raise ConversionError(f"These weights have no name in timm's VisionTransformer: {name_list(unmatched)}.")
    return state


def write_timm_folder(model, processor, output_dir: str | Path) -> Path:
    """Write `model` as a timm folder: `model.safetensors` (timm's names) and `config.json`
    (`timm_config`), atomically (`convert_common.write_atomically`). Refuses, with every reason, a model
    without an exact timm counterpart (`timm_refusals`) before writing anything."""
    from safetensors.torch import save_file

    reasons = timm_refusals(model)
    if reasons:
        raise ConversionError("timm's VisionTransformer cannot hold this model exactly: " + "; ".join(reasons) + ".")
    state, config = to_timm_state_dict(model), timm_config(model, processor)

    def write(folder: Path) -> None:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    output_dir = Path(output_dir)
    write_atomically(output_dir, write)
    return output_dir
