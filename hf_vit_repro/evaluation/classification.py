"""Classification metrics of a checkpoint on a task split: top-1 / top-5, per-class and ReaL
accuracy through the package's `evaluate` modules, batched and data-parallel.

    vit-repro evaluate RUN_OR_CHECKPOINT cifar10 --split test [--resolution 384]
    accelerate launch -m hf_vit_repro evaluate RUN_OR_CHECKPOINT imagenet1k --real-labels real.json

Under `accelerate launch` (or torchrun) each process scores a shard of the split; the scores are
gathered with `Accelerator.gather_for_metrics`, which drops the samples Accelerate repeats to fill
the last, uneven batch, so every image counts exactly once (checked: each image travels with its
row index, and a row seen twice or never is an error, not a silently wrong number).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..models import family_of
from .common import check_resolution, dataset_label, default_output_dir, format_table, image_size_of, load_checkpoint

_REAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


def evaluate_model(
    model,
    dataset,
    *,
    batch_size: int = 64,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop: bool = False,
    top_k: Sequence[int] | None = None,
    real_labels: Sequence[Sequence[int]] | None = None,
    num_workers: int = 0,
    accelerator=None,
    progress: bool = True,
    strict: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """Score `model` (a classifier, at its own `config.image_size`) on `dataset` ("image" and
    "label" columns, e.g. from `load_task`).

    Returns, on every process: `metrics` ({"accuracy", "top5_accuracy" (when K > 5),
    "mean_per_class_accuracy", and "real_accuracy" when `real_labels` is given}, values in [0, 1]),
    `num_images`, `per_class_accuracy` ({class name: accuracy or None}), and with ReaL
    `real_num_images`. `real_labels[i]` is the ReaL label set of row i (may be empty).
    A task with more classes than the model's head (its ClassLabel feature, or the labels seen)
    is refused.
    `top_k`: the k of the top-k metric (default 1 and 5). Images are resized to the model's
    resolution (`crop=True`: shorter side, then central crop) and normalised with mean/std.
    Unreadable images raise `CorruptImageError` naming the row and its file (`strict`, the default:
    an evaluation scores every image); with `strict=False` they are skipped, counted in
    `num_skipped`, and the metrics are over the images that were read.
    `precision`: "auto" (bf16 on a CPU with AMX or AVX512-BF16, else fp32; `hf_vit_repro.precision`),
    "bf16" or "fp32". bf16 is checked against fp32 on the first batch and falls back to fp32 when they
    disagree; `result["precision"]` says what ran (`PrecisionRun.record`).
    """
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    from ..data import eval_transform, label_array, make_dataloader
    from ..metrics import load_metric
    from ..precision import PrecisionRun

    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty; nothing to evaluate")
    labels = label_array(dataset)
    num_classes = int(model.config.num_labels)
    task_classes = getattr(dataset.features["label"], "num_classes", None)
    if task_classes is not None and task_classes > num_classes:
        # The task's label feature says how many classes it has, even where these rows use fewer.
        raise ValueError(
            f"the task has {task_classes} classes but the model's head has {num_classes} classes; evaluate a checkpoint "
            "fine-tuned on this task (or fine-tune it first: vit-repro train with mode: finetune)"
        )
    if labels.max() >= num_classes:
        raise ValueError(
            f"the data has class ids up to {int(labels.max())} but the model's head has {num_classes} classes; "
            "evaluate a checkpoint fine-tuned on this task (or fine-tune it first)"
        )
    if real_labels is not None and len(real_labels) != n:
        raise ValueError(f"{len(real_labels)} ReaL label sets for {n} images")
    names = list(getattr(dataset.features["label"], "names", None) or [str(i) for i in range(num_classes)])

    accelerator = accelerator or make_accelerator()
    main = accelerator.is_main_process
    # The "label" the loader carries is the row index; true labels are looked up from it after
    # the gather, which makes duplicates and gaps detectable.
    indexed = dataset.select_columns(["image"]).add_column("label", np.arange(n, dtype=np.int64))
    transform = eval_transform(image_size_of(model), mean, std, crop=crop)
    # An unreadable image (strict=False) keeps its place as a placeholder with row -1, dropped after the gather.
    loader = make_dataloader(indexed, transform, batch_size, shuffle=False, num_workers=num_workers, strict=strict,
                             placeholder_label=None if strict else -1)
    loader = accelerator.prepare_data_loader(loader)
    model = model.to(accelerator.device).eval()
    # Data-parallel processes take one decision on bf16: all of them must pass the check.
    agree = None
    if accelerator.num_processes > 1:
        def agree(ok: bool) -> bool:
            passed = accelerator.reduce(torch.tensor(int(ok), device=accelerator.device), reduction="sum")
            return int(passed) == accelerator.num_processes
    run = PrecisionRun(precision, accelerator.device, agree=agree, model=model)

    if main:
        import evaluate

        scores = evaluate.combine([load_metric("top_k_accuracy"), load_metric("per_class_accuracy")])
        real = load_metric("real_accuracy") if real_labels is not None else None
        seen = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not (main and progress), dynamic_ncols=True):
            logits = run(lambda: model(pixel_values=batch["pixel_values"]).logits).float()
            logits, rows = accelerator.gather_for_metrics((logits, batch["labels"]))
            if not main:
                continue
            rows = rows.cpu().numpy()
            if not strict:
                logits, rows = logits[torch.from_numpy(rows >= 0)], rows[rows >= 0]
            if seen[rows].any() or len(np.unique(rows)) != len(rows):
                raise RuntimeError(f"image row {int(rows[seen[rows]][0])} was scored twice; the distributed gather is broken")
            seen[rows] = True
            logits = logits.cpu().numpy()
            scores.add_batch(predictions=logits, references=labels[rows])
            if real is not None:
                real.add_batch(predictions=logits.argmax(1), references=[list(real_labels[r]) for r in rows])

    skipped = int(accelerator.reduce(torch.tensor(loader.collate_fn.pop_skipped(), device=accelerator.device),
                                     reduction="sum"))
    result: dict[str, Any] | None = None
    if main:
        # Unreadable images are the only rows a non-strict evaluation may miss (a row that the
        # even-batches padding repeats is counted once per copy, hence <=).
        if not seen.all() and (strict or int((~seen).sum()) > skipped):
            raise RuntimeError(f"{int((~seen).sum())} of {n} images were never scored")
        if not seen.any():
            raise ValueError(f"none of the {n} images could be read; check the dataset's files")
        # Modules of a combination share compute() kwargs; `k` is the top-k module's alone.
        top, per_class_module = scores.evaluation_modules
        values = {**top.compute(**({} if top_k is None else {"k": list(top_k)})), **per_class_module.compute()}
        per_class = values.pop("per_class_accuracy")
        values.pop("per_class_count")
        result = {"metrics": {k: float(v) for k, v in values.items()}, "num_images": int(seen.sum()),
                  "num_skipped": int((~seen).sum())}
        result["per_class_accuracy"] = {names[i]: per_class[i] for i in range(len(per_class))}
        result["precision"] = run.record()
        if real is not None:
            real_values = real.compute()
            result["metrics"]["real_accuracy"] = real_values["real_accuracy"]
            result["real_num_images"] = real_values["real_num_images"]
    holder = [result]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    return holder[0]


def make_accelerator(cpu: bool = False):
    """An Accelerator for evaluation. Without a GPU it is asked for the CPU explicitly: only then
    does Accelerate join the processes of torchrun / `accelerate launch` (gloo) instead of letting
    each one evaluate everything alone."""
    from accelerate import Accelerator

    return Accelerator(cpu=cpu or not torch.cuda.is_available())


def real_label_sets(dataset, real_json: str | os.PathLike) -> tuple[list[list[int]], str]:
    """The ReaL label set of every row of an ImageNet validation split, and how rows were matched.

    `real_json` is google-research/reassessed-imagenet's real.json: 50,000 lists, the i-th for
    ILSVRC2012_val_{i+1:08d}. Rows are matched by that number in the image's file name (the
    webdataset key, e.g. "ILSVRC2012_val_00000001.jpg") -> "file_name"; a split without file
    names is matched by position only when it has exactly 50,000 rows -> "row_order".
    """
    import json

    from datasets import Image

    with open(real_json, encoding="utf-8") as f:
        real = json.load(f)
    if not isinstance(real, list) or not all(isinstance(v, list) for v in real[:10]):
        raise ValueError(f"{real_json} is not a ReaL label file (a JSON list of label lists, one per validation image)")
    paths = dataset.cast_column("image", Image(decode=False))["image"]
    numbers = [_REAL_NAME.search(str((p or {}).get("path") or "")) for p in paths]
    if all(numbers):
        indices = [int(m.group(1)) - 1 for m in numbers]
        if max(indices) >= len(real):
            raise ValueError(f"image ILSVRC2012_val_{max(indices) + 1:08d} has no entry in {real_json} ({len(real)} entries)")
        return [[int(v) for v in real[i]] for i in indices], "file_name"
    if len(dataset) == len(real):
        return [[int(v) for v in labels] for labels in real], "row_order"
    raise ValueError(
        f"cannot match the {len(dataset)} images to the {len(real)} ReaL label sets: the images carry no "
        "ILSVRC2012_val_XXXXXXXX file names and the counts differ; evaluate the full ImageNet validation split"
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    task: str,
    split: str = "test",
    *,
    resolution: int | None = None,
    data_dir: str | os.PathLike | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    crop: bool = False,
    top_k: Sequence[int] | None = None,
    real_labels: str | os.PathLike | None = None,
    max_images: int | None = None,
    output: str | os.PathLike | None = None,
    num_workers: int = 0,
    cpu: bool = False,
    progress: bool = True,
    strict: bool = True,
    precision: str = "auto",
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint (folder, run folder or Hub id) on `split` of `task` and write the
    metrics JSON (`runs.metrics_record`: checkpoint, task, dataset, split, resolution, number of
    images, metrics, software versions; plus per-class accuracy, the evaluation settings and the
    checkpoint's image processor: class and backend as `AutoImageProcessor` loads it, whose mean
    and std the evaluation normalised with).

    `resolution`: evaluate at this size, the position embeddings resampled once (paper Sec. 3.2; a
    BiT ResNet just runs at it); default the checkpoint's (needed for a BiT checkpoint that
    records no `image_size`). `output`: a .json file, or a folder that gets
    `metrics/<task>_<split>.json`; default the run folder's metrics/ (a run folder), else
    `outputs/evaluate/<checkpoint>/metrics/`. `max_images`: only the first N rows (smoke tests).
    `strict=False` skips unreadable images and records how many (`num_skipped`).
    `precision`: auto / bf16 / fp32 (`evaluate_model`); the record's `precision` is the one used.
    Returns (record, path); only the main process writes.
    """
    from ..data import load_task

    accelerator = make_accelerator(cpu)
    loaded = load_checkpoint(checkpoint, device=accelerator.device)
    model = loaded.model
    if resolution is not None:
        resolution = check_resolution(model, int(resolution))
        family_of(model).set_image_size(model, resolution)  # a ViT resamples its position embeddings; a ResNet records it
    dataset = load_task(task, split, data_dir, image_column=image_column, label_column=label_column)
    real, real_match = (None, None)
    if real_labels is not None:
        real, real_match = real_label_sets(dataset, real_labels)
    if max_images is not None and max_images < len(dataset):
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        dataset = dataset.select(range(max_images))
        real = real[:max_images] if real is not None else None
    result = evaluate_model(
        model, dataset, batch_size=batch_size, mean=loaded.mean, std=loaded.std, crop=crop, top_k=top_k,
        real_labels=real, num_workers=num_workers, accelerator=accelerator, progress=progress, strict=strict,
        precision=precision,
    )
    extra: dict[str, Any] = {
        "precision": result["precision"]["precision"],
        "num_skipped": result["num_skipped"],
        "image_processor": loaded.image_processor,
        "per_class_accuracy": result["per_class_accuracy"],
        "evaluation": {
            "preprocessing": "resize shorter side + central crop" if crop else "resize to the resolution",
            "mean": list(loaded.mean), "std": list(loaded.std), "batch_size": batch_size,
            "num_processes": accelerator.num_processes, "max_images": max_images,
            "precision": result["precision"],
        },
    }
    if real is not None:
        extra["real_labels"] = {"file": str(real_labels), "matched_by": real_match, "num_images": result["real_num_images"]}
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    record = runs.metrics_record(
        checkpoint=str(checkpoint), task=task, dataset=dataset_label(task), split=split,
        resolution=image_size_of(model), num_images=result["num_images"], metrics=result["metrics"], **extra,
    )
    if output is not None and str(output).endswith(".json"):
        path = Path(output)
    else:
        folder = Path(output) if output is not None else default_output_dir(checkpoint, loaded.run_dir, "evaluate")
        path = runs.metrics_path(folder, task, split)
    if accelerator.is_main_process:
        runs.write_json(path, record)
    accelerator.wait_for_everyone()
    return record, path


def metrics_table(record: dict[str, Any]) -> str:
    rows = [[name, f"{100 * value:.2f}"] for name, value in record["metrics"].items()]
    return format_table(["metric", "%"], rows)


def _cmd_evaluate(args) -> int:
    from ..cli_options import data_dir_for

    record, path = evaluate_checkpoint(
        args.checkpoint, args.task, args.split, resolution=args.resolution,
        data_dir=data_dir_for(args.data_dir, args.task),
        image_column=args.image_column, label_column=args.label_column, batch_size=args.batch_size, crop=args.crop,
        top_k=args.top_k, real_labels=args.real_labels, max_images=args.max_images, output=args.output_dir,
        num_workers=args.num_workers, cpu=_evaluate_on_cpu(args.device), progress=not args.no_progress,
        strict=not args.skip_unreadable,
        precision=args.precision,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        skipped = f" ({record['num_skipped']} unreadable images skipped)" if record["num_skipped"] else ""
        print(f"{record['task']} / {record['split']}: {record['num_images']} images at {record['resolution']} px "
              f"in {record['precision']}{skipped}")
        print(metrics_table(record))
        print(f"Wrote {path}")
    return 0


def _evaluate_on_cpu(device: str | None) -> bool:
    """`--device` of `vit-repro evaluate`: cpu, or cuda (each process on its own GPU, as Accelerate
    places it); None: cuda if available, else cpu."""
    if device is None:
        return False
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device takes a torch device such as cpu or cuda, got {device!r}") from None
    if kind.type == "cpu":
        return True
    if kind.type == "cuda" and kind.index is None:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no GPU is available here; use --device cpu")
        return False
    raise ValueError(f"vit-repro evaluate runs on cpu or cuda (each process on its own GPU), got --device {device!r}")


def add_evaluate_cli(subparsers) -> None:
    from ..cli_options import add_data_dir, add_device, add_no_progress, add_output_dir, add_skip_unreadable
    from ..precision import add_precision_argument

    p = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5, per-class and ReaL accuracy of a checkpoint on a task split",
        description="Evaluate a classifier checkpoint (folder, run folder or Hub id) on a task split and write a "
        "metrics JSON (hf_vit_repro.runs.metrics_record). Data-parallel under `accelerate launch -m hf_vit_repro "
        "evaluate ...` or torchrun; every image is counted once.",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id")
    p.add_argument("task", help="registry task (see `vit-repro data tasks`), Hub dataset id or local dataset folder")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--resolution", type=int, default=None, help="evaluate at this resolution (default: the checkpoint's)")
    add_data_dir(p)
    p.add_argument("--image-column", default=None, help="the dataset's image column, if not the registry's")
    p.add_argument("--label-column", default=None, help="the dataset's label column, if not the registry's")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch and process (default 64)")
    p.add_argument("--crop", action="store_true", help="resize the shorter side and take the central crop")
    p.add_argument("--top-k", type=int, nargs="+", default=None, help="k of top-k accuracy (default: 1 5)")
    p.add_argument("--real-labels", default=None, help="ImageNet ReaL real.json, for ReaL accuracy on ImageNet val")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (quick checks)")
    add_output_dir(p, "RUN/metrics/; a path ending in .json names the file", old=["--output"])
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    add_device(p, old_cpu=True)
    add_precision_argument(p)
    add_skip_unreadable(p)
    add_no_progress(p)
    p.set_defaults(func=_cmd_evaluate)
