"""Few-shot linear evaluation (paper Sec. 4.1 "Metrics", and shared/PAPER.md "Few-shot").

The representation y (pre-logits, the family's `pre_logits`: a ViT's `model.vit(x).pooler_output`, the
final class-token state after the last LayerNorm, or after the pre-logits layer where the checkpoint
has one; a BiT ResNet's globally average-pooled final features) of k labelled
images per class is frozen; a regularised least-squares regression maps it to {-1, 1}^K targets
in closed form; accuracy is the argmax of that map on the full test split.

The default is big_vision's protocol (`configs/common_fewshot.py`, `evaluators/fewshot_lsr.py`,
the released evaluator of the paper's authors): the pre-logits representation, exactly k images
per class, a fixed l2 regularisation of 2^10 (`DEFAULT_L2`), 1 / 5 / 10 / 25 shots, 3 seeds, and
the pre-processing `resize(256)|central_crop(224)`: a square resize to round(size * 256 / 224)
then the central `size` crop (`data.fewshot_transform`; 224 -> 256, 384 -> 439). Step by step
(as `fewshot_lsr.py`, in float64):

1. Standardise each feature with the mean and standard deviation (+ 1e-5) of the k-shot set, and
   append a constant feature 100 (the bias; large, so the ridge penalty barely touches it).
2. Solve W = argmin ||X W - T||^2 + l2 ||W||^2 for all l2 at once from one eigendecomposition:
   with X^T X = Q diag(e) Q^T (N >= D) W = Q diag(1 / (e + l2)) Q^T X^T T; with X X^T (N < D, the
   usual few-shot case) W = X^T Q diag(1 / (e + l2)) Q^T T.
3. The regularisation: a number fixes it (default 2^10). `l2_reg="select"` is an option of ours,
   labelled as such in the output: it picks l2 from `L2_GRID` (2^-10 ... 2^20) by accuracy on a
   held-out set drawn from the *training* split, disjoint from the k shots (the next `val_shots`
   images of every class in the same seeded ranking, `data.fewshot_subset`; the largest l2 among
   equally good ones), so it uses `val_shots` more labels per class than k.
4. Seeds: each seed draws its own k-shot set (and held-out set); results are the mean and the
   standard deviation over seeds. For one seed the 1-shot images are among the 5-shot ones, etc.
   (big_vision draws each class's shots from one permutation per seed too; its draws are NumPy's
   and ours `stable_permutation`'s, so the images differ, not the protocol.)

`preprocessing="resize"` resizes straight to the resolution instead (the original fine-tuning
code's evaluation), also labelled in the output. fewshot.json's `protocol` names the protocol
(`fewshot_protocol`): "big_vision" only for the fixed 2^10, the central crop and pre-logits.

Features are extracted once per image and cached on disk (`FeatureCache`): the key holds the
model's fingerprint (every weight and the architecture, `common.model_fingerprint`), the
resolution and preprocessing, the task and split, and the split's size; cached labels are checked
against the data on every use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..models import family_of
from ..precision import PrecisionRun
from .common import check_resolution, default_device, default_output_dir, format_table, image_size_of, model_fingerprint

BIAS_CONSTANT = 100.0
STD_EPS = 1e-5
L2_GRID: tuple[float, ...] = tuple(2.0**i for i in range(-10, 21))
#: big_vision's fixed l2 regularisation (`configs/common_fewshot.py`: `l2_reg=2.0 ** 10`).
DEFAULT_L2 = 2.0**10
DEFAULT_SHOTS: tuple[int, ...] = (1, 5, 10, 25)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
DEFAULT_VAL_SHOTS = 10
#: Few-shot evaluation scores exactly k images per class and the whole test split, so it has no
#: mode that skips unreadable images: the error says how to repair the data instead.
UNREADABLE_HINT = ("few-shot evaluation reads every image it draws and cannot skip one: replace or remove the file, "
                   "or download the dataset again")
#: "central_crop": big_vision's resize to round(size * 256 / 224) + central crop (the default);
#: "resize": straight to the resolution.
PREPROCESSINGS = ("central_crop", "resize")


# ============================================================================ closed form


@dataclass
class LeastSquares:
    """Everything the ridge solution needs for any l2: standardisation, eigendecomposition and its
    left/right factors (W(l2) = lhs diag(1 / (eigs + l2)) rhs). Tensors are float64."""

    mean: torch.Tensor  # (1, D)
    std: torch.Tensor  # (1, D)
    eigs: torch.Tensor  # (M,), M = min(N, D + 1)
    lhs: torch.Tensor  # (D + 1, M)
    rhs: torch.Tensor  # (M, K)

    def design(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised features with the bias column: (n, D) -> (n, D + 1)."""
        x = (features.to(torch.float64) - self.mean) / self.std
        return torch.cat([x, torch.full((x.shape[0], 1), BIAS_CONSTANT, dtype=x.dtype)], dim=1)

    def weights(self, l2: float) -> torch.Tensor:
        """W for ridge penalty `l2`: (D + 1, K)."""
        return (self.lhs / (self.eigs + l2)) @ self.rhs

    def scores(self, features: torch.Tensor, l2: float) -> torch.Tensor:
        """Regression outputs (n, K) of the map fitted with `l2`; the class is their argmax."""
        return self.design(features) @ self.weights(l2)


def targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """{-1, 1}^K regression targets: +1 at the true class, -1 elsewhere. (N,) -> (N, K) float64."""
    return 2.0 * torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float64) - 1.0


def fit_least_squares(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> LeastSquares:
    """Precompute the closed form for (N, D) features and (N,) labels (see the module docstring)."""
    x = features.detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"features must be (N, D) with N = len(labels); got {tuple(x.shape)} and {tuple(labels.shape)}")
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, unbiased=False, keepdim=True) + STD_EPS
    fit = LeastSquares(mean, std, torch.empty(0), torch.empty(0), torch.empty(0))
    design = fit.design(x)
    t = targets(labels.cpu(), num_classes)
    if design.shape[0] >= design.shape[1]:
        eigs, q = torch.linalg.eigh(design.T @ design)
        fit.lhs, fit.rhs = q, q.T @ (design.T @ t)
    else:
        eigs, q = torch.linalg.eigh(design @ design.T)
        fit.lhs, fit.rhs = design.T @ q, q.T @ t
    fit.eigs = eigs
    return fit


def accuracy_by_l2(fit: LeastSquares, features: torch.Tensor, labels: torch.Tensor, grid: Sequence[float]) -> list[float]:
    """Accuracy of the argmax of the fitted map on (features, labels) for every l2 in `grid`."""
    design = fit.design(features)
    labels = labels.cpu()
    out = []
    for l2 in grid:
        predictions = (design @ fit.weights(l2)).argmax(dim=1)
        out.append(float((predictions == labels).double().mean()))
    return out


# ============================================================================ feature cache


def default_cache_dir() -> Path:
    """`$HF_VIT_REPRO_CACHE/features`, else `~/.cache/hf_vit_repro/features`."""
    root = os.environ.get("HF_VIT_REPRO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_vit_repro")
    return Path(root) / "features"


class FeatureCache:
    """Pre-logits features of dataset rows, one safetensors file per key (rows, features, labels),
    grown as more rows are needed and rewritten atomically. `cache_dir=None` keeps nothing."""

    def __init__(self, cache_dir: str | os.PathLike | None):
        self.dir = Path(cache_dir) if cache_dir is not None else None

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def load(self, key: str) -> dict[int, tuple[np.ndarray, int]]:
        """{row: (feature, label)} for the rows cached under `key` (empty when none, or when the
        file cannot be read: a cache is never trusted over recomputing)."""
        if self.dir is None or not self._path(key).is_file():
            return {}
        from safetensors.numpy import load_file

        try:
            data = load_file(str(self._path(key)))
        except Exception:  # a truncated or foreign file: recompute
            return {}
        return {int(r): (f, int(y)) for r, f, y in zip(data["rows"], data["features"], data["labels"])}

    def save(self, key: str, entries: dict[int, tuple[np.ndarray, int]], meta: dict[str, Any]) -> None:
        if self.dir is None or not entries:
            return
        from safetensors.numpy import save_file

        rows = np.array(sorted(entries), dtype=np.int64)
        tensors = {
            "rows": rows,
            "features": np.stack([entries[int(r)][0] for r in rows]).astype(np.float32),
            "labels": np.array([entries[int(r)][1] for r in rows], dtype=np.int64),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_name(f".{key}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"key": json.dumps(meta, default=str)})
        os.replace(tmp, self._path(key))


def extract_features(
    model,
    dataset,
    rows: Sequence[int],
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    image_size: int | None = None,
    preprocessing: str = "central_crop",
    batch_size: int = 64,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    cache_key: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "features",
    precision: str | PrecisionRun = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Pre-logits features (len(rows), D) float32 and labels (len(rows),) of `dataset` rows.

    Images are pre-processed at `image_size` (default the model's; another size runs the model
    with interpolated position embeddings): `preprocessing="central_crop"` is big_vision's
    few-shot resize + central crop (`data.fewshot_transform`), "resize" a plain resize; then
    normalised with mean/std. With a `cache` and `cache_key` (anything that names the data: task,
    split, source), rows already cached for this model, resolution and preprocessing are read
    back, the others computed and added.
    `precision`: "auto" / "bf16" / "fp32" (`hf_vit_repro.precision`; bf16 is checked against fp32
    on the first batch computed, and falls back), or a `PrecisionRun` shared by several calls.
    The precision is part of the cache key.
    """
    from tqdm.auto import tqdm

    from ..data import eval_transform, fewshot_transform, make_dataloader

    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSINGS)}, got {preprocessing!r}")
    size = int(image_size or image_size_of(model))
    interpolate = size != image_size_of(model)
    transform = fewshot_transform(size, mean, std) if preprocessing == "central_crop" else eval_transform(size, mean, std)
    device = next(model.parameters()).device
    run = precision if isinstance(precision, PrecisionRun) else PrecisionRun(
        precision, device, classes=False, what="few-shot features", model=model)
    from ..data import label_array

    labels_all = label_array(dataset)
    rows = [int(r) for r in rows]
    key = meta = None
    entries: dict[int, tuple[np.ndarray, int]] = {}
    if cache is not None and cache.dir is not None:
        meta = {
            "model": model_fingerprint(model), "resolution": size, "transform": repr(transform),
            "data": cache_key or {}, "num_rows": len(dataset), "dtype": str(next(model.parameters()).dtype),
            "precision": run.precision,
        }
        key = cache.key(**meta)
        entries = cache.load(key)
        if any(r in entries and entries[r][1] != labels_all[r] for r in entries if r < len(labels_all)):
            entries = {}  # the data under this key changed: recompute everything
    missing = sorted({r for r in rows if r not in entries})
    if missing:
        subset = dataset.select(missing)
        # Few-shot reads every image it draws (exactly k per class; the whole test split): no skipping mode.
        loader = make_dataloader(subset, transform, batch_size, shuffle=False, num_workers=num_workers, strict=True,
                                 unreadable_hint=UNREADABLE_HINT)
        computed = []
        model.eval()
        family = family_of(model)

        def features_of(pixel_values):
            out = family.pre_logits(model, pixel_values, interpolate_pos_encoding=interpolate)
            if out is None:
                raise ValueError("the model returns no pooler_output (pre-logits features); few-shot needs a ViT or BiT encoder")
            return out

        with torch.no_grad():
            for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
                pixel_values = batch["pixel_values"].to(device)
                computed.append(run(lambda: features_of(pixel_values)).float().cpu().numpy())
        features = np.concatenate(computed)
        for r, f in zip(missing, features):
            entries[r] = (f, int(labels_all[r]))
        if key is not None:
            cache.save(key, entries, meta)
    return np.stack([entries[r][0] for r in rows]).astype(np.float32), labels_all[rows]


# ============================================================================ protocol


def _shot_rows(label_rows, k: int, seed: int) -> list[int]:
    """Rows of the k-shot subset (`data.fewshot_subset`) of a ("label", "__row__") dataset."""
    from ..data import fewshot_subset

    return [int(r) for r in fewshot_subset(label_rows, k, seed)["__row__"]]


def fewshot_evaluate(
    model,
    train_dataset,
    test_dataset,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    l2_reg: float | str = DEFAULT_L2,
    val_shots: int = DEFAULT_VAL_SHOTS,
    l2_grid: Sequence[float] = L2_GRID,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    image_size: int | None = None,
    preprocessing: str = "central_crop",
    batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    data_key: dict[str, Any] | None = None,
    progress: bool = True,
    precision: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Few-shot linear evaluation of `model` (a classifier or encoder; its head is not used).

    The defaults are big_vision's protocol (module docstring): exactly k images per class of
    `train_dataset` (every class needs max(shots); plus `val_shots` with `l2_reg="select"`),
    `l2_reg` fixed at 2^10, `preprocessing="central_crop"`; `test_dataset` is scored in full
    (both "image" and "label" columns, e.g. `load_task(task, "train")` / `load_task(task,
    "test")`). `l2_reg="select"` picks the penalty per (shots, seed) on held-out training images
    instead. Features are cached under `cache_dir` (None: no cache) keyed by the model's
    fingerprint, the resolution, the preprocessing and `data_key` (say which task and split the
    datasets are; without it the datasets' sizes alone name them, so give one whenever a cache
    is used). `precision`: auto / bf16 / fp32 for the features (`extract_features`).

    Returns {str(k): {"mean", "std", "seeds", "accuracy" (one per seed), "l2_reg" (one per
    seed), "num_test_images", "train_images_per_class" (k), "l2_selection" ("fixed" or the
    held-out rule), "precision" (the features' precision)}}, accuracies in [0, 1] (the shape of fewshot.json's `results[task]`).
    """
    shots = sorted({int(k) for k in shots})
    seeds = [int(s) for s in seeds]
    if not shots or shots[0] < 1 or not seeds:
        raise ValueError(f"need shots >= 1 and at least one seed, got shots={shots} seeds={seeds}")
    select = isinstance(l2_reg, str)
    if select and l2_reg != "select":
        raise ValueError(f"l2_reg must be a number or 'select', got {l2_reg!r}")
    if not select and not float(l2_reg) > 0:
        raise ValueError(f"l2_reg must be positive, got {l2_reg}")
    num_classes = getattr(train_dataset.features["label"], "num_classes", None)
    if num_classes is None:  # plain integer labels
        from ..data import label_array

        num_classes = int(np.max(label_array(train_dataset))) + 1
    label_rows = train_dataset.select_columns(["label"]).add_column("__row__", np.arange(len(train_dataset)))
    needed = max(shots) + (val_shots if select else 0)
    plan = {}
    for seed in seeds:
        try:
            ranked = _shot_rows(label_rows, needed, seed)
        except ValueError as err:
            hint = f" (or fix l2_reg to skip the {val_shots} held-out images per class)" if select else ""
            raise ValueError(f"the training split is too small for {max(shots)}-shot evaluation{hint}: {err}") from None
        per_k = {k: _shot_rows(label_rows, k, seed) for k in shots}
        held_out = sorted(set(ranked) - set(per_k[max(shots)])) if select else []
        plan[seed] = (per_k, held_out)

    cache = FeatureCache(cache_dir)
    run = PrecisionRun(precision, next(model.parameters()).device, classes=False, what="few-shot features",
                       model=model)
    common = dict(mean=mean, std=std, image_size=image_size, preprocessing=preprocessing, batch_size=batch_size,
                  num_workers=num_workers, cache=cache, progress=progress, precision=run)
    train_rows = sorted({r for per_k, held in plan.values() for rows in (*per_k.values(), held) for r in rows})
    train_x, train_y = extract_features(model, train_dataset, train_rows, cache_key={**(data_key or {}), "role": "train"},
                                        desc="few-shot train features", **common)
    test_x, test_y = extract_features(model, test_dataset, range(len(test_dataset)),
                                      cache_key={**(data_key or {}), "role": "test"}, desc="few-shot test features", **common)
    position = {r: i for i, r in enumerate(train_rows)}
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)

    results: dict[str, dict[str, Any]] = {}
    for k in shots:
        accuracies, l2s = [], []
        for seed in seeds:
            per_k, held_out = plan[seed]
            index = torch.tensor([position[r] for r in per_k[k]])
            fit = fit_least_squares(train_x[index], train_y[index], num_classes)
            if select:
                held = torch.tensor([position[r] for r in held_out])
                val = accuracy_by_l2(fit, train_x[held], train_y[held], l2_grid)
                best = max(range(len(l2_grid)), key=lambda i: (val[i], l2_grid[i]))
                l2 = float(l2_grid[best])
            else:
                l2 = float(l2_reg)
            accuracies.append(accuracy_by_l2(fit, test_x, test_y, [l2])[0])
            l2s.append(l2)
        results[str(k)] = {
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "seeds": seeds,
            "accuracy": accuracies,
            "l2_reg": l2s,
            "num_test_images": len(test_dataset),
            "train_images_per_class": k,
            "l2_selection": f"held-out {val_shots}/class of the training split" if select else "fixed",
            "precision": run.precision,
        }
    return results


def fewshot_protocol(
    *,
    l2_reg: float | str = DEFAULT_L2,
    preprocessing: str = "central_crop",
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    resolution: int,
    val_shots: int = DEFAULT_VAL_SHOTS,
    train_split: str = "train",
    test_split: str = "test",
) -> dict[str, Any]:
    """fewshot.json's `protocol`: its `name` ("big_vision" for the fixed 2^10 with the central
    crop; "l2 selection on held-out images (not big_vision's)" or "custom" otherwise) and every
    setting that decides the numbers, the pre-processing in words at this resolution."""
    select = l2_reg == "select"
    if select:
        name = "l2 selection on held-out images (not big_vision's)"
    elif float(l2_reg) == DEFAULT_L2 and preprocessing == "central_crop":
        name = "big_vision"
    else:
        name = "custom"
    if preprocessing == "central_crop":
        from ..data.transforms import fewshot_resize_size

        words = f"resize to {fewshot_resize_size(resolution)} x {fewshot_resize_size(resolution)}, central crop {resolution}"
    else:
        words = f"resize to {resolution} x {resolution}"
    return {
        "name": name,
        "representation": "pre-logits (pooler_output), frozen",
        "solver": "closed-form ridge regression to {-1, 1}^K targets, features standardised, bias feature 100",
        "l2_reg": l2_reg,
        "l2_grid": [min(L2_GRID), max(L2_GRID)] if select else None,
        "val_shots": val_shots if select else None,
        "train_images_per_class": "k" + (f" (+ {val_shots} held out for choosing l2)" if select else ""),
        "preprocessing": preprocessing,
        "preprocessing_steps": words,
        "shots": sorted({int(k) for k in shots}),
        "seeds": [int(s) for s in seeds],
        "train_split": train_split,
        "test_split": test_split,
        "resolution": resolution,
    }


def fewshot_checkpoint(
    checkpoint: str | os.PathLike,
    tasks: Sequence[str],
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    train_split: str = "train",
    test_split: str = "test",
    data_dirs: dict[str, str | os.PathLike] | None = None,
    resolution: int | None = None,
    output: str | os.PathLike | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None | bool = True,
    classes: Sequence[int] | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], Path]:
    """Run `fewshot_evaluate` for every task and write fewshot.json (default: the run folder's,
    else outputs/fewshot/<checkpoint>/fewshot.json; `output` may be a .json file or a folder),
    merged into what the file holds (`write_fewshot_results`: other tasks and other protocols are
    kept; the tasks asked for are (re)computed, which is cheap when their features are cached).
    The file records the checkpoint's image processor (class, backend) whose mean and std normalise
    the images.
    `cache_dir=True` uses `default_cache_dir()`, None/False disables the cache. `classes` keeps only
    those label ids of every task, relabelled 0..K-1 (`data.select_classes`; class-disjoint transfer),
    and records the results under `fewshot_task_name(task, classes)`, e.g. "digits[5,6,7,8,9]", each
    shot count's entry with `classes` (the kept ids); a label id the task lacks is a `DataError`."""
    from .common import load_checkpoint

    loaded = load_checkpoint(checkpoint, device=device or default_device())
    size = check_resolution(loaded.model, int(resolution)) if resolution is not None else image_size_of(loaded.model)
    if output is not None and str(output).endswith(".json"):
        path = Path(output)
    else:
        path = Path(output or default_output_dir(checkpoint, loaded.run_dir, "fewshot")) / runs.FEWSHOT
    protocol = fewshot_protocol(
        l2_reg=kwargs.get("l2_reg", DEFAULT_L2), preprocessing=kwargs.get("preprocessing", "central_crop"), shots=shots,
        seeds=seeds, resolution=size, val_shots=kwargs.get("val_shots", DEFAULT_VAL_SHOTS), train_split=train_split,
        test_split=test_split,
    )
    cache = default_cache_dir() if cache_dir is True else (cache_dir or None)
    record: dict[str, Any] = {}
    for task in tasks:
        data_dir = (data_dirs or {}).get(task)
        train, test = fewshot_splits(task, train_split, test_split, data_dir, classes)
        key = {"task": task, "data_dir": str(data_dir) if data_dir else None, "train_split": train_split,
               "test_split": test_split}
        if classes is not None:
            key["classes"] = [int(c) for c in classes]
        result = fewshot_evaluate(
            loaded.model, train, test, shots, seeds, mean=loaded.mean, std=loaded.std, image_size=size,
            cache_dir=cache, data_key=key, **kwargs,
        )
        if classes is not None:  # which label ids of the task were kept, in the order relabelled 0..K-1
            for entry in result.values():
                entry["classes"] = [int(c) for c in classes]
        # after every task: an interrupted run keeps what it finished
        record = write_fewshot_results(path, checkpoint, protocol, {fewshot_task_name(task, classes): result},
                                       image_processor=loaded.image_processor)
    return record, path


def fewshot_splits(task: str, train_split: str = "train", test_split: str = "test", data_dir=None,
                   classes: Sequence[int] | None = None):
    """The (train, test) datasets a few-shot evaluation of `task` reads (`load_task`, from `data_dir`
    when given), restricted to `classes` and relabelled 0..K-1 when given; a label id the task lacks
    is a `DataError` naming the task, the split and the way to list its labels."""
    from ..data import load_task

    train, test = load_task(task, train_split, data_dir), load_task(task, test_split, data_dir)
    if classes is None:
        return train, test
    return _select_classes(train, classes, task, train_split), _select_classes(test, classes, task, test_split)


def _select_classes(dataset, classes, task: str, split: str):
    """`dataset` restricted to `classes` (`data.select_classes`); a label id the task lacks is a
    `DataError` naming the task, the split and the way to list its labels."""
    from ..data import DataError, select_classes

    try:
        return select_classes(dataset, classes)
    except DataError as err:
        raise DataError(f"{task}/{split}: {err}; list label ids the task has "
                        f"(`vit-repro data show {task}` prints its classes).") from None


def fewshot_task_name(task: str, classes: Sequence[int] | None = None) -> str:
    """The name fewshot.json records a task's results under: the task, with its classes when only some are kept."""
    return task if classes is None else f"{task}[{','.join(str(int(c)) for c in classes)}]"


def _same_checkpoint(a, b) -> bool:
    """Whether two checkpoint names recorded in fewshot.json are one model: equal strings, or local
    paths that resolve to the same folder (a run folder and its final/ count as one)."""
    if a is None or str(a) == str(b):
        return a is not None
    paths = [Path(str(x)).expanduser().resolve() for x in (a, b)]
    paths = [p.parent if p.name == runs.FINAL_DIR else p for p in paths]
    return paths[0] == paths[1] and paths[0].exists()


def write_fewshot_results(
    path: str | os.PathLike, checkpoint: str | os.PathLike, protocol: dict[str, Any], results: dict[str, Any],
    *, image_processor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge `results` ({task: fewshot_evaluate's result}) of `checkpoint` under `protocol` into the
    fewshot.json at `path` and write it atomically; returns the record written.

    The file's top level (`checkpoint`, `protocol`, `results`: what the model card and the studies
    read) is the group just written; every other (checkpoint, protocol) group already in the file
    moves to `other_protocols` (a list of {checkpoint, protocol, results}), so evaluating another
    task or another protocol never loses earlier results. A task evaluated again under the same
    protocol replaces its entry. `image_processor` (class, backend: `load_checkpoint`'s) is recorded
    with the group."""
    path = Path(path)
    groups: list[dict[str, Any]] = []
    if path.is_file():
        previous = runs.read_json(path)
        groups = [previous, *(previous.get("other_protocols") or [])]
    merged: dict[str, Any] = {}
    others = []
    for group in groups:
        same = group.get("protocol") == protocol and _same_checkpoint(group.get("checkpoint"), checkpoint)
        if same:
            merged.update(group.get("results") or {})
        elif group.get("results"):
            others.append({key: group[key] for key in ("checkpoint", "protocol", "results", "image_processor")
                           if key in group})
    merged.update(results)
    record: dict[str, Any] = {"checkpoint": str(checkpoint), "protocol": protocol, "results": merged,
                              "versions": runs.software_versions()}
    if image_processor is not None:
        record["image_processor"] = image_processor
    if others:
        record["other_protocols"] = others
    runs.write_json(path, record)
    return record


def fewshot_table(record: dict[str, Any]) -> str:
    results = record["results"]
    shots = sorted({int(k) for per_task in results.values() for k in per_task})
    rows = []
    for task, per_task in results.items():
        row = [task]
        for k in shots:
            entry = per_task.get(str(k))
            row.append("" if entry is None else f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}")
        rows.append(row)
    return format_table(["task"] + [f"{k}-shot (%)" for k in shots], rows)


def _cmd_fewshot(args) -> int:
    from ..cli_options import data_dirs_for

    data_dirs = data_dirs_for(args.data_dir, args.tasks)
    try:
        l2 = args.l2_reg if args.l2_reg == "select" else float(args.l2_reg)
    except ValueError:
        raise ValueError(f"--l2-reg takes 'select' or a positive number, got {args.l2_reg!r}") from None
    record, path = fewshot_checkpoint(
        args.checkpoint, args.tasks, shots=args.shots, seeds=range(args.seeds), train_split=args.train_split,
        test_split=args.test_split, data_dirs=data_dirs, resolution=args.resolution, output=args.output_dir,
        device=args.device, cache_dir=args.cache_dir or (None if args.no_cache else True), l2_reg=l2,
        val_shots=args.val_shots, preprocessing=args.preprocessing, batch_size=args.batch_size,
        progress=not args.no_progress, precision=args.precision, classes=args.classes,
    )
    protocol = record["protocol"]
    print(f"Protocol: {protocol['name']} (l2 {protocol['l2_reg']}, {protocol['preprocessing_steps']}, "
          f"{protocol['train_images_per_class']} training images per class)")
    print(fewshot_table(record))
    print(f"Wrote {path}")
    return 0


def add_fewshot_cli(subparsers) -> None:
    from ..cli_options import add_data_dir, add_device, add_no_progress, add_output_dir
    from ..precision import add_precision_argument

    p = subparsers.add_parser(
        "fewshot",
        help="few-shot linear evaluation (closed-form least squares on frozen pre-logits features)",
        description="The paper's few-shot evaluation with big_vision's protocol by default: for exactly k images "
        "per class (seeded draws) fit a least-squares map with l2 regularisation 2^10 from the frozen pre-logits "
        "representation to {-1, 1}^K in closed form and report its accuracy on the full test split, mean ± std over "
        "seeds; images are resized to round(resolution x 256 / 224) squared and centrally cropped (224 -> 256 -> "
        "224). Writes fewshot.json, whose protocol.name says whether it was big_vision's. Features are cached "
        "(key: model fingerprint, resolution, preprocessing, task, split).",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id")
    p.add_argument("tasks", nargs="+", help="registry tasks, Hub dataset ids or local dataset folders")
    p.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS), help="k values (default 1 5 10 25)")
    p.add_argument("--seeds", type=int, default=len(DEFAULT_SEEDS), help="number of seeds (default 3)")
    p.add_argument("--l2-reg", default=f"{DEFAULT_L2:g}",
                   help="a fixed l2 regularisation (default 1024 = 2^10, big_vision's) or 'select' (ours: chosen from "
                   "2^-10..2^20 on --val-shots further training images per class; labelled in fewshot.json)")
    p.add_argument("--val-shots", type=int, default=DEFAULT_VAL_SHOTS, help="held-out images per class for 'select'")
    p.add_argument("--preprocessing", choices=PREPROCESSINGS, default="central_crop",
                   help="central_crop (default, big_vision's: square resize to resolution x 256/224, central crop) or "
                   "resize (straight to the resolution)")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="LABEL",
                   help="keep only these label ids of every task, relabelled 0..K-1 in the order given (e.g. the "
                   "classes pretraining never saw: --classes 5 6 7 8 9); results are recorded as TASK[5,6,7,8,9] "
                   "(default: all classes)")
    p.add_argument("--train-split", default="train", help="split the shots come from (default: train)")
    p.add_argument("--test-split", default="test", help="split that is scored (default: test)")
    add_data_dir(p)
    p.add_argument("--resolution", type=int, default=None, help="feature resolution (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    add_output_dir(p, "RUN/fewshot.json; a path ending in .json names the file", old=["--output"])
    p.add_argument("--cache-dir", default=None, help=f"feature cache (default {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    add_device(p)
    add_precision_argument(p)
    add_no_progress(p)
    p.set_defaults(func=_cmd_fewshot)
