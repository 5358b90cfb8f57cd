"""Throughput of the training input pipeline against the equivalent torchvision pipeline.

Both pipelines do the same work per image: decode a JPEG from bytes, Inception crop (area
5-100 %, aspect 3/4-4/3) resized to the resolution with a bilinear filter, random horizontal
flip, scale to float and normalise with mean = std = 0.5, then collate a batch. Ours is
`make_dataloader(dataset, pretrain_transform(S), ...)` (decode + transform in the collator);
torchvision's is `RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize` in a
`Dataset.__getitem__` with `default_collate`. Both read the same `datasets.Dataset` of JPEG
bytes through a `torch.utils.data.DataLoader` with the same batch size and worker count.

The images are scikit-learn's two sample photos (640 x 427), JPEG-encoded at quality 90, also
re-encoded at ImageNet's typical 500 x 375, alternating. Measurements are interleaved (ours,
torchvision, ours, ...) so machine drift hits both alike; each figure is the median of the
repeats, in images per second, and "per worker" divides by max(1, num_workers) (0 workers =
everything in the main process, the cost of one worker).

    python benchmarks/bench_data.py                       # 224, workers 0 and 1, 3 repeats
    python benchmarks/bench_data.py --workers 0,1,2,4 --images 512 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(count: int):
    """A `datasets.Dataset` of `count` JPEG images (bytes) with labels 0..9."""
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    variants = photos + [photo.resize((500, 375), Image.Resampling.BICUBIC) for photo in photos]
    encoded = []
    for photo in variants:
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    rows = [{"bytes": encoded[i % len(encoded)], "path": f"photo_{i}.jpg"} for i in range(count)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=10)})
    return Dataset.from_dict({"image": rows, "label": [i % 10 for i in range(count)]}, features=features)


class _TorchvisionRows(torch.utils.data.Dataset):
    """The usual torchvision recipe: decode in __getitem__, transform, default_collate."""

    def __init__(self, dataset, transform):
        from datasets import Image as ImageFeature

        self.dataset = dataset.cast_column("image", ImageFeature(decode=False))
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        from PIL import Image

        row = self.dataset[index]
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        return self.transform(image), row["label"]


def torchvision_loader(dataset, size: int, batch_size: int, workers: int, seed: int):
    from torchvision import transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(size, scale=(0.05, 1.0), ratio=(3 / 4, 4 / 3), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(_TorchvisionRows(dataset, transform), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, generator=generator)


def ours_loader(dataset, size: int, batch_size: int, workers: int, seed: int):
    from hf_vit_repro.data import make_dataloader, pretrain_transform

    return make_dataloader(dataset, pretrain_transform(size), batch_size, shuffle=True, num_workers=workers, seed=seed)


def images_per_second(loader, size: int) -> float:
    """One full epoch, worker start-up included (both pipelines pay it alike)."""
    start = time.perf_counter()
    count = 0
    for batch in loader:
        pixels = batch["pixel_values"] if isinstance(batch, dict) else batch[0]
        assert pixels.dtype == torch.float32 and pixels.shape[1:] == (3, size, size)
        count += pixels.shape[0]
    return count / (time.perf_counter() - start)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="output resolution (default 224)")
    parser.add_argument("--images", type=int, default=256, help="images per epoch (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,1", help="comma-separated DataLoader worker counts (default 0,1)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per pipeline and worker count (median taken)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the main process (default 1)")
    parser.add_argument("--out", default=None,
                        help="results JSON (default: a new benchmarks/results/data_<machine>-<date>-<time>.json)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from hf_vit_repro.runs import software_versions, write_json

    torch.set_num_threads(args.threads)
    dataset = make_images(args.images)
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    progress = tqdm(total=len(workers) * args.repeats * 2, desc="epochs")
    for count in workers:
        measured = {"ours": [], "torchvision": []}
        for repeat in range(args.repeats):
            for name, make in (("ours", ours_loader), ("torchvision", torchvision_loader)):
                loader = make(dataset, args.size, args.batch_size, count, seed=repeat)
                measured[name].append(images_per_second(loader, args.size))
                progress.update()
        ours, theirs = statistics.median(measured["ours"]), statistics.median(measured["torchvision"])
        per = max(1, count)
        rows.append({"workers": count, "ours_img_s": ours, "torchvision_img_s": theirs,
                     "ours_per_worker": ours / per, "torchvision_per_worker": theirs / per,
                     "ratio": ours / theirs, "runs": measured})
    progress.close()

    print(f"\nInput pipeline at {args.size}x{args.size}: JPEG decode + Inception crop + flip + normalise + collate, "
          f"{args.images} images/epoch, batch {args.batch_size}, median of {args.repeats}")
    print(f"{'workers':>7} {'ours img/s':>11} {'tv img/s':>9} {'ours/worker':>12} {'tv/worker':>10} {'ours/tv':>8}")
    for row in rows:
        print(f"{row['workers']:>7} {row['ours_img_s']:>11.1f} {row['torchvision_img_s']:>9.1f} "
              f"{row['ours_per_worker']:>12.1f} {row['torchvision_per_worker']:>10.1f} {row['ratio']:>8.2f}")
    machine = f"{platform.machine()}_{os.cpu_count()}cpu"
    from importlib.metadata import version

    versions = {**software_versions(), "torchvision": version("torchvision"), "pillow": version("pillow")}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_models import default_results_path

    out = Path(args.out) if args.out else default_results_path(f"data_{machine}")
    write_json(out, {
        "benchmark": "input pipeline", "size": args.size, "images": args.images, "batch_size": args.batch_size,
        "repeats": args.repeats, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "processor": _cpu_model(), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "versions": versions, "rows": rows,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
