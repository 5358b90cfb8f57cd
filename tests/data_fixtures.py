"""Tiny local copies of the Hub repos the task registry reads, in each repo's own layout.

`HUB_LAYOUTS` states, independently of the registry, what each Hub dataset looks like: file
format, file names, split names, column names and the raw label range. `write_layout` writes a
tiny copy of it (a few 4x4 images per split) that `load_task(name, split, data_dir=...)` must
read exactly as it would read the Hub repo.

Images carry their row number in their pixels (`encode_row` / `decode_row`), so a test can tell
which source rows a split picked after decoding.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


def encode_row(row: int, size: int = 4) -> Image.Image:
    """An RGB image whose pixels spell `row` (R = row % 256, G = row // 256 % 256, B = 7)."""
    pixel = np.array([row % 256, (row // 256) % 256, 7], dtype=np.uint8)
    return Image.fromarray(np.tile(pixel, (size, size, 1)))


def decode_row(image: Image.Image) -> int:
    r, g, _ = np.asarray(image.convert("RGB"))[0, 0]
    return int(r) + 256 * int(g)


def _image_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        image.save(buffer, format="WEBP", lossless=True)
    elif fmt in ("jpg", "jpeg"):
        image.save(buffer, format="JPEG", quality=100)
    else:
        image.save(buffer, format=fmt.upper())
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@dataclass
class Layout:
    """One Hub repo's layout. kind: "clip_wds" (SPLIT/N.tar + SPLIT/nshards.txt, `.webp` +
    `.cls`), "timm_wds" (flat PREFIX-SPLIT-NNNN.tar with `.jpg` + `.cls` + `.json`) or "parquet"
    (data/SPLIT-00000-of-00001.parquet). raw_classes: the label range the repo stores."""

    kind: str
    splits: tuple[str, ...]
    raw_classes: int
    image_column: str = "image"
    label_column: str = "label"
    extra_columns: dict[str, object] = field(default_factory=dict)
    prefix: str = ""


def _clip(raw_classes: int) -> Layout:
    return Layout("clip_wds", ("train", "test"), raw_classes, image_column="webp", label_column="cls")


HUB_LAYOUTS: dict[str, Layout] = {
    "clip-benchmark/wds_vtab-caltech101": _clip(102),
    "clip-benchmark/wds_vtab-cifar100": _clip(100),
    "clip-benchmark/wds_vtab-dtd": _clip(47),
    "clip-benchmark/wds_vtab-flowers": _clip(102),
    "clip-benchmark/wds_vtab-pets": _clip(37),
    "clip-benchmark/wds_vtab-svhn": _clip(10),
    "clip-benchmark/wds_vtab-pcam": _clip(2),
    "clip-benchmark/wds_vtab-eurosat": _clip(10),
    "clip-benchmark/wds_vtab-resisc45": _clip(45),
    "clip-benchmark/wds_vtab-diabetic_retinopathy": _clip(5),
    "clip-benchmark/wds_vtab-clevr_count_all": _clip(8),
    "clip-benchmark/wds_vtab-clevr_closest_object_distance": _clip(6),
    "clip-benchmark/wds_vtab-dmlab": _clip(6),
    "clip-benchmark/wds_vtab-kitti_closest_vehicle_distance": _clip(4),
    # CLIP_benchmark built dSprites without VTAB's num_classes=16: raw positions / orientations.
    "clip-benchmark/wds_vtab-dsprites_label_x_position": _clip(32),
    "clip-benchmark/wds_vtab-dsprites_label_orientation": _clip(40),
    "clip-benchmark/wds_vtab-smallnorb_label_azimuth": _clip(18),
    "clip-benchmark/wds_vtab-smallnorb_label_elevation": _clip(9),
    "dpdl-benchmark/sun397": Layout("parquet", ("train", "validation", "test"), 397),
    "timm/imagenet-1k-wds": Layout("timm_wds", ("train", "validation"), 1000, "jpg", "cls", prefix="imagenet1k"),
    "timm/imagenet-22k-wds": Layout("timm_wds", ("train", "validation"), 21841, "jpg", "cls", prefix="imagenet22k"),
    "uoft-cs/cifar10": Layout("parquet", ("train", "test"), 10, image_column="img"),
    "uoft-cs/cifar100": Layout("parquet", ("train", "test"), 100, image_column="img", label_column="fine_label",
                               extra_columns={"coarse_label": 20}),
    "timm/oxford-iiit-pet": Layout("parquet", ("train", "test"), 37, extra_columns={"image_id": "str", "label_cat_dog": 2}),
    "dpdl-benchmark/oxford_flowers102": Layout("parquet", ("train", "validation", "test"), 102),
}


def fixture_labels(num_rows: int, raw_classes: int) -> list[int]:
    """Labels covering both ends of the raw range: 0, K-1, 1, K-2, ..."""
    labels = []
    for i in range(num_rows):
        labels.append(i // 2 if i % 2 == 0 else raw_classes - 1 - i // 2)
    return [label % raw_classes for label in labels]


def write_layout(layout: Layout, root: Path, rows: dict[str, int], *, shards: int = 1, labels=None) -> Path:
    """Write a copy of `layout` under `root` with `rows[split]` rows per split; rows are
    numbered across splits (train first) so every image is unique. `labels(split, n)` overrides
    the labels. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for split in layout.splits:
        n = rows.get(split, 0)
        split_labels = labels(split, n) if labels else fixture_labels(n, layout.raw_classes)
        numbers = list(range(start, start + n))
        start += n
        if layout.kind == "clip_wds":
            _write_clip_split(root, split, numbers, split_labels, shards)
        elif layout.kind == "timm_wds":
            _write_timm_split(root, layout.prefix, split, numbers, split_labels, shards)
        else:
            _write_parquet_split(layout, root, split, numbers, split_labels)
    if layout.kind == "clip_wds":
        (root / "classnames.txt").write_text("".join(f"class {i}\n" for i in range(layout.raw_classes)))
        (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return root


def _chunks(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items))) if items else 1
    size = -(-len(items) // parts) if items else 0
    return [items[i * size : (i + 1) * size] for i in range(parts)]


def _write_clip_split(root: Path, split: str, numbers, labels, shards: int) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    pairs = list(zip(numbers, labels))
    index = 0
    chunks = _chunks(pairs, shards)
    for shard, chunk in enumerate(chunks):
        with tarfile.open(folder / f"{shard}.tar", "w") as tar:
            for number, label in chunk:
                key = f"s{index:07d}"
                _add(tar, f"{key}.webp", _image_bytes(encode_row(number), "webp"))
                _add(tar, f"{key}.cls", str(label).encode())
                index += 1
    (folder / "nshards.txt").write_text(f"{len(chunks)}\n")


def _write_timm_split(root: Path, prefix: str, split: str, numbers, labels, shards: int) -> None:
    pairs = list(zip(numbers, labels))
    for shard, chunk in enumerate(_chunks(pairs, shards)):
        with tarfile.open(root / f"{prefix}-{split}-{shard:04d}.tar", "w") as tar:
            for number, label in chunk:
                key = f"{split}_{number:08d}"
                _add(tar, f"{key}.jpg", _image_bytes(encode_row(number), "jpg"))
                _add(tar, f"{key}.cls", str(label).encode())
                _add(tar, f"{key}.json", json.dumps({"label": label, "filename": f"{number}.JPEG"}).encode())


def _write_parquet_split(layout: Layout, root: Path, split: str, numbers, labels) -> None:
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Value

    columns = {
        layout.image_column: [{"bytes": _image_bytes(encode_row(n), "png"), "path": f"{n}.png"} for n in numbers],
        layout.label_column: labels,
    }
    features = {layout.image_column: ImageFeature(), layout.label_column: ClassLabel(num_classes=layout.raw_classes)}
    for name, kind in layout.extra_columns.items():
        if kind == "str":
            columns[name] = [f"image_{n}" for n in numbers]
            features[name] = Value("string")
        else:
            columns[name] = [n % int(kind) for n in numbers]
            features[name] = ClassLabel(num_classes=int(kind))
    (root / "data").mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=Features(features)).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
