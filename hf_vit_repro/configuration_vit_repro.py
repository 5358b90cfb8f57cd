"""Configuration of the Vision Transformer (Dosovitskiy et al., ICLR 2021).

This file is shipped next to every checkpoint (``trust_remote_code``), so it imports
only ``transformers`` and ``huggingface_hub``.

Field names follow transformers' ``ViTConfig`` wherever the concept is the same;
the fields it lacks (``pooling``, ``representation_size``, ``classifier_init``,
``position_embedding_interpolation``) are the paper's knobs. Defaults are ViT-B/16
at 224 with the original code's LayerNorm epsilon (1e-6).
"""

from huggingface_hub.dataclasses import strict
from transformers import BitConfig, PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec

POOLING_MODES = ("token", "gap")
CLASSIFIER_INITS = ("zeros", "normal")

# Masked patch prediction targets (paper Appendix B.1.2, "Self-supervision"): the 3-bit mean colour
# of the patch (512-way), the patch downsized to 4x4 with a 3-bit colour per cell (16 predictions of
# 512 ways each), or L2 regression on the patch's (normalised) pixels.
MPP_TARGETS = ("mean_color_3bit", "downsized_4x4_3bit", "l2_patch")

# Resolutions a simple feature pyramid (ViTDet, Li et al. 2022, Sec. 3) can make from the ViT's single
# token grid, relative to it: 4 and 2 by transposed convolutions, 1 as it is, 0.5 by max pooling.
FEATURE_PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5)

# How patch-grid position embeddings are resampled to another grid. Each entry is
# (torch.nn.functional.interpolate mode, align_corners, antialias) and cites who uses it.
POSITION_EMBEDDING_INTERPOLATIONS = {
    # google-research/vision_transformer: scipy.ndimage.zoom(grid, zoom, order=1), i.e.
    # linear interpolation between pixel centres with the corners aligned.
    "bilinear": ("bilinear", True, False),
    # big_vision: jax.image.resize(method="bilinear"): half-pixel centres, antialiased.
    "bilinear_antialias": ("bilinear", False, True),
    # transformers' ViTEmbeddings.interpolate_pos_encoding.
    "bicubic": ("bicubic", False, False),
    # timm's resample_abs_pos_embed (its default).
    "bicubic_antialias": ("bicubic", False, True),
}


# The hybrids' CNN (paper Sec. 3.1, "Hybrid Architecture"): BiT's ResNet with Group Normalization
# and weight-standardised convolutions, in its non-pre-activation ("bottleneck", ResNet-v1.5 like)
# form as in the original code's models_resnet.py, with TF "SAME" padding. `depths` and
# `hidden_sizes` come from the variant (e.g. R50+ViT-B/16: 3, 4, 9 blocks).
HYBRID_BACKBONE_DEFAULTS = {
    "layer_type": "bottleneck",
    "global_padding": "SAME",
    "embedding_dynamic_padding": True,
    "embedding_size": 64,
    "num_groups": 32,
}


class ModelSizeError(ValueError):
    """Sizes a model cannot be built from (`ViTReproConfig.check_model_sizes`)."""


def _pair(value, name: str) -> tuple[int, int]:
    """``224`` or ``(224, 320)`` -> ``(height, width)``; raises ValueError naming ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {value!r}.")
    if not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"`{name}` must hold positive integers, got {value!r}.")
    return pair


@strict
class ViTReproConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of a :class:`ViTReproModel` / :class:`ViTReproForImageClassification`.

    Use :meth:`from_variant` for the paper's named models (``"ViT-B/16"``, ``"ViT-L/16"``...).

    Args:
        image_size (`int` or `(height, width)`, defaults to 224): training resolution; sets the
            number of position embeddings (paper Sec. 3.1: N = HW / P^2).
        patch_size (`int` or `(height, width)`, defaults to 16): patch side P.
        num_channels (`int`, defaults to 3): input channels C (1 for greyscale inputs).
        hidden_size (`int`, defaults to 768): width D of the token embeddings.
        num_hidden_layers (`int`, defaults to 12): encoder depth L.
        num_attention_heads (`int`, defaults to 12): heads per attention layer; divides D.
        intermediate_size (`int`, defaults to 3072): MLP hidden width (4D in every paper variant).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU, as timm and transformers;
            `"gelu_pytorch_tanh"` reproduces the JAX code's tanh approximation).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon of the original code.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after every dense layer except qkv,
            and after adding position embeddings (paper Appendix B.1).
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention weights.
        drop_path_rate (`float`, defaults to 0.0): stochastic depth (Huang et al., ECCV 2016), used by AugReg
            (Steiner et al., TMLR 2022, Sec. 3.3: "linearly increasing probability of dropping layers"): in training,
            each block's attention and MLP branches are dropped per sample, the kept samples scaled by 1 / (1 - p),
            with p rising linearly from 0 at the first block to `drop_path_rate` at the last (timm's rule,
            :attr:`drop_path_rates`). Identity in evaluation; 0 (the paper's setting) adds no computation.
        qkv_bias (`bool`, defaults to True): bias on the query/key/value projections.
        pooling (`str`, defaults to `"token"`): `"token"` prepends a learned class token and uses its
            final state; `"gap"` has no class token and averages the final (normalised) patch tokens,
            as the original code's `classifier="gap"`.
        representation_size (`int`, *optional*): width of the pre-logits layer (dense + tanh) used in
            pretraining; `None` (the fine-tuning setting) means none.
        classifier_init (`str`, defaults to `"zeros"`): `"zeros"` is the paper's fine-tuning head;
            `"normal"` draws from N(0, initializer_range^2).
        initializer_range (`float`, defaults to 0.02): std of position embeddings and of a normal head.
        position_embedding_interpolation (`str`, defaults to `"bilinear"`): how position embeddings are
            resampled to a new patch grid; one of :data:`POSITION_EMBEDDING_INTERPOLATIONS`. The default
            matches the original code (scipy zoom, order 1).
        backbone_config (`BitConfig` or `dict`, *optional*): makes the model a hybrid: the patch
            embedding is applied to `patch_size` patches (1 x 1 in the paper) of the last feature map of
            this BiT ResNet instead of image patches. Dict entries override
            `HYBRID_BACKBONE_DEFAULTS`; `out_features` is set to the last stage, and `num_channels`
            is this config's: `config.num_channels` is the one source, copied into the backbone
            config whenever it is set (so `config.num_channels = 1` after construction makes a
            greyscale hybrid) and again when a model is built.

        Self-supervision (read only by `ViTReproForMaskedPatchPrediction` and
        `ViTReproForMaskedImageModeling`; the other classes ignore them):

        mpp_corruption_rate (`float`, defaults to 0.5): fraction of an image's patch embeddings that masked
            patch prediction corrupts and predicts (paper Sec. 4.6: 50%; Appendix B.1.2: 15% is "slightly
            worse"); round(rate * N) patches per image.
        mpp_corruption_split (`(mask, random, keep)`, defaults to `(0.8, 0.1, 0.1)`): how the corrupted patches
            are corrupted: replaced by the learned [mask] embedding, by the embedding of a random other patch of
            the same image, or kept as they are. Non-negative, summing to 1.
        mpp_target (`str`, defaults to `"mean_color_3bit"`): what is predicted for each corrupted patch; one of
            :data:`MPP_TARGETS` (Appendix B.1.2).
        mpp_image_mean, mpp_image_std (`list[float]` or `float`, *optional*): the normalisation the model's inputs went
            through (the image processor's `image_mean` / `image_std`, one value per channel or one for all; `None`: 0.5, the
            original code's [-1, 1] inputs). Colour targets are computed on the de-normalised pixels
            `pixel_values * std + mean`, clipped to [0, 1]. The model itself never normalises.
        encoder_stride (`int`, *optional*): upsampling factor of the masked-image-modeling decoder (transformers'
            `ViTConfig.encoder_stride`); `None` means the patch size, the value that reconstructs the input's size.

        Parameter-efficient transfer (off by default: no parameters, the blocks run as without them):

        prompt_tokens (`int`, defaults to 0): Visual Prompt Tuning (Jia et al., ECCV 2022, "VPT"): this many learned
            prompt tokens are inserted after the class token and before the patch tokens, after the position
            embeddings are added (prompts get none). The sequence becomes `[class; prompts; patches]` (no class token
            with `"gap"` pooling, whose mean is then over the patch tokens only, never the prompts).
        prompt_deep (`bool`, defaults to False): VPT-deep: every block's input gets its own prompts (they replace the
            previous block's outputs at the prompt positions); False is VPT-shallow (prompts at the first block only).
        adapter_bottleneck (`int`, defaults to 0): AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck MLP of this
            width (down-projection, ReLU, up-projection, the paper's default 64) in parallel to each block's MLP,
            added to its output times `adapter_scale`. 0: no adapter.
        adapter_scale (`float`, defaults to 0.1): the adapter's output scale s (AdaptFormer's default 0.1).

        Backbone (read only by `ViTReproBackbone`, i.e. `AutoBackbone`, and the dense-prediction heads built on
        it; transformers' `BackboneConfigMixin` conventions and Dinov2Config's field names):

        out_features (`list[str]`, *optional*), out_indices (`list[int]`, *optional*): the stages whose outputs
            the backbone returns, by name or by index into :attr:`stage_names` (either one; the other is derived
            by transformers' `set_output_features_output_indices`). Default: the last block (`"stage{L}"`),
            which follows `num_hidden_layers` when that changes (and is saved as `None`).
        apply_layernorm (`bool`, defaults to True): the encoder's final LayerNorm on every ViT feature map
            (ResNet maps of a hybrid are returned as they are).
        reshape_hidden_states (`bool`, defaults to True): ViT maps as `(B, D, H / P, W / P)` images, class token
            dropped; False keeps the token sequences `(B, S, D)`, class token first (DPT's neck reads them so).
        feature_pyramid_scales (`list[float]`, *optional*): ViTDet's simple feature pyramid (Li et al., 2022):
            the one ViT map named by `out_features` becomes one map per scale, each a subset of
            :data:`FEATURE_PYRAMID_SCALES` (4, 2, 1, 0.5: upsampled by transposed convolutions, kept, max-pooled),
            finest first, for heads that need several resolutions (UperNet). `None`: no pyramid.

    :attr:`stage_names` (derived, never stored): `"stem"` (the token embeddings, Eq. 1) and `"stage1"` ...
    `"stage{L}"` (each block's output), after `"resnet_stem"`, `"resnet_stage1"` ... for a hybrid's CNN.

    Validation: rules about one field (positive sizes, known choices, probabilities) are checked at
    construction and name the field. Rules relating fields (the heads divide `hidden_size`; patches,
    times a hybrid's CNN stride, tile `image_size`) are checked by :meth:`check_model_sizes` when a
    model is built, as transformers' own `ViTConfig` accepts `ViTConfig(hidden_size=37)` and leaves
    it to the model: generic tooling builds a config and then changes its fields one at a time.
    """

    model_type = "vit_repro"

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    qkv_bias: bool = True
    pooling: str = "token"
    representation_size: int | None = None
    classifier_init: str = "zeros"
    initializer_range: float = 0.02
    position_embedding_interpolation: str = "bilinear"
    backbone_config: dict | PreTrainedConfig | None = None
    mpp_corruption_rate: float | int = 0.5
    mpp_corruption_split: list[float | int] | tuple[float | int, ...] = (0.8, 0.1, 0.1)
    mpp_target: str = "mean_color_3bit"
    mpp_image_mean: float | int | list[float | int] | tuple[float | int, ...] | None = None
    mpp_image_std: float | int | list[float | int] | tuple[float | int, ...] | None = None
    encoder_stride: int | None = None
    prompt_tokens: int = 0
    prompt_deep: bool = False
    adapter_bottleneck: int = 0
    adapter_scale: float | int = 0.1
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True
    feature_pyramid_scales: list[float | int] | tuple[float | int, ...] | None = None

    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=BitConfig, optional=True)}

    def __post_init__(self, **kwargs):
        backbone = self.backbone_config
        if isinstance(backbone, dict):
            backbone = {key: value for key, value in backbone.items() if key != "model_type"}
            backbone = BitConfig(**{**HYBRID_BACKBONE_DEFAULTS, **backbone})
        if isinstance(backbone, BitConfig):  # anything else is refused by `validate_backbone`
            # The ViT reads the last stage's feature map, and the CNN reads this config's images.
            backbone.num_channels = self.num_channels
            backbone.set_output_features_output_indices(out_features=[backbone.stage_names[-1]], out_indices=None)
        self.backbone_config = backbone
        self.set_output_features_output_indices(
            out_features=kwargs.pop("out_features", None), out_indices=kwargs.pop("out_indices", None)
        )
        super().__post_init__(**kwargs)

    def __setattr__(self, name, value):
        # The default stage choice (the last block) follows the depth: `config.num_hidden_layers = 4`
        # after construction moves it to "stage4" instead of leaving a stage that no longer exists.
        follow_depth = name in ("num_hidden_layers", "backbone_config") and self._selects_last_stage_only()
        super().__setattr__(name, value)
        if follow_depth:
            self.set_output_features_output_indices(out_features=None, out_indices=None)
        if name == "num_channels":  # the hybrid's CNN reads the same images (see the class docstring)
            backbone = self.__dict__.get("backbone_config")
            if isinstance(backbone, BitConfig):
                backbone.num_channels = value

    def _selects_last_stage_only(self) -> bool:
        """Whether the backbone's stage choice is the default one, the last block alone."""
        fields = self.__dict__
        if fields.get("_out_features") is None or "backbone_config" not in fields:  # still being built
            return False
        return fields["_out_features"] == [self.stage_names[-1]]

    def to_dict(self):
        output = super().to_dict()
        if self._selects_last_stage_only():  # the default: saved as such, so it follows a changed depth
            output["out_features"] = output["out_indices"] = None
        return output

    # ----------------------------------------------------------------- derived values
    @property
    def image_hw(self) -> tuple[int, int]:
        """`image_size` as `(height, width)`."""
        return _pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        """`patch_size` as `(height, width)`."""
        return _pair(self.patch_size, "patch_size")

    @property
    def is_hybrid(self) -> bool:
        return self.backbone_config is not None

    @property
    def backbone_stride(self) -> int:
        """Downsampling of the hybrid's CNN (1 for a plain ViT): the stem's 4, then 2 per stage after
        the first, capped at the backbone's `output_stride` (as BiT's encoder computes it)."""
        if self.backbone_config is None:
            return 1
        stride = 4
        for _ in self.backbone_config.depths[1:]:
            if stride < self.backbone_config.output_stride:
                stride *= 2
        return stride

    @property
    def token_stride_hw(self) -> tuple[int, int]:
        """Pixels between the centres of neighbouring tokens: the patch size, times the CNN's
        stride for hybrids (R50+ViT-B/16: 16 x 1 = 16)."""
        (ph, pw), stride = self.patch_hw, self.backbone_stride
        return ph * stride, pw * stride

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid `(rows, cols)` at `image_size`."""
        (h, w), (sh, sw) = self.image_hw, self.token_stride_hw
        return h // sh, w // sw

    @property
    def stage_names(self) -> list[str]:
        """What `ViTReproBackbone` can return, in the order it computes them: for a hybrid its CNN's
        `"resnet_stem"`, `"resnet_stage1"`, ...; then `"stem"` (the embeddings, Eq. 1) and `"stage1"` ...
        `"stage{L}"` (the output of block l), the names transformers' ViT backbones (Dinov2) use."""
        names = ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]
        if isinstance(self.backbone_config, BitConfig):
            names = [f"resnet_{name}" for name in self.backbone_config.stage_names] + names
        return names

    @stage_names.setter
    def stage_names(self, value) -> None:
        # Derived from num_hidden_layers and backbone_config; accepted only when it says the same.
        if list(value) != self.stage_names:
            raise ValueError(
                f"`stage_names` follows from num_hidden_layers and backbone_config ({self.stage_names}); got {list(value)}."
            )

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: 1 (the class token) for token pooling, else 0."""
        return 1 if self.pooling == "token" else 0

    @property
    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of each block: linear from 0 at the first block to `drop_path_rate` at the
        last (timm's `calculate_drop_path_rates`; Huang et al.'s own rule starts at `drop_path_rate / L`)."""
        last = self.num_hidden_layers - 1
        return [self.drop_path_rate * index / last if last else 0.0 for index in range(self.num_hidden_layers)]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def pooled_size(self) -> int:
        """Width of the pooled output fed to the classifier (the pre-logits width if any)."""
        return self.representation_size or self.hidden_size

    @property
    def mpp_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """`(mean, std)` per channel that the inputs were normalised with (`mpp_image_mean` /
        `mpp_image_std`, 0.5 where unset): masked patch prediction de-normalises with them."""
        return self._per_channel(self.mpp_image_mean), self._per_channel(self.mpp_image_std)

    def _per_channel(self, value) -> tuple[float, ...]:
        """A normalisation field as one float per channel: None is 0.5 and a single number is
        used for every channel, as the image processors read `image_mean` / `image_std`."""
        value = 0.5 if value is None else value
        if isinstance(value, (int, float)):
            return (float(value),) * self.num_channels
        return tuple(float(v) for v in value)

    # ----------------------------------------------------------------- validation
    # Each `validate_*` runs at construction (huggingface_hub's @strict) and names the
    # field, the value received and the rule it breaks; `check_model_sizes` runs when a model
    # is built (see the class docstring).
    def validate_positive_sizes(self):
        for name in ("num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.representation_size is not None and self.representation_size <= 0:
            raise ValueError(
                f"`representation_size` must be a positive integer or None (no pre-logits layer), "
                f"got {self.representation_size}."
            )
        if self.layer_norm_eps <= 0:
            raise ValueError(f"`layer_norm_eps` must be > 0, got {self.layer_norm_eps}.")

    def check_model_sizes(self) -> None:
        """Raise `ModelSizeError` (a ValueError) unless a model can be built from these sizes: the heads divide
        `hidden_size`, and the token cells (patch size, times a hybrid's CNN stride) tile
        `image_size`. Called when a model is built and when position embeddings are resized."""
        if self.hidden_size % self.num_attention_heads:
            raise ModelSizeError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}): each head gets hidden_size / num_attention_heads channels."
            )
        (h, w), (sh, sw) = self.image_hw, self.token_stride_hw
        if h % sh or w % sw:
            rule = f"`patch_size` {self.patch_size}"
            if self.is_hybrid:
                rule += f" times the backbone's stride {self.backbone_stride}"
            raise ModelSizeError(
                f"`image_size` {self.image_size} must be divisible by {rule}: each token covers a "
                f"{sh}x{sw} pixel cell and the cells must tile the {h}x{w} image."
            )

    def validate_backbone(self):
        backbone = self.backbone_config
        if backbone is None:
            return
        if not isinstance(backbone, BitConfig):
            raise ValueError(
                f"`backbone_config` must be a BitConfig (or a dict of its fields), got {type(backbone).__name__}."
            )
        if backbone.width_factor != 1:
            raise ValueError(
                f"`backbone_config.width_factor` must be 1 (the paper's hybrids use plain-width ResNets), "
                f"got {backbone.width_factor}."
            )
        if len(backbone.depths) != len(backbone.hidden_sizes):
            raise ValueError(
                f"`backbone_config.depths` {list(backbone.depths)} and `hidden_sizes` {list(backbone.hidden_sizes)} "
                "must have one entry per stage."
            )
        # GroupNorm runs on the stem, each stage's output and each bottleneck (a quarter as wide).
        widths = [backbone.embedding_size] + [w for out in backbone.hidden_sizes for w in (out, out // 4)]
        if any(width % backbone.num_groups for width in widths):
            raise ValueError(
                f"`backbone_config.num_groups` ({backbone.num_groups}) must divide every GroupNorm's channels: "
                f"stem {backbone.embedding_size}, stage outputs {list(backbone.hidden_sizes)} and their "
                "bottleneck widths (a quarter of each)."
            )

    def validate_feature_pyramid(self):
        scales = self.feature_pyramid_scales
        if scales is None:
            return
        values = [float(scale) for scale in scales]
        if not values or any(v not in FEATURE_PYRAMID_SCALES for v in values) or values != sorted(set(values), reverse=True):
            raise ValueError(
                f"`feature_pyramid_scales` must be distinct values out of {list(FEATURE_PYRAMID_SCALES)}, finest "
                f"first (e.g. [4, 2, 1, 0.5], ViTDet's pyramid); got {scales!r}."
            )

    def validate_choices(self):
        for name, allowed in (
            ("pooling", POOLING_MODES),
            ("classifier_init", CLASSIFIER_INITS),
            ("position_embedding_interpolation", tuple(POSITION_EMBEDDING_INTERPOLATIONS)),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not a known activation; try 'gelu'.")

    def validate_dropout_rates(self):
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {value}.")

    def validate_self_supervision(self):
        rate = self.mpp_corruption_rate
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"`mpp_corruption_rate` must be in (0, 1] (the paper corrupts 0.5), got {rate}.")
        split = list(self.mpp_corruption_split)
        if len(split) != 3 or any(p < 0 for p in split) or abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(
                f"`mpp_corruption_split` must be three non-negative fractions (mask, random other patch, keep) "
                f"summing to 1, e.g. (0.8, 0.1, 0.1); got {self.mpp_corruption_split!r}."
            )
        if self.mpp_target not in MPP_TARGETS:
            choices = ", ".join(map(repr, MPP_TARGETS))
            raise ValueError(f"`mpp_target` must be one of {choices}; got {self.mpp_target!r}.")
        for name in ("mpp_image_mean", "mpp_image_std"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and len(value) != self.num_channels:
                raise ValueError(
                    f"`{name}` must hold one value per input channel (num_channels={self.num_channels}), got "
                    f"{list(value)}: pass the image processor's `{name.removeprefix('mpp_')}`."
                )
        if any(s <= 0 for s in self._per_channel(self.mpp_image_std)):
            raise ValueError(f"`mpp_image_std` must be positive, got {self.mpp_image_std!r}.")
        if self.encoder_stride is not None and self.encoder_stride <= 0:
            raise ValueError(
                f"`encoder_stride` must be a positive integer or None (the patch size), got {self.encoder_stride}."
            )

    def validate_parameter_efficient_options(self):
        for name in ("prompt_tokens", "adapter_bottleneck"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0 (0: off), got {value}.")
        if self.prompt_deep and not self.prompt_tokens:
            raise ValueError("`prompt_deep=True` needs `prompt_tokens` > 0 (the number of prompts per block).")

    # ----------------------------------------------------------------- variants
    @classmethod
    def from_variant(cls, name: str, **overrides) -> "ViTReproConfig":
        """Build the config of a named variant, e.g. ``from_variant("ViT-B/16", num_labels=10)``.

        The table lives in ``hf_vit_repro.variants`` (not shipped with checkpoints).
        """
        try:
            from hf_vit_repro.variants import variant_kwargs
        except ImportError as err:  # remote-code copy without the package
            raise ImportError("`from_variant` needs the `hf_vit_repro` package: pip install hf-vit-repro") from err
        return cls(**{**variant_kwargs(name), **overrides})


__all__ = [
    "ViTReproConfig",
    "ModelSizeError",
    "FEATURE_PYRAMID_SCALES",
    "MPP_TARGETS",
    "POSITION_EMBEDDING_INTERPOLATIONS",
]
