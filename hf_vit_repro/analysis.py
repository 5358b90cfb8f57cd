"""The paper's inspection figures (Sec. 4.5, Figures 6 and 7, Appendix D.7) for any checkpoint of
this package.

One call per figure, each taking a model (`ViTReproModel` or `ViTReproForImageClassification`)
and writing one PNG:

- :func:`plot_embedding_filters`: the top principal components of the patch embedding E
  (Figure 7 left; plain ViT only), numbers from :func:`patch_embedding_pca`;
- :func:`plot_position_embedding_similarity`: cosine similarity of every position embedding
  with every other, one heat map per patch position (Figure 7 centre), numbers from
  :func:`position_embedding_similarity`;
- :func:`plot_mean_attention_distance`: attention-weighted distance between query and key patch
  centres per layer and head, against depth (Figure 7 right), numbers from
  :func:`mean_attention_distance`;
- :func:`plot_attention_rollout`: attention rollout (Abnar & Zuidema 2020) over the input images
  (Figure 6), numbers from :func:`attention_rollout`.

:func:`analyze_model` / :func:`analyze_checkpoint` draw all four and write the numbers to
`analysis.json` (the run-folder names of `runs.py`); `vit-repro analyze` is the command-line door.
:func:`attention_distance_trend` relates mean attention distance to depth (Spearman's rho, its
permutation p-value and the number of layers: with few layers a bare "it grows" means little).

Attention is read through forward hooks on the attention modules with the eager kernel (the only
one that materialises weights); each hook reduces its layer's `(B, heads, S, S)` weights at once
(to per-head distances and one running rollout product), so no more than one layer's attention
is alive at a time, on CPU or GPU.

Token geometry (where each token sits in the input image) lives in :func:`token_stride` and
:func:`token_centers`, and nowhere else.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .figures import new_figure, save_figure
from .runs import resolve_checkpoint

# File names inside the output folder (RUN_DIR/analysis for a run folder, see runs.py).
EMBEDDING_FILTERS_PNG = "embedding_filters.png"
POSITION_SIMILARITY_PNG = "position_embedding_similarity.png"
ATTENTION_DISTANCE_PNG = "mean_attention_distance.png"
ATTENTION_ROLLOUT_PNG = "attention_rollout.png"

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# The VTAB-1k splits of the data registry, drawn by row index (no streaming).
_VTAB1K_SPLITS = frozenset({"train800", "val200", "train800val200"})
# Files that mark a folder as a datasets layout (read by `datasets.load_dataset`) rather than a
# plain folder of images.
_DATASET_FILE_EXTENSIONS = frozenset({".parquet", ".arrow", ".tar", ".jsonl", ".csv"})


# ----------------------------------------------------------------------------- model access


def vit_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The `ViTReproModel` inside `model` (itself, or `.vit` of the classification model); a ValueError
    for a BiT ResNet or a model of another package."""
    from .configuration_vit_repro import ViTReproConfig
    from .models import find_family

    encoder = getattr(model, "base_model", model)
    family = find_family(encoder)
    if family is not None and not family.has_blocks:
        raise ValueError(
            f"This is a {family.name}: the analysis figures (patch-embedding filters, position-embedding similarity, "
            "attention distance and rollout, paper Sec. 4.5) exist only for Vision Transformers and hybrids."
        )
    if not isinstance(getattr(encoder, "config", None), ViTReproConfig) or not hasattr(encoder, "layers"):
        raise ValueError(
            f"Expected a hf_vit_repro model (ViTReproModel or ViTReproForImageClassification), got "
            f"{type(model).__name__}. Convert other ViT checkpoints first: `vit-repro convert SOURCE OUT`."
        )
    return encoder


def _is_hybrid(config) -> bool:
    return bool(config.is_hybrid)


# ----------------------------------------------------------------------------- token geometry


def token_stride(config) -> tuple[int, int]:
    """Pixels between the centres of neighbouring patch tokens, `(along height, along width)`.

    The one place analysis reads the image-space geometry of tokens, from the config's
    `token_stride_hw`: the patch size P for a plain ViT; for a hybrid, whose patch embedding acts
    on a CNN feature map, the CNN's total downsampling times the patch size on the map (R50+ViT-B/16:
    16 x 1).
    """
    sh, sw = config.token_stride_hw
    return int(sh), int(sw)


def token_grid(config, height: int, width: int) -> tuple[int, int]:
    """Patch-token grid `(rows, cols)` for an input of `height x width` pixels."""
    sh, sw = token_stride(config)
    return int(height // sh), int(width // sw)


def token_centers(config, height: int, width: int) -> torch.Tensor:
    """Image-space centres of the patch tokens, in pixels, for an input of `height x width`.

    Returns `(rows * cols, 2)` float32 `(y, x)` pairs in the tokens' row-major order: token
    `r * cols + c` covers the patch whose centre is `((r + 0.5) * stride_h, (c + 0.5) * stride_w)`.
    Prefix tokens (the class token) have no position and are not included.
    """
    sh, sw = token_stride(config)
    rows, cols = token_grid(config, height, width)
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) * sh
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) * sw
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(rows * cols, 2)


# ----------------------------------------------------------------------------- embedding filters


def patch_embedding_pca(weight: torch.Tensor, num_components: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the linear patch embedding E (paper Sec. 4.5, Figure 7 left).

    E maps a flattened P x P x C patch to D values; each of its D output units is a filter in
    pixel space. PCA runs over those D filters (mean-centred, float64 SVD); each principal axis is
    again a P x P x C image.

    Args:
        weight: the patch-projection conv kernel `(D, C, P_h, P_w)` (E transposed, as stored).
        num_components: how many components to return (28 in the paper); at most
            `min(D, C * P_h * P_w)` exist, and fewer are returned if asked for more.

    Returns:
        `components` `(k, C, P_h, P_w)` float32, unit norm, in decreasing order of variance, each
        signed so that its largest-magnitude entry is positive (PCA leaves the sign free); and
        `explained_variance_ratio` `(k,)`: each component's share of the total variance.
    """
    if weight.ndim != 4:
        raise ValueError(f"Expected a conv kernel of shape (D, C, P_h, P_w), got shape {tuple(weight.shape)}.")
    if num_components < 1:
        raise ValueError(f"`num_components` must be >= 1, got {num_components}.")
    dim, channels, ph, pw = weight.shape
    filters = weight.detach().to(torch.float64).cpu().reshape(dim, channels * ph * pw)
    filters = filters - filters.mean(dim=0, keepdim=True)
    _, singular, axes = torch.linalg.svd(filters, full_matrices=False)
    k = min(num_components, axes.shape[0])
    axes = axes[:k]
    peak = axes.abs().argmax(dim=1)
    axes = axes * torch.sign(axes.gather(1, peak[:, None]))
    variance = singular**2
    ratio = variance[:k] / variance.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return axes.reshape(k, channels, ph, pw).float(), ratio.float()


def _patch_embedding_weight(model: torch.nn.Module) -> torch.Tensor:
    encoder = vit_encoder(model)
    if _is_hybrid(encoder.config):
        raise ValueError(
            "Embedding-filter PCA applies to plain ViTs only: a hybrid's patch embedding acts on CNN "
            "feature maps, not on pixels, so its filters are not images."
        )
    return encoder.embeddings.patch_embeddings.projection.weight


# ----------------------------------------------------------------------------- position embeddings


def position_embedding_similarity(
    position_embeddings: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Cosine similarity of every patch position's embedding with every other (Figure 7 centre).

    Args:
        position_embeddings: `(1, num_prefix_tokens + rows * cols, D)` or `(num_prefix_tokens +
            rows * cols, D)`; the prefix (class-token) embeddings are dropped.
        grid: `(rows, cols)` of the patch grid (`config.grid_size`).
        num_prefix_tokens: 1 for class-token pooling, 0 for "gap".

    Returns:
        `(rows, cols, rows, cols)` float32: entry `[r, c, r2, c2]` is the cosine similarity between
        the embeddings of positions `(r, c)` and `(r2, c2)`; `[r, c]` is the heat map the paper
        draws in the tile of position `(r, c)`.
    """
    emb = position_embeddings.detach().float().cpu()
    if emb.ndim == 3:
        emb = emb[0]
    rows, cols = grid
    emb = emb[num_prefix_tokens:]
    if emb.shape[0] != rows * cols:
        raise ValueError(
            f"{emb.shape[0]} patch position embeddings (after {num_prefix_tokens} prefix) do not fill a "
            f"{rows}x{cols} grid."
        )
    unit = torch.nn.functional.normalize(emb, dim=-1)
    return (unit @ unit.T).reshape(rows, cols, rows, cols)


def _similarity_summary(similarity: torch.Tensor) -> dict[str, float]:
    """Mean similarity to the 4-neighbours vs to all other positions: a one-number check that the
    learned embeddings carry the 2-D layout."""
    rows, cols = similarity.shape[:2]
    r = torch.arange(rows).view(rows, 1, 1, 1)
    c = torch.arange(cols).view(1, cols, 1, 1)
    r2 = torch.arange(rows).view(1, 1, rows, 1)
    c2 = torch.arange(cols).view(1, 1, 1, cols)
    manhattan = ((r - r2).abs() + (c - c2).abs()).expand_as(similarity)
    neighbour, other = similarity[manhattan == 1], similarity[manhattan > 1]
    return {
        "mean_neighbour_similarity": float(neighbour.mean()) if neighbour.numel() else float("nan"),
        "mean_other_similarity": float(other.mean()) if other.numel() else float("nan"),
    }


# ----------------------------------------------------------------------------- attention


def mean_attention_distance(
    attention: torch.Tensor, centers: torch.Tensor, num_prefix_tokens: int = 1, renormalize: bool = True
) -> torch.Tensor:
    """Attention-weighted mean distance, in pixels, per image and head (paper Sec. 4.5, App. D.7).

    For each query patch token i: `d_i = sum_j a_ij * ||c_i - c_j||` over the key patch tokens j,
    with `c` the token centres in pixels; the result is the mean of `d_i` over query patch tokens.
    The class token has no position: its row and column are dropped.

    Surprise: dropping the class-token column leaves rows that sum to less than 1. With
    `renormalize=True` (default) the weights over patch keys are divided by their sum, so the
    value is a true weighted mean of distances: "how far does this head look, when it looks at
    patches". With `renormalize=False` the raw weights are used, so a head that puts its weight on
    the class token scores near 0, as if it were local. For "gap" models (no class token) both
    are the same.

    Args:
        attention: `(B, heads, S, S)` softmax weights, rows are queries; `S = num_prefix_tokens + N`.
        centers: `(N, 2)` token centres in pixels (:func:`token_centers`).
        num_prefix_tokens: tokens before the patch tokens (1 for the class token, 0 for "gap").
        renormalize: see above.

    Returns:
        `(B, heads)` float32 on `attention`'s device.
    """
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"Expected attention weights of shape (B, heads, S, S), got {tuple(attention.shape)}.")
    num_patches = attention.shape[-1] - num_prefix_tokens
    if centers.shape != (num_patches, 2):
        raise ValueError(
            f"Attention over {attention.shape[-1]} tokens ({num_prefix_tokens} prefix) needs {num_patches} token "
            f"centres, got centres of shape {tuple(centers.shape)}."
        )
    weights = attention[..., num_prefix_tokens:, num_prefix_tokens:].float()
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    centers = centers.to(device=weights.device, dtype=torch.float32)
    distance = torch.cdist(centers, centers)  # (N, N)
    return torch.einsum("bhij,ij->bhi", weights, distance).mean(dim=-1)


def uniform_attention_distance(config, height: int, width: int) -> float:
    """The mean attention distance, in pixels, of a head that attends uniformly to all patch tokens
    of a `height x width` input: the reference line between "local" and "global" heads (a trained
    head below it prefers near patches, above it far ones)."""
    centers = token_centers(config, height, width)
    n = centers.shape[0]
    return float(mean_attention_distance(torch.full((1, 1, n, n), 1.0 / n), centers, num_prefix_tokens=0))


def rollout_step(rollout: torch.Tensor | None, attention: torch.Tensor) -> torch.Tensor:
    """One layer of attention rollout (Abnar & Zuidema 2020): average the `(B, heads, S, S)`
    weights over heads, add the identity (the residual path), renormalise the rows to sum to 1,
    and left-multiply the rollout of the layers below (`None` before the first layer).

    Returns `(B, S, S)` float32: row i gives how much each input token flows into token i.
    """
    fused = attention.float().mean(dim=1)
    fused = fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
    fused = fused / fused.sum(dim=-1, keepdim=True)
    return fused if rollout is None else fused @ rollout


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout over layers, first layer first: `Â_L ... Â_2 Â_1` with
    `Â_l = rownorm(mean_heads(A_l) + I)` (see :func:`rollout_step`). Each `A_l` is `(B, heads, S, S)`;
    returns `(B, S, S)`."""
    if not attentions:
        raise ValueError("Attention rollout needs at least one layer of attention weights.")
    rollout = None
    for attention in attentions:
        rollout = rollout_step(rollout, attention)
    return rollout


def rollout_maps(rollout: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Attention maps from a rollout `(B, S, S)`: `(B, rows, cols)` over the patch grid.

    With a class token (paper Figure 6) the map is the class token's row over the patch tokens.
    Without one ("gap" pooling, whose output is the mean of the patch tokens) it is the mean of the
    patch tokens' rows, the rollout of the pooled representation.
    """
    rows, cols = grid
    if num_prefix_tokens:
        flow = rollout[:, 0, num_prefix_tokens:]
    else:
        flow = rollout.mean(dim=1)
    if flow.shape[-1] != rows * cols:
        raise ValueError(f"Rollout over {flow.shape[-1]} patch tokens does not fill a {rows}x{cols} grid.")
    return flow.reshape(-1, rows, cols)


@dataclass
class AttentionStatistics:
    """What :func:`attention_statistics` measures over a set of images.

    mean_distance: `(layers, heads)` mean attention distance in pixels of the model input,
        averaged over images. renormalized: how the class-token column was handled (see
        :func:`mean_attention_distance`). num_images: images seen. input_size: `(H, W)` of the model
        input. rollout_maps: `(k, rows, cols)` attention-rollout maps of the first k images, and
        rollout_inputs `(k, C, H, W)` the pixel values they were computed from (both on the CPU).
        logits: with `with_logits=True`, the classifier's `(N, K)` float32 logits from the same pass
        (on the CPU), else None.
    """

    mean_distance: np.ndarray
    renormalized: bool
    num_images: int
    input_size: tuple[int, int]
    rollout_maps: torch.Tensor
    rollout_inputs: torch.Tensor
    precision: dict[str, Any] | None = None
    logits: torch.Tensor | None = None


def attention_statistics(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    rollout_images: int = 8,
    renormalize: bool = True,
    progress: bool | int = False,
    precision: str = "auto",
    with_logits: bool = False,
) -> AttentionStatistics:
    """Mean attention distance per layer and head, and rollout maps, over batches of pixel values.

    Runs the encoder once per batch `(B, C, H, W)` with the eager attention kernel and a forward
    hook on each layer's attention that reduces the layer's weights at once: per-head distances
    are summed, and the rollout product is advanced for the first `rollout_images` images only.
    The model's attention implementation and train/eval mode are restored afterwards. Inputs at
    another resolution than `config.image_size` run with interpolated position embeddings.

    `progress`: False, True, or the expected number of images (the progress bar's total).
    `precision`: auto / bf16 / fp32 (`hf_vit_repro.precision`): bf16 is checked against fp32 on the
    first batch (the encoder's last hidden states) and falls back; only the kept pass's attention
    weights are counted. `AttentionStatistics.precision` records what ran.
    `with_logits`: run the whole classifier `model` instead of its encoder, in the same single pass,
    and keep its logits (`AttentionStatistics.logits`; the bf16 check then compares logits). It asks
    for `output_attentions`, so the last block computes every token, not the class token's alone.
    """
    from .precision import PrecisionRun

    from tqdm.auto import tqdm

    encoder = vit_encoder(model)
    config = encoder.config
    prefix = config.num_prefix_tokens
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    device = next(encoder.parameters()).device
    sums = torch.zeros(layers, heads, dtype=torch.float64, device=device)
    state: dict[str, Any] = {}

    # A hook stages each layer's contribution in the current pass; with the bf16 check a batch runs
    # twice (fp32, then bf16), and only the pass that is kept is counted.
    def make_hook(index: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) else None
            if weights is None:
                raise RuntimeError("The attention module returned no weights; the eager kernel is needed.")
            distance = mean_attention_distance(weights.float(), state["centers"], prefix, renormalize).sum(0).double()
            state["passes"][-1].append((index, distance, weights[: state["keep"]].float() if state["keep"] else None))

        return hook

    run = PrecisionRun(precision, device, classes=with_logits, what="analysis", model=model)
    logits = []

    previous_impl, was_training = config._attn_implementation, model.training
    handles = [layer.attention.register_forward_hook(make_hook(i)) for i, layer in enumerate(encoder.layers)]
    maps, inputs, count, size = [], [], 0, None
    total = progress if isinstance(progress, int) and not isinstance(progress, bool) else None
    bar = tqdm(total=total, unit="img", desc="attention", disable=not progress)
    try:
        # Only the ViT's own attention switches kernel: a dict keyed "" leaves sub-configs (a
        # hybrid's CNN) alone, whereas `model.set_attn_implementation` would also try to switch
        # them back to e.g. "sdpa", which BitBackbone refuses.
        config._attn_implementation = {"": "eager"}
        model.eval()
        with torch.inference_mode():
            for pixel_values in batches:
                pixel_values = pixel_values.to(device)
                height, width = pixel_values.shape[-2:]
                if size is None:
                    size = (int(height), int(width))
                elif size != (height, width):
                    raise ValueError(f"All batches must have one input size; got {size} and then {(height, width)}.")
                grid = token_grid(config, height, width)
                state.update(
                    centers=token_centers(config, height, width).to(device),
                    keep=max(0, min(rollout_images - count, pixel_values.shape[0])),
                    passes=[],
                )

                def forward():
                    state["passes"].append([])
                    interpolate = (height, width) != tuple(config.image_hw)
                    if with_logits:
                        return model(pixel_values, interpolate_pos_encoding=interpolate, output_attentions=True).logits
                    return encoder(pixel_values, interpolate_pos_encoding=interpolate).last_hidden_state

                output = run(forward)
                if with_logits:
                    logits.append(output.float().cpu())
                rollout = None
                for index, distance, weights in state["passes"][-1 if run.precision == "bf16" else 0]:
                    sums[index] += distance
                    if weights is not None:
                        rollout = rollout_step(rollout, weights)
                if rollout is not None:
                    maps.append(rollout_maps(rollout, grid, prefix).cpu())
                    inputs.append(pixel_values[: state["keep"]].float().cpu())
                count += pixel_values.shape[0]
                bar.update(pixel_values.shape[0])
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        config._attn_implementation = {"": previous_impl}
        model.train(was_training)
    if count == 0:
        raise ValueError("No images to analyse: the image source yielded nothing.")
    return AttentionStatistics(
        mean_distance=(sums / count).cpu().numpy(),
        renormalized=renormalize,
        num_images=count,
        input_size=size,
        rollout_maps=torch.cat(maps) if maps else torch.zeros(0, *token_grid(config, *size)),
        rollout_inputs=torch.cat(inputs) if inputs else torch.zeros(0, config.num_channels, *size),
        precision=run.record(),
        logits=torch.cat(logits) if with_logits else None,
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


#: Up to this many layers the permutation p-value of Spearman's rho enumerates every ordering (8! =
#: 40,320); deeper models draw `_PERMUTATION_SAMPLES` random orderings with a fixed seed.
_EXACT_PERMUTATION_LAYERS = 8
_PERMUTATION_SAMPLES = 100_000


def _spearman_p_greater(ranks: np.ndarray, rho: float) -> float:
    """One-sided permutation p-value of Spearman's rho between depth and `ranks` (the per-layer
    means' ranks): the share of orderings of the layers whose rho is at least `rho`, exact for up
    to `_EXACT_PERMUTATION_LAYERS` layers (no normal or t approximation, which is poor for few
    layers), else estimated from a fixed-seed sample."""
    n = len(ranks)
    if n <= _EXACT_PERMUTATION_LAYERS:
        orderings = np.array(list(itertools.permutations(ranks)))
    else:
        orderings = np.random.default_rng(0).permuted(np.tile(ranks, (_PERMUTATION_SAMPLES, 1)), axis=1)
    depth = np.arange(n, dtype=np.float64) - (n - 1) / 2
    centred = orderings - orderings.mean(axis=1, keepdims=True)
    rhos = centred @ depth / (np.linalg.norm(centred, axis=1) * np.linalg.norm(depth))
    return float(np.mean(rhos >= rho - 1e-9))


def attention_distance_trend(mean_distance: np.ndarray | Sequence[Sequence[float]]) -> dict[str, Any]:
    """Does mean attention distance grow with depth? (the paper's Figure 7 right: it does.)

    Takes the `(layers, heads)` distances, averages over heads, and relates the per-layer mean to
    the layer index (1..L):

    - `spearman_rho`: Spearman's rank correlation (ties averaged); 1 when every layer attends
      farther than the one below, -1 when every layer attends nearer;
    - `spearman_p_value`: one-sided permutation p-value of rho (how often an ordering of the L
      layers at random correlates at least as well; exact up to 8 layers). With 4 layers even a
      perfect rho of 1 has p = 1/24: read rho together with `num_layers` and this p-value;
    - `num_layers`, `slope_pixels_per_layer`: the layers compared, least-squares slope of the mean;
    - `grows_with_depth`: the sign alone, `spearman_rho > 0` (None when rho is undefined: fewer
      than two layers, or all layers equal), not a test of significance;
    - `summary`: one line with the statistic, its value, the number of layers and the p-value,
      what the command line, the demo and reports show.
    """
    distance = np.asarray(mean_distance, dtype=np.float64)
    if distance.ndim != 2 or distance.size == 0:
        raise ValueError(f"Expected distances of shape (layers, heads), got shape {distance.shape}.")
    layer_mean = distance.mean(axis=1)
    depth = np.arange(1, len(layer_mean) + 1, dtype=np.float64)
    rho = slope = p_value = None
    if len(layer_mean) >= 2:
        slope = float(np.polyfit(depth, layer_mean, 1)[0])
        ranks = _average_ranks(layer_mean)
        if np.ptp(ranks) > 0:
            rho = float(np.corrcoef(_average_ranks(depth), ranks)[0, 1])
            p_value = _spearman_p_greater(ranks, rho)
    layers = len(layer_mean)
    if rho is None:
        summary = f"Spearman's rho undefined over {layers} layer{'s' if layers != 1 else ''} (fewer than 2, or all equal)"
    else:
        summary = f"Spearman's rho = {rho:.2f} over {layers} layers (one-sided permutation p = {p_value:.2g})"
    return {
        "layer_mean_pixels": layer_mean.tolist(),
        "first_layer_mean_pixels": float(layer_mean[0]),
        "last_layer_mean_pixels": float(layer_mean[-1]),
        "num_layers": layers,
        "spearman_rho": rho,
        "spearman_p_value": p_value,
        "slope_pixels_per_layer": slope,
        "grows_with_depth": None if rho is None else bool(rho > 0),
        "summary": summary,
    }


# ----------------------------------------------------------------------------- images in


def iter_images(
    source: str | os.PathLike, split: str | None = None, image_column: str = "image"
) -> Iterable[Any]:
    """PIL images from a folder of image files, a task of the data registry, or a `datasets` dataset.

    - A local folder holding image files (searched recursively, sorted by path, so class
      sub-folders work) and no dataset files (.parquet, .arrow, .tar, .jsonl, .csv) is read
      directly with PIL; the result has a `len()`.
    - A registry task (`vit-repro data tasks`: "digits", "cifar10", "vtab/dtd", ...) is read with
      `data.load_task` (streamed where the source allows), as the other commands read it.
    - Anything else (a Hub dataset id, or a local folder in a Hub dataset's layout) goes to
      `datasets.load_dataset(source, streaming=True)`, so only the images used are read.
    `split` defaults to the first of "test", "validation", "train" present; for datasets, the images
    are the `image_column` column.
    """
    from .data import TASKS

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if images and not any(p.suffix.lower() in _DATASET_FILE_EXTENSIONS for p in files):
            return _ImageFiles(images)
    elif path.is_file():
        raise ValueError(f"--images must be a folder of images or a dataset, got the file {str(source)!r}.")
    elif str(source) in TASKS:
        return _task_images(str(source), split, None if image_column == "image" else image_column)
    return _dataset_images(str(source), split, image_column)


class _ImageFiles:
    """The images of a list of files, opened one at a time as they are iterated; `len()` is the
    number of files (the progress bar's total)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Any]:
        from PIL import UnidentifiedImageError

        from .data import decode_image  # EXIF orientation applied, as `datasets` and `pipeline` decode

        for p in self.paths:
            try:
                image = decode_image(p)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"Cannot read image {str(p)!r}: {err}") from err
            yield image


def _task_images(task: str, split: str | None, image_column: str | None) -> Iterable[Any]:
    from .data import TASKS, load_task

    if split is None:
        available = TASKS[task].available_splits
        split = next((s for s in ("test", "validation", "train") if s in available), "test")
    loaded = load_task(task, split, image_column=image_column, streaming=split not in _VTAB1K_SPLITS)
    return _DatasetImages(loaded) if hasattr(loaded, "__len__") else (row["image"] for row in loaded)


class _DatasetImages:
    """The "image" column of a `datasets.Dataset`, decoded one row at a time, with its `len()`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Any]:
        return (row["image"] for row in self.dataset)


def _dataset_images(source: str, split: str | None, image_column: str) -> Iterator[Any]:
    import datasets

    try:
        loaded = datasets.load_dataset(source, split=split, streaming=True)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one message
        hint = ""
        if "/" not in source:  # a bare name: most likely a mistyped registry task
            from .data.registry import close_task_names

            close = close_task_names(source)
            hint = f" Did you mean the task {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Cannot read images from {source!r}: it is not a folder of image files, a registry task "
            f"(vit-repro data tasks), and datasets.load_dataset({source!r}) failed ({type(err).__name__}: "
            f"{' '.join(str(err).split())}).{hint}"
        ) from err
    if split is None:
        available = list(loaded)
        split = next((s for s in ("test", "validation", "train") if s in available), available[0])
        loaded = loaded[split]
    columns = loaded.column_names or list(loaded.features or {})
    if image_column not in columns:
        raise ValueError(
            f"Dataset {source!r} (split {split!r}) has no column {image_column!r}; its columns are {columns}. "
            "Pass --image-column."
        )
    return (row[image_column] for row in loaded)


def _to_pil(image: Any, mode: str):
    from PIL import Image

    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            if array.min() < 0 or array.max() > 1:
                raise ValueError(
                    f"Float image arrays must hold values in [0, 1]; got range [{array.min()}, {array.max()}]."
                )
            array = np.round(array * 255).astype(np.uint8)
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise TypeError(f"Expected PIL images or numpy arrays, got {type(image).__name__}.")
    return image.convert(mode)


def default_image_processor(config):
    """The image processor used when a checkpoint has none saved: transformers' `ViTImageProcessor`
    resizing to `config.image_size` and mapping [0, 1] to [-1, 1] (the original code's inputs)."""
    from transformers import ViTImageProcessor

    height, width = config.image_hw
    channels = config.num_channels
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=[0.5] * channels, image_std=[0.5] * channels
    )


def _pixel_batches(
    images: Iterable[Any] | torch.Tensor, processor, config, batch_size: int, num_images: int | None
) -> Iterator[torch.Tensor]:
    """`(B, C, H, W)` batches: slices of a ready tensor, or PIL images / arrays run through `processor`
    after conversion to the model's channel count."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"A tensor of images must be (N, C, H, W) pixel values, got {tuple(images.shape)}.")
        images = images[:num_images] if num_images is not None else images
        yield from images.split(batch_size)
        return
    modes = {1: "L", 3: "RGB"}
    if config.num_channels not in modes:
        raise ValueError(
            f"Images can only be read for 1- or 3-channel models (this one has {config.num_channels}); "
            "pass a tensor of pixel values instead."
        )
    buffer = []
    for image in itertools.islice(images, num_images):
        buffer.append(_to_pil(image, modes[config.num_channels]))
        if len(buffer) == batch_size:
            yield processor(buffer, return_tensors="pt")["pixel_values"]
            buffer = []
    if buffer:
        yield processor(buffer, return_tensors="pt")["pixel_values"]


# ----------------------------------------------------------------------------- drawing


def _unit_range(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _show_image(ax, chw: np.ndarray) -> None:
    """Draw a `(C, H, W)` array scaled to [0, 1]: RGB for 3 channels, grey otherwise (channel mean)."""
    image = _unit_range(chw)
    if image.shape[0] == 3:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(image.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def _draw_embedding_filters(components: torch.Tensor, ratio: torch.Tensor, path) -> Path:
    k = components.shape[0]
    cols = min(7, k)
    rows = math.ceil(k / cols)
    figure = new_figure(1.2 * cols, 1.3 * rows + 0.4)
    for i, ax in enumerate(figure.subplots(rows, cols, squeeze=False).flat):
        if i < k:
            _show_image(ax, components[i].numpy())
            ax.set_title(f"{i + 1} ({100 * float(ratio[i]):.0f}%)", fontsize=7)
        else:
            ax.set_axis_off()
    figure.suptitle(f"Embedding filters: top {k} principal components (variance share)", fontsize=9)
    return save_figure(figure, path)


def _draw_position_similarity(similarity: torch.Tensor, path) -> Path:
    """One heat map per patch position, tiled over the grid with 1-cell gaps, drawn as a single
    image (fast for large grids), with a colour bar."""
    rows, cols = similarity.shape[:2]
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * (rows + 1) : r * (rows + 1) + rows, c * (cols + 1) : c * (cols + 1) + cols] = similarity[r, c]
    side = min(9.0, 2.0 + 0.45 * max(rows, cols))
    figure = new_figure(side + 1.2, side)
    ax = figure.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([c * (cols + 1) + (cols - 1) / 2 for c in range(cols)], [str(c + 1) for c in range(cols)])
    ax.set_yticks([r * (rows + 1) + (rows - 1) / 2 for r in range(rows)], [str(r + 1) for r in range(rows)])
    ax.tick_params(length=0, labelsize=7)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_title("Position embedding similarity")
    for spine in ax.spines.values():
        spine.set_visible(False)
    figure.colorbar(image, ax=ax, label="Cosine similarity", shrink=0.8)
    return save_figure(figure, path)


def draw_attention_distance(distance: np.ndarray, path, num_images: int, input_size, uniform: float) -> Path:
    """Figure 7 right from numbers already measured: every head's mean attention distance `(layers,
    heads)` against depth, their mean, and `uniform` (the distance of uniform attention) as the
    reference line; the title names `num_images` and `input_size` `(H, W)`. Writes the PNG at `path`
    and returns it (`plot_mean_attention_distance` measures and draws; the app draws one image's)."""
    layers, heads = distance.shape
    depth = np.arange(1, layers + 1)
    figure = new_figure(5.0, 3.8)
    ax = figure.subplots()
    import matplotlib

    colours = matplotlib.colormaps["tab20"]
    for head in range(heads):
        ax.scatter(depth, distance[:, head], s=14, color=colours(head % 20), label=f"Head {head + 1}")
    ax.plot(depth, distance.mean(axis=1), color="black", linestyle="--", linewidth=1, label="mean")
    ax.axhline(uniform, color="grey", linestyle=":", linewidth=1, label="uniform attention")
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_xticks(depth)
    ax.set_ylim(0, max(1e-6, float(distance.max()), uniform) * 1.1)
    ax.set_title(f"{num_images} images at {input_size[0]}x{input_size[1]}", fontsize=9)
    if heads <= 16:
        ax.legend(fontsize=6, ncols=2, loc="lower right")
    return save_figure(figure, path)


def _draw_rollout(maps: torch.Tensor, inputs: torch.Tensor, path) -> Path:
    """Per image: the input, the input times the normalised rollout mask (paper Figure 6), and the
    mask over the token grid."""
    k = maps.shape[0]
    if k == 0:
        raise ValueError("No attention-rollout maps to draw (rollout_images was 0).")
    height, width = inputs.shape[-2:]
    masks = torch.nn.functional.interpolate(maps[:, None].float(), size=(height, width), mode="bilinear")[:, 0]
    figure = new_figure(1.6 * k + 0.6, 5.0)
    axes = figure.subplots(3, k, squeeze=False)
    for i in range(k):
        image = _unit_range(inputs[i].numpy())
        mask = _unit_range(masks[i].numpy())
        _show_image(axes[0, i], image)
        _show_image(axes[1, i], image * mask[None])
        axes[2, i].imshow(_unit_range(maps[i].numpy()), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        axes[2, i].set_axis_off()
    for row, label in enumerate(("input", "attention", "rollout")):
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(label)
        for spine in axes[row, 0].spines.values():
            spine.set_visible(False)
    figure.suptitle("Attention rollout (Abnar & Zuidema 2020)", fontsize=9)
    return save_figure(figure, path)


# ----------------------------------------------------------------------------- one call per figure


def _stats_for(
    model, images, image_processor, num_images, batch_size, rollout_images, renormalize, split, image_column, progress,
    precision="auto",
) -> AttentionStatistics:
    """Pixel batches from any accepted `images` (see :func:`analyze_model`), then
    :func:`attention_statistics`."""
    config = vit_encoder(model).config
    if isinstance(images, (str, os.PathLike)):
        images = iter_images(images, split=split, image_column=image_column)
    processor = image_processor or default_image_processor(config)
    # The bar counts images: its total is what will be read, when the source knows its size.
    expected = len(images) if hasattr(images, "__len__") else None
    if num_images is not None and expected is not None:
        expected = min(expected, num_images)
    batches = _pixel_batches(images, processor, config, batch_size, num_images)
    total = (expected or True) if progress else False
    return attention_statistics(model, batches, rollout_images, renormalize, progress=total, precision=precision)


def plot_embedding_filters(model: torch.nn.Module, path: str | os.PathLike, num_components: int = 28) -> Path:
    """Figure 7 left: the top `num_components` principal components of the patch embedding, drawn
    as P x P images (RGB for 3 channels). Plain ViTs only. Returns the PNG's path."""
    components, ratio = patch_embedding_pca(_patch_embedding_weight(model), num_components)
    return _draw_embedding_filters(components, ratio, path)


def plot_position_embedding_similarity(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Figure 7 centre: per patch position, the cosine similarity of its position embedding with
    all others, as a grid of heat maps with a colour bar. Returns the PNG's path."""
    encoder = vit_encoder(model)
    config = encoder.config
    similarity = position_embedding_similarity(
        encoder.embeddings.position_embeddings, config.grid_size, config.num_prefix_tokens
    )
    return _draw_position_similarity(similarity, path)


def plot_mean_attention_distance(
    model: torch.nn.Module,
    images,
    path: str | os.PathLike,
    *,
    image_processor=None,
    num_images: int | None = 128,
    batch_size: int = 32,
    renormalize: bool = True,
    split: str | None = None,
    image_column: str = "image",
    progress: bool = True,
) -> Path:
    """Figure 7 right: mean attention distance of every head against depth, over `num_images`
    images (128 in the paper's Appendix D.7). `images` as in :func:`analyze_model`."""
    stats = _stats_for(
        model, images, image_processor, num_images, batch_size, 0, renormalize, split, image_column, progress
    )
    uniform = uniform_attention_distance(vit_encoder(model).config, *stats.input_size)
    return draw_attention_distance(stats.mean_distance, path, stats.num_images, stats.input_size, uniform)


def plot_attention_rollout(
    model: torch.nn.Module,
    images,
    path: str | os.PathLike,
    *,
    image_processor=None,
    num_images: int = 8,
    split: str | None = None,
    image_column: str = "image",
    progress: bool = True,
) -> Path:
    """Figure 6: attention-rollout maps of the first `num_images` images, drawn over them.
    `images` as in :func:`analyze_model`."""
    stats = _stats_for(
        model, images, image_processor, num_images, num_images, num_images, True, split, image_column, progress
    )
    return _draw_rollout(stats.rollout_maps, stats.rollout_inputs, path)


# ----------------------------------------------------------------------------- everything at once


def analyze_model(
    model: torch.nn.Module,
    images,
    out_dir: str | os.PathLike,
    *,
    image_processor=None,
    num_images: int | None = 128,
    batch_size: int = 32,
    rollout_images: int = 8,
    num_filters: int = 28,
    renormalize: bool = True,
    split: str | None = None,
    image_column: str = "image",
    progress: bool = True,
    checkpoint: str | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Draw all four figures into `out_dir` and write the numbers to `out_dir/analysis.json`.

    Args:
        model: a `ViTReproModel` / `ViTReproForImageClassification`; it runs where its weights are.
        images: a folder of images or a datasets id / local dataset folder (see :func:`iter_images`),
            an iterable of PIL images or uint8 / [0, 1] float arrays, or a ready `(N, C, H, W)`
            tensor of pixel values.
        image_processor: turns PIL images into pixel values; default :func:`default_image_processor`.
        num_images: images for the mean attention distance (None: all).
        rollout_images: how many of them get a rollout map (the first ones).
        num_filters: principal components of the patch embedding to draw (skipped for hybrids).
        renormalize: see :func:`mean_attention_distance`.
        precision: auto / bf16 / fp32 for the attention pass (:func:`attention_statistics`).

    Returns the JSON written: figure file names, the `(layers, heads)` mean attention distances in
    pixels with their :func:`attention_distance_trend`, the filters' explained variance, and the
    position-embedding similarity summary.
    """
    encoder = vit_encoder(model)
    config = encoder.config
    out_dir = Path(out_dir)
    source = str(images) if isinstance(images, (str, os.PathLike)) else type(images).__name__
    stats = _stats_for(
        model, images, image_processor, num_images, batch_size, rollout_images, renormalize, split, image_column,
        progress, precision,
    )

    result: dict[str, Any] = {
        "checkpoint": checkpoint or getattr(model, "name_or_path", "") or None,
        "images": {"source": source, "split": split, "num_images": stats.num_images, "input_size": stats.input_size},
        "model": {
            "hybrid": _is_hybrid(config),
            "pooling": config.pooling,
            "patch_size": list(config.patch_hw),
            "token_stride_pixels": list(token_stride(config)),
            "token_grid": list(token_grid(config, *stats.input_size)),
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
        },
    }
    if _is_hybrid(config):
        result["embedding_filters"] = {"skipped": "hybrid: the patch embedding acts on CNN features, not pixels"}
    else:
        components, ratio = patch_embedding_pca(_patch_embedding_weight(model), num_filters)
        _draw_embedding_filters(components, ratio, out_dir / EMBEDDING_FILTERS_PNG)
        result["embedding_filters"] = {
            "figure": EMBEDDING_FILTERS_PNG,
            "num_components": int(components.shape[0]),
            "explained_variance_ratio": [float(v) for v in ratio],
        }

    similarity = position_embedding_similarity(
        encoder.embeddings.position_embeddings, config.grid_size, config.num_prefix_tokens
    )
    _draw_position_similarity(similarity, out_dir / POSITION_SIMILARITY_PNG)
    result["position_embedding_similarity"] = {
        "figure": POSITION_SIMILARITY_PNG,
        "grid": list(config.grid_size),
        **_similarity_summary(similarity),
    }

    uniform = uniform_attention_distance(config, *stats.input_size)
    draw_attention_distance(
        stats.mean_distance, out_dir / ATTENTION_DISTANCE_PNG, stats.num_images, stats.input_size, uniform
    )
    result["mean_attention_distance"] = {
        "figure": ATTENTION_DISTANCE_PNG,
        "unit": "pixels of the model input",
        "uniform_attention_pixels": uniform,
        "class_token_column": "dropped, rows renormalised" if renormalize else "dropped, not renormalised",
        "pixels": stats.mean_distance.tolist(),
        "trend": attention_distance_trend(stats.mean_distance),
    }
    if stats.rollout_maps.shape[0]:
        _draw_rollout(stats.rollout_maps, stats.rollout_inputs, out_dir / ATTENTION_ROLLOUT_PNG)
        result["attention_rollout"] = {"figure": ATTENTION_ROLLOUT_PNG, "num_images": int(stats.rollout_maps.shape[0])}
    result["precision"] = stats.precision
    result["versions"] = runs.software_versions()
    runs.write_json(out_dir / runs.ANALYSIS_JSON, result)
    return result


def load_for_analysis(checkpoint: str | os.PathLike, device: str | torch.device | None = None):
    """Load `(model, image_processor)` from a checkpoint folder, run folder or Hub id, the model
    in eval mode on `device` (default: CUDA when available). The image processor is the one saved
    beside the weights, else :func:`default_image_processor` (with a warning)."""
    import hf_vit_repro  # noqa: F401 - registers the Auto classes
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    source, _ = resolve_checkpoint(checkpoint)
    try:
        # Load the class that was saved (a classifier keeps its head), so nothing is reported unused.
        architectures = runs.load_pretrained(AutoConfig, source).architectures or []
        saved_classifier = any(name.endswith("ForImageClassification") for name in architectures)
        model = runs.load_pretrained(AutoModelForImageClassification if saved_classifier else AutoModel, source)
    except runs.CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Cannot load a model from {source!r}: expected a save_pretrained folder (config.json and weights), "
            f"a run folder holding final/, or a Hub model id ({type(err).__name__}: {err})"
        ) from err
    encoder = vit_encoder(model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        warnings.warn(
            f"No image processor saved with {source!r}; resizing to {encoder.config.image_hw} and scaling to [-1, 1].",
            stacklevel=2,
        )
        processor = default_image_processor(encoder.config)
    return model, processor


def analyze_checkpoint(
    checkpoint: str | os.PathLike,
    images,
    out_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    **kwargs,
) -> dict[str, Any]:
    """Load a checkpoint (folder, run folder or Hub id) and run :func:`analyze_model` on it.

    `out_dir` defaults to `RUN_DIR/analysis` when `checkpoint` is a run folder. Keyword arguments
    are those of :func:`analyze_model`.
    """
    source, run_dir = resolve_checkpoint(checkpoint)
    if out_dir is None:
        if run_dir is None:
            raise ValueError(f"Say where to write the figures (--output-dir DIR): {str(checkpoint)!r} is not a run folder.")
        out_dir = run_dir / runs.ANALYSIS_DIR
    model, processor = load_for_analysis(source, device)
    kwargs.setdefault("image_processor", processor)
    return analyze_model(model, images, out_dir, checkpoint=str(checkpoint), **kwargs)


# ----------------------------------------------------------------------------- command line


def _cmd_analyze(args: argparse.Namespace) -> int:
    result = analyze_checkpoint(
        args.checkpoint,
        args.images,
        args.output_dir,
        device=args.device,
        num_images=args.num_images,
        batch_size=args.batch_size,
        rollout_images=args.rollout_images,
        num_filters=args.num_filters,
        renormalize=not args.no_renormalize,
        split=args.split,
        image_column=args.image_column,
        progress=not args.no_progress,
        precision=args.precision,
    )
    out = Path(args.output_dir) if args.output_dir else resolve_checkpoint(args.checkpoint)[1] / runs.ANALYSIS_DIR
    trend = result["mean_attention_distance"]["trend"]
    print(f"Wrote figures and {runs.ANALYSIS_JSON} to {out} ({result['images']['num_images']} images)")
    means = ", ".join(f"{v:.1f}" for v in trend["layer_mean_pixels"])
    print(f"Mean attention distance per layer (pixels): {means}; grows with depth? {trend['summary']}")
    return 0


def add_cli(subparsers) -> None:
    from .cli_options import add_device, add_no_progress, add_output_dir
    from .precision import add_precision_argument

    p = subparsers.add_parser(
        "analyze",
        help="draw the paper's inspection figures (filters, position embeddings, attention) for a checkpoint",
        description="Write embedding_filters.png, position_embedding_similarity.png, mean_attention_distance.png, "
        "attention_rollout.png and analysis.json (the numbers) for a checkpoint (paper Sec. 4.5, Figures 6-7).",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id")
    p.add_argument(
        "--images",
        required=True,
        help="folder of image files, a registry task (digits, cifar10, vtab/dtd; see `vit-repro data tasks`), "
        "or a datasets id / local dataset folder with an image column",
    )
    add_output_dir(p, "for a run folder RUN/analysis", old=["--out"])
    p.add_argument("--split", default=None, help="dataset split (default: test, validation or train)")
    p.add_argument("--image-column", default="image", help="dataset column holding the images (default: image)")
    p.add_argument("--num-images", type=int, default=128, help="images for mean attention distance (default 128)")
    p.add_argument("--rollout-images", type=int, default=8, help="images drawn with attention rollout (default 8)")
    p.add_argument("--num-filters", type=int, default=28, help="principal components of E to draw (default 28)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    add_device(p)
    add_precision_argument(p)
    add_no_progress(p)
    p.add_argument(
        "--no-renormalize",
        action="store_true",
        help="keep attention weights over patch keys as they are after dropping the class token "
        "(default: renormalise them to sum to 1)",
    )
    p.set_defaults(func=_cmd_analyze)


__all__ = [
    "AttentionStatistics",
    "analyze_checkpoint",
    "analyze_model",
    "attention_distance_trend",
    "attention_rollout",
    "attention_statistics",
    "default_image_processor",
    "draw_attention_distance",
    "iter_images",
    "load_for_analysis",
    "mean_attention_distance",
    "patch_embedding_pca",
    "plot_attention_rollout",
    "plot_embedding_filters",
    "plot_mean_attention_distance",
    "plot_position_embedding_similarity",
    "position_embedding_similarity",
    "resolve_checkpoint",
    "rollout_maps",
    "rollout_step",
    "token_centers",
    "token_grid",
    "token_stride",
    "uniform_attention_distance",
    "vit_encoder",
]
