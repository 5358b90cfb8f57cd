"""The Vision Transformer (Dosovitskiy et al., ICLR 2021) as a transformers model.

This file is shipped next to every checkpoint (``trust_remote_code``): it imports only
``torch``, ``transformers`` and its sibling ``configuration_vit_repro``.

Shapes: B batch, C channels, H x W image, P patch, N = HW / P^2 patches, D width,
S = N + (1 if token pooling) tokens, h heads of D / h channels each.

    z_0  = [x_class ; x_p E] + E_pos                 (paper Eq. 1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                (Eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l                      (Eq. 3)
    y    = LN(z_L)^0   (or the mean of the patch tokens of LN(z_L) for "gap")   (Eq. 4)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    MaskedImageModelingOutput,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vit_repro import POSITION_EMBEDDING_INTERPOLATIONS, ViTReproConfig

# ----------------------------------------------------------------------------- position embeddings


def resample_position_embeddings(
    position_embeddings: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resample learned 1-D position embeddings to another patch grid by 2-D interpolation.

    The paper's fine-tuning step (Sec. 3.2): the patch-grid part is viewed as an image of D
    channels and resized; the prefix (class-token) embeddings are kept as they are.

    Args:
        position_embeddings: `(1, num_prefix_tokens + rows * cols, D)`.
        new_grid: `(rows, cols)` to resample to.
        old_grid: `(rows, cols)` of the input; inferred as a square when `None`.
        num_prefix_tokens: embeddings before the grid (1 for the class token, 0 for "gap").
        interpolation: a key of `POSITION_EMBEDDING_INTERPOLATIONS`.

    Returns:
        `(1, num_prefix_tokens + new_rows * new_cols, D)`, same dtype and device. Pure: the input is
        not modified.
    """
    if interpolation not in POSITION_EMBEDDING_INTERPOLATIONS:
        raise ValueError(
            f"Unknown interpolation {interpolation!r}; choose one of {sorted(POSITION_EMBEDDING_INTERPOLATIONS)}."
        )
    prefix, grid = position_embeddings[:, :num_prefix_tokens], position_embeddings[:, num_prefix_tokens:]
    num_positions, dim = grid.shape[1], grid.shape[2]
    if old_grid is None:
        side = math.isqrt(num_positions)
        if side * side != num_positions:
            raise ValueError(
                f"Cannot infer the patch grid of {num_positions} position embeddings; pass `old_grid=(rows, cols)`."
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != num_positions:
        raise ValueError(f"old_grid {tuple(old_grid)} does not hold the {num_positions} grid position embeddings.")
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    if tuple(old_grid) == new_grid:
        return position_embeddings
    mode, align_corners, antialias = POSITION_EMBEDDING_INTERPOLATIONS[interpolation]
    image = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=new_grid, mode=mode, align_corners=align_corners, antialias=antialias)
    grid = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(position_embeddings.dtype)
    return torch.cat([prefix, grid], dim=1)


def resize_position_embeddings_in_state_dict(
    state_dict: dict[str, torch.Tensor], config: ViTReproConfig, image_size
) -> tuple[dict[str, torch.Tensor], ViTReproConfig]:
    """Permanently resample a checkpoint's position embeddings to a new `image_size`.

    Pure function over a state dict and its config, used when fine-tuning at 384 after
    pretraining at 224 (paper Sec. 3.2). Returns a new state dict (other tensors shared) and a
    new config whose `image_size` is the new one.
    """
    new_config = config.__class__.from_dict({**config.to_dict(), "image_size": image_size})
    new_config.check_model_sizes()
    keys = [k for k in state_dict if k.endswith("embeddings.position_embeddings")]
    if len(keys) != 1:
        raise KeyError(f"Expected one '*embeddings.position_embeddings' entry in the state dict, found {keys}.")
    new_state = dict(state_dict)
    new_state[keys[0]] = resample_position_embeddings(
        state_dict[keys[0]],
        new_grid=new_config.grid_size,
        old_grid=config.grid_size,
        num_prefix_tokens=config.num_prefix_tokens,
        interpolation=config.position_embedding_interpolation,
    )
    return new_state, new_config


# ----------------------------------------------------------------------------- initialisation


def _lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """flax's default kernel init: truncated normal (at +-2 std) with variance 1 / fan_in.

    (transformers' `init.lecun_normal_` truncates at +-2 in absolute terms, which for small fans
    leaves the 1/0.88 std correction uncorrected.)
    """
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


# ----------------------------------------------------------------------------- embeddings


class ViTReproPatchEmbeddings(nn.Module):
    """x_p E: a P x P convolution with stride P is the linear patch projection (Sec. 3.1).

    Hybrid (`config.backbone_config` set): the same projection applied to patches of the last
    feature map of a BiT ResNet (1 x 1 patches in the paper), so the hybrid is this ViT with a CNN
    in front, not a second architecture.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        self.patch_size = config.patch_hw
        in_channels = config.num_channels
        self.backbone = None
        if config.backbone_config is not None:
            from transformers import BitBackbone

            config.backbone_config.num_channels = config.num_channels  # one source: the ViT config's
            # The CNN has no attention; a kernel requested for the whole model (e.g. from_pretrained(...,
            # attn_implementation="sdpa")) is meant for the ViT, and BitBackbone only accepts "eager".
            config.backbone_config._attn_implementation = "eager"
            self.backbone = BitBackbone(config.backbone_config)
            _zero_init_last_norms(self.backbone)
            in_channels = config.backbone_config.hidden_sizes[-1]
        self.projection = nn.Conv2d(in_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size)
        self.channels_last = True  # the CNN's layout (see forward); False for NCHW

    def cnn_feature_maps(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Hybrid only: `(B, C, H, W)` -> the CNN's stem and stage outputs, `(B, C_k, H / s_k, W / s_k)`
        each (BiT's `hidden_states`; the last one is what the patches are cut from)."""
        # Channels-last (NHWC) convolutions and GroupNorms: about 3 % faster for R50+ViT-B/16 on
        # CPU (benchmarks/README.md), and the layout GPU kernels prefer. The projection's output in
        # this layout makes the flatten + transpose in `forward` a free view.
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return self.backbone(pixel_values, output_hidden_states=True).hidden_states

    def project(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The linear patch projection: `(B, C, H, W)` image or CNN map -> `(B, N, D)`, row-major patches."""
        return self.projection(feature_map).flatten(2).transpose(1, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, N, D)`, patches in row-major order."""
        if self.backbone is not None:
            pixel_values = self.cnn_feature_maps(pixel_values)[-1]
        return self.project(pixel_values)


def _zero_init_last_norms(backbone: nn.Module) -> None:
    """The original code's ResNet units start as identities: the scale of each unit's last
    GroupNorm ("gn3") is initialised to zero (models_resnet.py, `scale_init=zeros`). Loaded
    weights replace these values later in `from_pretrained`."""
    for name, module in backbone.named_modules():
        if name.endswith(".norm3") and isinstance(module, nn.GroupNorm):
            init.zeros_(module.weight)


class ViTReproEmbeddings(nn.Module):
    """Class token + patch embeddings + learned 1-D position embeddings, then dropout (Eq. 1).

    With `use_mask_token` (the self-supervised heads) it holds a learned [mask] embedding
    `(1, 1, D)` that replaces the patch embeddings `bool_masked_pos` selects, before the class
    token and the position embeddings are added (as transformers' `ViTEmbeddings`).
    """

    def __init__(self, config: ViTReproConfig, use_mask_token: bool = False):
        super().__init__()
        self.config = config
        self.patch_embeddings = ViTReproPatchEmbeddings(config)
        dim = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.num_prefix_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_mask_token else None
        rows, cols = config.grid_size
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_prefix_tokens + rows * cols, dim))
        self.dropout = nn.Dropout(config.hidden_dropout_prob) if config.hidden_dropout_prob else nn.Identity()
        # VPT (`config.prompt_tokens`): `(blocks, P, D)`, one row of prompts per block for VPT-deep, one for shallow.
        self.prompt_embeddings = None
        if config.prompt_tokens:
            rows = config.num_hidden_layers if config.prompt_deep else 1
            self.prompt_embeddings = nn.Parameter(torch.zeros(rows, config.prompt_tokens, dim))

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        replacement_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, S, D)`. `replacement_index` `(B, N)`: position n takes the patch
        embedding of patch `replacement_index[b, n]` (masked patch prediction's "random other patch";
        the identity changes nothing); then `bool_masked_pos` `(B, N)` puts the [mask] embedding where
        True. Position embeddings stay those of the position."""
        embeddings = self.patch_embeddings(pixel_values)
        if replacement_index is not None or bool_masked_pos is not None:
            embeddings = self._corrupt(embeddings, bool_masked_pos, replacement_index)
        return self.add_positions(embeddings, pixel_values.shape[-2:], interpolate_pos_encoding)

    def add_positions(
        self, patch_embeddings: torch.Tensor, image_hw: tuple[int, int], interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Patch embeddings `(B, N, D)` of an `image_hw` image -> `(B, S, D)`: the class token prepended,
        the position embeddings (resampled to the image's grid with `interpolate_pos_encoding`) added,
        then dropout."""
        position_embeddings = self.position_embeddings
        if interpolate_pos_encoding:
            (height, width), (sh, sw) = image_hw, self.config.token_stride_hw
            position_embeddings = resample_position_embeddings(
                position_embeddings,
                new_grid=(height // sh, width // sw),
                old_grid=self.config.grid_size,
                num_prefix_tokens=self.config.num_prefix_tokens,
                interpolation=self.config.position_embedding_interpolation,
            )
        embeddings = patch_embeddings
        if self.cls_token is not None:
            embeddings = torch.cat([self.cls_token.expand(embeddings.shape[0], -1, -1), embeddings], dim=1)
        embeddings = self.dropout(embeddings + position_embeddings)
        if self.prompt_embeddings is not None:
            embeddings = self.insert_prompts(embeddings, 0)
        return embeddings

    def insert_prompts(self, hidden_states: torch.Tensor, block: int, replace: bool = False) -> torch.Tensor:
        """VPT (Jia et al. 2022, Sec. 3.2): block `block`'s prompts `(P, D)` put after the class token (first, if
        any) and before the patch tokens: inserted (`(B, S, D)` -> `(B, S + P, D)`, at the first block) or
        `replace`-ing the P tokens there (VPT-deep, at every later block). No position embedding, no dropout."""
        start = self.config.num_prefix_tokens
        prompts = self.prompt_embeddings[block].to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)
        end = start + prompts.shape[1] if replace else start
        return torch.cat([hidden_states[:, :start], prompts, hidden_states[:, end:]], dim=1)

    def _corrupt(self, embeddings: torch.Tensor, bool_masked_pos, replacement_index) -> torch.Tensor:
        batch, num_patches, dim = embeddings.shape
        for name, value in (("replacement_index", replacement_index), ("bool_masked_pos", bool_masked_pos)):
            if value is not None and tuple(value.shape) != (batch, num_patches):
                raise ValueError(
                    f"`{name}` must have shape (batch, num_patches) = ({batch}, {num_patches}), got {tuple(value.shape)}."
                )
        if replacement_index is not None:
            index = replacement_index.to(device=embeddings.device, dtype=torch.long)
            embeddings = embeddings.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError(
                    "`bool_masked_pos` needs a [mask] embedding, which this model does not have: use "
                    "ViTReproForMaskedImageModeling / ViTReproForMaskedPatchPrediction (or ViTReproModel(config, "
                    "use_mask_token=True))."
                )
            mask = bool_masked_pos.to(device=embeddings.device, dtype=torch.bool).unsqueeze(-1)
            embeddings = torch.where(mask, self.mask_token.to(embeddings.dtype), embeddings)
        return embeddings


# ----------------------------------------------------------------------------- encoder


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention: softmax(q k^T * scaling) v, softmax in float32.

    q, k, v: `(B, h, S, D/h)`. Returns the output `(B, S, h, D/h)` and the weights `(B, h, S, S)`.
    """
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _reads_weights_safely(*modules: nn.Module) -> bool:
    """True when a fast path may read these modules' `weight` / `bias` instead of calling them.

    Users wrap our layers: peft swaps a `Linear` for a LoRA layer, torch's quantisation for a
    quantised one, parametrizations subclass it, hooks and accelerate's offloading change what a
    call computes. Reading `module.weight` past any of them computes a different model, silently.
    So the fast paths run only on the exact stock classes with no hooks of their own and no
    instance-level `forward`; anything else takes the composed path, which calls every module.
    torch's module-global hooks are left out on purpose: the tools that set them (FlopCounterMode's
    module tracker, memory trackers) observe, and must measure the program that runs without them.
    """
    return all(
        type(module) in (nn.Linear, nn.LayerNorm)
        and not (module._forward_hooks or module._forward_pre_hooks)
        and not (module._backward_hooks or module._backward_pre_hooks)
        and "forward" not in module.__dict__
        for module in modules
    )


class _Bf16CpuAttention(torch.autograd.Function):
    """softmax(q k^T * scaling) v for bf16 training on the CPU, with a backward of four batched
    matrix products.

    torch's CPU flash-attention kernel (what sdpa picks there) is slow in backward for bf16: on a
    2-core Xeon with AMX, forward + backward of one ViT-B/16 block's attention at batch 8 took 44 ms
    with it and 20 ms this way, and a whole bf16 training step of ViT-S/16 and ViT-B/16 ran about 1.2x
    faster (benchmarks/README.md, "bf16 training after `_Bf16CpuAttention`"). The price is memory:
    the attention probabilities (B, h, S_q, S_k) are kept for backward, in bf16 (about 7.5 MB a block
    for ViT-B/16 at batch 8, 4-6% of a bf16 training step's memory; flash keeps a log-sum-exp per
    row). Products in bf16, softmax computed in fp32 inside torch's bf16 kernel; outputs and
    gradients are within bf16 rounding of the fp32 reference (tested).
    """

    @staticmethod
    def forward(ctx, query, key, value, scaling: float):
        probs = torch.softmax(torch.matmul(query, key.transpose(-2, -1)).mul_(scaling), dim=-1)
        ctx.save_for_backward(query, key, value, probs)
        ctx.scaling = scaling
        return torch.matmul(probs, value)

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, probs = ctx.saved_tensors
        grad_value = torch.matmul(probs.transpose(-2, -1), grad_output)
        grad_probs = torch.matmul(grad_output, value.transpose(-2, -1))
        grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(ctx.scaling)
        return torch.matmul(grad_scores, key), torch.matmul(grad_scores.transpose(-2, -1), query), grad_value, None


def _use_bf16_cpu_training_attention(query: torch.Tensor, dropout: float, training: bool) -> bool:
    """Whether transformers' sdpa attention runs as `_Bf16CpuAttention`: bf16 on the CPU with autograd recording
    (training; inference keeps the flash kernel, faster in forward), no attention dropout, not
    under torch.compile (inductor chooses its own kernel)."""
    return (
        query.dtype == torch.bfloat16
        and query.device.type == "cpu"
        and query.requires_grad  # computed in this forward: autograd is recording
        and not (training and dropout)
        and not torch.compiler.is_compiling()
    )


class ViTReproAttention(nn.Module):
    """Multi-head self-attention (MSA) with one fused qkv projection.

    The kernel is chosen through transformers' attention registry (`config._attn_implementation`):
    `"sdpa"` (default), `"eager"` (the reference above), flash attention when installed. When the
    attention weights are asked for, eager runs, since fused kernels never materialise them.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        num_queries: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S, D)` -> `(B, S, D)`; with `num_queries=n`, only the first n tokens' outputs
        `(B, n, D)` (they still attend to all S tokens): queries are projected for those tokens only."""
        batch, seq, dim = hidden_states.shape
        if num_queries is None:
            # Split, then move heads forward: the backward stacks the three gradients straight
            # into qkv's (B, S, 3, h, D/h) layout, with no copy to restore it.
            qkv = self.qkv(hidden_states).view(batch, seq, 3, self.num_heads, self.head_dim).unbind(2)
            query, key, value = (t.transpose(1, 2) for t in qkv)
        elif not _reads_weights_safely(self.qkv):
            # A wrapped qkv (LoRA, quantised, hooked) is called as a whole; the query rows are sliced after.
            qkv = self.qkv(hidden_states).view(batch, seq, 3, self.num_heads, self.head_dim)
            query = qkv[:, :num_queries, 0].transpose(1, 2)
            key, value = (t.transpose(1, 2) for t in qkv[:, :, 1:].unbind(2))
            seq = num_queries
        else:
            # Row blocks of the fused kernel are contiguous views: W_q = weight[:D], W_kv = weight[D:].
            weight, bias = self.qkv.weight, self.qkv.bias
            query = F.linear(hidden_states[:, :num_queries], weight[:dim], None if bias is None else bias[:dim])
            query = query.view(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
            kv = F.linear(hidden_states, weight[dim:], None if bias is None else bias[dim:])
            key, value = (t.transpose(1, 2) for t in kv.view(batch, seq, 2, self.num_heads, self.head_dim).unbind(2))
            seq = num_queries

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        # transformers' own sdpa only: a function registered in its place (to record or change attention) is called
        if attention_interface is sdpa_attention_forward and _use_bf16_cpu_training_attention(
            query, self.attention_dropout, self.training
        ):
            output = _Bf16CpuAttention.apply(query, key, value, self.scaling).transpose(1, 2)
            return self.o_proj(output.reshape(batch, seq, dim)), None
        kwargs.pop("output_hidden_states", None)
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(output.reshape(batch, seq, dim)), weights


# hidden_act -> F.gelu's `approximate`, for the activations `_GeluLinear` can fuse.
_FUSABLE_GELU = {"gelu": "none", "gelu_pytorch_tanh": "tanh"}


class _GeluLinear(torch.autograd.Function):
    """`linear(gelu(h), weight, bias)` that saves `h` but not `gelu(h)` for backward.

    Autograd would keep both the MLP's pre-activation and its activation (each `(B, S, 4D)`, the
    two largest tensors a block saves); recomputing the elementwise GELU in backward drops one of
    them, about a fifth of a block's activation memory, for one extra elementwise pass. Gradients
    equal autograd's (tested against the plain composition); no `torch.autograd.grad` inside, so
    torch.compile traces it without graph breaks.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, approximate: str):
        ctx.approximate = approximate
        ctx.save_for_backward(h, weight)
        return F.linear(F.gelu(h, approximate=approximate), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        # Under autocast the forward ran in low precision: compute in grad_out's dtype, return
        # the weight gradients in the parameters' dtype.
        grad_a = grad_out.matmul(weight.to(grad_out.dtype)).to(h.dtype)
        a = F.gelu(h, approximate=ctx.approximate)
        flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = flat.t().matmul(a.reshape(-1, a.shape[-1]).to(flat.dtype)).to(weight.dtype)
        grad_bias = flat.sum(0).to(weight.dtype)
        # grad_h overwrites grad_a (an elementwise kernel may write over its own input): one
        # (B, S, 4D) buffer fewer, as many as autograd's own MLP backward allocates.
        grad_h = torch.ops.aten.gelu_backward.grad_input(grad_a, h, approximate=ctx.approximate, grad_input=grad_a)
        return grad_h, grad_weight, grad_bias, None


class ViTReproMLP(nn.Module):
    """Dense -> GELU -> dropout -> dense -> dropout (Appendix B.1: dropout after every dense layer).

    With `recompute_activation` set (`model.set_mlp_activation_recompute()`), training with GELU
    and without dropout runs the activation and the second dense layer as one autograd function
    that recomputes the activation in backward (see `_GeluLinear`): less memory, one more pass.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        p = config.hidden_dropout_prob
        self.dropout = nn.Dropout(p) if p else nn.Identity()
        self.fused_gelu = _FUSABLE_GELU.get(config.hidden_act) if not p else None
        self.recompute_activation = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if (
            self.recompute_activation
            and self.fused_gelu is not None
            and hidden_states.requires_grad
            and _reads_weights_safely(self.fc2)
        ):
            return _GeluLinear.apply(hidden_states, self.fc2.weight, self.fc2.bias, self.fused_gelu)
        return self.dropout(self.fc2(self.dropout(self.activation(hidden_states))))


class ViTReproAdapter(nn.Module):
    """AdaptFormer's parallel MLP adapter (Chen et al., NeurIPS 2022, Sec. 3.2): `s * up(drop(ReLU(down(x))))`
    with a `adapter_bottleneck`-wide bottleneck, added to the block's output beside its MLP. `x` is the MLP
    sub-block's input (the released code's parallel placement: the adapter reads the residual stream, with no
    norm of its own). Starts at zero (the up-projection is zero-initialised), so an adapted model first computes
    what the pretrained one does."""

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        self.down_proj = nn.Linear(config.hidden_size, config.adapter_bottleneck)
        self.activation = nn.ReLU()
        self.up_proj = nn.Linear(config.adapter_bottleneck, config.hidden_size)
        p = config.hidden_dropout_prob
        self.dropout = nn.Dropout(p) if p else nn.Identity()
        self.scale = config.adapter_scale

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.dropout(self.activation(self.down_proj(hidden_states)))) * self.scale


def drop_path(branch: torch.Tensor, rate: float) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016) on a residual branch `(B, ...)`: each sample's branch is zeroed
    with probability `rate` and the kept ones are multiplied by 1 / (1 - rate), so its expectation is unchanged.

    One Bernoulli draw per sample from torch's default generator of the branch's device, so gradient
    checkpointing (`torch.utils.checkpoint` saves that generator's state before the forward and restores it
    for the recomputation) drops the same samples twice. The mask has the branch's dtype, as timm's."""
    keep = 1.0 - rate
    mask = torch.empty((branch.shape[0],) + (1,) * (branch.ndim - 1), dtype=branch.dtype, device=branch.device)
    return branch * mask.bernoulli_(keep).div_(keep)


def _packed_bf16_blocks_enabled() -> bool:
    """Whether bf16 CPU inference runs its blocks as `ViTReproLayer._packed_bf16_forward`: on a CPU with AMX, where
    it was measured faster than the native kernel (not yet elsewhere), when this torch has oneDNN's fused linear
    operators with bf16 (x86 builds: the ones inductor uses). Decided once per process."""
    global _PACKED_BF16
    if _PACKED_BF16 is None:
        mkldnn = torch.ops.mkldnn
        get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.9
        try:
            capabilities = get_capabilities() if get_capabilities is not None else {}
            _PACKED_BF16 = bool(
                capabilities.get("amx_bf16") and capabilities.get("amx_tile")
                and torch.backends.mkldnn.is_available()
                and hasattr(mkldnn, "_linear_pointwise") and hasattr(mkldnn, "_reorder_linear_weight")
                and mkldnn._is_mkldnn_bf16_supported()
            )
        except (AttributeError, RuntimeError):
            _PACKED_BF16 = False
    return _PACKED_BF16


_PACKED_BF16: bool | None = None
# nn.Linear parameter -> ((data pointer, version) of the bf16 weight it was packed from, oneDNN's blocked copy)
_PACKED_WEIGHTS = WeakIdKeyDictionary()


def _packed_weight(linear: nn.Linear) -> torch.Tensor:
    """`linear`'s bf16 weight in oneDNN's blocked layout, made once and remade when the weight changes (a new
    tensor in `.data`, as `precision.Bf16Weights` and `model.to()` swap in, or an in-place update)."""
    weight = linear.weight
    stamp = (weight.data_ptr(), weight._version)
    entry = _PACKED_WEIGHTS.get(weight)
    if entry is None or entry[0] != stamp:
        entry = (stamp, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        _PACKED_WEIGHTS[weight] = entry
    return entry[1]


class ViTReproLayer(GradientCheckpointingLayer):
    """One pre-norm encoder block (Eqs. 2-3).

    CPU inference (no autograd, sdpa, exact GELU, no attention weights requested) runs the block
    as PyTorch's fused native encoder-layer kernel, the one behind `nn.TransformerEncoderLayer`'s
    fast path: our fused qkv / out / MLP / norm weights are exactly its arguments. It gives the
    same outputs as the composed path (tested to 1e-5) with fewer intermediate tensors. It reads
    the modules' weights, so it runs only while they are stock `nn.Linear` / `nn.LayerNorm` with no
    hooks (`_reads_weights_safely`) and attention is transformers' own sdpa; under peft, quantisation,
    a hook or a registered attention function the block calls its modules. With bf16 weights on a CPU
    with AMX (bf16 copies under `precision.PrecisionRun`, or a bf16 model) the same block runs on
    oneDNN's fused linears with packed weights instead (`_packed_bf16_forward`), faster there.
    """

    def __init__(self, config: ViTReproConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ViTReproAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTReproMLP(config)
        p = config.hidden_dropout_prob
        self.dropout = nn.Dropout(p) if p else nn.Identity()
        self.adapter = ViTReproAdapter(config) if config.adapter_bottleneck else None
        # Stochastic depth of this block (`config.drop_path_rates`): a number, not a module, so a model
        # without it has the same modules, state dict and program as before it existed.
        self.drop_path_rate = drop_path_rate

    def _weight_modules(self) -> tuple[nn.Module, ...]:
        attention, mlp = self.attention, self.mlp
        return attention.qkv, attention.o_proj, mlp.fc1, mlp.fc2, self.layernorm_before, self.layernorm_after

    def _use_native_fast_path(self, hidden_states: torch.Tensor, output_attentions: bool) -> bool:
        attention = self.attention
        return (
            not output_attentions
            and not self.training
            and self.adapter is None
            and hidden_states.device.type == "cpu"
            # first: the checks below read weights, which a quantised Linear has only as a method
            and _reads_weights_safely(*self._weight_modules())
            and not (torch.is_grad_enabled() and (hidden_states.requires_grad or attention.qkv.weight.requires_grad))
            and attention.config._attn_implementation == "sdpa"
            # transformers' own sdpa: a function registered in its place (to record or change attention) is called
            and ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None) is sdpa_attention_forward
            and attention.config.hidden_act == "gelu"
            and attention.qkv.bias is not None
            and not torch.compiler.is_compiling()
        )

    # CPU inference in bf16 runs `_packed_bf16_forward` rather than the native kernel (benchmarks switch it off)
    _packed_bf16_inference = True

    def _use_packed_bf16(self, hidden_states: torch.Tensor) -> bool:
        """After `_use_native_fast_path`: whether the block runs as `_packed_bf16_forward` (bf16 inputs and weights)."""
        return (
            self._packed_bf16_inference
            and hidden_states.dtype == torch.bfloat16
            and all(t is None or t.dtype == torch.bfloat16 for m in self._weight_modules() for t in (m.weight, m.bias))
            # weights made under torch.inference_mode have no version counter to tell an in-place change by
            and not any(m.weight.is_inference() for m in self._weight_modules()[:4])
            and not torch.jit.is_tracing()  # a trace would keep the packed copies as constants
            and _packed_bf16_blocks_enabled()
        )

    def _packed_bf16_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The block in bf16 on oneDNN's fused linear operators, as inductor's freezing pass builds it: each
        weight packed once into oneDNN's blocked layout (`_packed_weight`), GELU fused into fc1 and both
        residual additions into o_proj and fc2, attention by torch's flash kernel. On the project's 2-core
        Xeon (AMX), ViT-S/16 and ViT-B/16 bf16 inference ran 1.20x and 1.05x (one-off: 1.17x, 1.08x) faster
        than on the native kernel, which hands plain weights to every product and computes attention with
        `bmm` and a bf16 softmax (benchmarks/README.md). The price is one more bf16 copy of the block's
        weights, held while the model lives."""
        attention, mlp, norm1, norm2 = self.attention, self.mlp, self.layernorm_before, self.layernorm_after
        linear = torch.ops.mkldnn._linear_pointwise
        batch, seq, dim = hidden_states.shape
        x = hidden_states.reshape(batch * seq, dim)
        qkv = linear(F.layer_norm(x, (dim,), norm1.weight, norm1.bias, norm1.eps),
                     _packed_weight(attention.qkv), attention.qkv.bias, "none", [], "")
        query, key, value = qkv.view(batch, seq, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)
        heads = F.scaled_dot_product_attention(query, key, value, scale=attention.scaling)
        heads = heads.transpose(1, 2).reshape(batch * seq, dim)
        x = linear.binary(heads, x, _packed_weight(attention.o_proj), attention.o_proj.bias, "add")
        h = linear(F.layer_norm(x, (dim,), norm2.weight, norm2.bias, norm2.eps),
                   _packed_weight(mlp.fc1), mlp.fc1.bias, "gelu", [], "none")
        return linear.binary(h, x, _packed_weight(mlp.fc2), mlp.fc2.bias, "add").view(batch, seq, dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        num_queries: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """`(B, S, D)` -> `(B, S, D)`, or with `num_queries=n` the first n tokens' outputs `(B, n, D)`:
        the block is per-token apart from attention, so when only the class token's final state is
        needed (token pooling), the last block runs its MLP, output projection and queries on that
        token alone, about a tenth of the block's work for S = 197."""
        if num_queries is None and self._use_native_fast_path(hidden_states, output_attentions):
            if self._use_packed_bf16(hidden_states):
                return self._packed_bf16_forward(hidden_states)
            attention, mlp = self.attention, self.mlp
            return torch._transformer_encoder_layer_fwd(
                hidden_states, attention.config.hidden_size, attention.num_heads,
                attention.qkv.weight, attention.qkv.bias, attention.o_proj.weight, attention.o_proj.bias,
                True, True, self.layernorm_before.eps,  # use_gelu (exact), norm_first
                self.layernorm_before.weight, self.layernorm_before.bias,
                self.layernorm_after.weight, self.layernorm_after.bias,
                mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias,
                None, None,  # no mask
            )  # fmt: skip
        attention_output, _ = self.attention(
            self.layernorm_before(hidden_states), output_attentions, num_queries=num_queries, **kwargs
        )
        residual = hidden_states if num_queries is None else hidden_states[:, :num_queries]
        hidden_states = residual + self._drop_path(self.dropout(attention_output))
        mlp_output = self._drop_path(self.mlp(self.layernorm_after(hidden_states)))
        if self.adapter is not None:  # AdaptFormer: in parallel to the MLP (Eq. 3 + s * adapter), never dropped
            return hidden_states + mlp_output + self.adapter(hidden_states)
        return hidden_states + mlp_output

    def _drop_path(self, branch: torch.Tensor) -> torch.Tensor:
        """Stochastic depth on one residual branch, in training only (the native fast path above never trains)."""
        return drop_path(branch, self.drop_path_rate) if self.training and self.drop_path_rate else branch


class ViTReproPooler(nn.Module):
    """Eq. 4: the class token's final state (or the mean patch token for "gap"), then the optional
    pre-logits "representation" layer (dense + tanh) of pretraining."""

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        self.pooling = config.pooling
        self.num_prefix_tokens = config.num_prefix_tokens + config.prompt_tokens  # "gap" never averages VPT prompts
        if config.representation_size:
            self.dense = nn.Linear(config.hidden_size, config.representation_size)
            self.activation = nn.Tanh()
        else:
            self.dense = None

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        if self.pooling == "token":
            pooled = sequence_output[:, 0]
        else:
            pooled = sequence_output[:, self.num_prefix_tokens :].mean(dim=1)
        if self.dense is not None:
            pooled = self.activation(self.dense(pooled))
        return pooled


# ----------------------------------------------------------------------------- running chosen blocks


def _block_indices(indices, num_blocks: int, name: str) -> list[int]:
    """timm's block selection -> sorted 0-based block indices: None all, an int n the last n, a list of
    indices (negative from the end)."""
    if indices is None:
        return list(range(num_blocks))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_blocks:
            raise ValueError(
                f"`{name}`={indices} asks for the last {indices} blocks; the model has {num_blocks}, so pass 1 to "
                f"{num_blocks} (or a list of block indices)."
            )
        return list(range(num_blocks - indices, num_blocks))
    chosen = []
    for index in indices:
        if not isinstance(index, int) or not -num_blocks <= index < num_blocks:
            raise ValueError(
                f"`{name}` holds {index!r}, not a block index of this {num_blocks}-block model "
                f"(0 to {num_blocks - 1}, or negative from the end)."
            )
        chosen.append(index % num_blocks)
    if not chosen:
        raise ValueError(f"`{name}` is empty: name at least one block (or pass None for all of them).")
    return sorted(set(chosen))


def _layer_with_attention(layer: nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one block with the eager attention kernel; its output and attention weights `(B, h, S, S)`
    (read off the attention module's output, as transformers' output capturing does)."""
    captured = []
    handle = layer.attention.register_forward_hook(lambda module, args, output: captured.append(output[1]))
    try:
        hidden_states = layer(hidden_states, output_attentions=True)
    finally:
        handle.remove()
    return hidden_states, captured[0]


def _run_blocks(layers, hidden_states: torch.Tensor, keep: set[int], attend: set[int], last: int):
    """Blocks 0 .. `last` on `(B, S, D)` tokens. Returns the last block's output, `{index: output}` of
    the blocks in `keep` and `{index: attention weights}` of those in `attend`; the others run with
    whichever kernel the model is set to."""
    kept, attentions = {}, {}
    for index, layer in enumerate(layers[: last + 1]):
        if index in attend:
            hidden_states, attentions[index] = _layer_with_attention(layer, hidden_states)
        else:
            hidden_states = layer(hidden_states)
        if index in keep:
            kept[index] = hidden_states
    return hidden_states, kept, attentions


def _token_grid(config: ViTReproConfig, pixel_values: torch.Tensor) -> tuple[int, int]:
    """`(rows, cols)` of the patch tokens of an input `(B, C, H, W)`."""
    (sh, sw) = config.token_stride_hw
    return pixel_values.shape[-2] // sh, pixel_values.shape[-1] // sw


def _tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens `(B, N, D)` in row-major order -> a feature map `(B, D, rows, cols)`."""
    batch, _, dim = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, dim, grid[0], grid[1])


# ----------------------------------------------------------------------------- models

# What `save_pretrained` writes into config.json so that a checkpoint folder (or Hub repo) resolves
# every Auto class with trust_remote_code=True, whichever class was saved.
AUTO_MAP = {
    "AutoConfig": "configuration_vit_repro.ViTReproConfig",
    "AutoModel": "modeling_vit_repro.ViTReproModel",
    "AutoModelForImageClassification": "modeling_vit_repro.ViTReproForImageClassification",
    "AutoModelForMaskedImageModeling": "modeling_vit_repro.ViTReproForMaskedImageModeling",
    "AutoModelForPreTraining": "modeling_vit_repro.ViTReproForMaskedPatchPrediction",
    "AutoBackbone": "modeling_vit_repro.ViTReproBackbone",
}


class ViTReproPreTrainedModel(PreTrainedModel):
    config: ViTReproConfig
    config_class = ViTReproConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTReproEmbeddings", "ViTReproLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": ViTReproLayer, "attentions": ViTReproAttention}
    # Trainer: our forward takes **kwargs but computes a per-batch mean loss itself, so gradient
    # accumulation must not rescale it (see DESIGN.md, pitfalls).
    accepts_loss_kwargs = False

    def __init__(self, config: ViTReproConfig, *inputs, **kwargs):
        # Sizes that relate two fields are checked when the model is built, not by the config
        # (as transformers' ViTConfig accepts them; see ViTReproConfig's docstring).
        config.check_model_sizes()
        super().__init__(config, *inputs, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """The original code's initialisation (google-research/vision_transformer, models_vit.py).

        Dense layers of the blocks: Xavier-uniform kernels (q, k and v each as its own D x D
        matrix), MLP biases N(0, 1e-6), other biases 0; patch embedding and pre-logits:
        LeCun-normal; position embeddings N(0, 0.02); class token 0; classifier per
        `config.classifier_init` (zeros: the paper's fine-tuning head). Helpers from
        `transformers.initialization` leave loaded weights alone.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            # transformers initialises leaf modules one by one (parents with no parameters of their
            # own are skipped for custom code), so a dense layer's role is read off its name.
            role = next(name for name, sub in self.named_modules() if sub is module).rsplit(".", 1)[-1]
            if role == "qkv":
                bound = math.sqrt(6.0 / (2 * module.in_features))
                init.uniform_(module.weight, -bound, bound)
            elif role in ("o_proj", "fc1", "fc2"):
                init.xavier_uniform_(module.weight)
            elif role == "down_proj":  # AdaptFormer's adapter: torch's default Linear init down, zero up
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            elif role == "up_proj":
                init.zeros_(module.weight)
            elif role == "classifier" and self.config.classifier_init == "zeros":
                init.zeros_(module.weight)
            elif role == "classifier":
                init.normal_(module.weight, std=std)
            else:  # pre-logits (pooler.dense): flax's default Dense init
                _lecun_normal_(module.weight)
            if module.bias is not None:
                init.normal_(module.bias, std=1e-6) if role in ("fc1", "fc2") else init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            _lecun_normal_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.ConvTranspose2d):  # the backbone's feature pyramid
            init.normal_(module.weight, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, ViTReproEmbeddings):
            init.normal_(module.position_embeddings, std=std)
            if module.cls_token is not None:
                init.zeros_(module.cls_token)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
            if module.prompt_embeddings is not None:  # VPT's: uniform, Xavier's bound over a patch's pixels and D
                (ph, pw) = self.config.patch_hw
                bound = math.sqrt(6.0 / (self.config.num_channels * ph * pw + self.config.hidden_size))
                init.uniform_(module.prompt_embeddings, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def set_attn_implementation(self, attn_implementation, allow_all_kernels: bool = False):
        # The hybrid's CNN has no attention (BitBackbone refuses every kernel but "eager"): a plain
        # name chooses the ViT's kernel only.
        if isinstance(attn_implementation, str) and self.config.backbone_config is not None:
            attn_implementation = {"": attn_implementation, "backbone_config": "eager"}
        return super().set_attn_implementation(attn_implementation, allow_all_kernels=allow_all_kernels)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes only the saved class into `auto_map`; pre-fill the other entries.
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_mlp_activation_recompute(self, enabled: bool = True) -> None:
        """Trade speed for memory in training: each MLP saves its pre-activation only and
        recomputes GELU in backward, one `(B, S, 4D)` tensor fewer per block (ViT-S/16, batch 8 at
        224: 740 MB instead of 841 MB per training step) for one more elementwise pass (0-2 %
        slower on CPU; benchmarks/README.md). Applies to GELU MLPs without dropout; a lighter
        option than `activation_checkpointing_enable()`, which recomputes whole blocks."""
        for module in self.modules():
            if isinstance(module, ViTReproMLP):
                module.recompute_activation = bool(enabled)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that skip weight decay: position embeddings, class and mask
        tokens, norm weights and all biases (every parameter that is not a matrix or a conv kernel)."""
        return {
            name
            for name, param in self.named_parameters()
            if param.ndim <= 1 or name.endswith(("position_embeddings", "cls_token", "mask_token"))
        }

    def resize_position_embeddings(self, image_size) -> None:
        """Resample the position embeddings to `image_size` for good (the fine-tuning step at a new
        resolution) and update `config.image_size`."""
        state = {k: v.detach() for k, v in self.named_parameters() if k.endswith("embeddings.position_embeddings")}
        new_state, new_config = resize_position_embeddings_in_state_dict(state, self.config, image_size)
        embeddings = self.base_model.embeddings
        embeddings.position_embeddings = nn.Parameter(next(iter(new_state.values())).clone())
        self.config.image_size = new_config.image_size  # the config every submodule holds

    def _check_pixel_values(self, pixel_values, interpolate_pos_encoding: bool) -> torch.Tensor:
        """Clear errors for inputs the model cannot take; casts floating inputs to the weights' dtype."""
        if pixel_values is None:
            raise ValueError("`pixel_values` is required: a float tensor of shape (batch, channels, height, width).")
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4:
            raise ValueError(
                f"`pixel_values` must have shape (batch, channels, height, width), got shape {tuple(pixel_values.shape)}."
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"`pixel_values` must be a floating-point tensor, got {pixel_values.dtype}: normalise images with the "
                "image processor (AutoImageProcessor) instead of passing raw integer pixels."
            )
        config = self.config
        channels, height, width = pixel_values.shape[1:]
        if channels != config.num_channels:
            raise ValueError(
                f"`pixel_values` has {channels} channels but the model was configured with num_channels="
                f"{config.num_channels}."
            )
        (sh, sw) = config.token_stride_hw
        if interpolate_pos_encoding:
            if height % sh or width % sw:
                what = "patch size" if not config.is_hybrid else "patch size times the backbone's stride"
                raise ValueError(f"Input size {height}x{width} is not a multiple of the {what} {sh}x{sw}; resize or crop it.")
        elif (height, width) != config.image_hw:
            raise ValueError(
                f"Input size {height}x{width} does not match the model's image_size {config.image_hw}. Pass "
                "`interpolate_pos_encoding=True` to run at another resolution, or resize the inputs."
            )
        weight = self.base_model.embeddings.patch_embeddings.projection.weight
        return pixel_values.to(dtype=weight.dtype)

    # ----------------------------------------------------------------- intermediate features
    # Every class (the encoder, the heads, the backbone) runs its base model's embeddings and blocks.

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        stop_early: bool | None = None,
        return_prefix_tokens: bool = False,
        attention_indices: int | list[int] | tuple[int, ...] | None = None,
        output_dict: bool = False,
    ):
        """The outputs of chosen blocks, with timm's `forward_intermediates` contract (timm >= 1.0).

        Args:
            pixel_values: `(B, C, H, W)` of any size the token cells tile (a multiple of the patch size, times
                the CNN's stride for a hybrid): the position embeddings are resampled to its grid, as with
                `interpolate_pos_encoding=True`.
            indices: which blocks: an int n is the last n blocks, a list names blocks by 0-based index (negative
                from the end), None is all L. Returned in block order.
            norm: pass each through the encoder's final LayerNorm (as `last_hidden_state` is).
            output_fmt: `"NCHW"`: maps `(B, D, H / P, W / P)`; `"NLC"`: patch tokens `(B, N, D)`. Prefix
                (class) tokens are dropped from both.
            intermediates_only: return the list only.
            stop_early: run no block after the last one asked for (by `indices` or `attention_indices`). The
                default is `intermediates_only`, which needs nothing later; with `stop_early=True` and
                `intermediates_only=False` the final features are those of that last block, as in timm.
            return_prefix_tokens: each intermediate becomes a pair `(features, prefix tokens (B, 1, D))`
                (`(B, 0, D)` for `pooling="gap"`); in the dict, the prefix tokens go under their own key.
            attention_indices: blocks whose attention weights `(B, h, S, S)` to return (same forms as `indices`).
                Only these blocks run the eager attention kernel, so only their weights are ever held in memory
                (`output_attentions=True` materialises every block's). Needs `output_dict=True`.
            output_dict: return a dict: `"image_intermediates"`, `"image_intermediates_prefix"` (with
                `return_prefix_tokens`), `"image_features"` (unless `intermediates_only`) and `"attentions"`
                (a list in block order, with `attention_indices`).

        Returns:
            The list of intermediates (`intermediates_only`), else `(final features (B, S, D) after the final
            LayerNorm, list)`, or the dict.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"`output_fmt` must be 'NCHW' (feature maps) or 'NLC' (token sequences), got {output_fmt!r}.")
        encoder = self.base_model
        num_blocks = len(encoder.layers)
        take = _block_indices(indices, num_blocks, "indices")
        attend = [] if attention_indices is None else _block_indices(attention_indices, num_blocks, "attention_indices")
        if attend and not output_dict:
            raise ValueError("Attention weights are returned in the dict output: pass `output_dict=True` with `attention_indices`.")
        stop_early = intermediates_only if stop_early is None else stop_early
        last = max(take + attend) if stop_early else num_blocks - 1
        pixel_values = self._check_pixel_values(pixel_values, interpolate_pos_encoding=True)
        hidden_states = encoder.embeddings(pixel_values, interpolate_pos_encoding=True)
        hidden_states, kept, attentions = _run_blocks(encoder.layers, hidden_states, set(take), set(attend), last)

        prefix = self.config.num_prefix_tokens
        grid = _token_grid(self.config, pixel_values)
        intermediates, prefix_tokens = [], []
        for index in take:
            tokens = encoder.layernorm(kept[index]) if norm else kept[index]
            prefix_tokens.append(tokens[:, :prefix])
            intermediates.append(_tokens_to_map(tokens[:, prefix:], grid) if output_fmt == "NCHW" else tokens[:, prefix:])
        if output_dict:
            result = {"image_intermediates": intermediates}
            if return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix_tokens
            if not intermediates_only:
                result["image_features"] = encoder.layernorm(hidden_states)
            if attend:
                result["attentions"] = [attentions[index] for index in attend]
            return result
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return encoder.layernorm(hidden_states), intermediates


class ViTReproModel(ViTReproPreTrainedModel):
    """The ViT encoder: embeddings -> L pre-norm blocks -> final LayerNorm -> pooling.

    Returns `BaseModelOutputWithPooling`: `last_hidden_state` `(B, S, D)` after the final norm,
    `pooler_output` `(B, D)` (or `(B, representation_size)`), and on request `hidden_states`
    (L + 1 tensors: the embeddings, then each block's output, before the final norm) and
    `attentions` (L tensors `(B, h, S, S)`).

    `use_mask_token=True` adds the learned [mask] embedding that `bool_masked_pos` puts in place of
    patch embeddings (the masked-image-modeling and masked-patch-prediction heads build it so).
    """

    def __init__(self, config: ViTReproConfig, use_mask_token: bool = False):
        super().__init__(config)
        self.embeddings = ViTReproEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([ViTReproLayer(config, rate) for rate in config.drop_path_rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTReproPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        replacement_index: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """`bool_masked_pos` `(B, N)` (True: the patch embedding is replaced by the [mask] embedding) and
        `replacement_index` `(B, N)` (position n takes patch `replacement_index[b, n]`'s embedding) corrupt
        the patch embeddings; see `ViTReproEmbeddings.forward`."""
        interpolate_pos_encoding = bool(interpolate_pos_encoding)
        pixel_values = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        output_attentions = bool(kwargs.pop("output_attentions", None) or self.config.output_attentions)
        # Private switch of the classification head: only the pooled class token is needed, so the
        # last block computes that token's output alone (exact; see ViTReproLayer.forward).
        pooled_only = (
            kwargs.pop("_pooled_only", False)
            and self.config.pooling == "token"
            and not output_attentions
            and not kwargs.get("output_hidden_states", self.config.output_hidden_states)
        )
        hidden_states = self.embeddings(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            bool_masked_pos=bool_masked_pos,
            replacement_index=replacement_index,
        )
        last = len(self.layers) - 1
        deep_prompts = self.config.prompt_deep and self.embeddings.prompt_embeddings is not None
        for index, layer in enumerate(self.layers):
            if deep_prompts and index:  # VPT-deep: this block's own prompts replace the last block's outputs there
                hidden_states = self.embeddings.insert_prompts(hidden_states, index, replace=True)
            num_queries = self.config.num_prefix_tokens if pooled_only and index == last else None
            hidden_states = layer(hidden_states, output_attentions, num_queries=num_queries, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=self.pooler(sequence_output))


class ViTReproForImageClassification(ViTReproPreTrainedModel):
    """ViT with a linear classifier on the pooled representation.

    The loss is transformers' standard one for `config.problem_type` (single-label cross
    entropy, multi-label BCE, or regression MSE); `labels` are optional.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__(config)
        self.vit = ViTReproModel(config)
        self.classifier = self._new_classifier(config)
        self.post_init()

    @staticmethod
    def _new_classifier(config: ViTReproConfig) -> nn.Module:
        return nn.Linear(config.pooled_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def reset_classifier(
        self, num_labels: int, id2label: dict[int, str] | None = None, keep_representation: bool = False
    ) -> None:
        """The paper's fine-tuning step (Sec. 3.2): drop the pre-logits layer (unless
        `keep_representation`) and attach a zero-initialised `num_labels`-way head."""
        if num_labels < 0:
            raise ValueError(f"`num_labels` must be >= 0, got {num_labels}.")
        if id2label is not None and len(id2label) != num_labels:
            raise ValueError(f"`id2label` has {len(id2label)} entries but num_labels={num_labels}.")
        config = self.config
        if not keep_representation and config.representation_size:
            config.representation_size = None
            self.vit.pooler.dense = None
        config.id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {label: i for i, label in config.id2label.items()}
        head = self._new_classifier(config).to(self.vit.layernorm.weight.device, self.vit.layernorm.weight.dtype)
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.classifier = head

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        outputs: BaseModelOutputWithPooling = self.vit(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, _pooled_only=True, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels.to(logits.device), logits, self.config)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# ----------------------------------------------------------------------------- backbone (dense prediction)


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a `(B, C, H, W)` map, at every position (ViTDet's "LN" in its pyramid)."""

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return super().forward(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ViTReproSimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones for Object
    Detection", 2022, Sec. 3): maps at several resolutions from the ViT's one map `(B, D, h, w)`, with no
    lateral or top-down connections. Per entry of `config.feature_pyramid_scales`:

        4    transposed conv 2x2/2 (D -> D/2), LayerNorm, GELU, transposed conv 2x2/2 (D/2 -> D/4)
        2    transposed conv 2x2/2 (D -> D/2)
        1    the map as it is (D)
        0.5  max pooling 2x2/2 (D)

    ViTDet follows each level with 1x1 and 3x3 convolutions to a common width; the heads this is built
    for (UperNet's lateral and FPN convolutions) do that themselves, so `channels` stays per level.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__()
        dim, scales = config.hidden_size, [float(scale) for scale in config.feature_pyramid_scales]
        if (4.0 in scales and dim % 4) or (2.0 in scales and dim % 2):
            raise ValueError(
                f"The feature pyramid halves (scale 2) or quarters (scale 4) the width: hidden_size {dim} must be "
                "divisible by 4 for scale 4 and by 2 for scale 2."
            )
        self.levels = nn.ModuleList()
        self.channels = []
        for scale in scales:
            if scale == 4.0:
                level = nn.Sequential(
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    _ChannelLayerNorm(dim // 2, eps=config.layer_norm_eps),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                )
                width = dim // 4
            elif scale == 2.0:
                level, width = nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2), dim // 2
            elif scale == 1.0:
                level, width = nn.Identity(), dim
            else:  # 0.5
                level, width = nn.MaxPool2d(kernel_size=2, stride=2), dim
            self.levels.append(level)
            self.channels.append(width)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`(B, D, h, w)` -> one map per scale, `(B, channels[i], h * scale, w * scale)` (floor for 0.5)."""
        return tuple(level(feature_map) for level in self.levels)


class ViTReproBackbone(BackboneMixin, ViTReproPreTrainedModel):
    """The ViT (or hybrid) as a transformers backbone (`AutoBackbone`) for dense-prediction heads
    (UperNet, DPT, ...): feature maps from chosen stages of `config.stage_names`.

    `config.out_features` / `out_indices` choose the stages: `"stem"` (the token embeddings),
    `"stage1"` ... `"stage{L}"` (block outputs) and, for a hybrid, the CNN's `"resnet_stem"`,
    `"resnet_stage1"`, ... A ViT stage's map is its tokens after the final LayerNorm
    (`config.apply_layernorm`), class token dropped, laid out as `(B, D, H / P, W / P)` (`(B, D, H / 16,
    W / 16)` for R50+ViT-B/16); with `config.reshape_hidden_states=False` it is the token sequence
    `(B, S, D)`, class token first. ResNet maps are BiT's stage outputs `(B, C_k, H / s_k, W / s_k)`.
    With `config.feature_pyramid_scales` the one ViT map chosen becomes a ViTDet pyramid
    (`ViTReproSimpleFeaturePyramid`), and `channels` lists the pyramid's widths.

    Any input whose sides are multiples of the token stride runs: position embeddings are resampled to
    its grid (`config.position_embedding_interpolation`), so no `interpolate_pos_encoding` flag is needed.

    Weights: the parameter names are `ViTReproModel`'s, so `ViTReproBackbone.from_pretrained` of a
    classifier, encoder, masked-patch-prediction or masked-image-modeling checkpoint loads the encoder
    and reports the heads (classifier, pooler, mask token, decoder) as unused, as transformers' backbones
    do. `output_hidden_states=True` returns one entry per `stage_names` entry (ResNet maps, then the raw
    token sequences before the final norm); `output_attentions=True` every block's weights.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__(config)
        self.embeddings = ViTReproEmbeddings(config)
        self.layers = nn.ModuleList([ViTReproLayer(config, rate) for rate in config.drop_path_rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        cnn = config.backbone_config
        cnn_widths = [cnn.embedding_size, *cnn.hidden_sizes] if cnn is not None else []
        self.num_features = cnn_widths + [config.hidden_size] * (config.num_hidden_layers + 1)
        self.feature_pyramid = None
        if config.feature_pyramid_scales is not None:
            self._pyramid_source()
            self.feature_pyramid = ViTReproSimpleFeaturePyramid(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map (of each pyramid level with a pyramid)."""
        if self.feature_pyramid is not None:
            return list(self.feature_pyramid.channels)
        return super().channels

    def _pyramid_source(self) -> str:
        """The one ViT stage a feature pyramid is built from; raises unless `out_features` names exactly one."""
        config = self.config
        vit_stages = config.stage_names[-(config.num_hidden_layers + 1) :]
        if len(self.out_features) != 1 or self.out_features[0] not in vit_stages or not config.reshape_hidden_states:
            raise ValueError(
                f"A feature pyramid (feature_pyramid_scales={config.feature_pyramid_scales}) is built from one ViT map: "
                f"set `out_features` to one of {vit_stages[1:]} (ViTDet uses the last, {vit_stages[-1]!r}) and keep "
                f"`reshape_hidden_states=True`; got out_features={self.out_features}, "
                f"reshape_hidden_states={config.reshape_hidden_states}."
            )
        return self.out_features[0]

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        """`pixel_values` `(B, C, H, W)` -> `BackboneOutput` with `feature_maps` (one per `out_features`
        entry, or per pyramid level). `output_hidden_states` and `return_dict` behave as in every
        transformers backbone."""
        config = self.config
        pixel_values = self._check_pixel_values(pixel_values, interpolate_pos_encoding=True)
        if output_attentions is None:
            output_attentions = config.output_attentions
        patch_embeddings = self.embeddings.patch_embeddings
        cnn_maps = patch_embeddings.cnn_feature_maps(pixel_values) if config.is_hybrid else ()
        tokens = patch_embeddings.project(cnn_maps[-1] if cnn_maps else pixel_values)
        embedded = self.embeddings.add_positions(tokens, pixel_values.shape[-2:], interpolate_pos_encoding=True)
        blocks = range(len(self.layers))
        attend = set(blocks) if output_attentions else set()
        _, kept, attentions = _run_blocks(self.layers, embedded, set(blocks), attend, len(self.layers) - 1)
        hidden_states = (*cnn_maps, embedded, *(kept[index] for index in blocks))

        grid, prefix = _token_grid(config, pixel_values), config.num_prefix_tokens
        feature_maps = []
        for index, (name, state) in enumerate(zip(self.stage_names, hidden_states)):
            if name not in self.out_features:
                continue
            if index >= len(cnn_maps):  # a ViT stage: tokens
                state = self.layernorm(state) if config.apply_layernorm else state
                state = _tokens_to_map(state[:, prefix:], grid) if config.reshape_hidden_states else state
            feature_maps.append(state)
        if self.feature_pyramid is not None:
            self._pyramid_source()
            feature_maps = self.feature_pyramid(feature_maps[0])
        return BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=hidden_states,
            attentions=tuple(attentions[index] for index in blocks) if output_attentions else None,
        )


# ----------------------------------------------------------------------------- self-supervision
#
# Paper Sec. 4.6 and Appendix B.1.2 ("Self-supervision"): masked patch prediction, the analogue of
# BERT's masked language modelling. The original code does not include it; what is not stated in
# the paper (how the corrupted patches are drawn, the colour bins, the loss normalisation) is
# stated here where it is decided.


class PatchCorruption(IntEnum):
    """What masked patch prediction does to one patch embedding (the codes of `corruption` tensors).

    `NONE`: left alone and not predicted (no loss). `MASK`: replaced by the learned [mask]
    embedding. `RANDOM`: replaced by the embedding of a random other patch of the same image.
    `KEEP`: left as it is, but predicted (as BERT's unchanged 10%).
    """

    NONE = 0
    MASK = 1
    RANDOM = 2
    KEEP = 3


def sample_patch_corruption(
    num_patches: int,
    *,
    rate: float = 0.5,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the masked-patch-prediction corruption of ONE image of `num_patches` patches.

    Exactly `floor(rate * N + 0.5)` patches are chosen, uniformly without replacement (paper: 50%);
    each chosen patch independently becomes `MASK`, `RANDOM` or `KEEP` with the probabilities
    `split` = (mask, random, keep) (paper: 80/10/10). A `RANDOM` patch n takes the embedding of a
    patch drawn uniformly from the N - 1 others, never itself.

    Every random number comes from `generator` (a CPU `torch.Generator`; the global one when None)
    in a fixed order: a permutation of the N patches, one uniform per chosen patch for its kind,
    one partner per chosen patch. The same generator state therefore gives the same corruption
    whatever else runs, which makes a per-image generator (seeded from seed, epoch and row) give
    the same batches under any number of processes.

    Returns:
        `corruption` `(N,)` int64 `PatchCorruption` codes, and `replacement_index` `(N,)` int64: the
        patch whose embedding each position carries (its own index except at `RANDOM` positions).
    """
    split = tuple(float(p) for p in split)
    if num_patches < 1:
        raise ValueError(f"`num_patches` must be >= 1, got {num_patches}.")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"`rate` must be in (0, 1], got {rate}.")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"`split` must be three non-negative fractions (mask, random, keep) summing to 1; got {split}.")
    if num_patches < 2 and split[1] > 0:
        raise ValueError("Replacing a patch by a random other patch needs at least 2 patches per image.")
    num_chosen = int(math.floor(rate * num_patches + 0.5))
    chosen = torch.randperm(num_patches, generator=generator)[:num_chosen]
    uniform = torch.rand(num_chosen, generator=generator, dtype=torch.float64)
    partner = torch.randint(0, max(num_patches - 1, 1), (num_chosen,), generator=generator)
    partner = partner + (partner >= chosen).long()  # skip the patch itself: uniform over the others
    kinds = torch.full((num_chosen,), int(PatchCorruption.KEEP), dtype=torch.long)
    kinds[uniform < split[0] + split[1]] = int(PatchCorruption.RANDOM)
    kinds[uniform < split[0]] = int(PatchCorruption.MASK)
    corruption = torch.zeros(num_patches, dtype=torch.long)
    corruption[chosen] = kinds
    replacement_index = torch.arange(num_patches)
    is_random = kinds == int(PatchCorruption.RANDOM)
    replacement_index[chosen[is_random]] = partner[is_random]
    return corruption, replacement_index


def patchify(pixel_values: torch.Tensor, patch_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, N, C, ph, pw)`, patches in the row-major order of the tokens."""
    batch, channels, height, width = pixel_values.shape
    ph, pw = patch_hw
    rows, cols = height // ph, width // pw
    patches = pixel_values.reshape(batch, channels, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, rows * cols, channels, ph, pw)


COLOR_BITS = 3  # Appendix B.1.2: 3-bit colours, 8 levels per channel, 512 colours for RGB


def masked_patch_prediction_targets(
    pixel_values: torch.Tensor,
    patch_hw: tuple[int, int],
    target: str = "mean_color_3bit",
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
) -> torch.Tensor:
    """The masked-patch-prediction target of every patch (Appendix B.1.2), from normalised inputs.

    Colour targets are computed on the de-normalised pixels `x = clip(pixel_values * std + mean,
    0, 1)` (`image_mean` / `image_std`: the normalisation the image processor applied, per
    channel). A colour is quantised per channel to `floor(8 x)` (8 equal bins of [0, 1], x = 1 in
    the top bin) and numbered `sum_c bin_c * 8^(C-1-c)`: for RGB, `64 r + 8 g + b` in [0, 512).

    - `"mean_color_3bit"`: the mean colour of each patch: `(B, N)` int64.
    - `"downsized_4x4_3bit"`: each patch downsized to 4 x 4 by area averaging
      (`adaptive_avg_pool2d`), a colour per cell in row-major order: `(B, N, 16)` int64.
    - `"l2_patch"`: the patch's normalised pixels as given (no de-normalisation), flattened in
      (C, ph, pw) order: `(B, N, C * ph * pw)` float32.
    """
    patches = patchify(pixel_values.float(), patch_hw)  # (B, N, C, ph, pw)
    if target == "l2_patch":
        return patches.flatten(2)
    channels = pixel_values.shape[1]
    mean = torch.tensor(image_mean, dtype=torch.float32, device=pixel_values.device).view(channels, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32, device=pixel_values.device).view(channels, 1, 1)
    patches = (patches * std + mean).clamp(0.0, 1.0)
    if target == "mean_color_3bit":
        cells = patches.mean(dim=(-2, -1))  # (B, N, C)
    elif target == "downsized_4x4_3bit":
        batch, num_patches = patches.shape[:2]
        cells = F.adaptive_avg_pool2d(patches.flatten(0, 1), 4)  # (B * N, C, 4, 4)
        cells = cells.reshape(batch, num_patches, channels, 16).transpose(2, 3)  # (B, N, 16, C)
    else:
        raise ValueError(f"Unknown masked patch prediction target {target!r}.")
    levels = 2**COLOR_BITS
    bins = (cells * levels).floor().clamp(max=levels - 1).long()
    weights = levels ** torch.arange(channels - 1, -1, -1, device=bins.device)
    return (bins * weights).sum(-1)


def masked_patch_prediction_output_size(config: ViTReproConfig) -> int:
    """Width of the prediction head per patch: 8^C colour classes (512 for RGB), 16 x that for the
    4 x 4 target, C * ph * pw pixel values for L2 regression."""
    classes = (2**COLOR_BITS) ** config.num_channels
    if config.mpp_target == "mean_color_3bit":
        return classes
    if config.mpp_target == "downsized_4x4_3bit":
        return 16 * classes
    ph, pw = config.patch_hw
    return config.num_channels * ph * pw


def masked_patch_prediction_losses(logits: torch.Tensor, targets: torch.Tensor, target: str) -> torch.Tensor:
    """The loss of every patch, `(B, N)` float32: cross entropy of `logits` `(B, N, 8^C)` against
    colour classes `targets` `(B, N)` (for `"downsized_4x4_3bit"`, logits `(B, N, 16, 8^C)` against
    `(B, N, 16)`, averaged over the 16 cells), or the mean squared error over the pixels for
    `"l2_patch"` (`(B, N, C * ph * pw)` both). The model's loss is its mean over the corrupted patches."""
    batch, num_patches = targets.shape[:2]
    if target == "l2_patch":
        return (logits.float() - targets).pow(2).mean(-1)
    per_cell = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    return per_cell.view(batch, num_patches, -1).mean(-1)


def _check_self_supervised_config(config: ViTReproConfig, what: str) -> None:
    """The self-supervised heads corrupt patch embeddings of a plain ViT."""
    if config.is_hybrid:
        raise ValueError(
            f"{what} is defined for plain ViTs only (the paper has no hybrid variant of it): a hybrid's CNN "
            "sees every pixel, so corrupting its patch embeddings would not hide a patch's content from its "
            "neighbours. Remove `backbone_config`."
        )
    if config.representation_size:
        raise ValueError(
            f"{what} does not train the pre-logits layer (`representation_size`={config.representation_size}); "
            "set representation_size=None (a classifier initialised from this checkpoint adds its own head)."
        )
    if config.prompt_tokens:
        raise ValueError(
            f"{what} predicts one output per patch token; VPT prompts (`prompt_tokens`={config.prompt_tokens}) are a "
            "transfer method for classifiers: set prompt_tokens=0."
        )


@dataclass
class MaskedPatchPredictionOutput(ModelOutput):
    """Output of `ViTReproForMaskedPatchPrediction`.

    Args:
        loss: scalar, the mean over the corrupted patches of the batch of their cross entropy (colour
            targets; for the 4 x 4 target the mean over the 16 cells) or of their mean squared error
            (`"l2_patch"`); uncorrupted patches contribute nothing.
        logits: predictions for every patch: `(B, N, 8^C)`, `(B, N, 16, 8^C)` or `(B, N, C * ph * pw)`.
        targets: `masked_patch_prediction_targets` of the inputs: `(B, N)`, `(B, N, 16)` or
            `(B, N, C * ph * pw)`.
        corruption: `(B, N)` `PatchCorruption` codes used.
        replacement_index: `(B, N)`, the patch whose embedding each position carried.
        hidden_states, attentions: as `ViTReproModel`'s, when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    targets: torch.Tensor | None = None
    corruption: torch.LongTensor | None = None
    replacement_index: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ViTReproForMaskedPatchPrediction(ViTReproPreTrainedModel):
    """Masked patch prediction, the paper's self-supervised pretraining (Sec. 4.6, Appendix B.1.2).

    A fraction `config.mpp_corruption_rate` (0.5) of each image's patch embeddings is corrupted,
    `config.mpp_corruption_split` (0.8, 0.1, 0.1) of them by the learned [mask] embedding
    (`vit.embeddings.mask_token`), by the embedding of a random other patch, or not at all; a
    linear head on each corrupted patch's final representation predicts `config.mpp_target` (the
    3-bit mean colour, 512-way); the loss covers the corrupted patches only.

    The corruption is drawn in `forward` (per image, `sample_patch_corruption`, from `generator`)
    unless given as `corruption` / `replacement_index` tensors (a data pipeline that draws it per
    image with that image's generator). Colour targets de-normalise the inputs with
    `config.mpp_image_mean` / `mpp_image_std`: set them to the image processor's. Any patch grid
    (non-square too, other resolutions with `interpolate_pos_encoding`); plain ViTs only, without a
    pre-logits layer. `ViTReproForImageClassification.from_pretrained` of its checkpoint loads the
    encoder and reports the prediction head and mask token as unused.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__(config)
        _check_self_supervised_config(config, "Masked patch prediction")
        self.vit = ViTReproModel(config, use_mask_token=True)
        self.mpp_head = nn.Linear(config.hidden_size, masked_patch_prediction_output_size(config))
        self.post_init()

    def _corruption_for(self, batch, num_patches, corruption, replacement_index, generator, device):
        """The `(B, N)` corruption codes and replacement indices to apply, drawn when not given."""
        config = self.config
        if corruption is None:
            if replacement_index is not None:
                raise ValueError("`replacement_index` was given without `corruption`; pass both or neither.")
            drawn = [
                sample_patch_corruption(
                    num_patches, rate=config.mpp_corruption_rate, split=config.mpp_corruption_split, generator=generator
                )
                for _ in range(batch)
            ]
            corruption = torch.stack([c for c, _ in drawn])
            replacement_index = torch.stack([r for _, r in drawn])
        if tuple(corruption.shape) != (batch, num_patches):
            raise ValueError(
                f"`corruption` must have shape (batch, num_patches) = ({batch}, {num_patches}), got "
                f"{tuple(corruption.shape)}."
            )
        corruption = corruption.to(device=device, dtype=torch.long)
        # The range checks read tensor values, which torch.export (and so the ONNX exporter) cannot
        # trace: "data-dependent" guards. They only raise, so a traced graph skips them and takes
        # the values as given (hf_vit_repro.export feeds both tensors as graph inputs).
        check_values = not torch.compiler.is_compiling()
        if check_values and corruption.numel() and (corruption.min() < 0 or corruption.max() > max(PatchCorruption)):
            raise ValueError(f"`corruption` holds codes outside 0..{int(max(PatchCorruption))} (PatchCorruption).")
        is_random = corruption == PatchCorruption.RANDOM
        identity = torch.arange(num_patches, device=device).expand(batch, num_patches)
        if replacement_index is None:
            if bool(is_random.any()):
                raise ValueError(
                    "`corruption` has RANDOM patches: pass `replacement_index` to say which patch replaces each."
                )
            return corruption, identity
        if tuple(replacement_index.shape) != (batch, num_patches):
            raise ValueError(
                f"`replacement_index` must have shape (batch, num_patches) = ({batch}, {num_patches}), got "
                f"{tuple(replacement_index.shape)}."
            )
        replacement_index = replacement_index.to(device=device, dtype=torch.long)
        if check_values and replacement_index.numel() and (
            replacement_index.min() < 0 or replacement_index.max() >= num_patches
        ):
            raise ValueError(f"`replacement_index` must hold patch indices in [0, {num_patches}).")
        return corruption, torch.where(is_random, replacement_index, identity)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        corruption: torch.Tensor | None = None,
        replacement_index: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedPatchPredictionOutput:
        """`pixel_values` `(B, C, H, W)`, normalised as by the image processor. `corruption` `(B, N)`
        int codes (`PatchCorruption`) and `replacement_index` `(B, N)` (read at `RANDOM` positions)
        fix the corruption; when both are None it is drawn per image from `generator`. Their value
        ranges are checked in eager mode only: under torch.export / torch.compile they are taken as
        given (the checks read tensor values, which cannot be traced)."""
        pixel_values = self.vit._check_pixel_values(pixel_values, bool(interpolate_pos_encoding))
        batch, _, height, width = pixel_values.shape
        ph, pw = self.config.patch_hw
        num_patches = (height // ph) * (width // pw)
        corruption, replacement_index = self._corruption_for(
            batch, num_patches, corruption, replacement_index, generator, pixel_values.device
        )
        outputs: BaseModelOutputWithPooling = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            bool_masked_pos=corruption == PatchCorruption.MASK,
            replacement_index=replacement_index,
            **kwargs,
        )
        logits = self.mpp_head(outputs.last_hidden_state[:, self.config.num_prefix_tokens :])  # (B, N, K)
        mean, std = self.config.mpp_normalization
        targets = masked_patch_prediction_targets(pixel_values, (ph, pw), self.config.mpp_target, mean, std)
        if self.config.mpp_target == "downsized_4x4_3bit":
            logits = logits.unflatten(-1, (16, -1))  # (B, N, 16, 8^C)
        per_patch = masked_patch_prediction_losses(logits, targets, self.config.mpp_target)
        weight = (corruption != PatchCorruption.NONE).to(per_patch.dtype)
        loss = (per_patch * weight).sum() / weight.sum().clamp(min=1.0)
        return MaskedPatchPredictionOutput(
            loss=loss,
            logits=logits,
            targets=targets,
            corruption=corruption,
            replacement_index=replacement_index,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class ViTReproForMaskedImageModeling(ViTReproPreTrainedModel):
    """transformers' `ViTForMaskedImageModeling` interface on this package's ViT: SimMIM
    (Xie et al., 2022), not the paper's objective (see `ViTReproForMaskedPatchPrediction`).

    The patch embeddings that `bool_masked_pos` `(B, N)` selects are replaced by the learned [mask]
    embedding (`vit.embeddings.mask_token`, zero-initialised); the final patch tokens (class token
    dropped) are laid out on their `(rows, cols)` grid, and the decoder (a 1 x 1 convolution to
    `encoder_stride^2 * C` channels, then `PixelShuffle(encoder_stride)`) reconstructs the pixels
    `(B, C, rows * stride, cols * stride)`. The loss, given `bool_masked_pos`, is the L1 distance to
    `pixel_values` summed over the masked patches' pixels and channels, divided by (the number of
    masked pixels + 1e-5) and by C, as transformers computes it. Unlike transformers' class, the grid
    need not be square and other resolutions (`interpolate_pos_encoding`) get their own mask grid.
    `config.encoder_stride` None means the patch size. Plain ViTs only, without a pre-logits layer.
    """

    def __init__(self, config: ViTReproConfig):
        super().__init__(config)
        _check_self_supervised_config(config, "Masked image modeling")
        ph, pw = config.patch_hw
        if config.encoder_stride is None and ph != pw:
            raise ValueError(
                f"The decoder upsamples by one `encoder_stride` on both sides; patch_size {config.patch_size} is not "
                "square, so set `encoder_stride` explicitly."
            )
        self.encoder_stride = config.encoder_stride or ph
        self.vit = ViTReproModel(config, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, self.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(self.encoder_stride),
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedImageModelingOutput:
        """`pixel_values` `(B, C, H, W)`; `bool_masked_pos` `(B, N)` bool, True where the patch is masked
        (optional: without it, no loss). Returns `MaskedImageModelingOutput` with `reconstruction`."""
        ph, pw = self.config.patch_hw
        if bool_masked_pos is not None and (self.encoder_stride, self.encoder_stride) != (ph, pw):
            raise ValueError(
                f"With `bool_masked_pos`, `encoder_stride` ({self.encoder_stride}) must equal the patch size "
                f"{self.config.patch_size} so that the reconstruction has the input's size."
            )
        outputs: BaseModelOutputWithPooling = self.vit(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, bool_masked_pos=bool_masked_pos, **kwargs
        )
        tokens = outputs.last_hidden_state[:, self.config.num_prefix_tokens :]
        batch, _, dim = tokens.shape
        rows, cols = pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw
        reconstruction = self.decoder(tokens.transpose(1, 2).reshape(batch, dim, rows, cols))
        loss = None
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(batch, rows, cols).repeat_interleave(ph, 1).repeat_interleave(pw, 2)
            mask = mask.unsqueeze(1).to(reconstruction.dtype)  # (B, 1, H, W)
            l1 = F.l1_loss(pixel_values.to(reconstruction.dtype), reconstruction, reduction="none")
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        return MaskedImageModelingOutput(
            loss=loss, reconstruction=reconstruction, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "ViTReproPreTrainedModel",
    "ViTReproModel",
    "ViTReproForImageClassification",
    "ViTReproBackbone",
    "ViTReproSimpleFeaturePyramid",
    "ViTReproForMaskedImageModeling",
    "ViTReproForMaskedPatchPrediction",
    "MaskedPatchPredictionOutput",
    "PatchCorruption",
    "sample_patch_corruption",
    "masked_patch_prediction_targets",
    "masked_patch_prediction_losses",
    "resample_position_embeddings",
    "resize_position_embeddings_in_state_dict",
    "drop_path",
]
