"""Published ViT weights -> this package's weights.

Every converter is a pure function from a source state dict to ours (names of
`ViTReproForImageClassification`), plus a loader that reads a local folder or a Hub repo id
through the same code path (`from_pretrained` / `hf_hub_download`).

Sources handled here:
- transformers' own ViT (`ViTModel`, `ViTForImageClassification`; the v5 names and the v4 names
  that checkpoints on the Hub, e.g. `google/vit-base-patch16-224`, still carry);
- timm's `VisionTransformer` (state dicts of `vit_*` models).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .configuration_vit_repro import ViTReproConfig
from .modeling_vit_repro import ViTReproForImageClassification

# Our layout, for reference (prefix "vit." inside ViTReproForImageClassification):
#   embeddings.{cls_token, position_embeddings, patch_embeddings.projection.{weight,bias}}
#   layers.N.{layernorm_before, attention.qkv, attention.o_proj, layernorm_after, mlp.fc1, mlp.fc2}
#   layernorm, pooler.dense (pre-logits), classifier (outside "vit.")

_TRANSFORMERS_RULES = [
    # v4 names (still in Hub checkpoints) -> v5 names; the v5 names then map 1:1 onto ours.
    (r"encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"encoder\.layer\.(\d+)\.", r"layers.\1."),
]

_TIMM_BACKBONE = "vit.embeddings.patch_embeddings.backbone.bit."
_TIMM_RULES = [
    # hybrid: timm's ResNetV2 (preact=False) -> transformers' BitBackbone (layer_type="bottleneck")
    (r"^patch_embed\.backbone\.stem\.conv\.", _TIMM_BACKBONE + "embedder.convolution."),
    (r"^patch_embed\.backbone\.stem\.norm\.", _TIMM_BACKBONE + "embedder.norm."),
    (r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.", _TIMM_BACKBONE + r"encoder.stages.\1.layers.\2."),
    (r"^cls_token$", "vit.embeddings.cls_token"),
    (r"^pos_embed$", "vit.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"vit.layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"vit.layers.\1.attention.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"vit.layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"vit.layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"vit.layers.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"vit.layers.\1.mlp.fc2."),
    (r"^norm\.", "vit.layernorm."),
    (r"^head\.", "classifier."),
]


class ConversionError(ValueError):
    """A source checkpoint does not fit the target layout; the message names the keys."""


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


def _fuse_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate separate `q_proj`/`k_proj`/`v_proj` tensors into our fused `qkv` (q, k, v order)."""
    fused = dict(state_dict)
    for key in [k for k in state_dict if ".attention.q_proj." in k]:
        parts = [key.replace(".q_proj.", f".{name}.") for name in ("q_proj", "k_proj", "v_proj")]
        missing = [p for p in parts if p not in state_dict]
        if missing:
            raise ConversionError(f"Cannot fuse the attention projections: missing {missing}.")
        fused[key.replace(".q_proj.", ".qkv.")] = torch.cat([state_dict[p] for p in parts], dim=0)
        for part in parts:
            del fused[part]
    return fused


def convert_transformers_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers `ViTModel` / `ViTForImageClassification` state dict (v4 or v5 names) -> ours.

    `ViTModel`'s `pooler.dense` (the pre-logits layer of the in21k checkpoints) becomes our
    representation layer `vit.pooler.dense`.
    """
    state = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            state[key] = value
        else:
            state["vit." + key.removeprefix("vit.")] = value
    state, _ = _rename(state, _TRANSFORMERS_RULES + [(r"^", "")])
    return _fuse_qkv(state)


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `VisionTransformer` state dict (fused qkv, `blocks.N`, `head`) -> ours."""
    state, unmatched = _rename(state_dict, _TIMM_RULES)
    if unmatched:
        raise ConversionError(
            f"These timm keys have no counterpart in ViTReproForImageClassification: {sorted(unmatched)}. "
            "Only plain ViTs (class token or no prefix tokens, no register tokens, no layer scale) convert."
        )
    return state


def config_from_transformers(hf_config, **overrides) -> ViTReproConfig:
    """transformers `ViTConfig` -> `ViTReproConfig` (same field names; token pooling)."""
    shared = (
        "image_size patch_size num_channels hidden_size num_hidden_layers num_attention_heads intermediate_size "
        "hidden_act layer_norm_eps hidden_dropout_prob attention_probs_dropout_prob qkv_bias initializer_range "
        "id2label label2id problem_type"
    ).split()
    kwargs = {name: getattr(hf_config, name) for name in shared if getattr(hf_config, name, None) is not None}
    # transformers' interpolate_pos_encoding resamples bicubically; keep that for converted models.
    kwargs["position_embedding_interpolation"] = "bicubic"
    return ViTReproConfig(**{**kwargs, **overrides})


def load_converted(config: ViTReproConfig, state_dict: dict[str, torch.Tensor]) -> ViTReproForImageClassification:
    """Build our model from `config` and a converted state dict; every missing or unexpected key
    is an error that names it (nothing is dropped silently)."""
    model = ViTReproForImageClassification(config)
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"Converted weights do not fit the model. Missing: {sorted(result.missing_keys)}. "
            f"Unexpected: {sorted(result.unexpected_keys)}."
        )
    return model.eval()


def from_transformers_model(hf_model) -> ViTReproForImageClassification:
    """An in-memory transformers ViT (`ViTModel` or `ViTForImageClassification`) -> our model with the same weights."""
    state = convert_transformers_state_dict(hf_model.state_dict())
    overrides = {}
    if "vit.pooler.dense.weight" in state:
        overrides["representation_size"] = state["vit.pooler.dense.weight"].shape[0]
    if "classifier.weight" not in state:
        overrides["num_labels"] = 0
    config = config_from_transformers(hf_model.config, **overrides)
    return load_converted(config, state)


def load_transformers_checkpoint(source: str | Path) -> ViTReproForImageClassification:
    """A transformers ViT checkpoint (local folder or Hub repo id) -> our model."""
    from transformers import AutoConfig, ViTForImageClassification, ViTModel

    hf_config = AutoConfig.from_pretrained(source)
    if hf_config.model_type != "vit":
        raise ConversionError(f"{source} holds a {hf_config.model_type!r} model, not a transformers ViT ('vit').")
    architectures = hf_config.architectures or []
    cls = ViTForImageClassification if "ViTForImageClassification" in architectures else ViTModel
    return from_transformers_model(cls.from_pretrained(source))


def convert(source: str | Path, output_dir: str | Path, image_size: int | None = None, num_labels: int | None = None):
    """Convert a published checkpoint to a folder that `from_pretrained` (and the remote-code path)
    loads, with an image processor config matching the source's preprocessing.

    `image_size` resamples the position embeddings for good; `num_labels` replaces the head by a
    zero-initialised one (the paper's fine-tuning step, which also drops the pre-logits layer).
    """
    from transformers import AutoImageProcessor, ViTImageProcessor

    model = load_transformers_checkpoint(source)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        processor = ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if image_size is not None:
        model.resize_position_embeddings(image_size)
    if num_labels is not None:
        model.reset_classifier(num_labels)
    height, width = model.config.image_hw
    processor.size = {"height": height, "width": width}
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
