"""Published ViT weights -> this package's weights.

Every converter is a pure function from a source's weights to a state dict with the names of
`ViTReproForImageClassification` (or, for transformers' `ViTForMaskedImageModeling`, of
`ViTReproForMaskedImageModeling`: the same names plus `vit.embeddings.mask_token` and `decoder.0`);
a loader per source reads a local folder or file, or a Hub repo id, through one code path
(`_source_file`: a local folder, else `hf_hub_download`).

Sources handled here (`detect_source_kind` tells them apart):

- ``"transformers"``: transformers' own ViT (`ViTModel`, `ViTForImageClassification`,
  `ViTForMaskedImageModeling`; the v5 names
  and the v4 names that Hub checkpoints such as `google/vit-base-patch16-224` still carry).
- ``"timm"``: timm's hub repos (`config.json` with an ``"architecture"`` plus `model.safetensors` or
  `pytorch_model.bin`), plain ViTs and the BiT hybrids, e.g. `vit_base_patch16_224.augreg2_in21k_ft_in1k`
  and `vit_base_r50_s16_384.orig_in21k_ft_in1k`; `config_from_timm` maps the model name.
- ``"npz"``: the original JAX checkpoints of google-research/vision_transformer (`ViT-B_16.npz`,
  `R50+ViT-B_16.npz`, the AugReg files) and of big_vision; the architecture is read off the
  array shapes (`config_from_state_dict`).
- ``"state_dict"``: a bare timm state-dict file (`.safetensors`, or pickled `.pth`/`.bin`), given
  with its timm architecture name.
- ``"vit_repro"``: a checkpoint of this package (to resize it or give it a new head); it keeps its class
  (classifier, masked image modeling, masked patch prediction).

BiT ResNets, the paper's CNN baselines, convert from timm's hub repos (`resnetv2_*_bit`) and from
google-research/big_transfer's `.npz` files into transformers' own `BitForImageClassification`
(`convert_bit`); the same `convert` / `load_checkpoint` tell them apart from the ViTs.

Pickle files are refused unless the caller opts in (`allow_pickle=True`, `--allow-pickle`):
unpickling can run arbitrary code. Weights that have no place in the model, and places in the
model that get no weights, are errors that name them; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .configuration_vit_repro import ViTReproConfig
from .convert_bit import is_bit_npz, is_timm_bit, load_bit_npz, load_timm_bit
from .convert_common import (  # noqa: F401  (the name tables are re-exported for callers of convert)
    HYBRID_BACKBONE_PREFIX,
    TIMM_SIZES,
    TIMM_ACTIVATIONS,
    TIMM_HYBRIDS,
    TIMM_NAMES,
    TRANSFORMERS_SHARED_FIELDS,
    ConversionError,
    jax_to_torch,
    name_list,
    rename_keys,
    image_processor,
    load_exactly,
    name_rules,
    set_processor_size,
    timm_image_processor,
    write_atomically,
)
from .modeling_vit_repro import (
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
)
from .runs import check_weights_file, load_pretrained
from .variants import BACKBONES, PATCH_SIZES, R50_FOUR_STAGES, SIZES, variant_kwargs

logger = logging.getLogger(__name__)

# Our layout, for reference (prefix "vit." inside ViTReproForImageClassification):
#   embeddings.{cls_token, position_embeddings, patch_embeddings.projection.{weight,bias}}
#   embeddings.patch_embeddings.backbone.bit.{embedder, encoder.stages.S.layers.U}   (hybrids)
#   layers.N.{layernorm_before, attention.qkv, attention.o_proj, layernorm_after, mlp.fc1, mlp.fc2}
#   layernorm, pooler.dense (pre-logits), classifier (outside "vit.")
#   masked image modeling: vit.embeddings.mask_token, decoder.0.{weight,bias} (outside "vit.")

SOURCE_KINDS = ("transformers", "timm", "npz", "state_dict", "vit_repro")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".ckpt")

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

_TIMM_RULES = name_rules(TIMM_NAMES)


# ============================================================================ shared weight surgery


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


def load_converted(
    config: ViTReproConfig, state_dict: dict[str, torch.Tensor], model_class=ViTReproForImageClassification
):
    """Build our model (`model_class`, the classifier by default) from `config` and a converted state dict.

    Every missing key, unexpected key and shape disagreement is an error that names it (nothing is
    dropped silently and no parameter keeps its random initialisation; `convert_common.load_exactly`).
    """
    return load_exactly(model_class(config), state_dict)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor], **fields) -> ViTReproConfig:
    """Read a `ViTReproConfig` off the shapes of a state dict in our names.

    The shapes give the width D (position embeddings `(1, S, D)`), depth, MLP width, patch size,
    input channels, qkv bias, pooling (a class token or not), pre-logits width, number of classes,
    the hybrid CNN (stem width, blocks per stage, stage widths) and the training resolution (the
    square grid of position embeddings times the token stride). `fields` supply what shapes cannot
    tell (`num_attention_heads` is required) and override the rest; a `backbone_config` dict is
    merged into the inferred one (e.g. `{"num_groups": 8}`: every published hybrid uses 32 groups).
    """
    required = ["vit.embeddings.position_embeddings", "vit.embeddings.patch_embeddings.projection.weight"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ConversionError(f"Cannot read the architecture off these weights: missing {missing}.")
    if "num_attention_heads" not in fields:
        raise ConversionError("The number of attention heads cannot be read off the weights: pass num_attention_heads.")
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"^vit\.layers\.(\d+)\.", key))}
    if not layers or "vit.layers.0.mlp.fc1.weight" not in state_dict:
        raise ConversionError("These weights hold no encoder blocks ('vit.layers.N.*').")
    position, projection = state_dict[required[0]], state_dict[required[1]]
    ph, pw = projection.shape[-2:]
    kwargs = {
        "hidden_size": int(position.shape[-1]),
        "num_hidden_layers": max(layers) + 1,
        "intermediate_size": int(state_dict["vit.layers.0.mlp.fc1.weight"].shape[0]),
        "patch_size": int(ph) if ph == pw else [int(ph), int(pw)],
        "num_channels": int(projection.shape[1]),
        "qkv_bias": "vit.layers.0.attention.qkv.bias" in state_dict,
        "pooling": "token" if "vit.embeddings.cls_token" in state_dict else "gap",
        "num_labels": int(state_dict["classifier.weight"].shape[0]) if "classifier.weight" in state_dict else 0,
    }
    if "vit.pooler.dense.weight" in state_dict:
        kwargs["representation_size"] = int(state_dict["vit.pooler.dense.weight"].shape[0])
    stem = state_dict.get(HYBRID_BACKBONE_PREFIX + "embedder.convolution.weight")
    if stem is not None:
        units: dict[int, set[int]] = {}
        for key in state_dict:
            if m := re.match(re.escape(HYBRID_BACKBONE_PREFIX) + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", key):
                units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        if not units:
            raise ConversionError(
                "The hybrid's CNN has a stem but no residual stages; stem-only hybrids (timm's "
                "vit_tiny_r_s16_p8, AugReg's R+Ti/16) are not supported."
            )
        stages = sorted(units)
        out_widths = [state_dict.get(f"{HYBRID_BACKBONE_PREFIX}encoder.stages.{s}.layers.0.conv3.weight") for s in stages]
        if any(w is None for w in out_widths):
            raise ConversionError("A stage of the hybrid's CNN has no first unit with a 'conv3' kernel.")
        backbone = {
            "embedding_size": int(stem.shape[0]),
            "depths": [len(units[s]) for s in stages],
            "hidden_sizes": [int(w.shape[0]) for w in out_widths],
        }
        kwargs["num_channels"] = int(stem.shape[1])
        extra = fields.pop("backbone_config", None) or {}
        if not isinstance(extra, Mapping):
            raise ConversionError("`backbone_config` must be a dict of BitConfig fields to merge into the inferred one.")
        kwargs["backbone_config"] = {**backbone, **extra}
    kwargs.update(fields)
    image_size = kwargs.pop("image_size", None)
    # The token stride (patch times the CNN's stride, a power of two up to 32) divides this
    # provisional size, so the config validates before the real grid is known.
    probe = ViTReproConfig(**kwargs, image_size=[int(ph) * 64, int(pw) * 64])
    positions = position.shape[1] - probe.num_prefix_tokens
    sh, sw = probe.token_stride_hw
    if image_size is None:
        side = math.isqrt(positions)
        if side * side != positions:
            raise ConversionError(
                f"The {positions} position embeddings do not form a square grid; pass image_size=(height, width)."
            )
        image_size = side * sh if sh == sw else [side * sh, side * sw]
    return ViTReproConfig(**kwargs, image_size=image_size)


# ============================================================================ reading sources


def _source_file(source: str | Path, filename: str) -> Path | None:
    """`filename` inside `source`: a local folder, or a Hub repo id (through `hf_hub_download`,
    which caches it). Returns None when the folder or repo has no such file."""
    local = Path(source)
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    if local.exists():
        raise ConversionError(f"{source} is a file; expected a folder or a Hub repo id.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(str(source), filename))
    except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and nothing cached
        raise ConversionError(
            f"{source} is not a local file or folder, and {filename} of the Hub repo {source!r} could not be "
            f"fetched (offline, or the Hub unreachable) nor found in the cache: {err}"
        ) from err
    except EntryNotFoundError:
        return None
    except HFValidationError as err:
        raise ConversionError(
            f"{source} is not a local file or folder, nor a Hub repo id ('org/name'): {err}"
        ) from err
    except OSError as err:  # repository not found, gated, network errors
        raise ConversionError(f"Cannot read {filename} from the Hub repo {source!r}: {err}") from err


def _split_hub_file(source: str) -> tuple[str, str] | None:
    """'org/repo/path/file.npz' -> ('org/repo', 'path/file.npz') when that is not a local path."""
    parts = str(source).split("/")
    if Path(source).exists() or Path(source).is_absolute() or str(source).startswith((".", "~")) or len(parts) < 3:
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _pickle_refusal(path) -> ConversionError:
    return ConversionError(
        f"{path} is a pickle file. Unpickling can run arbitrary code, so pickle files are refused unless you "
        "opt in: pass allow_pickle=True (CLI: --allow-pickle) if you trust where it comes from, or use a "
        ".safetensors copy of the weights."
    )


def read_state_file(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a pickled `.pth`/`.bin`/`.pt` when `allow_pickle`
    (loaded with `weights_only=True`; a `{"state_dict": ...}` or `{"model": ...}` wrapper is unwrapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(check_weights_file(path))
    if path.suffix not in PICKLE_SUFFIXES:
        raise ConversionError(f"{path}: unknown weights format {path.suffix!r}; expected .safetensors or a pickle file.")
    if not allow_pickle:
        raise _pickle_refusal(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConversionError(f"{path} holds a {type(state).__name__}, not a state dict.")
    return state


def _read_weights(source, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """`model.safetensors` of a folder or repo, else its pickled `pytorch_model.bin` (with opt-in)."""
    path = _source_file(source, "model.safetensors")
    if path is None:
        pickled = _source_file(source, "pytorch_model.bin")
        if pickled is None:
            raise ConversionError(f"{source} has neither model.safetensors nor pytorch_model.bin.")
        if not allow_pickle:
            raise _pickle_refusal(pickled)
        path = pickled
    return read_state_file(path, allow_pickle=allow_pickle)


def detect_source_kind(source: str | Path) -> tuple[str, dict | None]:
    """Which kind of checkpoint `source` is (one of `SOURCE_KINDS`) and its `config.json`, if any.

    A local `.npz` file (or 'org/repo/file.npz' on the Hub) is ``"npz"``; a weights file is a bare
    ``"state_dict"``; a folder or repo is told apart by its `config.json`: timm writes an
    ``"architecture"``, transformers a ``"model_type"`` (``"vit"``, or ``"vit_repro"`` for ours).
    """
    name = str(source)
    if Path(name).is_file() or _split_hub_file(name):
        suffix = Path(name).suffix
        if suffix == ".npz":
            return "npz", None
        if suffix == ".safetensors" or suffix in PICKLE_SUFFIXES:
            return "state_dict", None
        if Path(name).is_file():
            raise ConversionError(f"{source}: unknown file type {suffix!r}; expected an .npz, .safetensors or .pth file.")
    path = _source_file(source, "config.json")
    if path is None:
        raise ConversionError(
            f"{source} has no config.json: expected a transformers or timm checkpoint (folder or Hub repo), "
            "an .npz file, or a weights file with its timm architecture."
        )
    config = json.loads(Path(path).read_text())
    if "architecture" in config:
        return "timm", config
    model_type = config.get("model_type")
    if model_type == "vit":
        return "transformers", config
    if model_type == ViTReproConfig.model_type:
        return "vit_repro", config
    if model_type == "bit":
        raise ConversionError(
            f"{source} is already a transformers BiT checkpoint (model_type 'bit'): it needs no conversion; train, "
            "evaluate or publish it as it is (`model.init_from`, `vit-repro evaluate`, `vit-repro push`)."
        )
    raise ConversionError(
        f"{source} holds a {model_type!r} model, not a transformers ViT ('vit'), a timm ViT (config.json "
        "with 'architecture') or a checkpoint of this package ('vit_repro')."
    )


# ============================================================================ transformers


def convert_transformers_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers `ViTModel` / `ViTForImageClassification` / `ViTForMaskedImageModeling` state dict
    (v4 or v5 names) -> ours.

    `ViTModel`'s `pooler.dense` (the pre-logits layer of the in21k checkpoints) becomes our
    representation layer `vit.pooler.dense`; the masked-image-modeling `vit.embeddings.mask_token`
    and `decoder.0` keep their names.
    """
    state = {}
    for key, value in state_dict.items():
        if key.startswith(("classifier.", "decoder.")):
            state[key] = value
        else:
            state["vit." + key.removeprefix("vit.")] = value
    state, _ = rename_keys(state, _TRANSFORMERS_RULES + [(r"^", "")])
    return _fuse_qkv(state)


def config_from_transformers(hf_config, **overrides) -> ViTReproConfig:
    """transformers `ViTConfig` -> `ViTReproConfig` (same field names; token pooling)."""
    kwargs = {name: getattr(hf_config, name) for name in TRANSFORMERS_SHARED_FIELDS
              if getattr(hf_config, name, None) is not None}
    # transformers' interpolate_pos_encoding resamples bicubically; keep that for converted models.
    kwargs["position_embedding_interpolation"] = "bicubic"
    return ViTReproConfig(**{**kwargs, **overrides})


def from_transformers_model(hf_model):
    """An in-memory transformers ViT -> our model with the same weights: `ViTModel` and
    `ViTForImageClassification` give `ViTReproForImageClassification`, `ViTForMaskedImageModeling`
    gives `ViTReproForMaskedImageModeling` (with the source's `encoder_stride`)."""
    from transformers import ViTForMaskedImageModeling

    state = convert_transformers_state_dict(hf_model.state_dict())
    if isinstance(hf_model, ViTForMaskedImageModeling):
        config = config_from_transformers(hf_model.config, encoder_stride=hf_model.config.encoder_stride)
        return load_converted(config, state, ViTReproForMaskedImageModeling)
    overrides = {}
    if "vit.pooler.dense.weight" in state:
        overrides["representation_size"] = state["vit.pooler.dense.weight"].shape[0]
    if "classifier.weight" not in state:
        overrides["num_labels"] = 0
    config = config_from_transformers(hf_model.config, **overrides)
    return load_converted(config, state)


def _from_pretrained_safely(cls, source, allow_pickle: bool):
    """`cls.from_pretrained(source)` that reads safetensors only unless `allow_pickle` (through
    `runs.load_pretrained`: damaged weights and invalid config values are named)."""
    if allow_pickle:
        return load_pretrained(cls, source)
    try:
        return load_pretrained(cls, source, use_safetensors=True)
    except OSError as err:
        pickled = _source_file(source, "pytorch_model.bin") if "safetensors" in str(err) else None
        if pickled is not None:
            raise _pickle_refusal(pickled) from err
        raise


def load_transformers_checkpoint(source: str | Path, allow_pickle: bool = False):
    """A transformers ViT checkpoint (local folder or Hub repo id) -> our model (see `from_transformers_model`)."""
    from transformers import AutoConfig, ViTForImageClassification, ViTForMaskedImageModeling, ViTModel

    hf_config = AutoConfig.from_pretrained(source)
    if hf_config.model_type != "vit":
        raise ConversionError(f"{source} holds a {hf_config.model_type!r} model, not a transformers ViT ('vit').")
    architectures = hf_config.architectures or []
    cls = ViTModel
    if "ViTForImageClassification" in architectures:
        cls = ViTForImageClassification
    elif "ViTForMaskedImageModeling" in architectures:
        cls = ViTForMaskedImageModeling
    return from_transformers_model(_from_pretrained_safely(cls, source, allow_pickle))


# ============================================================================ timm

_TIMM_PLAIN = re.compile(r"^vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)$")

# timm VisionTransformer arguments (config.json "model_args") -> our fields.
_TIMM_ARGS = {
    "img_size": "image_size",
    "patch_size": "patch_size",
    "in_chans": "num_channels",
    "embed_dim": "hidden_size",
    "depth": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "qkv_bias": "qkv_bias",
    "num_classes": "num_labels",
    "proj_drop_rate": "hidden_dropout_prob",
    "attn_drop_rate": "attention_probs_dropout_prob",
    "act_layer": "hidden_act",
}
# Arguments that change only how timm runs or initialises, not what the weights compute.
_TIMM_RUNTIME_ARGS = {
    "dynamic_img_size", "dynamic_img_pad", "strict_img_size", "drop_rate", "pos_drop_rate", "patch_drop_rate",
    "drop_path_rate", "weight_init", "fix_init", "output_fmt",
}
# Arguments whose plain-ViT value is the only one this package's model computes.
_TIMM_PLAIN_VALUES = {
    "no_embed_class": False, "reg_tokens": 0, "init_values": None, "pre_norm": False, "qk_norm": False,
    "final_norm": True, "pos_embed": "learn", "proj_bias": True,
}
# Arguments read together further on (pooling, MLP width).
_TIMM_COMBINED_ARGS = {"mlp_ratio", "global_pool", "fc_norm", "class_token"}


def timm_architectures() -> list[str]:
    """timm model names `config_from_timm` maps (plain names take any resolution and a `.tag`)."""
    plain = [
        f"vit_{size}_patch{patch}_{res}" for size in TIMM_SIZES for patch in PATCH_SIZES for res in (224, 384)
    ]
    return plain + [f"{name}_{res}" for name, (_, _, resolutions) in TIMM_HYBRIDS.items() for res in resolutions]


def _timm_named_kwargs(name: str) -> dict:
    """Our config kwargs for a timm model name without its tag, e.g. 'vit_base_r50_s16_384'."""
    if m := _TIMM_PLAIN.match(name):
        size, patch, resolution = TIMM_SIZES[m.group(1)], int(m.group(2)), int(m.group(3))
        kwargs = variant_kwargs(f"ViT-{size}/16")
        kwargs.update(patch_size=patch, image_size=resolution)
        return kwargs
    if (m := re.match(r"^(vit_\w+?_r\d+_s\d+)_(\d+)$", name)) and m.group(1) in TIMM_HYBRIDS:
        size, backbone, resolutions = TIMM_HYBRIDS[m.group(1)]
        if int(m.group(2)) in resolutions:
            kwargs = variant_kwargs(f"ViT-{size}/16")
            depths, widths = BACKBONES[backbone] if isinstance(backbone, str) else backbone
            kwargs.update(patch_size=1, image_size=int(m.group(2)))
            kwargs["backbone_config"] = {"depths": list(depths), "hidden_sizes": list(widths)}
            return kwargs
    close = difflib.get_close_matches(name, timm_architectures(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConversionError(
        f"Unknown timm architecture {name!r}: this package converts timm's plain ViTs "
        f"(vit_{{{','.join(TIMM_SIZES)}}}_patch{{P}}_{{resolution}}) and the BiT hybrids "
        f"({', '.join(TIMM_HYBRIDS)}, with _224 or _384).{hint}"
    )


def _timm_model_args(model_args: Mapping) -> dict:
    """timm `VisionTransformer` keyword arguments -> our config overrides; refuses by name the
    arguments that build something this package's ViT does not compute."""
    overrides, refused = {}, []
    for key, value in model_args.items():
        if key == "act_layer" and value not in TIMM_ACTIVATIONS:
            refused.append(f"{key}={value!r}")
        elif key in _TIMM_ARGS:
            if key == "act_layer":
                value = TIMM_ACTIVATIONS[value]
            if key == "img_size" and isinstance(value, (list, tuple)) and len(set(value)) == 1:
                value = value[0]
            overrides[_TIMM_ARGS[key]] = list(value) if isinstance(value, tuple) else value
        elif key in _TIMM_RUNTIME_ARGS or key in _TIMM_COMBINED_ARGS:
            continue
        elif key in _TIMM_PLAIN_VALUES and value == _TIMM_PLAIN_VALUES[key]:
            continue
        else:
            refused.append(f"{key}={value!r}")
    if refused:
        raise ConversionError(
            f"These timm model arguments build layers this package's ViT does not have: {', '.join(sorted(refused))}."
        )
    if "mlp_ratio" in model_args:
        overrides["_mlp_ratio"] = float(model_args["mlp_ratio"])
    return overrides


def _timm_pooling(global_pool: str, class_token: bool, fc_norm) -> str:
    """timm's (global_pool, class_token, fc_norm) -> our pooling, or an error saying why not."""
    if global_pool in ("token", "") and class_token:
        return "token"
    if global_pool == "avg" and not class_token and fc_norm is False:
        return "gap"
    if global_pool == "avg" and not class_token:
        raise ConversionError(
            "timm's global_pool='avg' normalises after pooling (fc_norm, its default for 'avg'); this package's "
            "'gap' normalises the tokens, then averages (the original code). Only fc_norm=False converts."
        )
    raise ConversionError(
        f"timm pooling global_pool={global_pool!r} with class_token={class_token} has no counterpart: "
        "use 'token' with a class token, or 'avg' without one (fc_norm=False)."
    )


def config_from_timm(name_or_pretrained_cfg: str | Mapping, **overrides) -> ViTReproConfig:
    """A timm model name, or a timm config (a hub repo's `config.json`, or a model's
    `pretrained_cfg`), -> `ViTReproConfig`.

    The name (tag after '.' ignored, e.g. 'vit_base_patch16_224.augreg2_in21k_ft_in1k') chooses the
    variant and resolution (`timm_architectures()` lists them); the config's `num_classes`,
    `label_names` (shown through `label_descriptions` where given), input size and `model_args` (what
    timm's `save_for_hf` records: embed_dim, depth, img_size...) refine it; `overrides` (our field
    names) come last, a `backbone_config` dict merged into the named backbone. Position embeddings
    resample as timm's do ("bicubic_antialias").
    """
    cfg = {"architecture": name_or_pretrained_cfg} if isinstance(name_or_pretrained_cfg, str) else dict(name_or_pretrained_cfg)
    pretrained = dict(cfg.get("pretrained_cfg") or {})
    architecture = cfg.get("architecture") or pretrained.get("architecture")
    if not architecture:
        raise ConversionError("The timm config names no 'architecture'.")
    kwargs = _timm_named_kwargs(str(architecture).split(".")[0])
    input_size = pretrained.get("input_size") or cfg.get("input_size")
    if input_size:  # the size the weights were trained at; `model_args` (below) may override it
        height, width = input_size[-2:]
        kwargs["image_size"] = height if height == width else [height, width]
    model_args = dict(cfg.get("model_args") or {})
    kwargs.update(_timm_model_args(model_args))
    mlp_ratio = kwargs.pop("_mlp_ratio", None)
    if mlp_ratio is not None:
        kwargs["intermediate_size"] = int(kwargs["hidden_size"] * mlp_ratio)
    class_token = model_args.get("class_token", True)
    global_pool = model_args.get("global_pool", cfg.get("global_pool", "token"))
    kwargs["pooling"] = _timm_pooling(global_pool, class_token, model_args.get("fc_norm"))
    num_classes = model_args.get("num_classes", cfg.get("num_classes", pretrained.get("num_classes")))
    if num_classes is not None:
        kwargs["num_labels"] = int(num_classes)
    labels = cfg.get("label_names", pretrained.get("label_names", cfg.get("labels")))  # "labels": legacy configs
    descriptions = cfg.get("label_descriptions", pretrained.get("label_descriptions")) or {}
    if labels:
        items = labels.items() if isinstance(labels, Mapping) else enumerate(labels)
        kwargs["id2label"] = {int(i): descriptions.get(label, label) for i, label in items}
        kwargs["label2id"] = {label: i for i, label in kwargs["id2label"].items()}
    kwargs["position_embedding_interpolation"] = "bicubic_antialias"
    backbone_override = overrides.pop("backbone_config", None)
    if backbone_override is not None:
        if "backbone_config" not in kwargs:
            raise ConversionError(f"{architecture} is not a hybrid; `backbone_config` does not apply.")
        kwargs["backbone_config"] = {**kwargs["backbone_config"], **dict(backbone_override)}
    kwargs.update(overrides)
    return ViTReproConfig(**kwargs)


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `VisionTransformer` state dict (fused qkv, `blocks.N`, `head`; hybrids' ResNetV2 under
    `patch_embed.backbone`) -> ours."""
    state, unmatched = rename_keys(state_dict, _TIMM_RULES)
    if unmatched:
        raise ConversionError(
            f"These timm keys have no counterpart in ViTReproForImageClassification: {name_list(unmatched)}. "
            "Only plain ViTs and BiT hybrids (class token or no prefix tokens, no register tokens, no layer "
            "scale, no fc_norm) convert."
        )
    return state


def _timm_processor(config, timm_config: Mapping):
    """The image processor of timm's evaluation transform for a timm config.json (its
    `pretrained_cfg`: mean, std, interpolation, crop_pct, crop_mode); see `timm_image_processor`."""
    return timm_image_processor(config, timm_config.get("pretrained_cfg") or timm_config)


def _load_timm(timm_config: Mapping, state_dict, overrides):
    if is_timm_bit(timm_config):  # BiT's ResNets: transformers' BitForImageClassification
        return load_timm_bit(timm_config, state_dict, overrides)
    state = convert_timm_state_dict(state_dict)
    if "vit.pooler.dense.weight" in state:
        overrides = {"representation_size": int(state["vit.pooler.dense.weight"].shape[0]), **overrides}
    # The weights know their class count (a bare file has no config.json saying it; timm's
    # models have 1000 classes unless built otherwise); an explicit `num_labels` still wins.
    num_labels = int(state["classifier.weight"].shape[0]) if "classifier.weight" in state else 0
    overrides = {"num_labels": num_labels, **overrides}
    config = config_from_timm(timm_config, **overrides)
    return load_converted(config, state), _timm_processor(config, timm_config)


def load_timm_checkpoint(source: str | Path, allow_pickle: bool = False, **overrides) -> ViTReproForImageClassification:
    """A timm hub checkpoint (local folder or Hub repo id, e.g. 'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k')
    with `config.json` and `model.safetensors` (or, with `allow_pickle`, `pytorch_model.bin`) -> our
    model. `overrides` are `ViTReproConfig` fields (see `config_from_timm`)."""
    return _timm_source(source, allow_pickle, overrides)[0]


def _timm_source(source, allow_pickle: bool, overrides: dict, timm_config: Mapping | None = None):
    if timm_config is None:
        path = _source_file(source, "config.json")
        if path is None:
            raise ConversionError(f"{source} has no config.json; a timm hub repo has one naming its 'architecture'.")
        timm_config = json.loads(Path(path).read_text())
    return _load_timm(timm_config, _read_weights(source, allow_pickle), overrides)


# ============================================================================ original JAX .npz


@dataclasses.dataclass(frozen=True)
class NpzLayout:
    """Where the arrays of a JAX ViT checkpoint sit.

    google-research/vision_transformer: `Transformer/encoderblock_{i}/{LayerNorm_0,
    MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}`, position embeddings (class token
    included) at `Transformer/posembed_input/pos_embedding`. big_vision: a `params/` (or
    `params/img/`) prefix, `{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`,
    patch-only position embeddings at `pos_embedding` (big_vision adds them before prepending the
    class token), and with `scan` all blocks stacked under `Transformer/encoderblock/` along a
    leading layer axis.
    """

    prefix: str
    big_vision: bool
    stacked: bool

    @property
    def sublayers(self) -> tuple[str, str, str, str]:
        """(first LayerNorm, attention, second LayerNorm, MLP) names inside a block."""
        if self.big_vision:
            return "LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
        return "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"

    @property
    def position_key(self) -> str:
        return "pos_embedding" if self.big_vision else "Transformer/posembed_input/pos_embedding"


def npz_layout(keys) -> NpzLayout:
    """Detect the `NpzLayout` of a checkpoint from its array names."""
    keys = set(keys)
    for prefix in ("", "opt/target/", "params/", "params/img/"):
        if f"{prefix}embedding/kernel" in keys:
            stacked = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in keys
            big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in keys or stacked
            return NpzLayout(prefix, big_vision, stacked)
    raise ConversionError(
        "Not a ViT checkpoint of google-research/vision_transformer or big_vision: no 'embedding/kernel' array "
        f"(looked under the prefixes '', 'opt/target/', 'params/', 'params/img/'). First arrays: {name_list(keys, 8)}."
    )


def convert_npz_state_dict(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Arrays of an original (JAX) ViT checkpoint -> our state dict. Pure.

    Attention kernels `(D, heads, D/heads)` become our fused qkv `(3D, D)` (q, k, v order); the
    output kernel `(heads, D/heads, D)` becomes `(D, D)`; `pre_logits` becomes the representation
    layer `vit.pooler.dense`; big_vision's patch-only position embeddings get a zero entry for the
    class token (identical: big_vision adds them before prepending the token). Every array under the
    checkpoint's prefix must find a place and every place an array: otherwise a `ConversionError`
    names them.
    """
    layout = npz_layout(arrays)
    p = layout.prefix
    used, missing, state = set(), [], {}

    def take(name: str, kind: str, index: int | None = None) -> torch.Tensor | None:
        key = p + name
        if key not in arrays:
            missing.append(key + ("" if index is None else f"[{index}]"))
            return None
        used.add(key)
        array = arrays[key]
        if index is not None:
            if array.shape[0] <= index:
                missing.append(f"{key}[{index}]")
                return None
            array = array[index]
        return jax_to_torch(array, kind)

    def put(target: str, value: torch.Tensor | None):
        if value is not None:
            state[target] = value

    map_head = [k for k in arrays if k.startswith(p + "MAPHead_0/")]
    if map_head:
        raise ConversionError(
            "This checkpoint pools with an attention head (big_vision pool_type='map', arrays under MAPHead_0/); "
            "this package's ViT pools with the class token or the mean ('tok' or 'gap')."
        )
    if layout.big_vision and p + "pos_embedding" not in arrays:
        raise ConversionError(
            "No learned position embeddings ('pos_embedding'): fixed sin-cos position embeddings "
            "(big_vision posemb='sincos2d') are not supported."
        )

    # Patch embedding, and the hybrid's ResNet (models_resnet.py: conv_root/gn_root, block{s}/unit{u}).
    put("vit.embeddings.patch_embeddings.projection.weight", take("embedding/kernel", "conv"))
    put("vit.embeddings.patch_embeddings.projection.bias", take("embedding/bias", "vector"))
    if p + "conv_root/kernel" in arrays:
        put(HYBRID_BACKBONE_PREFIX + "embedder.convolution.weight", take("conv_root/kernel", "conv"))
        put(HYBRID_BACKBONE_PREFIX + "embedder.norm.weight", take("gn_root/scale", "vector"))
        put(HYBRID_BACKBONE_PREFIX + "embedder.norm.bias", take("gn_root/bias", "vector"))
        units = sorted(
            {(int(m.group(1)), int(m.group(2))) for k in arrays if (m := re.match(re.escape(p) + r"block(\d+)/unit(\d+)/", k))}
        )
        for stage, unit in units:
            source, target = f"block{stage}/unit{unit}/", f"{HYBRID_BACKBONE_PREFIX}encoder.stages.{stage - 1}.layers.{unit - 1}."
            for r in (1, 2, 3):
                put(f"{target}conv{r}.weight", take(f"{source}conv{r}/kernel", "conv"))
                put(f"{target}norm{r}.weight", take(f"{source}gn{r}/scale", "vector"))
                put(f"{target}norm{r}.bias", take(f"{source}gn{r}/bias", "vector"))
            if p + source + "conv_proj/kernel" in arrays:
                put(f"{target}downsample.conv.weight", take(f"{source}conv_proj/kernel", "conv"))
                put(f"{target}downsample.norm.weight", take(f"{source}gn_proj/scale", "vector"))
                put(f"{target}downsample.norm.bias", take(f"{source}gn_proj/bias", "vector"))

    # Class token and position embeddings.
    has_cls = p + "cls" in arrays
    if has_cls:
        put("vit.embeddings.cls_token", take("cls", "raw").reshape(1, 1, -1))
    position = take(layout.position_key, "raw")
    if position is not None:
        position = position.reshape(1, -1, position.shape[-1])
        if layout.big_vision and has_cls:
            position = torch.cat([torch.zeros_like(position[:, :1]), position], dim=1)
        state["vit.embeddings.position_embeddings"] = position

    # Encoder blocks.
    ln1, attention, ln2, mlp = layout.sublayers
    if layout.stacked:
        depth = arrays[p + "Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        blocks = [("Transformer/encoderblock/", i) for i in range(depth)]
    else:
        indices = {int(m.group(1)) for k in arrays if (m := re.match(re.escape(p) + r"Transformer/encoderblock_(\d+)/", k))}
        blocks = [(f"Transformer/encoderblock_{i}/", None) for i in range(max(indices, default=-1) + 1)]
    for i, (block, index) in enumerate(blocks):
        target = f"vit.layers.{i}."

        def get(name, kind):
            return take(block + name, kind, index)

        put(target + "layernorm_before.weight", get(f"{ln1}/scale", "vector"))
        put(target + "layernorm_before.bias", get(f"{ln1}/bias", "vector"))
        qkv = [get(f"{attention}/{n}/kernel", "raw") for n in ("query", "key", "value")]
        if all(t is not None for t in qkv):
            state[target + "attention.qkv.weight"] = torch.cat([t.reshape(t.shape[0], -1).T for t in qkv], dim=0)
        if any(p + f"{block}{attention}/{n}/bias" in arrays for n in ("query", "key", "value")):
            biases = [get(f"{attention}/{n}/bias", "raw") for n in ("query", "key", "value")]
            if all(b is not None for b in biases):
                state[target + "attention.qkv.bias"] = torch.cat([b.reshape(-1) for b in biases])
        out = get(f"{attention}/out/kernel", "raw")
        if out is not None:
            state[target + "attention.o_proj.weight"] = out.reshape(-1, out.shape[-1]).T.contiguous()
        put(target + "attention.o_proj.bias", get(f"{attention}/out/bias", "vector"))
        put(target + "layernorm_after.weight", get(f"{ln2}/scale", "vector"))
        put(target + "layernorm_after.bias", get(f"{ln2}/bias", "vector"))
        for r, name in ((0, "fc1"), (1, "fc2")):
            put(f"{target}mlp.{name}.weight", get(f"{mlp}/Dense_{r}/kernel", "dense"))
            put(f"{target}mlp.{name}.bias", get(f"{mlp}/Dense_{r}/bias", "vector"))

    # Final norm, representation (pre-logits) layer, head.
    put("vit.layernorm.weight", take("Transformer/encoder_norm/scale", "vector"))
    put("vit.layernorm.bias", take("Transformer/encoder_norm/bias", "vector"))
    for source, target in (("pre_logits", "vit.pooler.dense"), ("head", "classifier")):
        if p + f"{source}/kernel" in arrays or p + f"{source}/bias" in arrays:
            put(f"{target}.weight", take(f"{source}/kernel", "dense"))
            put(f"{target}.bias", take(f"{source}/bias", "vector"))

    if missing:
        raise ConversionError(f"The checkpoint lacks arrays a ViT of its layout needs: {name_list(missing)}.")
    unknown = [k for k in arrays if k.startswith(p) and k not in used]
    if unknown:
        raise ConversionError(f"The checkpoint has arrays with no place in this package's ViT: {name_list(unknown)}.")
    outside = [k for k in arrays if not k.startswith(p)]
    if outside:
        logger.warning("Ignoring %d arrays outside the model's prefix %r: %s", len(outside), p, name_list(outside, 5))
    return state


_NPZ_NAMES = [
    # original: "ViT-B_16.npz", "R50+ViT-B_16.npz", "imagenet21k+imagenet2012_ViT-L_16-224.npz"
    re.compile(r"(?:^|[_+])(?:(R50)\+)?ViT-(Ti|S|B|L|H)_(\d+)"),
    # AugReg: "S_16-i21k-300ep-...npz", "R26_S_32-i21k-...npz", "R50_L_32-i21k-...npz"
    re.compile(r"^(?:(R26|R50|R)_)?(Ti|S|B|L|H)_(\d+)-"),
]


def variant_from_npz_name(file_name: str) -> tuple[str | None, str, int] | None:
    """What a checkpoint's file name says: (backbone or None, size, pixels per token), e.g.
    'R50+ViT-B_16.npz' -> ('R50', 'B', 16), 'S_32-i21k-300ep-...npz' -> (None, 'S', 32); None when
    the name follows neither the original nor the AugReg naming."""
    name = Path(file_name).name
    for pattern in _NPZ_NAMES:
        if m := pattern.search(name):
            return m.group(1), m.group(2), int(m.group(3))
    return None


def _check_npz_name(file_name: str, config: ViTReproConfig) -> None:
    """The architecture read off the shapes must be the one the file name announces."""
    said = variant_from_npz_name(file_name)
    if said is None:
        return
    backbone, size, stride = said
    hidden, layers, heads, mlp = SIZES[size]
    found = {
        "hidden size": (config.hidden_size, hidden),
        "layers": (config.num_hidden_layers, layers),
        "heads": (config.num_attention_heads, heads),
        "MLP width": (config.intermediate_size, mlp),
        "pixels per token": (config.token_stride_hw[0], stride),
        "hybrid": (config.is_hybrid, backbone is not None),
    }
    if backbone in BACKBONES and config.is_hybrid:
        allowed = [list(BACKBONES[backbone][0])] + ([list(R50_FOUR_STAGES[0])] if backbone == "R50" else [])
        if list(config.backbone_config.depths) not in allowed:
            found["ResNet blocks per stage"] = (list(config.backbone_config.depths), allowed[0])
    wrong = [f"{what}: arrays {got}, name {want}" for what, (got, want) in found.items() if got != want]
    if wrong:
        label = f"{backbone}+ViT-{size}/{stride}" if backbone else f"ViT-{size}/{stride}"
        raise ConversionError(
            f"{Path(file_name).name} is named as {label}, but its arrays say otherwise ({'; '.join(wrong)}). "
            "Rename the file if the name is wrong."
        )


def _record_augreg_name(file_name: str, config: ViTReproConfig, overrides: Mapping) -> None:
    """An AugReg file name (`convert_augreg`) sets the dropout and stochastic depth it was trained
    with (unless `overrides` set them) and is kept in config.json under `augreg` for the model card."""
    from .convert_augreg import config_settings, parse_augreg_name

    name = parse_augreg_name(file_name)
    if name is None:
        return
    for key, value in config_settings(name).items():
        if key not in overrides:
            setattr(config, key, value)
    config.augreg = name.to_dict()


def _read_npz(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    import zipfile

    check_weights_file(path)  # a truncated archive or a file that is no .npz at all is named as such
    try:
        with np.load(path, allow_pickle=allow_pickle) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError) as err:  # a member cut short or corrupted (CRC)
        raise ConversionError(f"{path} is truncated or corrupted (interrupted download?): {err}. Download it again.") from None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise _pickle_refusal(path) from err
        raise ConversionError(f"{path} is not a readable .npz archive: {err}") from err


def config_from_npz(arrays: Mapping[str, np.ndarray], **overrides) -> ViTReproConfig:
    """The config of a JAX ViT checkpoint, read off its array shapes (`config_from_state_dict`;
    heads from the `(D, heads, D/heads)` query kernel). Defaults follow the JAX code: tanh-approximate
    GELU (flax's `nn.gelu`), LayerNorm eps 1e-6, and position embeddings resampled as the original
    code does ("bilinear", scipy zoom) or, for big_vision files, as big_vision does
    ("bilinear_antialias"). `overrides` are `ViTReproConfig` fields."""
    layout = npz_layout(arrays)
    return _npz_config(layout, arrays, convert_npz_state_dict(arrays), overrides)


def _npz_config(layout: NpzLayout, arrays, state, overrides) -> ViTReproConfig:
    ln1, attention, _, _ = layout.sublayers
    block = "Transformer/encoderblock/" if layout.stacked else "Transformer/encoderblock_0/"
    query = arrays[f"{layout.prefix}{block}{attention}/query/kernel"]
    known = {
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "position_embedding_interpolation": "bilinear_antialias" if layout.big_vision else "bilinear",
    }
    if query.ndim == (4 if layout.stacked else 3):
        known["num_attention_heads"] = int(query.shape[-2])
    return config_from_state_dict(state, **{**known, **overrides})


def load_npz_checkpoint(
    path: str | Path, image_size=None, allow_pickle: bool = False, **overrides
) -> ViTReproForImageClassification:
    """An original JAX checkpoint (`ViT-B_16.npz`, `R50+ViT-B_16.npz`, AugReg or big_vision `.npz`;
    local path, or 'org/repo/file.npz' on the Hub) -> our model.

    The architecture is read off the array shapes and checked against the file name when it follows
    the original or AugReg naming. `image_size` resamples the position embeddings of a checkpoint
    trained at another resolution (`config.position_embedding_interpolation`: the original code's
    bilinear zoom). `overrides` are `ViTReproConfig` fields (e.g. `backbone_config={"num_groups": 8}`).
    """
    model = _npz_source(path, allow_pickle, overrides)[0]
    if image_size is not None:
        model.resize_position_embeddings(image_size)
    return model


def _npz_source(source, allow_pickle: bool, overrides: dict):
    path = Path(source)
    if not path.is_file():
        hub = _split_hub_file(str(source))
        if hub is None:
            raise ConversionError(f"{source}: no such .npz file.")
        path = _source_file(*hub)
        if path is None:
            raise ConversionError(f"The Hub repo {hub[0]!r} has no file {hub[1]!r}.")
    arrays = _read_npz(path, allow_pickle)
    if is_bit_npz(arrays):  # google-research/big_transfer's ResNets
        return load_bit_npz(arrays, str(source), overrides)
    layout = npz_layout(arrays)
    state = convert_npz_state_dict(arrays)
    config = _npz_config(layout, arrays, state, overrides)
    _check_npz_name(str(source), config)
    _record_augreg_name(str(source), config, overrides)
    # Both JAX codebases feed images scaled to [-1, 1]: mean = std = 0.5; tf.image.resize is bilinear.
    return load_converted(config, state), image_processor(config, (0.5,) * 3, (0.5,) * 3, resample=2)


# ============================================================================ any source -> folder


def load_checkpoint(
    source: str | Path, allow_pickle: bool = False, architecture: str | None = None, **overrides
):
    """Any supported checkpoint (see `SOURCE_KINDS`) -> (our model, its `ViTImageProcessor`); a BiT
    ResNet (timm `resnetv2_*_bit` repo or weights file, big_transfer `.npz`) -> (transformers'
    `BitForImageClassification`, its `ViTImageProcessor`).

    `architecture` names the timm model of a bare weights file; `overrides` are `ViTReproConfig`
    (or, for BiT, `BitConfig`) fields for the timm, npz and state-dict kinds (what the source cannot
    say, e.g. a test model's `backbone_config`; `image_size` here is the size the weights were
    trained at).
    """
    kind, config = detect_source_kind(source)
    if overrides and kind in ("transformers", "vit_repro"):
        raise ConversionError(f"Config overrides apply to timm and .npz sources, not to a {kind} checkpoint.")
    if kind == "npz":
        return _npz_source(source, allow_pickle, overrides)
    if kind == "state_dict":
        if not architecture:
            raise ConversionError(
                f"{source} is a bare weights file: name its timm architecture (architecture=..., CLI: "
                "--timm-architecture, e.g. vit_base_patch16_224)."
            )
        path = Path(source)
        if not path.is_file():
            path = _source_file(*_split_hub_file(str(source)))
            if path is None:
                raise ConversionError(f"{source}: no such file on the Hub.")
        return _load_timm({"architecture": architecture}, read_state_file(path, allow_pickle), overrides)
    if kind == "timm":
        return _timm_source(source, allow_pickle, overrides, timm_config=config)
    from transformers import AutoImageProcessor

    if kind == "vit_repro":
        model = _from_pretrained_safely(_vit_repro_class(config), source, allow_pickle).eval()
    else:
        model = load_transformers_checkpoint(source, allow_pickle=allow_pickle)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        logger.warning("%s has no image processor config; writing one with mean = std = 0.5.", source)
        processor = image_processor(model.config, (0.5,) * 3, (0.5,) * 3)
    return model, processor


def _vit_repro_class(config: dict):
    """The class a checkpoint of this package was saved from (its `architectures`), so that a
    re-conversion keeps a masked-image-modeling or masked-patch-prediction head; the classifier
    when the config names none."""
    classes = {cls.__name__: cls for cls in (ViTReproForMaskedImageModeling, ViTReproForMaskedPatchPrediction)}
    for name in config.get("architectures") or []:
        if name in classes:
            return classes[name]
    return ViTReproForImageClassification


def _write_folder(model, processor, output_dir: Path) -> None:
    """`model.save_pretrained` and `processor.save_pretrained` into `output_dir`, atomically."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    write_atomically(output_dir, write)


#: What `convert` writes (`to=`): this package's checkpoint, transformers' own ViT, or a timm folder.
TARGETS = ("vit_repro", "transformers", "timm")


def convert(
    source: str | Path,
    output_dir: str | Path,
    image_size: int | None = None,
    num_labels: int | None = None,
    allow_pickle: bool = False,
    architecture: str | None = None,
    to: str = "vit_repro",
    **overrides,
) -> Path:
    """Convert a published checkpoint to a folder that `from_pretrained` (and the remote-code path)
    loads, with an image processor config matching the source's preprocessing (mean/std, resampling
    filter, and for timm sources the `crop_pct` centre crop; size = the model's resolution).

    `source`: a transformers ViT folder or repo id (`ViTForMaskedImageModeling` becomes
    `ViTReproForMaskedImageModeling`), a timm hub folder or repo id, an `.npz` file
    (original, AugReg or big_vision layout), a bare timm weights file (with `architecture`), or a
    checkpoint of this package; BiT ResNets from a timm repo (`resnetv2_*_bit`) or a big_transfer
    `.npz` become transformers' `BitForImageClassification`. `image_size` resamples the position
    embeddings for good (a checkpoint trained at 224 used at 384; for a ResNet only the recorded
    resolution and the image processor change); `num_labels` replaces the head by a zero-initialised
    one (the paper's fine-tuning step, which also drops a ViT's pre-logits layer). Both act after loading:
    config `overrides` (passed to `load_checkpoint`) describe the source and so cannot include them.

    `to` (one of `TARGETS`): "vit_repro" writes this package's checkpoint (remote code shipped
    beside it); "transformers" writes transformers' own `ViTForImageClassification` / `ViTModel` /
    `ViTForMaskedImageModeling` (model_type "vit", no remote code) where the model maps exactly,
    and "timm" a timm folder (`model.safetensors` in timm's names, config.json with its
    `architecture`, `model_args` and `pretrained_cfg`); a model that does not map is refused with
    the reason, before anything is written (`convert_native`). A BiT ResNet is transformers' own
    model for both "vit_repro" and "transformers".

    Pickle files need `allow_pickle=True`. Files are written to a temporary sibling folder first and
    moved into `output_dir` one by one; other files already there are left alone.
    """
    from .models import BIT_DEFAULT_IMAGE_SIZE, family_of

    if to not in TARGETS:
        raise ConversionError(f"Unknown conversion target {to!r}: choose one of {', '.join(TARGETS)}.")
    model, processor = load_checkpoint(source, allow_pickle=allow_pickle, architecture=architecture, **overrides)
    family = family_of(model)
    if num_labels is not None and not isinstance(model, family.classifier_class()):
        raise ConversionError(
            f"{source} converts to a {type(model).__name__}, which has no classification head for num_labels "
            f"(--num-labels) to replace: convert without it, then load the folder with "
            "ViTReproForImageClassification.from_pretrained(folder, num_labels=K)."
        )
    if image_size is not None:
        family.set_image_size(model, image_size)
    if num_labels is not None:
        family.reset_head(model, num_labels)
    if family.image_hw(model) is None:  # a BiT ResNet trained elsewhere records no size: BiT pretrains at 224
        family.set_image_size(model, BIT_DEFAULT_IMAGE_SIZE)
    height, width = family.image_hw(model)
    set_processor_size(processor, height, width)
    output_dir = Path(output_dir)
    if to == "timm":
        from .convert_native import write_timm_folder

        write_timm_folder(model, processor, output_dir)
        return output_dir
    if to == "transformers":
        from .convert_native import to_transformers

        model = to_transformers(model)
    _write_folder(model, processor, output_dir)
    return output_dir
