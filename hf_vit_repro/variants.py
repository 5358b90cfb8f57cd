"""The paper's model variants as a lookup table.

Sources: Table 1 of Dosovitskiy et al. (2021) for Base, Large and Huge; Steiner et al.,
"How to train your ViT? Data, Augmentation, and Regularization in Vision Transformers"
(AugReg, 2021) for Tiny and Small. All use 4D-wide MLPs and are named "ViT-<size>/<patch>"
("ViT-L/16": Large with 16 x 16 patches). The paper trains B/32, B/16, L/32, L/16 and H/14;
patch sizes 8 and 14 appear for every size in the follow-ups, so any size x patch pair is
offered.
"""

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
    ("R50+ViT-B_16", "r50+vit-b/16") to "R50+ViT-B/16"."""
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
            f"patch one of {', '.join(map(str, PATCH_SIZES))}.{hint}"
        )
    return f"ViT-{sizes[match.group(1).lower()]}/{int(match.group(2))}"


def variant_kwargs(name: str) -> dict:
    """`ViTReproConfig` keyword arguments of a named variant, e.g. `variant_kwargs("ViT-L/16")`."""
    name = canonical_name(name)
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
