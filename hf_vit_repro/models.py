"""The model families the package trains and evaluates, one object each: callers ask the family what
to do (`family_of(model).reset_head(model, 10)`, `family_for_variant("BiT-R50x1").config_from_variant(...)`),
they never ask which family a model is.

- `VIT`: this package's Vision Transformer (`ViTReproConfig`, `ViTReproForImageClassification`;
  model_type "vit_repro", shipped with remote code). The dense-prediction backbone and the prompt-
  or adapter-tuned ViTs (`train.method`) are the same config and classes, so they are this family.
- `HYBRID`: the same ViT with a BiT ResNet stem under its patch embedding (paper Sec. 3.1,
  "R50+ViT-B/16"): a `ViTReproConfig` with a `backbone_config`. It does everything the ViT does,
  except masked patch prediction (its CNN sees the corrupted patches' pixels).
- `BIT`: the paper's CNN baselines, BiT ResNets (Kolesnikov et al., ECCV 2020), as transformers' own
  `BitConfig` / `BitForImageClassification` (model_type "bit"): their checkpoints load in any
  transformers installation without this package or remote code (`variants.bit_config`).

What BiT lacks compared with the ViT, and how its family fills it in:

- Resolution: a ResNet has no position embeddings and runs at any size; the size it is trained at is
  kept as an extra `image_size` entry of its `BitConfig` (saved in config.json), which evaluation,
  cards and FLOPs counts read (`image_size`, `set_image_size`).
- Fine-tuning head (BiT Sec. 3.3, paper Sec. 3.2): a new zero-initialised K-way dense layer on the
  pooled features (`reset_head`); BiT has no pre-logits layer to drop.
- Weight decay: parameters with one dimension (GroupNorm scales and shifts, the head's bias) skip it,
  as the ViT's biases and norms do (`no_weight_decay`).
- Pre-logits features (few-shot): the globally average-pooled output of BiT's final GroupNorm + ReLU,
  (B, C) (`pre_logits`).
- Recipes: no dropout, stochastic depth, pre-logits layer or ViT memory options (`fixed_model_fields`).

A new family (another architecture, or a ViT specialisation that behaves differently) subclasses
`ModelFamily` (or the family it specialises) and goes into `FAMILIES` before the family it refines.
"""

from __future__ import annotations

import copy
from typing import Any

#: model_type of each family's config, as written to config.json.
VIT_MODEL_TYPE = "vit_repro"
BIT_MODEL_TYPE = "bit"
MODEL_TYPES = (VIT_MODEL_TYPE, BIT_MODEL_TYPE)
#: The resolution BiT pretrains at, for a BiT checkpoint that records none (BiT Sec. 3.3).
BIT_DEFAULT_IMAGE_SIZE = 224

#: The tiny model of DESIGN.md (image 32, patch 8, width 32, 2 layers) that smoke runs train.
SMOKE_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)
#: ... and its hybrid version: a one-stage BiT ResNet (stride 4) under 2 x 2 "patches".
SMOKE_BACKBONE = dict(depths=[1], hidden_sizes=[64], embedding_size=32, num_groups=8)
#: A BiT ResNet shrunk the same way: two stages of one pre-activation unit, 16-32-64 channels.
SMOKE_BIT = dict(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16, num_groups=8)

#: What decides a ViT's weights' shapes and outputs (`ModelFamily.architecture`).
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
#: The same for a BiT ResNet (transformers' BitConfig): what decides its weights' shapes and outputs.
BIT_ARCHITECTURE_FIELDS = ("depths", "hidden_sizes", "embedding_size", "num_channels", "layer_type", "num_groups",
                           "global_padding", "width_factor")


def _config(config_or_model: Any):
    """The config of a model (a peft wrapper answers for the model it wraps), or the config itself."""
    return getattr(config_or_model, "config", config_or_model)


def _field(config, key: str, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def _is_bit(config_or_model: Any) -> bool:
    """Whether a config or model (or a config.json dict) is a BiT ResNet."""
    return _field(_config(config_or_model), "model_type") == BIT_MODEL_TYPE


class ModelFamily:
    """What one family of models decides; one instance per family (`FAMILIES`).

    `name` is how messages call it ("BiT ResNet"), `paper_label` how the paper's scaling study labels
    it (Table 6, Figure 5: "ViT", "Hybrid", "ResNet (BiT)"), `model_type` its config.json's.
    `has_blocks`: transformer blocks that prompt and adapter methods (`train.method`) adapt, patch
    tokens that the analysis figures read. `native_to_transformers`: its classes are transformers' own
    (conversion to transformers keeps the model as it is). `fixed_model_fields`: recipe `model.*`
    fields the family has no use for, with the only value it accepts (`recipe_problem`)."""

    name: str
    paper_label: str
    model_type: str
    has_blocks: bool = True
    native_to_transformers: bool = False
    fixed_model_fields: dict[str, Any] = {}
    #: `model.config` fields of this family's tiny smoke-test model (`smoke_config`)
    smoke_fields: dict[str, Any] = {}
    #: what the family lacks, for `recipe_problem`'s message
    lacks: str = ""

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    # ------------------------------------------------------------------ names and configs
    def variant_names(self) -> list[str]:
        """The named variants of this family, canonical spelling ("ViT-B/16")."""
        raise NotImplementedError

    def describe_variants(self) -> str:
        """The family's names, for error messages."""
        return ", ".join(self.variant_names())

    def owns(self, config) -> bool:
        """Whether `config` (a config or a config.json dict) is of this family."""
        raise NotImplementedError

    def config_from_variant(self, name: str, **overrides):
        """The config of the named variant; `overrides` are fields of the family's config."""
        raise NotImplementedError

    def completed_config(self, variant: str | None, fields: dict[str, Any], checkpoint_config):
        """The config a recipe's `model.variant` / `model.config` (`fields`) asks for, completed by
        `checkpoint_config` (of any family) where they say nothing; to compare architectures."""
        raise NotImplementedError

    def architecture(self, config) -> dict[str, Any]:
        """The shape-deciding part of a config (`training.build.architecture`)."""
        raise NotImplementedError

    def classifier_class(self):
        """The image classifier class of this family."""
        raise NotImplementedError

    # ------------------------------------------------------------------ models
    def reset_head(self, model, num_labels: int, id2label: dict[int, str] | None = None,
                   keep_representation: bool = False) -> None:
        """The fine-tuning step: a zero-initialised `num_labels`-way head (paper Sec. 3.2; BiT Sec.
        3.3 initialises its new head to zero as well). A ViT also drops its pre-logits layer unless
        `keep_representation`."""
        raise NotImplementedError

    def image_hw(self, config_or_model) -> tuple[int, int] | None:
        """(height, width) the model runs at; None when the config records none."""
        raise NotImplementedError

    def image_size(self, config_or_model) -> int | None:
        """The square resolution a model runs at (None when its config records none); a non-square
        one raises ValueError."""
        hw = self.image_hw(config_or_model)
        if hw is None:
            return None
        height, width = hw
        if height != width:
            raise ValueError(f"the model's image_size is {height}x{width}; a square resolution is needed here")
        return int(height)

    def set_image_size(self, model, size: int) -> None:
        """Run `model` at `size` from now on."""
        raise NotImplementedError

    def check_resolution(self, model, resolution: int) -> int:
        """`resolution` if the model can run at it, else a ValueError saying which sizes work."""
        if resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        return int(resolution)

    def pre_logits(self, model, pixel_values, interpolate_pos_encoding: bool = False):
        """The frozen representation few-shot evaluation reads, (B, `pre_logits_dim`)."""
        raise NotImplementedError

    def pre_logits_dim(self, config_or_model) -> int:
        """Width of `pre_logits`' features (what the classifier reads)."""
        raise NotImplementedError

    def flops(self, config_or_model, image_size, head: bool = True) -> int:
        """Forward FLOPs of one image at `image_size` (int or (height, width)), `flops.py`'s formulas."""
        raise NotImplementedError

    # ------------------------------------------------------------------ recipes
    def recipe_problem(self, model_recipe, subject: str | None = None) -> str | None:
        """Why a recipe's `model` section cannot build this family (the `fixed_model_fields` it
        sets otherwise), or None. `subject` says where the model comes from (default: the variant)."""
        wrong = [f"model.{key}={getattr(model_recipe, key)!r}" for key, value in self.fixed_model_fields.items()
                 if getattr(model_recipe, key) != value]
        if not wrong:
            return None
        subject = subject or f"`model.variant` {model_recipe.variant}"
        return (f"{subject} is a {self.name}, which has no {self.lacks}; remove {', '.join(wrong)} "
                "(rates 0, representation_size null, the options false).")

    def apply_recipe_fields(self, config, fields: dict[str, Any]) -> None:
        """Set a recipe's config fields (dropout rates, a method's prompts) on a loaded checkpoint's
        config; a family without them (`fixed_model_fields`) keeps its config as it is."""
        for key, value in fields.items():
            setattr(config, key, value)

    def masked_patch_prediction_problem(self, model_name: str) -> str | None:
        """Why masked patch prediction (paper Sec. 4.6) cannot pretrain this family, or None."""
        return None

    def smoke_config(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A recipe's `model.config` shrunk to a tiny model of this family (`training.smoke_recipe`)."""
        return {**fields, **copy.deepcopy(self.smoke_fields)}

    # ------------------------------------------------------------------ conversion
    def timm_refusal(self) -> str | None:
        """Why `vit-repro convert --to timm` cannot write this family, or None."""
        return None


class ViTFamily(ModelFamily):
    name = "ViT"
    paper_label = "ViT"
    model_type = VIT_MODEL_TYPE
    smoke_fields = SMOKE_MODEL

    def variant_names(self) -> list[str]:
        from .variants import HYBRIDS, variant_names

        return [name for name in variant_names() if name not in HYBRIDS]

    def describe_variants(self) -> str:
        from .variants import PATCH_SIZES, SIZES

        return f"ViT-<size>/<patch> with size {'/'.join(SIZES)} and patch {'/'.join(map(str, PATCH_SIZES))}"

    def owns(self, config) -> bool:
        return _field(config, "model_type") == self.model_type and not _field(config, "backbone_config")

    def config_from_variant(self, name: str, **overrides):
        from .configuration_vit_repro import ViTReproConfig

        return ViTReproConfig.from_variant(name, **overrides)

    def completed_config(self, variant, fields, checkpoint_config):
        from .configuration_vit_repro import ViTReproConfig
        from .variants import variant_kwargs

        if not isinstance(checkpoint_config, ViTReproConfig):  # a ViT variant asked of another family's checkpoint
            return self.config_from_variant(variant, **fields)
        expected = {"backbone_config": None, **variant_kwargs(variant)} if variant else {}
        return ViTReproConfig(**{**checkpoint_config.to_dict(), **expected, **fields})

    def architecture(self, config) -> dict[str, Any]:
        arch = {key: getattr(config, key, None) for key in ARCHITECTURE_FIELDS}
        arch["patch_size"] = list(config.patch_hw) if hasattr(config, "patch_hw") else arch["patch_size"]
        backbone = getattr(config, "backbone_config", None)
        arch["backbone"] = None if backbone is None else {"depths": list(backbone.depths),
                                                          "hidden_sizes": list(backbone.hidden_sizes)}
        return arch

    def classifier_class(self):
        from .modeling_vit_repro import ViTReproForImageClassification

        return ViTReproForImageClassification

    def reset_head(self, model, num_labels, id2label=None, keep_representation=False) -> None:
        model.reset_classifier(num_labels, id2label=id2label, keep_representation=keep_representation)

    def image_hw(self, config_or_model) -> tuple[int, int]:
        return tuple(_config(config_or_model).image_hw)

    def set_image_size(self, model, size: int) -> None:
        """Resample the position embeddings once (paper Sec. 3.2) unless the model runs at `size` already."""
        if self.image_hw(model) != (int(size), int(size)):
            model.resize_position_embeddings(int(size))

    def check_resolution(self, model, resolution: int) -> int:
        """A positive multiple of the model's token stride: the patch size, times the CNN's stride
        for hybrids."""
        config = model.config
        stride = config.token_stride_hw[0]
        if config.token_stride_hw[1] != stride:
            raise ValueError(f"the model's patches are {config.token_stride_hw}; evaluation uses square images")
        if resolution < 1 or resolution % stride:
            nearest = max(stride, round(resolution / stride) * stride)
            what = "patch size" if not config.is_hybrid else "patch size times its CNN's stride"
            raise ValueError(
                f"resolution {resolution} is not a multiple of the model's {what} ({stride} px); use e.g. {nearest}"
            )
        return int(resolution)

    def pre_logits(self, model, pixel_values, interpolate_pos_encoding: bool = False):
        """A ViT's `pooler_output`: the final class-token state, or the pre-logits layer's output."""
        base = getattr(model, "base_model", model)
        return base(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).pooler_output

    def pre_logits_dim(self, config_or_model) -> int:
        return int(_config(config_or_model).pooled_size)

    def flops(self, config_or_model, image_size, head: bool = True) -> int:
        from .flops import vit_flops

        return vit_flops(_config(config_or_model), image_size, head=head)



class HybridFamily(ViTFamily):
    name = "hybrid (BiT ResNet stem + ViT)"
    paper_label = "Hybrid"
    smoke_fields = {**SMOKE_MODEL, "patch_size": 2, "backbone_config": SMOKE_BACKBONE}

    def variant_names(self) -> list[str]:
        from .variants import HYBRIDS

        return list(HYBRIDS)

    describe_variants = ModelFamily.describe_variants  # the named hybrids, not the ViT's pattern

    def owns(self, config) -> bool:
        return _field(config, "model_type") == self.model_type and bool(_field(config, "backbone_config"))

    def masked_patch_prediction_problem(self, model_name: str) -> str | None:
        return ("defined for plain ViTs only (a hybrid's CNN sees the corrupted patches' pixels): "
                f"choose a ViT `model.variant` instead of {model_name}.")



class BiTFamily(ModelFamily):
    name = "BiT ResNet"
    paper_label = "ResNet (BiT)"
    model_type = BIT_MODEL_TYPE
    has_blocks = False
    native_to_transformers = True
    fixed_model_fields = {"dropout": 0.0, "attention_dropout": 0.0, "drop_path_rate": 0.0, "representation_size": None,
                          "gradient_checkpointing": False, "recompute_mlp_activation": False}
    lacks = "dropout, stochastic depth, pre-logits layer or ViT memory options"
    smoke_fields = SMOKE_BIT

    def variant_names(self) -> list[str]:
        from .variants import bit_variant_names

        return bit_variant_names()

    def owns(self, config) -> bool:
        return _is_bit(config)

    def config_from_variant(self, name: str, **overrides):
        """transformers' `BitConfig` (`variants.bit_config`); `overrides` may include `image_size`."""
        from .variants import bit_config

        return bit_config(name, **overrides)

    def completed_config(self, variant, fields, checkpoint_config):
        if variant is not None:
            return self.config_from_variant(variant, **fields)
        from transformers import BitConfig

        return BitConfig(**{**checkpoint_config.to_dict(), **fields})

    def architecture(self, config) -> dict[str, Any]:
        arch: dict[str, Any] = {"family": self.name}
        for key in BIT_ARCHITECTURE_FIELDS:
            value = getattr(config, key, None)
            arch[key] = list(value) if isinstance(value, (list, tuple)) else value
        return arch

    def classifier_class(self):
        from transformers import BitForImageClassification

        return BitForImageClassification

    def reset_head(self, model, num_labels, id2label=None, keep_representation=False) -> None:
        """A new zero-initialised dense layer on the pooled features; there is no pre-logits layer
        to keep or drop."""
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

    def image_hw(self, config_or_model) -> tuple[int, int] | None:
        """The size stored in the config (None for a checkpoint from elsewhere, which records none)."""
        size = getattr(_config(config_or_model), "image_size", None)
        if isinstance(size, (list, tuple)):
            size = size[0] if len(set(size)) == 1 else None
        return (int(size), int(size)) if size else None

    def set_image_size(self, model, size: int) -> None:
        """Only records the size in the config: convolutions run at any size."""
        model.config.image_size = int(size)

    def pre_logits(self, model, pixel_values, interpolate_pos_encoding: bool = False):
        """The globally average-pooled final features (after the last GroupNorm + ReLU), flattened."""
        return model.bit(pixel_values).pooler_output.flatten(1)

    def pre_logits_dim(self, config_or_model) -> int:
        from transformers.models.bit.modeling_bit import make_div

        config = _config(config_or_model)
        return int(make_div(config.hidden_sizes[-1] * config.width_factor))

    def flops(self, config_or_model, image_size, head: bool = True) -> int:
        from .flops import bit_flops

        return bit_flops(_config(config_or_model), image_size, head=head)

    def apply_recipe_fields(self, config, fields: dict[str, Any]) -> None:
        return None  # `recipe_problem` has refused any ViT field the recipe sets

    def masked_patch_prediction_problem(self, model_name: str) -> str | None:
        return (f"defined for plain ViTs only: {model_name} is a BiT ResNet, which has no patch tokens to corrupt; "
                "choose a ViT `model.variant`.")

    def timm_refusal(self) -> str | None:
        return "a BiT ResNet: --to timm writes ViTs and the hybrids (timm's own resnetv2_*_bit repos hold BiT)"


VIT = ViTFamily()
HYBRID = HybridFamily()
BIT = BiTFamily()
#: Every family, most specific first (`family_of` returns the first that owns a config).
FAMILIES: list[ModelFamily] = [BIT, HYBRID, VIT]


def find_family(config_or_model: Any) -> ModelFamily | None:
    """The family of a config, a model (or a peft model around one) or a config.json dict; None for
    a model of none of them (e.g. transformers' own ViT, model_type "vit")."""
    config = _config(config_or_model)
    return next((family for family in FAMILIES if family.owns(config)), None)


def family_of(config_or_model: Any) -> ModelFamily:
    """`find_family`, raising ValueError naming the known families for a model of none of them."""
    family = find_family(config_or_model)
    if family is None:
        config = _config(config_or_model)
        raise ValueError(
            f"{type(config).__name__} (model_type {_field(config, 'model_type')!r}) is none of this package's model "
            f"families ({', '.join(f'{f.name}: model_type {f.model_type!r}' for f in FAMILIES)}); convert other "
            "checkpoints first (`vit-repro convert SOURCE OUTPUT_DIR`)."
        )
    return family


def family_for_variant(name: str | None, config: dict[str, Any] | None = None) -> ModelFamily:
    """The family of a named variant ("ViT-B/16", "R50+ViT-B/16", "BiT-R50x1", any spelling
    `variants.canonical_name` takes); with `config` (`ViTReproConfig` fields, a recipe's
    `model.config`) a `backbone_config` makes a ViT a hybrid, and `name=None` means a ViT built from
    `config` alone. An unknown name raises ValueError listing every family's variants."""
    from .variants import BIT_VARIANTS, HYBRIDS, canonical_name

    if name is not None:
        try:
            canonical = canonical_name(name)
        except ValueError as err:
            known = "; ".join(f"{family.name}: {family.describe_variants()}" for family in FAMILIES)
            raise ValueError(f"{err} The model families and their variants are {known}.") from None
        if canonical in BIT_VARIANTS:
            return BIT
        if canonical in HYBRIDS:
            return HYBRID
    return HYBRID if (config or {}).get("backbone_config") else VIT


def config_from_variant(name: str, **overrides):
    """The config of any named model (`family_for_variant(name).config_from_variant`): transformers'
    `BitConfig` for a BiT ResNet ("BiT-R50x1"), else `ViTReproConfig` for a ViT or hybrid ("ViT-B/16",
    "R50+ViT-B/16"). `overrides` are fields of that config (plus `image_size` for BiT)."""
    return family_for_variant(name, overrides).config_from_variant(name, **overrides)


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


__all__ = [
    "MODEL_TYPES",
    "SMOKE_MODEL",
    "SMOKE_BACKBONE",
    "SMOKE_BIT",
    "ModelFamily",
    "VIT",
    "HYBRID",
    "BIT",
    "FAMILIES",
    "find_family",
    "family_of",
    "family_for_variant",
    "config_from_dict",
    "config_from_variant",
    "no_weight_decay",
]
