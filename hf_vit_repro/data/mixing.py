"""Batch mixing: BiT's MixUp (`mixup`), big_vision's MixUp and DeiT's CutMix (`mix_batch`).

Each returns (mixed images, the partner images' labels, lambda); the loss is then
lambda L(labels) + (1 - lambda) L(partner labels) (`training.optim.classification_loss`), which
for softmax and sigmoid cross-entropy, with or without label smoothing, equals the loss on the
mixed soft targets `soft_targets(...)` (both losses are linear in the target).

Draws are seeded by the training step's `key` = (seed, update, micro-batch, process): lambda, the
choice of MixUp or CutMix and the CutMix box by (seed, update) alone, so every micro-batch and
process of one update mixes alike and a resumed step mixes the same way.

- `mixup` (BiT-HyperRule, BiT Sec. 3.3; big_transfer's `mixup_data`): lambda ~ Beta(alpha, alpha),
  partner = a random permutation of the micro-batch.
- `mix_batch(mixup_p=p)` (AugReg; big_vision `utils.get_mixup`): a ~ Beta(p, p),
  lambda = max(a, 1 - a), partner = the micro-batch rolled by one (`jnp.roll(x, 1, axis=0)`).
- `mix_batch(cutmix_alpha=alpha)` (DeiT; Yun et al. 2019, timm's `Mixup` in batch mode):
  lambda ~ Beta(alpha, alpha), a box of side sqrt(1 - lambda) times the image's, centred
  uniformly and clipped to the image, pasted from the partner; lambda is then recomputed as the
  area left unpasted (timm's `correct_lam`). With both on, each update picks CutMix or MixUp with
  probability 1/2 (timm's `switch_prob`). Differences from timm: the partner is the batch rolled
  by one (timm flips the batch; either pairs every image with another), and MixUp's lambda is
  big_vision's max(a, 1 - a) draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: timm Mixup's `switch_prob` (DeiT): the chance an update uses CutMix when MixUp is on too.
CUTMIX_SWITCH_PROB: float = 0.5


def _rng(key: Sequence[int]) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def mixup(pixel_values, labels, alpha: float, key: Sequence[int]):
    """MixUp as BiT-HyperRule applies it: `x = lam * x + (1 - lam) * x[perm]`, returning (mixed
    images, labels[perm], lam). lam ~ Beta(alpha, alpha) from `key[:2]` (seed, update), the
    permutation of the micro-batch from the whole `key`. pixel_values (B, C, H, W), labels (B,)."""
    lam = float(_rng(key[:2]).beta(alpha, alpha))
    perm = torch.from_numpy(_rng(key).permutation(labels.shape[0])).to(labels.device)
    return lam * pixel_values + (1.0 - lam) * pixel_values[perm], labels[perm], lam


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """CutMix's box (top, bottom, left, right), bottom / right exclusive: sides int(H sqrt(1 - lam))
    and int(W sqrt(1 - lam)), centre uniform over the image, clipped to it (timm's `rand_bbox`)."""
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, bottom, left, right


def mix_batch(pixel_values, labels, key: Sequence[int], mixup_p: float = 0.0, cutmix_alpha: float = 0.0):
    """big_vision's MixUp (`mixup_p`) and / or DeiT's CutMix (`cutmix_alpha`) on one micro-batch:
    (mixed images, partner labels, lam), the partner being the batch rolled by one. Neither on:
    the inputs unchanged with lam 1. pixel_values (B, C, H, W), labels (B,)."""
    if not mixup_p and not cutmix_alpha:
        return pixel_values, labels, 1.0
    rng = _rng(key[:2])
    use_cutmix = bool(cutmix_alpha) and (not mixup_p or rng.random() < CUTMIX_SWITCH_PROB)
    partner, partner_labels = pixel_values.roll(1, dims=0), labels.roll(1, dims=0)
    if use_cutmix:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        height, width = pixel_values.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, lam, rng)
        mixed = pixel_values.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        return mixed, partner_labels, 1.0 - (bottom - top) * (right - left) / (height * width)
    a = float(rng.beta(mixup_p, mixup_p))
    lam = max(a, 1.0 - a)
    return lam * pixel_values + (1.0 - lam) * partner, partner_labels, lam


def soft_targets(labels, partner_labels, lam: float, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mixed targets (B, K): lam * onehot(labels) + (1 - lam) * onehot(partner), each one-hot
    smoothed first (timm's `mixup_target`). Rows sum to 1."""
    def onehot(y):
        target = torch.nn.functional.one_hot(y, num_classes).float()
        return target * (1.0 - label_smoothing) + label_smoothing / num_classes

    return lam * onehot(labels) + (1.0 - lam) * onehot(partner_labels)
