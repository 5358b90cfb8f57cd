"""The task registry: one line per dataset the paper uses (shared/PAPER.md, "Data and benchmarks").

`TASKS[name]` is a `TaskSpec`: where the data lives on the Hub, which columns hold the image
and the label, which source split plays "train" / "test" (and "validation" where one exists),
how many classes there are, the VTAB-1k group, the VTAB label definition and whether the loader
still has to apply it, and why that repository was chosen.

The VTAB-1k definitions follow google-research/task_adaptation (`task_adaptation/data/*.py`).
Most VTAB tasks are read from the `clip-benchmark/wds_vtab-*` webdataset repos. Those were
exported by LAION's CLIP_benchmark through task_adaptation's own data classes
(`clip_benchmark/datasets/builder.py`, `build_vtab_dataset` + `webdataset_builder.py`), so:

- their "train" split is task_adaptation's "train" split (e.g. CIFAR-100 train[:45000],
  Caltech101 2754 images, SVHN 65931, RESISC45 18900, SmallNORB 24300: the sizes the Hub's viewer
  shows) and their "test" split its "test" split; task_adaptation's "val" split is not published;
- rows keep the export order in their keys (`s0000000`, `s0000001`, ...: `webdataset_builder.py`
  writes "s%07d" % index while iterating task_adaptation's `get_tf_data(split, for_eval=True)`,
  which does not shuffle), but `datasets` reads the shards in text order (0, 1, 10, 11, ..., 2),
  so row i is not key i: `load_task` sorts these sources by `__key__` (`key_order=True`);
- their labels already went through task_adaptation's preprocessing (CLEVR count - 3, the
  distance bins, ...), except dSprites: CLIP_benchmark built it without `num_classes`, so the
  repo holds the raw 32 x-positions / 40 orientations and `load_task` bins them into 16 as VTAB
  does (`dsprites_bin16_*`);
- each split is `SPLIT/0.tar, 1.tar, ...` plus `SPLIT/nshards.txt`, samples keyed `s0000000`
  with the image under `.webp` (lossless) and the label under `.cls`. Surprise: with a single
  shard, `load_dataset(repo)` counts one `.tar` against one `nshards.txt`, infers the *text*
  builder and returns the shard count as a text dataset (the Hub's own parquet conversion of
  wds_vtab-cifar10 shows this). The registry therefore always names the shards explicitly
  (`data_files={"train": "train/*.tar", ...}`).

VTAB-1k rows (task_adaptation `data/*.py`, the `tfds_splits` of each task): train800 is
`train[:800]` for every task; val200 is `validation[:200]` for DTD, Flowers, SUN397, Patch
Camelyon, Retinopathy, DMLab and KITTI, `test[:200]` for SmallNORB, and `train[N:N+200]` for the
others, N being the size of task_adaptation's train split (the first rows of its "val" split).
`load_task` takes train800 as the first 800 rows (sorted by key) everywhere, and val200 from the
official rows where a published split holds them (`TaskSpec.vtab_val_rows`: SUN397's validation
split); elsewhere those rows are not published, and val200 is drawn with a seed from the
published train split's rows after the first 800 (`loading.vtab1k_indices`). `TaskSpec.vtab_val200`
keeps task_adaptation's definition for the record.

Training pre-processing per task (`TaskSpec.crop`, `TaskSpec.flip`): the paper follows BiT's
VTAB pre-processing, but at one resolution, 384 px, for every task (Appendix B.1.1). BiT
(Kolesnikov et al. 2020, Sec. 3.3) resizes to a square, takes a random crop and flips at random
during training, and leaves out the flip or the crop on the tasks whose label either would
change: no flip on dSprites location and orientation and SmallNORB azimuth (a mirror moves or
turns the object), no random crop on CLEVR count and distance, DMLab, KITTI distance and dSprites
location (a crop removes objects or shifts positions). How the crop is done is
`transforms.finetune_transform`'s.

Every function here is light (no `datasets` import); loading lives in `loading.py`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NATURAL, SPECIALIZED, STRUCTURED = "natural", "specialized", "structured"
VTAB_GROUPS = (NATURAL, SPECIALIZED, STRUCTURED)
VTAB_SPLITS = ("train800", "val200", "train800val200")
VTAB1K_TRAIN, VTAB1K_VAL = 800, 200


# ---------------------------------------------------------------------------------------------
# VTAB label transforms (task_adaptation/data/{clevr,kitti,dsprites}.py), pure functions of the
# raw annotation. `LABEL_TRANSFORMS` holds the ones that map a source label column to the VTAB
# label; the others document (and test) what the clip-benchmark repos already applied.
# ---------------------------------------------------------------------------------------------

CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
KITTI_VEHICLE_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_VEHICLE_TYPES = (0, 1, 2)  # Car, Van, Truck in TFDS kitti's object "type"
KITTI_NO_VEHICLE_DISTANCE = 1000.0


def _last_threshold_below(value: float, thresholds: Sequence[float]) -> int:
    """task_adaptation's `reduce_max(where(thrs - value < 0))`: the index of the last threshold
    strictly below `value`."""
    below = [i for i, t in enumerate(thresholds) if t < value]
    if not below:
        raise ValueError(f"{value} is not above the first threshold {thresholds[0]}")
    return below[-1]


def clevr_count(num_objects: int) -> int:
    """CLEVR count: number of objects - 3 (scenes hold 3..10 objects -> classes 0..7)."""
    label = int(num_objects) - 3
    if not 0 <= label < 8:
        raise ValueError(f"CLEVR scenes hold 3 to 10 objects, got {num_objects}")
    return label


def clevr_distance(object_depths: Sequence[float]) -> int:
    """CLEVR closest-object distance: the smallest object depth (pixel_coords z) binned by
    thresholds 0, 8, 8.5, 9, 9.5, 10, 100 -> classes 0..5."""
    return _last_threshold_below(min(float(d) for d in object_depths), CLEVR_DISTANCE_THRESHOLDS)


def kitti_vehicle_distance(object_types: Sequence[int], object_depths: Sequence[float]) -> int:
    """KITTI closest-vehicle distance: the smallest depth (location z, metres) among cars, vans
    and trucks, 1000 when there is none, binned by -100, 8, 20, 999 -> classes 0..3 (3 = no
    vehicle)."""
    depths = [float(z) for t, z in zip(object_types, object_depths) if int(t) in KITTI_VEHICLE_TYPES]
    return _last_threshold_below(min(depths + [KITTI_NO_VEHICLE_DISTANCE]), KITTI_VEHICLE_DISTANCE_THRESHOLDS)


def bin_label(value: int, num_original: int, num_classes: int) -> int:
    """dSprites' grouping of nearby values: floor(value / (num_original / num_classes))."""
    if not 0 <= int(value) < num_original:
        raise ValueError(f"label {value} outside [0, {num_original})")
    return int(math.floor(int(value) / (num_original / num_classes)))


def dsprites_bin16_position(value: int) -> int:
    """dSprites x (or y) position: 32 values -> 16 classes (pairs of neighbouring positions)."""
    return bin_label(value, 32, 16)


def dsprites_bin16_orientation(value: int) -> int:
    """dSprites orientation: 40 values over [0, 2 pi) -> 16 classes (floor(v / 2.5))."""
    return bin_label(value, 40, 16)


# Transforms `load_task` applies to a source's label column, by the name a TaskSpec gives.
LABEL_TRANSFORMS: dict[str, Callable[[int], int]] = {
    "dsprites_bin16_position": dsprites_bin16_position,
    "dsprites_bin16_orientation": dsprites_bin16_orientation,
    "clevr_count": clevr_count,
}


@dataclass(frozen=True)
class TaskSpec:
    """One registry line.

    name: registry key. hub_id: dataset repo on the Hub (None for a local source).
    image_column / label_column: the source's own column names (webdataset repos name columns
    after file extensions: "webp", "jpg", "cls"). splits: our split name -> the source's split
    name ("train" and "test" always; "validation" where the source has one).
    data_files: source split -> file pattern inside the repo (None: let `datasets` infer).
    num_classes: K after any label transform. vtab_group: natural / specialized / structured,
    or None outside VTAB-1k. vtab_val200: task_adaptation's definition of val200 (its slice of
    the TFDS splits, for the record). vtab_val_rows: (our split, first row) where a published
    split holds those 200 rows, so val200 is read there (official rows); None: val200 is drawn
    with a seed (`loading.vtab1k_indices`). label_rule: the VTAB label definition in words.
    label_transform: key of `LABEL_TRANSFORMS` that `load_task` applies to the source label (None
    when the source already stores final labels). crop / flip: whether a random crop / a
    horizontal flip keeps the label when fine-tuning (BiT's rule; module docstring). key_order:
    the source's `__key__` gives the export order (rows are sorted by it). why: why this repo.
    """

    name: str
    hub_id: str | None
    image_column: str
    label_column: str
    splits: dict[str, str]
    num_classes: int
    vtab_group: str | None = None
    data_files: dict[str, str] | None = None
    vtab_val200: str = ""
    vtab_val_rows: tuple[str, int] | None = None
    label_rule: str = ""
    label_transform: str | None = None
    crop: bool = True
    flip: bool = True
    source_format: str = "parquet"
    key_order: bool = False
    why: str = ""
    paper_role: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"{self.name}: num_classes must be >= 2")
        if self.vtab_group not in (None, *VTAB_GROUPS):
            raise ValueError(f"{self.name}: unknown VTAB group {self.vtab_group!r}")
        if self.label_transform is not None and self.label_transform not in LABEL_TRANSFORMS:
            raise ValueError(f"{self.name}: unknown label transform {self.label_transform!r}")
        if "train" not in self.splits and "test" not in self.splits:
            raise ValueError(f"{self.name}: needs a train or a test split")
        if self.vtab_val_rows is not None:
            split, first = self.vtab_val_rows
            if split not in self.splits or first < 0 or (split == "train" and first < VTAB1K_TRAIN):
                raise ValueError(f"{self.name}: vtab_val_rows {self.vtab_val_rows} must name a split and a first row "
                                 f"(past train800's {VTAB1K_TRAIN} rows when it is the train split)")

    @property
    def is_vtab(self) -> bool:
        return self.vtab_group is not None

    @property
    def vtab_rows(self) -> str:
        """Which rows VTAB-1k's splits are, in words (the registry table's column)."""
        if not self.is_vtab:
            return "seeded draw of 800 + 200 from train (no official VTAB-1k rows)"
        official = f"task_adaptation: {self.vtab_val200}" if self.vtab_val200 else "task_adaptation's val200"
        if self.vtab_val_rows is not None:
            split, first = self.vtab_val_rows
            val = f"val200 = {split}[{first}:{first + VTAB1K_VAL}], official ({official})"
        else:
            val = f"val200 = seeded draw from train[{VTAB1K_TRAIN}:] ({official}, not published)"
        return f"train800 = train[:{VTAB1K_TRAIN}], official; {val}"

    @property
    def available_splits(self) -> tuple[str, ...]:
        """Split names `load_task` accepts for this task."""
        names = list(self.splits)
        if "train" in self.splits:
            names += list(VTAB_SPLITS)
        return tuple(names)


_WDS_WHY = "task_adaptation's train/test splits and labels, exported by CLIP_benchmark (LAION)"


def _wds(name, repo, num_classes, group, val200, *, rule="", transform=None, crop=True, flip=True, why="", image="webp"):
    """A clip-benchmark webdataset line (train/test, `.webp` + `.cls`, rows in key order).
    `val200`: task_adaptation's val200 slice; its rows are not published (train is its "train"
    split, test its "test" split), so val200 is a seeded draw."""
    return TaskSpec(
        name=name,
        hub_id=f"clip-benchmark/{repo}",
        image_column=image,
        label_column="cls",
        splits={"train": "train", "test": "test"},
        data_files={"train": "train/*.tar", "test": "test/*.tar"},
        num_classes=num_classes,
        vtab_group=group,
        vtab_val200=val200,
        label_rule=rule,
        label_transform=transform,
        crop=crop,
        flip=flip,
        source_format="webdataset",
        key_order=True,
        why=why or _WDS_WHY,
        paper_role="VTAB-1k",
    )



_TASK_LIST: list[TaskSpec] = [
    # --- VTAB-1k, Natural ------------------------------------------------------------------
    # val200 as task_adaptation defines it: train[N:N+200] with N the size of its train split
    # (caltech.py 90% of 3060, cifar.py 90% of 50000, oxford_iiit_pet.py 80% of 3680, svhn.py 90%
    # of 73257, ...), or validation[:200], or (smallnorb.py) test[:200].
    _wds("vtab/caltech101", "wds_vtab-caltech101", 102, NATURAL, "train[2754:2954]", rule="101 categories + background"),
    _wds("vtab/cifar100", "wds_vtab-cifar100", 100, NATURAL, "train[45000:45200]"),
    _wds("vtab/dtd", "wds_vtab-dtd", 47, NATURAL, "validation[:200]"),
    _wds("vtab/flowers102", "wds_vtab-flowers", 102, NATURAL, "validation[:200]"),
    _wds("vtab/pets", "wds_vtab-pets", 37, NATURAL, "train[2944:3144]"),
    _wds("vtab/svhn", "wds_vtab-svhn", 10, NATURAL, "train[65931:66131]"),
    TaskSpec(
        name="vtab/sun397",
        hub_id="dpdl-benchmark/sun397",
        image_column="image",
        label_column="label",
        splits={"train": "train", "validation": "validation", "test": "test"},
        num_classes=397,
        vtab_group=NATURAL,
        vtab_val200="validation[:200]",
        vtab_val_rows=("validation", 0),
        why="clip-benchmark has no VTAB SUN397 (its wds_sun397 is torchvision's, test only); this "
        "parquet mirror of TFDS sun397/tfds has exactly task_adaptation's train/validation/test "
        "(76128 / 10875 / 21750), so val200 is validation[:200] as in task_adaptation (assuming the "
        "mirror keeps TFDS's row order); column names assumed from the TFDS schema it mirrors (not "
        "seen on the repo page)",
        paper_role="VTAB-1k",
    ),
    # --- VTAB-1k, Specialized --------------------------------------------------------------
    _wds("vtab/patch_camelyon", "wds_vtab-pcam", 2, SPECIALIZED, "validation[:200]"),
    _wds("vtab/eurosat", "wds_vtab-eurosat", 10, SPECIALIZED, "train[16200:16400]", rule="RGB subset"),
    _wds("vtab/resisc45", "wds_vtab-resisc45", 45, SPECIALIZED, "train[18900:19100]"),
    _wds("vtab/diabetic_retinopathy", "wds_vtab-diabetic_retinopathy", 5, SPECIALIZED, "validation[:200]",
         rule="btgraham-300 config, grades 0-4"),
    # --- VTAB-1k, Structured ---------------------------------------------------------------
    _wds("vtab/clevr_count", "wds_vtab-clevr_count_all", 8, STRUCTURED, "train[63000:63200]",
         rule="number of objects - 3 (3..10 objects -> 0..7); applied in the source", crop=False),
    _wds("vtab/clevr_distance", "wds_vtab-clevr_closest_object_distance", 6, STRUCTURED, "train[63000:63200]",
         rule="closest object depth binned at 0, 8, 8.5, 9, 9.5, 10, 100; applied in the source", crop=False),
    _wds("vtab/dmlab", "wds_vtab-dmlab", 6, STRUCTURED, "validation[:200]",
         rule="{close, far, very far} x {positive, negative reward}", crop=False),
    _wds("vtab/kitti_distance", "wds_vtab-kitti_closest_vehicle_distance", 4, STRUCTURED, "validation[:200]",
         rule="closest car/van/truck depth binned at -100, 8, 20, 999 m (3 = no vehicle); applied in the source",
         crop=False),
    _wds("vtab/dsprites_location", "wds_vtab-dsprites_label_x_position", 16, STRUCTURED, "train[589824:590024]",
         rule="x position, 32 values binned into 16 (floor(v / 2)); applied by load_task",
         transform="dsprites_bin16_position", crop=False, flip=False),
    _wds("vtab/dsprites_orientation", "wds_vtab-dsprites_label_orientation", 16, STRUCTURED, "train[589824:590024]",
         rule="orientation, 40 values binned into 16 (floor(v / 2.5)); applied by load_task",
         transform="dsprites_bin16_orientation", flip=False),
    _wds("vtab/smallnorb_azimuth", "wds_vtab-smallnorb_label_azimuth", 18, STRUCTURED, "test[:200]",
         rule="azimuth 0, 20, ..., 340 degrees -> 18 classes", flip=False),
    _wds("vtab/smallnorb_elevation", "wds_vtab-smallnorb_label_elevation", 9, STRUCTURED, "test[:200]",
         rule="elevation 30, 35, ..., 70 degrees -> 9 classes"),
    # --- The paper's transfer sets -----------------------------------------------------------
    TaskSpec(
        name="imagenet1k",
        hub_id="timm/imagenet-1k-wds",
        image_column="jpg",
        label_column="cls",
        splits={"train": "train", "validation": "validation", "test": "validation"},
        data_files={"train": "imagenet1k-train-*.tar", "validation": "imagenet1k-validation-*.tar"},
        num_classes=1000,
        source_format="webdataset",
        why="the standard ILSVRC-2012 train/validation in webdataset shards, vetted with timm's "
        "training scripts; loads without a loading script (datasets 5 has none). Its validation "
        "split is the paper's 'ImageNet' test set",
        paper_role="pretraining (ImageNet) and transfer (ImageNet val)",
    ),
    TaskSpec(
        name="imagenet21k",
        hub_id="timm/imagenet-22k-wds",
        image_column="jpg",
        label_column="cls",
        splits={"train": "train", "validation": "validation", "test": "validation"},
        data_files={"train": "imagenet22k-train-*.tar", "validation": "imagenet22k-validation-*.tar"},
        num_classes=21841,
        source_format="webdataset",
        why="the Fall 2011 release (21,841 classes, ~14M images) the paper calls ImageNet-21k, "
        "with a held-out validation subset; kept by timm's maintainers (Winter 21 has 19,167). "
        "Shard names assumed to follow imagenet-1k-wds's pattern (not seen on the repo page)",
        paper_role="pretraining (ImageNet-21k)",
    ),
    TaskSpec(
        name="cifar10",
        hub_id="uoft-cs/cifar10",
        image_column="img",
        label_column="label",
        splits={"train": "train", "test": "test"},
        num_classes=10,
        why="the canonical Hub copy, kept by the dataset's authors' organisation (parquet)",
        paper_role="transfer",
    ),
    TaskSpec(
        name="cifar100",
        hub_id="uoft-cs/cifar100",
        image_column="img",
        label_column="fine_label",
        splits={"train": "train", "test": "test"},
        num_classes=100,
        why="the canonical Hub copy (parquet); the 100-way task uses fine_label, not coarse_label",
        paper_role="transfer",
    ),
    TaskSpec(
        name="pets",
        hub_id="timm/oxford-iiit-pet",
        image_column="image",
        label_column="label",
        splits={"train": "train", "test": "test"},
        num_classes=37,
        why="kept by timm's maintainers: the official trainval (3680) / test (3669) split, 37 breeds",
        paper_role="transfer",
    ),
    TaskSpec(
        name="flowers102",
        hub_id="dpdl-benchmark/oxford_flowers102",
        image_column="image",
        label_column="label",
        splits={"train": "train", "validation": "validation", "test": "test"},
        num_classes=102,
        why="a parquet mirror of TFDS oxford_flowers102 with the official train / validation / "
        "test (1020 / 1020 / 6149) split the paper and big_vision use; column names assumed from the "
        "TFDS schema it mirrors (not seen on the repo page)",
        paper_role="transfer",
    ),
    # --- Local: the offline demo and tests -------------------------------------------------
    TaskSpec(
        name="digits",
        hub_id=None,
        image_column="image",
        label_column="label",
        splits={"train": "train", "test": "test"},
        num_classes=10,
        source_format="local",
        why="scikit-learn's 8x8 handwritten digits (1797 images), offline; a fixed stratified "
        "1497 / 300 partition (`loading.DIGITS_TEST_SIZE`) for the demo and tests",
        paper_role="offline demo",
    ),
]

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _TASK_LIST}
VTAB_TASKS: tuple[str, ...] = tuple(name for name, spec in TASKS.items() if spec.is_vtab)


class UnknownTaskError(KeyError):
    """A task name that is not in the registry (a KeyError whose message reads as a sentence)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get_task(name: str) -> TaskSpec:
    """The registry line for `name`; an unknown name raises UnknownTaskError suggesting close ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(unknown_task_message(name)) from None


def close_task_names(name: str) -> list[str]:
    """Up to 4 registry names close to `name` (also by the bare name: "cifar" ~ "vtab/cifar100")."""
    names = list(TASKS)
    short = {n.split("/")[-1]: n for n in names}
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    close += [short[s] for s in difflib.get_close_matches(name.split("/")[-1], list(short), n=4, cutoff=0.5)]
    return list(dict.fromkeys(close))[:4]


def unknown_task_message(name: str) -> str:
    names = list(TASKS)
    close = close_task_names(name)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown task {name!r}.{hint} Known tasks: {', '.join(names)}. A Hub dataset id "
        "('org/name') or a local folder also works, with --image-column/--label-column if its "
        "columns are not called image/label."
    )


def registry_markdown() -> str:
    """The registry as a Markdown table (docs/data.md holds a copy; tests/test_data_loading.py compares them)."""
    lines = [
        "| task | Hub dataset | image / label columns | splits | classes | VTAB group | label rule | crop | flip "
        "| VTAB-1k rows | why this repo |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in TASKS.values():
        splits = ", ".join(f"{ours}={theirs}" if ours != theirs else ours for ours, theirs in spec.splits.items())
        rule = spec.label_rule or "-"
        lines.append(
            f"| `{spec.name}` | {f'`{spec.hub_id}`' if spec.hub_id else 'local'} | `{spec.image_column}` / "
            f"`{spec.label_column}` | {splits} | {spec.num_classes} | {spec.vtab_group or '-'} | {rule} | "
            f"{'yes' if spec.crop else 'no'} | {'yes' if spec.flip else 'no'} | {spec.vtab_rows} | {spec.why} |"
        )
    return "\n".join(lines)
