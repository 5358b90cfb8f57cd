"""Batches for training and evaluation: decode + transform + collate in DataLoader workers.

`make_dataloader(dataset, transform, batch_size, shuffle=...)` turns a `load_task` dataset (any
`datasets.Dataset` with "image" and "label" columns) into a `torch.utils.data.DataLoader` that
yields `{"pixel_values": (B, 3, H, W) float32, "labels": (B,) int64}`. With `labels=False` the
label column is not read (it may be absent); `per_image` adds entries drawn for each image (the
masked-patch-prediction corruption of `hf_vit_repro.training.objectives`).

How it stays deterministic: the sampler (`SeededSampler`) yields `(row index, augmentation
seed)` pairs drawn from `(seed, epoch)` alone, and every image is transformed with its own
`torch.Generator` seeded from that pair. So a given seed and epoch give the same batches, the
same crops and the same flips whatever `num_workers` is, and resuming at an epoch reproduces it
(call `loader.sampler.set_epoch(epoch)`, or let the sampler count epochs itself).

How it survives bad data: the loader hands the collator the undecoded bytes (the "image" column
is cast to `Image(decode=False)`), so decoding happens in the collator, inside the worker. An
image that cannot be decoded is skipped and counted (`collator.num_skipped`, shared by all
workers; `collator.pop_skipped()` reads and resets it at the end of an epoch) and logged with its
row index and source; with `strict=True` the collator raises `CorruptImageError` naming them.

Anything else drawn per image (`per_image`) comes from the same generator, after the transform:
it is as reproducible as the augmentation.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

INDEX_KEY = "__index__"
SEED_KEY = "__seed__"
_MASK64 = (1 << 64) - 1


class CorruptImageError(ValueError):
    """An image could not be decoded (strict mode); the message names the row and its source."""


#: What a strict loader's `CorruptImageError` tells the user to do, unless its caller says otherwise
#: (`make_dataloader(unreadable_hint=...)`: a command without a skipping mode names its own remedy).
SKIP_UNREADABLE_HINT = ("strict mode: data.strict=false in a recipe, --skip-unreadable on the command line, skips and "
                        "counts such images")


def mix64(*values: int) -> int:
    """A stable 64-bit hash of integers (SplitMix64 steps): the same on every machine, Python
    and NumPy version, unlike `hash()` or NumPy's `Generator` methods."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


def hash_indices(indices: np.ndarray, seed: int) -> np.ndarray:
    """`[mix64(seed, i) for i in indices]`, vectorised (uint64, wrapping integer arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(indices, dtype=np.uint64) ^ np.uint64(mix64(seed))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stable_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) that depends only on (n, seed): rows sorted by the SplitMix64
    hash `mix64(seed, row)`, computed with 64-bit integer arithmetic, so it is identical on every
    machine and library version (unlike NumPy's `Generator` methods, whose algorithms may
    change). Used for shuffling, VTAB-1k splits, few-shot draws and the digits partition."""
    return np.argsort(hash_indices(np.arange(n), seed), kind="stable")


def subset_size(n: int, size: float) -> int:
    """How many of `n` rows a subset `size` means: a value in (0, 1] is a fraction (rounded, at
    least one row), a larger one a whole number of rows (at most `n`)."""
    if not size > 0:
        raise ValueError(f"a subset size must be > 0, got {size}")
    if size <= 1:
        return max(1, int(round(size * n)))
    if size != int(size):
        raise ValueError(f"a subset size above 1 is a number of rows and must be whole, got {size}")
    if size > n:
        raise ValueError(f"a subset of {int(size)} rows was asked of a split of only {n} rows")
    return int(size)


def nested_subset(n: int, size: float, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded random subset of range(n) with `subset_size(n, size)` rows:
    the first rows of `stable_permutation(n, seed)`. Subsets of one (n, seed) are nested (the 10%
    subset lies inside the 30% one: the paper's data-size study, Sec. 4.3) and the same on every
    machine."""
    return np.sort(stable_permutation(n, seed)[: subset_size(n, size)])


def decode_image(value: Any) -> Image.Image:
    """A fully decoded PIL image from what a dataset row may hold: a PIL image, a `datasets`
    image dict ({"bytes": ..., "path": ...}), raw bytes, a file path, or an (H, W[, C]) array.

    Decoded as `datasets.Image().decode_example` and transformers' `load_image` decode: a file's
    EXIF orientation is applied (a phone photo tagged "rotate 90" comes out upright, as `pipeline`
    sees it); colour modes are left to the transforms' `to_rgb`.

    Raises OSError / ValueError (and Pillow's UnidentifiedImageError) when the data is not an
    image or is truncated; `load()` forces the whole file to be read so truncation is caught
    here, not later in a transform.
    """
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            image = Image.open(io.BytesIO(data))
        elif path:
            image = Image.open(path)
        else:
            raise ValueError("image entry has neither bytes nor path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    elif isinstance(value, np.ndarray):
        image = Image.fromarray(value)
    elif value is None:
        raise ValueError("image is missing (None)")
    else:
        raise ValueError(f"cannot read an image from a {type(value).__name__}")
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    return image


def describe_source(row: dict[str, Any]) -> str:
    """Where a row's image came from, for error messages: file path, webdataset key/shard."""
    parts = []
    value = row.get("image")
    if isinstance(value, dict) and value.get("path"):
        parts.append(f"path={value['path']}")
    for key in ("__key__", "__url__"):
        if row.get(key):
            parts.append(f"{key.strip('_')}={row[key]}")
    return ", ".join(parts) or "no file name recorded"


_DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError, EOFError)


class ImageClassificationCollator:
    """callable(list of rows) -> {"pixel_values": (B, 3, H, W) float32, "labels": (B,) int64}.

    Each row is a dict with "image" (anything `decode_image` reads) and "label" (int; not read,
    and no "labels" entry made, with `labels=False`). Rows from `make_dataloader` also carry
    their row index and augmentation seed; the transform then gets a `torch.Generator` seeded
    from it. `per_image(pixels (3, H, W), generator) -> {name: tensor}` is called after the
    transform with the same generator (None for rows without a seed); its tensors are stacked
    into batch entries `name` `(B, ...)` (a picklable callable: it runs in the workers). Undecodable images are skipped: `num_skipped` counts them
    across all DataLoader workers (shared memory), `pop_skipped()` returns the count and resets
    it. A batch whose images were all skipped has B = 0 (and no `per_image` entries). With `strict=True` the first bad image
    raises `CorruptImageError` with its index and source instead. With `placeholder_label` set,
    a skipped image keeps its place in the batch as a black image with that label (evaluation
    under data parallelism needs every process's batch at its nominal size and order).
    `unreadable_hint` ends the strict error's message (default `SKIP_UNREADABLE_HINT`).
    """

    def __init__(self, transform, strict: bool = False, placeholder_label: int | None = None,
                 per_image=None, labels: bool = True, unreadable_hint: str = SKIP_UNREADABLE_HINT):
        self.transform = transform
        self.strict = bool(strict)
        self.unreadable_hint = unreadable_hint
        self.placeholder_label = placeholder_label
        self.per_image = per_image
        self.labels = bool(labels)
        self._skipped = multiprocessing.Value("q", 0)

    @property
    def num_skipped(self) -> int:
        """Images skipped since creation or the last `pop_skipped()`, summed over workers."""
        return int(self._skipped.value)

    def pop_skipped(self) -> int:
        """Return `num_skipped` and reset it to 0 (call at the end of an epoch to report it)."""
        with self._skipped.get_lock():
            count = int(self._skipped.value)
            self._skipped.value = 0
        return count

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels, labels, extras = [], [], []
        for position, row in enumerate(rows):
            where = f"row {row[INDEX_KEY]}" if INDEX_KEY in row else f"item {position} of its batch"
            try:
                image = decode_image(row.get("image"))
            except _DECODE_ERRORS as err:
                message = f"cannot decode the image of {where} ({describe_source(row)}): {type(err).__name__}: {err}"
                if self.strict:
                    raise CorruptImageError(f"{message} ({self.unreadable_hint})") from err
                with self._skipped.get_lock():
                    self._skipped.value += 1
                logger.warning("skipping %s", message)
                if self.placeholder_label is None:
                    continue
                image, row = Image.new("RGB", (8, 8)), {**row, "label": self.placeholder_label}
            seed = row.get(SEED_KEY)
            generator = None if seed is None else torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
            pixels.append(self.transform(image, generator=generator) if generator is not None else self.transform(image))
            if self.labels:
                labels.append(int(row["label"]))
            if self.per_image is not None:
                extras.append(self.per_image(pixels[-1], generator))
        if pixels:
            pixel_values = torch.stack(pixels)
        else:
            shape = getattr(self.transform, "output_shape", (3, 0, 0))
            pixel_values = torch.empty((0, *shape), dtype=torch.float32)
        batch = {"pixel_values": pixel_values}
        if self.labels:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if extras:
            batch.update({name: torch.stack([extra[name] for extra in extras]) for name in extras[0]})
        return batch

    def __repr__(self) -> str:
        return f"ImageClassificationCollator(transform={self.transform!r}, strict={self.strict})"


class SeededSampler(torch.utils.data.Sampler):
    """Yields `(row index, augmentation seed)` for one epoch, depending only on (seed, epoch).

    `shuffle=True` visits rows in `stable_permutation(n, mix64(seed, epoch))` order; otherwise in
    order. Each iteration uses the current epoch and then advances it, so a loop over epochs gets
    a new order each time even if nobody calls `set_epoch`; `set_epoch(e)` (what Accelerate and a
    resumed run call) pins it.

    `repeats` = k > 1 is DeiT's repeated augmentation (Hoffer et al. 2020; DeiT's `RASampler`):
    each of the first ceil(n / k) rows of the order is yielded k times in a row, each copy with
    its own seed (so its own augmentation), and the epoch stops after n samples, so its length
    and the schedule stay those of k = 1. The copies fall in the same global batch; Accelerate
    then deals the batches out to the processes. (DeiT deals single samples round-robin, which
    puts the copies on different GPUs; for a model without batch statistics the update is the same.)
    """

    def __init__(self, num_rows: int, *, shuffle: bool, seed: int = 0, repeats: int = 1):
        self.num_rows, self.shuffle, self.seed = int(num_rows), bool(shuffle), int(seed)
        if int(repeats) != repeats or repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
        self.repeats = int(repeats)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        epoch_seed = mix64(self.seed, epoch)
        order = stable_permutation(self.num_rows, epoch_seed) if self.shuffle else np.arange(self.num_rows)
        seeds = hash_indices(order, epoch_seed)  # == mix64(epoch_seed, index), one per row
        if self.repeats > 1:
            distinct = -(-self.num_rows // self.repeats)
            order, seeds = np.repeat(order[:distinct], self.repeats), np.repeat(seeds[:distinct], self.repeats)
            copies = np.tile(np.arange(self.repeats, dtype=np.uint64), distinct)
            # copy c of a row: a bijective hash of (row seed XOR c), so the copies' seeds differ
            seeds = hash_indices(seeds ^ copies, mix64(epoch_seed, self.repeats))
            order, seeds = order[: self.num_rows], seeds[: self.num_rows]
        yield from zip(order.tolist(), seeds.tolist())


class _RowsWithSeeds(torch.utils.data.Dataset):
    """Map-style view of a `datasets.Dataset` indexed by `(row, seed)` pairs; rows keep their
    undecoded image bytes and gain their index and seed."""

    def __init__(self, dataset):
        from datasets import Image as ImageFeature

        features = dataset.features
        if "image" in features and isinstance(features["image"], ImageFeature) and features["image"].decode:
            dataset = dataset.cast_column("image", ImageFeature(decode=False))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        keys = [k if isinstance(k, tuple) else (int(k), None) for k in keys]
        batch = self.dataset[[index for index, _ in keys]]
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        for row, (index, seed) in zip(rows, keys):
            row[INDEX_KEY], row[SEED_KEY] = index, seed
        return rows


def _worker_init(worker_id: int) -> None:
    # Transforms draw from per-sample generators; seed the other RNGs too so user code that
    # relies on them is reproducible per worker.
    info = torch.utils.data.get_worker_info()
    if info is not None:
        np.random.seed(info.seed % (1 << 32))
        import random

        random.seed(info.seed)


def make_dataloader(
    dataset,
    transform,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    strict: bool = False,
    placeholder_label: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    per_image=None,
    labels: bool = True,
    unreadable_hint: str = SKIP_UNREADABLE_HINT,
    repeats: int = 1,
) -> torch.utils.data.DataLoader:
    """A DataLoader over a dataset with "image" and "label" columns yielding
    {"pixel_values": (B, 3, H, W) float32, "labels": (B,) int64}; with `labels=False` the
    "label" column is neither needed nor read, and `per_image` adds entries drawn per image from
    its generator (see `ImageClassificationCollator`).

    Deterministic for a given `seed` and epoch, independent of `num_workers` (see module
    docstring). Decoding and `transform` run in the workers. The collator is
    `loader.collate_fn` (read `loader.collate_fn.pop_skipped()` at the end of an epoch), the
    sampler `loader.sampler` (`set_epoch`). `placeholder_label`, `unreadable_hint`: see
    `ImageClassificationCollator`. `repeats`: repeated augmentation (`SeededSampler`; map-style datasets only).

    A streaming `datasets.IterableDataset` is accepted too: it is shuffled with a buffer when
    `shuffle` (its own `set_epoch` reshuffles) and augmented from each worker's torch RNG, which
    the DataLoader seeds from `seed`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    collator = ImageClassificationCollator(transform, strict=strict, placeholder_label=placeholder_label,
                                           per_image=per_image, labels=labels, unreadable_hint=unreadable_hint)
    generator = torch.Generator().manual_seed(int(seed))
    common = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_worker_init,
        persistent_workers=persistent_workers and num_workers > 0,
    )
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):
        if repeats != 1:
            raise ValueError("repeated augmentation (data.repeated_aug) needs a dataset with rows by index, not a streamed one")
        from datasets import Image as ImageFeature

        if dataset.features is not None and isinstance(dataset.features.get("image"), ImageFeature):
            dataset = dataset.cast_column("image", ImageFeature(decode=False))
        if shuffle:
            dataset = dataset.shuffle(seed=seed, buffer_size=10_000)
        return torch.utils.data.DataLoader(dataset, **common)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; check the split and any filtering before building a DataLoader")
    rows = _RowsWithSeeds(dataset)
    sampler = SeededSampler(len(rows), shuffle=shuffle, seed=seed, repeats=repeats)
    return torch.utils.data.DataLoader(rows, sampler=sampler, **common)
