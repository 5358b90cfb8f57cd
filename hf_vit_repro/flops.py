"""Forward FLOPs per image of every model family the package trains, from the config alone.

    from hf_vit_repro.flops import forward_flops
    forward_flops(config, 224)            # ViTReproConfig (plain or hybrid) or transformers' BitConfig

A multiply-add counts as 2 FLOPs, and only matrix products and convolutions are counted (what
`torch.utils.flop_counter.FlopCounterMode` counts, and the usual convention for MFU and for the
paper's compute axis): attention softmax, norms (LayerNorm, GroupNorm, the weight standardisation
of BiT's kernels), activations, pooling and biases are left out. A training step costs 3x the
forward FLOPs (backward = 2x forward), so the pretraining compute of a run is
`3 * forward_flops(config, resolution) * images_seen` (paper Sec. 4.4 and Figure 5 compare models
by it, as exaFLOPs and TPUv3-core-days).

- ViT (paper Eq. 1-4), per encoder block with S tokens, q of them queried, width D, MLP width M:
  k, v projections 4*S*D*D + q projection and output 4*q*D*D + scores and weighted values
  4*q*S*D + MLP 4*q*D*M; q = S except in this package's classifier with token pooling, whose last
  block runs the query, output and MLP for the class token alone (`class_token_only_last_block`).
  Plus the patch embedding 2*N*(P*P*C_in)*D, the pre-logits layer 2*D*D' if any, and the head
  2*D'*K (D' the pre-logits width, else D).
- Convolution (BiT ResNets and the hybrids' CNN): 2 * H_out * W_out * (C_in / groups) * C_out *
  k_h * k_w, with H_out, W_out from the padding the config uses (transformers' `BitModel`: fixed
  symmetric padding for BiT, TF "SAME" for the hybrids). A ResNet-v2 bottleneck unit is a 1x1
  conv to a quarter of the width, a 3x3 conv (stride 2 in the first unit of stages 2-4), a 1x1
  conv back, and in the first unit a strided 1x1 projection; the stem is a 7x7 conv of stride 2
  followed by a stride-2 max-pool; the head is one dense layer 2*C*K on the pooled features.
- Hybrid: its CNN plus the ViT on the CNN's feature map (patches of 1 x 1 on it).
"""

from __future__ import annotations

import math


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def _conv_out(size: int, kernel: int, stride: int, padding: str | None, dilation: int = 1) -> int:
    """Output length of a convolution or pool as transformers' Bit layers pad it: "SAME" keeps
    ceil(size / stride) (static or dynamic TF padding), "VALID" pads nothing, None pads
    ((stride - 1) + dilation * (kernel - 1)) // 2 on both sides (BiT's fixed padding)."""
    if padding == "SAME":
        return math.ceil(size / stride)
    pad = 0 if padding == "VALID" else ((stride - 1) + dilation * (kernel - 1)) // 2
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def bit_flops(config, image_size, head: bool = True) -> int:
    """Forward FLOPs of transformers' `BitModel` (+ its classifier when `head`) for one image of
    `image_size` (int or (height, width)); `config` is a `BitConfig` (preactivation or bottleneck
    blocks, any padding, width factor, output stride)."""
    from transformers.models.bit.modeling_bit import make_div

    height, width = _pair(image_size)
    padding = config.global_padding.upper() if config.global_padding else None
    # Stem: 7x7 conv, stride 2, then a 3x3 max-pool of stride 2 (constant pad 1 first with fixed
    # padding, dynamic "SAME" padding when `embedding_dynamic_padding`).
    height, width = (_conv_out(s, 7, 2, padding) for s in (height, width))
    flops = 2 * height * width * config.num_channels * config.embedding_size * 7 * 7
    pool = "SAME" if config.embedding_dynamic_padding else "VALID"
    pad = 0 if padding == "SAME" else 2  # BitEmbeddings pads by 1 on each side unless "SAME"
    height, width = (_conv_out(s + pad, 3, 2, pool) for s in (height, width))

    in_channels, current_stride, dilation = config.embedding_size, 4, 1
    for stage, (depth, hidden) in enumerate(zip(config.depths, config.hidden_sizes)):
        out_channels = make_div(hidden * config.width_factor)
        stride = 1 if stage == 0 else 2
        if current_stride >= config.output_stride:  # dilate instead of striding, as BitEncoder does
            dilation, stride = dilation * stride, 1
        current_stride *= stride
        mid = make_div(out_channels * 0.25)
        for unit in range(depth):
            unit_stride = stride if unit == 0 else 1
            out_h, out_w = (_conv_out(s, 3, unit_stride, padding, dilation) for s in (height, width))
            flops += 2 * height * width * in_channels * mid  # conv1, 1x1
            flops += 2 * out_h * out_w * mid * mid * 9  # conv2, 3x3 (stride here)
            flops += 2 * out_h * out_w * mid * out_channels  # conv3, 1x1
            if unit == 0:  # projection shortcut, 1x1 with the unit's stride
                flops += 2 * out_h * out_w * in_channels * out_channels
            height, width, in_channels = out_h, out_w, out_channels
    if head:
        flops += 2 * in_channels * max(int(config.num_labels), 0)
    return flops


def vit_flops(config, image_size, class_token_only_last_block: bool = False, head: bool = True) -> int:
    """Forward FLOPs of `ViTReproModel` (+ its classifier when `head`) for one image: the encoder,
    the patch embedding, the hybrid's CNN and the head (see the module docstring).
    `class_token_only_last_block`: what `ViTReproForImageClassification` computes with token pooling
    (transformers' and timm's ViTs run every block on all tokens)."""
    height, width = _pair(image_size)
    d, m, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    sh, sw = config.token_stride_hw
    n = (height // sh) * (width // sw)
    s = n + config.num_prefix_tokens

    def block(q: int) -> int:
        return 4 * s * d * d + 2 * q * (2 * d * d + 2 * d * m) + 4 * q * s * d

    last_queries = 1 if class_token_only_last_block and config.pooling == "token" else s
    ph, pw = config.patch_hw
    flops = (layers - 1) * block(s) + block(last_queries)
    if config.is_hybrid:
        c_in = config.backbone_config.hidden_sizes[-1]
        flops += bit_flops(config.backbone_config, (height, width), head=False)
    else:
        c_in = config.num_channels
    flops += 2 * n * ph * pw * c_in * d
    if config.representation_size:  # the pre-logits layer (the base model's pooler)
        flops += 2 * d * config.representation_size
    if head:
        flops += 2 * config.pooled_size * max(int(config.num_labels), 0)
    return flops


def forward_flops(config, image_size, *, class_token_only_last_block: bool = False, head: bool = True) -> int:
    """Forward FLOPs of one image at `image_size` (int or (height, width)) for the classifier a
    config builds: `ViTReproConfig` (ViT or hybrid, `vit_flops`) or transformers' `BitConfig` (BiT
    ResNet, `bit_flops`). `head=False` leaves the classifier out (the base model's count)."""
    from transformers import BitConfig

    if isinstance(config, BitConfig):
        return bit_flops(config, image_size, head=head)
    if hasattr(config, "token_stride_hw"):
        return vit_flops(config, image_size, class_token_only_last_block=class_token_only_last_block, head=head)
    raise TypeError(
        f"forward_flops knows ViTReproConfig and BitConfig, not {type(config).__name__} "
        f"(model_type {getattr(config, 'model_type', None)!r})."
    )


__all__ = ["forward_flops", "vit_flops", "bit_flops"]
