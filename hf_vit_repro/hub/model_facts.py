"""What a model card says about the model itself, read from a checkpoint folder without loading
the weights: the architecture (config.json, through `ViTReproConfig` or transformers' `BitConfig`)
and the parameter count (the safetensors headers). `hub.card` renders it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import runs

#: The Hub's `pipeline_tag` of a checkpoint whose class (config.json's `architectures`) predicts
#: classes; any other class (the bare encoder `ViTReproModel`, the masked-patch-prediction and
#: masked-image-modeling pretraining heads, whose outputs are not classes) is an encoder, which the
#: Hub lists under `ENCODER_PIPELINE_TAG`.
CLASSIFIER_PIPELINE_TAG = "image-classification"
ENCODER_PIPELINE_TAG = "image-feature-extraction"


def pipeline_tag_of(architectures: list[str] | None) -> str:
    """`image-classification` for a `*ForImageClassification` class (or a config that names no
    class: a classifier is what this package trains by default), else `image-feature-extraction`."""
    name = (architectures or [None])[0]
    if name is None or name.endswith("ForImageClassification"):
        return CLASSIFIER_PIPELINE_TAG
    return ENCODER_PIPELINE_TAG


def count_parameters(checkpoint: str | os.PathLike) -> int:
    """Number of parameters stored in a checkpoint's safetensors weights (read from the file
    headers, so nothing is loaded)."""
    from huggingface_hub.hf_api import parse_local_safetensors_file_metadata

    total = 0
    for path in runs.weight_files(checkpoint):
        if path.suffix == ".safetensors":
            total += sum(parse_local_safetensors_file_metadata(path).parameter_count.values())
    return total


def _pair_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " x ".join(str(v) for v in value)
    return f"{value} x {value}"


def describe_model(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a card says about the architecture, read from config.json (through `ViTReproConfig`,
    for derived values such as a hybrid's token stride) and the weights' headers.

    The name is the paper's ("ViT-B/16", "R50+ViT-B/16": the number after "/" is the pixels per
    token, which for a hybrid is the CNN's stride times the 1 x 1 patches) when the config is a
    row of `variants`, else "custom ViT" / "ResNet+ViT" with the numbers in the table.
    """
    from ..configuration_vit_repro import ViTReproConfig
    from ..models import BIT, HYBRID, VIT, find_family
    from ..variants import PAPER_PARAMETER_COUNTS, variant_of

    checkpoint = Path(checkpoint)
    raw = runs.read_json(checkpoint / "config.json")
    family = find_family(raw)
    native = family is None and raw.get("model_type") == "vit"  # transformers' own ViT (`push --to transformers`)
    if family is None and not native:
        raise ValueError(
            f"{checkpoint}/config.json is a {raw.get('model_type')!r} model, not {ViTReproConfig.model_type!r}, "
            "'vit' or 'bit' (a BiT ResNet): convert it first (`vit-repro convert`)."
        )
    if family is BIT:
        return describe_bit_model(checkpoint, raw)
    family = family or VIT  # transformers' own ViT is described as the ViT it is
    if native:  # read through this package's config, for the same derived values
        from transformers import ViTConfig

        from ..convert import config_from_transformers

        vit_config = runs.load_pretrained(ViTConfig, checkpoint)
        pre_logits = {"representation_size": vit_config.pooler_output_size} if raw.get("architectures") == ["ViTModel"] else {}
        config = config_from_transformers(vit_config, **pre_logits)
    else:
        config = runs.load_pretrained(ViTReproConfig, checkpoint)
    backbone = raw.get("backbone_config") if family is HYBRID else None
    stride_h, stride_w = getattr(config, "token_stride_hw", config.patch_hw)
    variant = variant_of(config)
    name = variant or ("ResNet+ViT hybrid" if backbone else "custom ViT")
    id2label = config.id2label or {}
    parameters = count_parameters(checkpoint)
    rows = [
        ("Architecture", name + (" (hybrid: a BiT ResNet's feature map is cut into the tokens)" if backbone else "")),
        ("Parameters", f"{parameters / 1e6:.1f}M ({parameters:,}, counted in the uploaded weights)"),
        ("Layers / width / MLP / heads", f"{config.num_hidden_layers} / {config.hidden_size} / "
                                          f"{config.intermediate_size} / {config.num_attention_heads}"),
        ("Resolution", _pair_text(config.image_hw)),
    ]
    if backbone is None:
        rows.append(("Patch size", _pair_text(config.patch_hw)))
    else:
        rows.append(("Patch size", f"{_pair_text(config.patch_hw)} on the backbone's feature map: "
                                   f"{_pair_text((stride_h, stride_w))} pixels per token"))
        for key in ("depths", "hidden_sizes"):
            if backbone.get(key) is not None:
                label = {"depths": "blocks per stage", "hidden_sizes": "stage widths"}[key]
                rows.append((f"Backbone {label}", ", ".join(map(str, backbone[key]))))
    rows += [
        ("Tokens", f"{config.grid_size[0] * config.grid_size[1]} patches"
                   + (" + class token" if config.pooling == "token" else "")),
        ("Pooling", "class token" if config.pooling == "token" else "global average pooling of the patch tokens"),
        ("Pre-logits layer", f"{config.representation_size} (dense + tanh)" if config.representation_size else "none"),
    ]
    architecture = (raw.get("architectures") or [None])[0]
    encoder = pipeline_tag_of(raw.get("architectures")) == ENCODER_PIPELINE_TAG
    if encoder:  # no classifier: its config's labels are transformers' placeholders
        rows.append(("Head", f"{architecture}: no classifier (an encoder; its features serve image-feature-extraction)"))
        id2label = {}
    else:
        rows.append(("Classes", str(len(id2label))))
    return {
        "name": name,
        "family": "vit",
        "augreg": augreg_rows(raw.get("augreg")),
        "native": (raw.get("architectures") or ["ViTForImageClassification"])[0] if native else None,
        "architecture": architecture,
        "pipeline_tag": pipeline_tag_of(raw.get("architectures")),
        "variant": variant,
        "hybrid": family is HYBRID,
        "parameters": parameters,
        "paper_parameters": PAPER_PARAMETER_COUNTS.get(variant) if variant else None,
        "rows": rows,
        "labels": [id2label[k] for k in sorted(id2label)][:10],
        "num_labels": len(id2label),
    }


def augreg_rows(values) -> list[tuple[str, str]] | None:
    """The card's lines on how an AugReg checkpoint was trained, from config.json's `augreg` entry
    (written by `vit-repro convert` from the file name, `convert_augreg`); None when there is none
    or it cannot be read (nothing is claimed then)."""
    from ..convert_augreg import card_rows

    if not isinstance(values, dict):
        return None
    try:
        return card_rows(values)
    except (TypeError, ValueError, AttributeError):
        return None


def _bit_variant_name(config) -> str | None:
    """"BiT-R50x1" when a BitConfig is a row of `variants.BIT_VARIANTS` (blocks, widths, stem, block
    type, padding and groups as BiT builds them), else None."""
    from ..variants import BIT_VARIANTS, bit_config

    for name in BIT_VARIANTS:
        if _bit_shape(bit_config(name)) == _bit_shape(config):
            return name
    return None


def _bit_shape(config) -> dict[str, Any]:
    """What decides a BiT ResNet's computation, for naming it (the width factor folded into the widths)."""
    from transformers.models.bit.modeling_bit import make_div

    return {
        "depths": list(config.depths),
        "widths": [make_div(w * config.width_factor) for w in config.hidden_sizes],
        "stem": config.embedding_size,
        "layer_type": config.layer_type,
        "padding": config.global_padding,
        "groups": config.num_groups,
    }


def describe_bit_model(checkpoint: Path, raw: dict) -> dict[str, Any]:
    """What a card says about a BiT ResNet (transformers' `BitConfig`, model_type "bit"): the
    variant's name when the config is a row of `variants.BIT_VARIANTS`, depth (3 convolutions per
    bottleneck unit + the stem + the head), width factor, blocks and widths per stage, the
    parameters counted in the weights, and the published count of the same variant (timm's cards
    of BiT's released weights) when there is one."""
    from transformers import BitConfig

    from ..variants import BIT_PUBLISHED_PARAMETERS, BIT_STAGE_WIDTHS

    config = BitConfig.from_dict(raw)
    variant = _bit_variant_name(config)
    widths = _bit_shape(config)["widths"]
    depth = 3 * sum(config.depths) + 2
    factor = widths[-1] / BIT_STAGE_WIDTHS[-1] if len(widths) == len(BIT_STAGE_WIDTHS) else None
    id2label = config.id2label or {}
    parameters = count_parameters(checkpoint)
    resolution = raw.get("image_size")
    rows = [
        ("Architecture", f"{variant or 'custom BiT ResNet'}: ResNet-v2 ({config.layer_type} bottleneck units) with Group "
                         "Normalization and Weight Standardization (BiT, Kolesnikov et al. 2020)"),
        ("Parameters", f"{parameters / 1e6:.1f}M ({parameters:,}, counted in the uploaded weights)"),
        ("Depth / width factor", f"{depth} / " + (f"{factor:g}" if factor else "custom")),
        ("Blocks per stage", ", ".join(map(str, config.depths))),
        ("Stage widths", ", ".join(map(str, widths)) + f" (stem {config.embedding_size})"),
        ("GroupNorm groups", str(config.num_groups)),
        ("Resolution", _pair_text(resolution) if resolution else "not recorded (a ResNet runs at any size)"),
        ("Pre-logits features", f"{widths[-1]} (global average pooling of the last stage)"),
        ("Classes", str(len(id2label))),
    ]
    published = BIT_PUBLISHED_PARAMETERS.get(variant) if variant else None
    return {
        "name": variant or "custom BiT",
        "family": "bit",
        "architecture": (raw.get("architectures") or [None])[0],
        "pipeline_tag": pipeline_tag_of(raw.get("architectures")),
        "variant": variant,
        "hybrid": False,
        "parameters": parameters,
        "paper_parameters": None,
        "published_parameters": (
            {"millions": published[0], "classes": published[1], "source": published[2]} if published else None
        ),
        "rows": rows,
        "labels": [id2label[k] for k in sorted(id2label)][:10],
        "num_labels": len(id2label),
    }
