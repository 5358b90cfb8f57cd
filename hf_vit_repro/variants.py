"""The paper's model variants as a lookup table.

Sources: Table 1 of Dosovitskiy et al. (2021) for Base, Large and Huge; Steiner et al.,
"How to train your ViT? Data, Augmentation, and Regularization in Vision Transformers"
(AugReg, 2021) for Tiny and Small. All use 4D-wide MLPs and are named "ViT-<size>/<patch>"
("ViT-L/16": Large with 16 x 16 patches). The paper trains B/32, B/16, L/32, L/16 and H/14;
patch sizes 8 and 14 appear for every size in the follow-ups, so any size x patch pair is
offered.

The paper's CNN baselines are the BiT ResNets (Kolesnikov et al., "Big Transfer (BiT): General
Visual Representation Learning", ECCV 2020), named "BiT-R<depth>x<width factor>" ("BiT-R152x4");
`bit_config` builds them as transformers' own `BitConfig`, so their checkpoints load in
transformers without this package. `hf_vit_repro.models.config_from_variant` takes a name of
either family.
"""

from __future__ import annotations

import difflib
import re

#: size name -> (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),  # AugReg
    "S": (384, 12, 6, 1536),  # AugReg
    "B": (768, 12, 12, 3072),  # paper, Table 1: 86M params
    "L": (1024, 24, 16, 4096),  # paper, Table 1: 307M params
    "H": (1280, 32, 16, 5120),  # paper, Table 1: 632M params
}
PATCH_SIZES = (8, 14, 16, 32)

#: The paper's Table 1 parameter counts, in millions, for the variant it reports with each size.
PAPER_PARAMETER_COUNTS = {"ViT-B/16": 86, "ViT-L/16": 307, "ViT-H/14": 632}

_NAME = re.compile(r"^(?:vit[-_ ]?)?(ti|s|b|l|h)[/_\-](\d+)$", re.IGNORECASE)

#: Hybrid CNNs: name -> BiT ResNet `depths` (blocks per stage) and `hidden_sizes` (stage outputs).
#: "R50" is ResNet-50 with its 4th stage removed and its blocks moved into stage 3, so the feature
#: map has stride 16 (paper Sec. 3.1 and the original code's configs: num_layers (3, 4, 9));
#: "R26" (AugReg hybrids) keeps four stages of 2 blocks: stride 32.
BACKBONES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "R50": ((3, 4, 9), (256, 512, 1024)),
    "R26": ((2, 2, 2, 2), (256, 512, 1024, 2048)),
}
#: The plain four-stage ResNet-50 (3, 4, 6, 3 blocks, stride 32) under the paper's /32 hybrids
#: (google-research/vision_transformer `vit_jax/configs/models.py`, `get_r50_l32_config`: "four
#: bottleneck blocks results in a downscaling of 2^(1 + 4)=32"). The paper calls it "R50" too,
#: so it is not a second key of `BACKBONES` (where "R50" is the three-stage one).
R50_FOUR_STAGES: tuple[tuple[int, ...], tuple[int, ...]] = ((3, 4, 6, 3), (256, 512, 1024, 2048))
#: The named hybrids: "R50+ViT-B/16" reads "R50 backbone + ViT-B, 16 pixels per token" (the number
#: is the total downsampling; the ViT's own patches are 1 x 1 on the feature map). The backbone is
#: a key of `BACKBONES` or an explicit (depths, hidden_sizes) pair. The paper's
#: scaling study (Sec. 4.4, Table 6) trains R50x1+ViT-B/32, B/16, L/32 and L/16: the /16 ones on
#: the three-stage R50, the /32 ones on the four-stage one (same name "R50", other stride).
HYBRIDS = {
    "R50+ViT-B/16": ("R50", "B"),  # paper
    "R50+ViT-L/16": ("R50", "L"),  # paper
    "R50+ViT-B/32": (R50_FOUR_STAGES, "B"),  # paper, Table 6 (scaling study)
    "R50+ViT-L/32": (R50_FOUR_STAGES, "L"),  # paper, Table 6; timm's vit_large_r50_s32_*
    "R26+ViT-S/32": ("R26", "S"),  # AugReg
    "R26+ViT-B/32": ("R26", "B"),  # AugReg
}


def variant_names() -> list[str]:
    """Every name `variant_kwargs` accepts in its canonical spelling, e.g. "ViT-B/16"."""
    return [f"ViT-{size}/{patch}" for size in SIZES for patch in PATCH_SIZES] + list(HYBRIDS)


def canonical_name(name: str) -> str:
    """Normalise "vit_b_16", "B/16", "ViT-B_16" (the .npz spelling) ... to "ViT-B/16"; hybrids
    ("R50+ViT-B_16", "r50+vit-b/16") to "R50+ViT-B/16"; BiT ResNets ("bit-r50x1") to "BiT-R50x1"."""
    if _BIT_NAME.match(name.strip()):  # "BiT-R50x1", "bit_r50x1", "BiT-M-R50x1", "R50x1"
        return canonical_bit_name(name)
    if "+" in name:
        backbone, _, vit = name.strip().partition("+")
        candidate = f"{backbone.upper()}+{canonical_name(vit)}"
        if candidate not in HYBRIDS:
            raise ValueError(f"Unknown hybrid variant {name!r}; the named hybrids are {', '.join(HYBRIDS)}.")
        return candidate
    match = _NAME.match(name.strip())
    sizes = {key.lower(): key for key in SIZES}
    if match is None or int(match.group(2)) not in PATCH_SIZES:
        close = difflib.get_close_matches(name, variant_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown ViT variant {name!r}. Names look like 'ViT-B/16': size one of {', '.join(SIZES)}, "
            f"patch one of {', '.join(map(str, PATCH_SIZES))}; BiT ResNets look like 'BiT-R50x1'.{hint}"
        )
    return f"ViT-{sizes[match.group(1).lower()]}/{int(match.group(2))}"


def variant_kwargs(name: str) -> dict:
    """`ViTReproConfig` keyword arguments of a named variant, e.g. `variant_kwargs("ViT-L/16")`."""
    name = canonical_name(name)
    if name in BIT_VARIANTS:
        raise ValueError(
            f"{name} is a BiT ResNet, not a ViT: build it with hf_vit_repro.variants.bit_config({name!r}) "
            "(transformers' BitConfig), or config_from_variant for either family."
        )
    if name in HYBRIDS:
        backbone, size = HYBRIDS[name]
        depths, hidden_sizes = BACKBONES[backbone] if isinstance(backbone, str) else backbone
        kwargs = variant_kwargs(f"ViT-{size}/16")
        kwargs["patch_size"] = 1
        kwargs["backbone_config"] = {"depths": list(depths), "hidden_sizes": list(hidden_sizes)}
        return kwargs
    size, patch = name[len("ViT-") :].split("/")
    hidden, layers, heads, mlp = SIZES[size]
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": mlp,
        "patch_size": int(patch),
    }


def variant_of(config) -> str | None:
    """The canonical variant name of a `ViTReproConfig` (or a dict of its fields) when its
    architecture is a row of this table ("ViT-L/16", "R50+ViT-B/32"), else None. Compared: width,
    depth, heads, MLP width, patch size and, for hybrids, the backbone's blocks and widths; not
    compared: resolution, head, dropout, pooling (they do not make another variant)."""
    fields = config if isinstance(config, dict) else config.to_dict()
    backbone = fields.get("backbone_config") or None
    if backbone is not None and not isinstance(backbone, dict):
        backbone = backbone.to_dict()

    def pair(value):
        return tuple(value) if isinstance(value, (list, tuple)) else (value, value)

    for name in variant_names():
        kwargs = variant_kwargs(name)
        if any(fields.get(key) != kwargs[key] for key in
               ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")):
            continue
        if pair(fields.get("patch_size")) != pair(kwargs["patch_size"]):
            continue
        wanted = kwargs.get("backbone_config")
        if (backbone is None) != (wanted is None):
            continue
        if wanted is not None and any(list(backbone.get(key) or []) != list(wanted[key]) for key in ("depths", "hidden_sizes")):
            continue
        return name
    return None


# ============================================================================ BiT ResNets
#: ResNet depth -> blocks per stage (He et al. 2016, "Identity Mappings in Deep Residual Networks",
#: Table / code: ResNet-200 is 3, 24, 36, 3).
BIT_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
#: Output widths of the four stages of a x1 ResNet-v2 (bottlenecks are a quarter as wide); the stem
#: has 64 channels. A width factor w multiplies all of them (BiT Sec. 3.1: "R152x4" is 4x wider).
BIT_STAGE_WIDTHS = (256, 512, 1024, 2048)
BIT_STEM_WIDTH = 64
#: The BiT ResNets of the paper (Table 6 and Table 2's BiT-L R152x4, plus BiT's released R50x3
#: and R101x3): name -> (depth, width factor).
BIT_VARIANTS: dict[str, tuple[int, int]] = {
    "BiT-R50x1": (50, 1),  # paper, Table 6
    "BiT-R50x2": (50, 2),  # paper, Table 6
    "BiT-R50x3": (50, 3),  # BiT release (BiT-M-R50x3)
    "BiT-R101x1": (101, 1),  # paper, Table 6
    "BiT-R101x3": (101, 3),  # BiT release (BiT-M-R101x3)
    "BiT-R152x1": (152, 1),  # paper, Table 6
    "BiT-R152x2": (152, 2),  # paper, Table 6
    "BiT-R152x4": (152, 4),  # paper, Table 6 and Table 2 (BiT-L)
    "BiT-R200x3": (200, 3),  # paper, Table 6
}
#: Published parameter counts of the weights the BiT authors released, as timm's model cards on the
#: Hub state them ("Params (M)", https://huggingface.co/timm/<name>): name -> (millions, classes of
#: the head, the card). Neither the BiT paper nor the big_transfer README lists parameter counts.
BIT_PUBLISHED_PARAMETERS: dict[str, tuple[float, int, str]] = {
    "BiT-R50x1": (25.5, 1000, "timm/resnetv2_50x1_bit.goog_distilled_in1k"),
    "BiT-R50x3": (217.3, 1000, "timm/resnetv2_50x3_bit.goog_in21k_ft_in1k"),
    "BiT-R101x1": (87.2, 21843, "timm/resnetv2_101x1_bit.goog_in21k"),
    "BiT-R101x3": (516.0, 21843, "timm/resnetv2_101x3_bit.goog_in21k"),
    "BiT-R152x4": (936.5, 1000, "timm/resnetv2_152x4_bit.goog_in21k_ft_in1k"),
}
#: BiT-M-R50x1 with its ImageNet-21k head (21843 classes) is 68.3M on the same cards
#: (timm/resnetv2_50x1_bit.goog_in21k).

#: How BiT builds its ResNet-v2 in transformers' `BitConfig` terms (checked against timm's
#: `resnetv2_*_bit` models and google-research/big_transfer):
#: - "preactivation" blocks: GroupNorm + ReLU before each weight-standardised convolution, the
#:   projection shortcut taken from the pre-activated input, a final GroupNorm + ReLU before pooling;
#: - fixed symmetric padding (`global_padding=None`: 3 for the 7x7 stem, 1 for 3x3 convolutions)
#:   and the stem's max-pool after a constant pad of 1, as BiT's code pads (timm's stem_type
#:   "fixed"). The hybrids' CNN uses TF "SAME" padding instead; here it would change the outputs;
#: - 32 groups in every GroupNorm (eps 1e-5); weight standardisation with eps 1e-8 (timm and
#:   transformers; BiT's JAX code adds 1e-10, a difference below 1e-6 relative for trained kernels);
#: - the width factor applied to `hidden_sizes` and `embedding_size` here, with `width_factor=1`:
#:   transformers multiplies only the stage widths by `width_factor`, not the stem, the final norm
#:   or the classifier's input, so scaling the widths themselves is the only consistent spelling.
BIT_CONFIG_DEFAULTS = {
    "layer_type": "preactivation",
    "global_padding": None,
    "embedding_dynamic_padding": False,
    "num_groups": 32,
    "hidden_act": "relu",
    "width_factor": 1,
    "output_stride": 32,
}

_BIT_NAME = re.compile(r"^(?:bit[-_ ]?(?:[sml][-_])?)?r(?:esnet)?[-_]?(\d+)x(\d+)$", re.IGNORECASE)


def bit_variant_names() -> list[str]:
    """The BiT ResNets `bit_config` builds by name, e.g. "BiT-R50x1"."""
    return list(BIT_VARIANTS)


def canonical_bit_name(name: str) -> str:
    """"bit-r50x1", "BiT-M-R50x1", "R50x1" -> "BiT-R50x1"; unknown depths or widths raise
    ValueError naming the table."""
    match = _BIT_NAME.match(name.strip())
    candidate = f"BiT-R{int(match.group(1))}x{int(match.group(2))}" if match else None
    if candidate not in BIT_VARIANTS:
        close = difflib.get_close_matches(candidate or name, bit_variant_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown BiT variant {name!r}. The BiT ResNets are {', '.join(BIT_VARIANTS)}.{hint}"
        )
    return candidate


def bit_kwargs(name: str) -> dict:
    """`BitConfig` keyword arguments of a named BiT ResNet: blocks per stage, stem and stage widths
    (times the width factor), and `BIT_CONFIG_DEFAULTS`."""
    depth, width = BIT_VARIANTS[canonical_bit_name(name)]
    return {
        **BIT_CONFIG_DEFAULTS,
        "depths": list(BIT_DEPTHS[depth]),
        "hidden_sizes": [w * width for w in BIT_STAGE_WIDTHS],
        "embedding_size": BIT_STEM_WIDTH * width,
    }


def bit_config(name: str, **overrides):
    """transformers' `BitConfig` of a named BiT ResNet, e.g. `bit_config("BiT-R50x1", num_labels=10)`.

    `overrides` are `BitConfig` fields (`depths`, `hidden_sizes`, `embedding_size`, `num_groups`
    for a tiny model in tests and studies; `num_labels`, `id2label`...) plus `image_size`, the
    resolution the model is trained at (BiT has no position embeddings; the package stores it in
    the config for evaluation, the card and the FLOPs count). Refused: ViT-only fields (a pre-logits
    layer, dropout rates other than 0) and a `width_factor` other than 1 (see `BIT_CONFIG_DEFAULTS`).
    """
    from transformers import BitConfig

    kwargs = {**bit_kwargs(name), **overrides}
    if kwargs.get("representation_size"):
        raise ValueError(f"{name} has no pre-logits layer: representation_size must be None, got {kwargs['representation_size']}.")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if kwargs.get(key):
            raise ValueError(f"{name} has no dropout layers: {key} must be 0, got {kwargs[key]}.")
    for key in ("representation_size", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        kwargs.pop(key, None)
    if kwargs.get("width_factor", 1) != 1:
        raise ValueError(
            f"`width_factor` must be 1 (got {kwargs['width_factor']}): give the widened `hidden_sizes` and "
            "`embedding_size` instead; transformers' BitModel applies width_factor to the stages only."
        )
    config = BitConfig(**kwargs)
    check_bit_config(config)
    return config


def check_bit_config(config) -> None:
    """Raise ValueError unless every GroupNorm of this BiT ResNet can split its channels into
    `num_groups` groups (the stem output, each stage's output and its bottleneck width)."""
    from transformers.models.bit.modeling_bit import make_div

    if len(config.depths) != len(config.hidden_sizes):
        raise ValueError(
            f"`depths` {list(config.depths)} and `hidden_sizes` {list(config.hidden_sizes)} need one entry per stage."
        )
    widths = [config.embedding_size] + [w for out in config.hidden_sizes for w in (out, make_div(out * 0.25))]
    if any(width % config.num_groups for width in widths):
        raise ValueError(
            f"`num_groups` ({config.num_groups}) must divide every GroupNorm's channels: stem {config.embedding_size}, "
            f"stage outputs {list(config.hidden_sizes)} and their bottleneck widths (a quarter of each)."
        )
