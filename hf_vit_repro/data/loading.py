"""Loading: registry task / Hub id / local folder -> `datasets.Dataset` with "image" and "label".

`load_task(name, split)` reads the source split through `datasets.load_dataset`, the same call
for the Hub id and for a local folder laid out like the Hub repo (`data_dir=`, or a path in
place of the id): parquet files, or webdataset shards `train/0.tar, ...`. The result always has
exactly two columns: "image" (`datasets.Image`, a PIL image on access) and "label"
(`ClassLabel` with the task's number of classes), whatever the source calls them, with the VTAB
label transform applied where the source does not store final labels; with `labels=False` only
"image" (for self-supervised pretraining: the source needs no label column).

VTAB-1k splits ("train800", "val200", "train800val200") follow task_adaptation where the
published data allows it (`vtab1k_indices`, registry docstring): for a VTAB task train800 is the
first 800 rows of the train split, and val200 the official 200 rows where a published split holds
them (`TaskSpec.vtab_val_rows`), else the first 200 rows, in a SplitMix64 ranking of (seed, row
index), that are not in train800 (integer arithmetic only: every machine and every datasets /
NumPy version picks the same rows). Other tasks have no official rows: both parts are drawn from
that ranking. Sources whose keys give the export order (`TaskSpec.key_order`: the clip-benchmark
webdatasets, whose shards `datasets` reads in text order 0, 1, 10, 11, ..., 2) are sorted by
`__key__` first, so "the first 800 rows" are the first 800 exported. `export_vtab1k_indices`
writes the indices to JSON (with webdataset keys, where the source has them, so a re-import can
check it reads the same files) and `load_task(..., indices=path)` reads them back.
"""

from __future__ import annotations

import functools
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .collate import mix64, stable_permutation
from .registry import (
    LABEL_TRANSFORMS,
    TASKS,
    VTAB1K_TRAIN,
    VTAB1K_VAL,
    VTAB_SPLITS,
    TaskSpec,
    UnknownTaskError,
    get_task,
    unknown_task_message,
)

VTAB1K_SEED = 0
DIGITS_TEST_SIZE = 300
DIGITS_SEED = 0
FEWSHOT_SHOTS = (1, 5, 10, 25)

_IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "pixel_values", "picture")
_LABEL_NAMES = ("label", "labels", "cls", "fine_label", "target", "class", "y")


class DataError(ValueError):
    """Bad input to the data pipeline; the message says what was wrong and how to fix it."""


# ---------------------------------------------------------------------------------------------
# Digits: the local, offline source.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_encoded() -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """scikit-learn's 1797 digits as 8x8 greyscale PNG bytes (0..16 scaled to 0..255)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    encoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return tuple(encoded), tuple(int(t) for t in digits.target)


def digits_split_indices(test_size: int = DIGITS_TEST_SIZE, seed: int = DIGITS_SEED) -> dict[str, list[int]]:
    """The fixed stratified train/test partition of the digits (1497 / 300 by default).

    Each class gives round-by-largest-remainder(test_size * n_class / n) rows to test: those
    ranked first by `stable_permutation` of the whole set, so the partition depends on nothing
    but (test_size, seed).
    """
    _, labels = _digits_encoded()
    labels = np.asarray(labels)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = test_size * counts / n
    take = np.floor(quotas).astype(int)
    remainder_order = np.argsort(-(quotas - take), kind="stable")
    take[remainder_order[: test_size - int(take.sum())]] += 1
    rank = np.empty(n, dtype=np.int64)
    rank[stable_permutation(n, seed)] = np.arange(n)
    test = []
    for cls, quota in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        test.extend(members[np.argsort(rank[members], kind="stable")][:quota].tolist())
    test = sorted(test)
    test_set = set(test)
    return {"train": [i for i in range(n) if i not in test_set], "test": test}


def _digits_dataset(split: str):
    from datasets import ClassLabel, Dataset, Features, Image

    encoded, labels = _digits_encoded()
    rows = digits_split_indices()[split]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    data = {"image": [{"bytes": encoded[i], "path": f"digits_{i:04d}.png"} for i in rows], "label": [labels[i] for i in rows]}
    return Dataset.from_dict(data, features=features, split=split)


# ---------------------------------------------------------------------------------------------
# Resolving a name to a TaskSpec.
# ---------------------------------------------------------------------------------------------


def _looks_like_source(name: str) -> bool:
    """A local path, or a Hub id "org/name" that is not a mistyped registry name."""
    if os.path.exists(os.path.expanduser(name)):
        return True
    return name.count("/") == 1 and not name.startswith("vtab/") and not name.startswith(("/", "."))


def resolve_task(name: str, image_column: str | None = None, label_column: str | None = None) -> TaskSpec:
    """The TaskSpec for a registry name, or an ad-hoc one for a Hub id / local folder.

    Column overrides replace the registry's names (for a copy of the data whose columns differ).
    An ad-hoc spec's columns are found when loading if not given (`_find_column`).
    """
    if name in TASKS:
        spec = TASKS[name]
    elif name.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(name)):
        raise DataError(f"no folder {name!r}; give a registry task, a Hub dataset id or an existing local folder")
    elif _looks_like_source(name):
        return _AdhocSpec(name=name, hub_id=name, image_column=image_column, label_column=label_column)
    else:
        raise UnknownTaskError(unknown_task_message(name))
    if image_column or label_column:
        from dataclasses import replace

        spec = replace(spec, image_column=image_column or spec.image_column, label_column=label_column or spec.label_column)
    return spec


class _AdhocSpec:
    """A user dataset: splits pass through, columns and class count are read from the data."""

    def __init__(self, name, hub_id, image_column, label_column):
        self.name, self.hub_id = name, hub_id
        self.image_column, self.label_column = image_column, label_column
        self.splits: dict[str, str] = {}
        self.num_classes = None
        self.vtab_group = None
        self.data_files = None
        self.vtab_val_rows = None
        self.label_transform = None
        self.crop = self.flip = True
        self.source_format = "auto"
        self.key_order = False
        self.is_vtab = False

    @property
    def available_splits(self):
        return ()


# ---------------------------------------------------------------------------------------------
# Reading one source split.
# ---------------------------------------------------------------------------------------------


def _source_path(spec, data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data_dir {str(path)!r} is not a folder; give the folder that holds the dataset laid out like the Hub repo")
        return str(path)
    if spec.hub_id is None:
        raise DataError(f"task {spec.name!r} has no Hub source")
    local = Path(spec.hub_id).expanduser()
    return str(local) if local.exists() else spec.hub_id


def _load_source_split(spec, source_split: str, data_dir, *, streaming: bool, num_proc: int | None, revision: str | None):
    """`datasets.load_dataset` for one split of the source, with errors a user can act on."""
    if spec.source_format == "local":
        if data_dir is not None:
            raise DataError(f"task {spec.name!r} is built in; it takes no data_dir")
        if source_split not in ("train", "test"):
            raise DataError(f"task {spec.name!r} has no split {source_split!r}; it has train, test")
        dataset = _digits_dataset(source_split)
        return dataset.to_iterable_dataset() if streaming else dataset
    import datasets

    path = _source_path(spec, data_dir)
    kwargs: dict[str, Any] = {"split": source_split, "streaming": streaming}
    if spec.data_files and source_split in spec.data_files:
        # Only this split's files: preparing ImageNet's train split to read its validation
        # split would be a very long wait.
        kwargs["data_files"] = {source_split: spec.data_files[source_split]}
    if num_proc and not streaming:
        kwargs["num_proc"] = num_proc
    if revision and not os.path.isdir(path):
        kwargs["revision"] = revision
    try:
        dataset = datasets.load_dataset(path, **kwargs)
        if spec.key_order and not streaming and "__key__" in (dataset.column_names or []):
            with warnings.catch_warnings():  # pyarrow 25 deprecates an argument datasets' sort passes
                warnings.filterwarnings("ignore", message=".*null_placement.*", category=FutureWarning)
                dataset = dataset.sort("__key__")  # the export order; the shards were read in text order
        return dataset
    except ValueError as err:
        if "corresponds to no data" in str(err):
            raise DataError(f"{spec.name}: split {source_split!r} is empty in {path!r}; check the split name and the data files") from err
        if "Unknown split" in str(err) or "split" in str(err).lower():
            raise DataError(f"{spec.name}: the source {path!r} has no split {source_split!r} ({err})") from err
        raise
    except FileNotFoundError as err:
        pattern = kwargs.get("data_files", {}).get(source_split)
        where = f" matching {pattern!r}" if pattern else ""
        raise DataError(
            f"{spec.name}: no data files{where} for split {source_split!r} in {path!r} ({err}). A local copy must "
            "be laid out like the Hub repo (e.g. train/0.tar for webdataset repos, data/train-*.parquet for parquet ones)."
        ) from err
    except ConnectionError as err:
        raise DataError(
            f"{spec.name}: cannot reach {path!r} on the Hub and it is not in the local cache ({err}). Download it "
            "once with network access, or pass data_dir= a local copy laid out like the Hub repo."
        ) from err


def _feature_kind(feature) -> str:
    from datasets import ClassLabel, Image, Value

    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, ClassLabel):
        return "classlabel"
    if isinstance(feature, Value) and (feature.dtype.startswith("int") or feature.dtype.startswith("uint")):
        return "int"
    return "other"


def _find_column(features, wanted: str | None, role: str, spec) -> str:
    """The source column for `role` ("image" or "label"): the one asked for, else a column of
    the right feature type or a conventional name. Errors name the columns that exist."""
    names = list(features)
    if wanted:
        if wanted in features:
            return wanted
        raise DataError(
            f"{spec.name}: no {role} column {wanted!r}; the source has columns {names}. "
            f"Pass --{role}-column (or {role}_column=) with one of them."
        )
    kinds = {name: _feature_kind(features[name]) for name in names}
    if role == "image":
        candidates = [n for n in names if kinds[n] == "image"] or [n for n in _IMAGE_NAMES if n in features]
    else:
        candidates = [n for n in names if kinds[n] == "classlabel"] or [n for n in _LABEL_NAMES if n in features]
    if len(candidates) >= 1 and (len(candidates) == 1 or role == "label"):
        return candidates[0]
    found = ", ".join(f"{n} ({kinds[n]})" for n in names)
    raise DataError(
        f"{spec.name}: cannot tell which column holds the {role}; the source has columns {found}. "
        f"Pass --{role}-column (or {role}_column=)."
    )


def _standardise(dataset, spec, *, image_column: str | None, label_column: str | None, streaming: bool,
                 labels: bool = True):
    """Select the image and label columns, rename them, apply the label transform, cast
    (`labels=False`: the image column alone)."""
    from datasets import ClassLabel, Image

    features = dataset.features
    if features is None:  # a streaming source whose schema is not known up front
        dataset = dataset._resolve_features()
        features = dataset.features
    image_col = _find_column(features, image_column or spec.image_column, "image", spec)
    if not labels:
        return _images_only(dataset, image_col, streaming)
    label_col = _find_column(features, label_column or spec.label_column, "label", spec)
    if image_col == label_col:
        raise DataError(f"{spec.name}: the image and label columns are both {image_col!r}")
    label_feature = features[label_col]
    if _feature_kind(label_feature) not in ("classlabel", "int"):
        raise DataError(
            f"{spec.name}: label column {label_col!r} holds {label_feature}, not integer class ids; "
            "pick another column with --label-column or map the labels to integers first."
        )
    dataset = dataset.select_columns([image_col, label_col])
    if image_col != "image" or label_col != "label":
        dataset = _rename(dataset, image_col, label_col, streaming)
    if not isinstance(dataset.features["image"], Image):
        dataset = dataset.cast_column("image", Image())
    if spec.label_transform:
        transform = LABEL_TRANSFORMS[spec.label_transform]

        def _apply(batch):
            return {"label": [transform(int(v)) for v in batch["label"]]}

        features = dataset.features.copy()
        features["label"] = _plain_int()
        progress = {} if streaming else {"desc": f"VTAB labels ({spec.label_transform})"}
        dataset = dataset.map(_apply, batched=True, features=features, **progress)
        label_feature = dataset.features["label"]
    num_classes = spec.num_classes
    names = label_feature.names if isinstance(label_feature, ClassLabel) and not spec.label_transform else None
    if num_classes is None:
        if names is None and streaming:
            raise DataError(f"{spec.name}: the number of classes is unknown for a streamed source without a ClassLabel column")
        num_classes = len(names) if names is not None else None
    if not streaming:
        labels = label_array(dataset)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 0
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise DataError(
                f"{spec.name}: {len(bad)} label(s) outside [0, {num_classes}) (e.g. {int(bad[0])}); the label column or "
                "the label transform does not match this source (unlabelled test splits store -1)."
            )
    if names is None or len(names) != num_classes:
        names = [str(i) for i in range(num_classes)]
    target = ClassLabel(names=names)
    return dataset if dataset.features["label"] == target else dataset.cast_column("label", target)


def _rename(dataset, image_col: str, label_col: str, streaming: bool):
    """Columns (image_col, label_col) -> ("image", "label").

    Surprise: on a streamed webdataset, `IterableDataset.rename_columns` (datasets 5.2) hands
    out the previous row's image for some rows (row 2 of a 3-row shard came back as row 1's in
    our fixture test); an explicit `map` that copies the two columns does not, so streaming uses
    that.
    """
    if not streaming:
        renamed = dataset.rename_columns({image_col: "__image__", label_col: "__label__"})
        return renamed.rename_columns({"__image__": "image", "__label__": "label"})
    from datasets import Features

    features = Features({"image": dataset.features[image_col], "label": dataset.features[label_col]})
    drop = [c for c in (image_col, label_col) if c not in ("image", "label")]

    def _copy(example):
        return {"image": example[image_col], "label": example[label_col]}

    return dataset.map(_copy, remove_columns=drop, features=features)


def _images_only(dataset, image_col: str, streaming: bool):
    """Column `image_col` alone, as "image" (`datasets.Image`); streamed sources copy it with `map`
    for the reason `_rename` gives."""
    from datasets import Features, Image

    dataset = dataset.select_columns([image_col])
    if image_col != "image":
        if streaming:
            features = Features({"image": dataset.features[image_col]})
            dataset = dataset.map(lambda example: {"image": example[image_col]}, remove_columns=[image_col],
                                  features=features)
        else:
            dataset = dataset.rename_column(image_col, "image")
    return dataset if isinstance(dataset.features["image"], Image) else dataset.cast_column("image", Image())


def _plain_int():
    from datasets import Value

    return Value("int64")


def label_array(dataset) -> np.ndarray:
    """The `label` column of `dataset` as an int64 array. `[:]` reads the column as one batch;
    `dataset["label"]` is a lazy column in datasets 4+ that formats row by row (50x slower on 750
    rows: most of a small few-shot evaluation's time)."""
    return np.asarray(dataset.with_format("numpy", columns=["label"])[:]["label"], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# VTAB-1k splits and few-shot subsets.
# ---------------------------------------------------------------------------------------------


def vtab1k_indices(
    num_train: int,
    seed: int = VTAB1K_SEED,
    num_val_source: int | None = None,
    *,
    official_train: bool = False,
    val_offset: int | None = None,
) -> dict[str, list[int]]:
    """Row indices of VTAB-1k's train800 and val200 (sorted ascending).

    train800: rows 0..799 of the train split (`num_train` rows) with `official_train` (a VTAB
    task: task_adaptation's `train[:800]`), else the first 800 rows of the ranking
    `stable_permutation(num_train, seed)`.
    val200 comes from the train split when `num_val_source` is None, else from a separate split
    of `num_val_source` rows. With `val_offset`, it is rows val_offset .. val_offset + 199 of
    that split (official rows, e.g. validation[:200]); otherwise it is drawn: the first 200 rows
    of the same ranking that are not in train800 (from the train split), or of
    `stable_permutation(num_val_source, mix64(seed, 1))` (from a separate split).
    """
    val_rows = num_train if num_val_source is None else num_val_source
    need_train = VTAB1K_TRAIN + (VTAB1K_VAL if num_val_source is None else 0)
    if num_train < need_train or val_rows < VTAB1K_VAL:
        where = "the train split" if num_val_source is None else f"a train and a validation split of {num_val_source}"
        raise DataError(
            f"VTAB-1k needs {VTAB1K_TRAIN} train and {VTAB1K_VAL} validation rows from {where}; the train split has {num_train}"
        )
    order = stable_permutation(num_train, seed)
    train800 = list(range(VTAB1K_TRAIN)) if official_train else sorted(order[:VTAB1K_TRAIN].tolist())
    if val_offset is not None:
        val200 = list(range(int(val_offset), int(val_offset) + VTAB1K_VAL))
        if val200[-1] >= val_rows or (num_val_source is None and set(val200) & set(train800)):
            raise DataError(f"val200 rows {val200[0]}..{val200[-1]} do not fit a split of {val_rows} rows beside train800")
    elif num_val_source is None:
        val200 = sorted(order[~np.isin(order, train800)][:VTAB1K_VAL].tolist())
    else:
        val200 = sorted(stable_permutation(num_val_source, mix64(seed, 1))[:VTAB1K_VAL].tolist())
    return {"train800": train800, "val200": val200}


def _vtab_plan(spec) -> dict[str, Any]:
    """How `spec`'s VTAB-1k rows are chosen: `vtab1k_indices` keyword arguments, the split val200
    is read from, and the rule in words (recorded by `export_vtab1k_indices`)."""
    rows = getattr(spec, "vtab_val_rows", None)
    official = bool(getattr(spec, "is_vtab", False))
    val_split, offset = rows if rows is not None else ("train", None)
    return {"official_train": official, "val_offset": offset, "val_split": val_split}


def _read_indices(indices, spec, sizes: Mapping[str, int]) -> dict[str, list[int]]:
    if isinstance(indices, (str, os.PathLike)):
        with open(indices, encoding="utf-8") as f:
            record = json.load(f)
    else:
        record = dict(indices)
    chosen = record.get("indices", record)
    written_for = record.get("task")
    if written_for is not None and written_for != spec.name:
        raise DataError(
            f"the indices file was written for {written_for!r}, not {spec.name!r}; export {spec.name}'s own with "
            f"`vit-repro data export-vtab {spec.name} FILE`."
        )
    for split, count in ((s, VTAB1K_TRAIN if s == "train800" else VTAB1K_VAL) for s in ("train800", "val200")):
        if split not in chosen:
            raise DataError(f"the indices file has no {split!r} entry (it has {sorted(chosen)})")
    sources = record.get("source_rows")
    if sources:
        for name, rows in sources.items():
            if name in sizes and sizes[name] != rows:
                raise DataError(
                    f"{spec.name}: the indices were drawn from a {name} split of {rows} rows, but this source's has "
                    f"{sizes[name]}; it is a different version of the data."
                )
    return {"train800": [int(i) for i in chosen["train800"]], "val200": [int(i) for i in chosen["val200"]]}


def fewshot_subset(dataset, k: int, seed: int = 0):
    """Exactly `k` examples of every class (k = 1, 5, 10, 25 in the paper), deterministic by
    `seed`: in each class the rows ranked first by `stable_permutation(len(dataset), seed)`.
    Rows keep the dataset's order. Every class of the "label" ClassLabel must have k rows."""
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    if len(dataset) == 0:
        raise DataError("cannot draw a few-shot subset from an empty dataset")
    labels = label_array(dataset)
    feature = dataset.features.get("label")
    num_classes = getattr(feature, "num_classes", None) or int(labels.max()) + 1
    rank = np.empty(len(labels), dtype=np.int64)
    rank[stable_permutation(len(labels), seed)] = np.arange(len(labels))
    chosen = []
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        if len(members) < k:
            raise DataError(f"class {cls} has {len(members)} example(s); a {k}-shot subset needs {k} of every class")
        chosen.extend(members[np.argsort(rank[members], kind="stable")][:k].tolist())
    return dataset.select(sorted(chosen))


def classes_problem(classes) -> str | None:
    """What is wrong with a class selection (`data.classes`, `train.fewshot_eval.classes`, a study's
    `classes`, `select_classes`), as the end of a sentence naming it, or None: it lists at least 2
    distinct whole label ids >= 0. Whether the ids exist is the dataset's to say (`select_classes`)."""
    if (isinstance(classes, (list, tuple)) and len(classes) >= 2 and len(set(classes)) == len(classes)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)):
        return None
    return f"lists at least 2 distinct label ids >= 0 (null: all classes), got {classes!r}."


def select_classes(dataset, classes):
    """The rows of `dataset` whose label is one of `classes` (the task's own ids), relabelled
    0..K-1 in the order given (`classes[i]` becomes i) with the ClassLabel's names carried over:
    a model trained on it has a K-way head. Used for class-disjoint transfer (pretrain on some
    classes, transfer to the others; `data.classes` in a recipe). Every class must have rows."""
    import datasets

    classes = [int(c) for c in classes]
    if problem := classes_problem(classes):
        raise DataError(f"`classes` {problem}")
    labels = label_array(dataset)
    feature = dataset.features.get("label")
    total = getattr(feature, "num_classes", None) or (int(labels.max()) + 1 if len(labels) else 0)
    unknown = [c for c in classes if not 0 <= c < total]
    if unknown:
        raise DataError(f"classes {unknown} are not labels of this dataset (ids 0..{total - 1})")
    empty = [c for c in classes if not (labels == c).any()]
    if empty:
        raise DataError(f"classes {empty} have no example in this split")
    names = list(getattr(feature, "names", None) or [str(i) for i in range(total)])
    lookup = np.full(total, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    keep = lookup[labels] >= 0
    quiet = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # two instant passes over the table: no bars for them
    try:
        chosen = dataset.select(np.flatnonzero(keep).tolist()).remove_columns("label")
        chosen = chosen.add_column("label", lookup[labels[keep]].tolist())
        return chosen.cast_column("label", datasets.ClassLabel(names=[names[c] for c in classes]))
    finally:
        if not quiet:
            datasets.utils.enable_progress_bars()


# ---------------------------------------------------------------------------------------------
# The public entry point.
# ---------------------------------------------------------------------------------------------


def load_task(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    seed: int = VTAB1K_SEED,
    indices: str | os.PathLike | Mapping[str, Any] | None = None,
    num_proc: int | None = None,
    revision: str | None = None,
    labels: bool = True,
):
    """A split of a task as a `datasets.Dataset` with columns "image" (PIL on access) and "label"
    (ClassLabel with the task's K classes); `labels=False`: "image" alone, and the source need
    not have a label column (self-supervised pretraining).

    name: a registry task (`TASKS`), a Hub dataset id, or a local folder. split: one of the
    task's splits ("train", "test", "validation" where it exists) or VTAB-1k's "train800",
    "val200", "train800val200" (drawn with `seed`, or read from `indices`, a file written by
    `export_vtab1k_indices` or a dict of the same shape). data_dir: a local copy laid out like
    the Hub repo, read instead of the Hub. image_column / label_column: the source's column
    names when they differ from the registry's (or cannot be guessed for a user dataset).
    streaming: return a `datasets.IterableDataset` (not for the VTAB-1k splits, which need
    random access). num_proc: processes `datasets` may use to prepare the source.
    """
    spec = resolve_task(name, image_column, label_column)
    if split in VTAB_SPLITS:
        if streaming:
            raise DataError(f"{split!r} picks rows by index and needs random access; load it with streaming=False")
        dataset = _load_vtab1k(spec, split, data_dir, seed=seed, indices=indices, num_proc=num_proc, revision=revision)
        return dataset if labels else dataset.select_columns(["image"])
    if spec.splits and split not in spec.splits:
        raise DataError(f"task {spec.name!r} has no split {split!r}; choose one of {', '.join(spec.available_splits)}")
    source_split = spec.splits.get(split, split)
    dataset = _load_source_split(spec, source_split, data_dir, streaming=streaming, num_proc=num_proc, revision=revision)
    dataset = _standardise(dataset, spec, image_column=None, label_column=None, streaming=streaming, labels=labels)
    if not streaming and len(dataset) == 0:
        raise DataError(f"{spec.name}: split {split!r} is empty; check the split name and the data files")
    return dataset


def _vtab_sources(spec, data_dir, num_proc, revision, raw: bool = False):
    """(train, val or None) for VTAB-1k: the standardised train split and, where val200 is read
    from another split (`TaskSpec.vtab_val_rows`), that split. `raw=True` returns the train
    split before standardising too (its `__key__` column), as a third item."""
    def load(split):
        return _load_source_split(spec, spec.splits.get(split, split) if spec.splits else split, data_dir,
                                  streaming=False, num_proc=num_proc, revision=revision)

    train_raw = load("train")
    train = _standardise(train_raw, spec, image_column=None, label_column=None, streaming=False)
    val_split = _vtab_plan(spec)["val_split"]
    val = None
    if val_split != "train":
        val = _standardise(load(val_split), spec, image_column=None, label_column=None, streaming=False)
    return (train, val, train_raw) if raw else (train, val)


def _vtab_chosen(spec, train, val, seed) -> dict[str, list[int]]:
    plan = _vtab_plan(spec)
    return vtab1k_indices(len(train), seed, None if val is None else len(val), official_train=plan["official_train"],
                          val_offset=plan["val_offset"])


def _load_vtab1k(spec, split, data_dir, *, seed, indices, num_proc, revision):
    from datasets import concatenate_datasets

    train, val = _vtab_sources(spec, data_dir, num_proc, revision)
    sizes = {"train": len(train), **({"validation": len(val)} if val is not None else {})}
    chosen = _read_indices(indices, spec, sizes) if indices is not None else _vtab_chosen(spec, train, val, seed)
    val_source = train if val is None else val
    for name_, rows, source in (("train800", chosen["train800"], train), ("val200", chosen["val200"], val_source)):
        if rows and (min(rows) < 0 or max(rows) >= len(source)):
            raise DataError(f"{spec.name}: {name_} index {max(rows)} is out of range for a split of {len(source)} rows")
    parts = {"train800": train.select(chosen["train800"]), "val200": val_source.select(chosen["val200"])}
    if split == "train800val200":
        return concatenate_datasets([parts["train800"], parts["val200"]])
    return parts[split]


def export_vtab1k_indices(
    name: str,
    path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = VTAB1K_SEED,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Path:
    """Write the VTAB-1k row indices of `name` (as `load_task` draws them) to JSON, with the
    source split sizes and, for webdataset sources, each row's `__key__`; `load_task(name,
    split, indices=path)` reads the file back. Written atomically."""
    from ..runs import write_json

    spec = resolve_task(name, image_column, label_column)
    train, val, train_raw = _vtab_sources(spec, data_dir, None, None, raw=True)
    sizes = {"train": len(train), **({"validation": len(val)} if val is not None else {})}
    chosen = _vtab_chosen(spec, train, val, seed)
    plan = _vtab_plan(spec)
    record: dict[str, Any] = {
        "task": spec.name,
        "hub_id": spec.hub_id,
        "seed": seed,
        "val_source": plan["val_split"],
        "rows": getattr(spec, "vtab_rows", None) or "seeded draw of 800 + 200 from train",
        "source_rows": sizes,
        "indices": chosen,
    }
    if "__key__" in (train_raw.features or {}) and val is None:
        keys = train_raw["__key__"]
        record["keys"] = {split: [keys[i] for i in rows] for split, rows in chosen.items()}
    return write_json(path, record)


def task_info(name: str) -> TaskSpec:
    """The registry line (alias of `registry.get_task`, for symmetry with `load_task`)."""
    return get_task(name)


def class_names(dataset) -> list[str]:
    """The label names of a `load_task` dataset (ClassLabel names; "0".."K-1" when the source has none)."""
    return list(dataset.features["label"].names)


def num_classes(dataset) -> int:
    """K of a `load_task` dataset."""
    return int(dataset.features["label"].num_classes)
