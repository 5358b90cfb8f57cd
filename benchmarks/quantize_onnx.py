"""Dynamic int8 quantisation of our ONNX export: speed against the fp32 export in ONNX Runtime,
and its accuracy cost on a real test split.

    python benchmarks/quantize_onnx.py --rows vit_s16,vit_b16 --batch-size 1 --repeats 7
    python benchmarks/quantize_onnx.py --checkpoint outputs/demo/vit_finetune/final --task digits --split test

Speed: each row's model (random weights, fp32, 224 px) is exported by `hf_vit_repro.export`
with `quantize="int8"` (ONNX, dynamic batch), which writes both graphs: the float32
`onnx/model.onnx` (checked against PyTorch) and `onnx/model_quantized.onnx`
(`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantised per call,
MatMulInteger); both are served by ONNX Runtime sessions with the same settings as
`bench_models.py`'s onnxruntime rows and timed interleaved (fp32, int8, fp32, ...), median of
the repeats after 2 warm-up calls.

Accuracy: with `--checkpoint`, the checkpoint's classifier is exported the same way and both
graphs classify the task's split with the checkpoint's own pre-processing; the script prints the
two accuracies and how many predictions changed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import ROWS  # noqa: E402  (the same model configurations as the main harness)


def export_both(model, folder: Path) -> dict[str, Path]:
    """`model` exported by `hf_vit_repro.export.export_model` with `quantize="int8"`, which keeps
    the float32 graph (checked against PyTorch within 1e-4) beside the int8 one:
    {"fp32": path, "int8": path}."""
    from hf_vit_repro.export import FORMATS, QUANTIZED_ONNX, export_model

    # no bound on the int8 graph's error here: this script measures its cost instead of refusing it
    export_model(model, folder / "export", format="onnx", quantize="int8", tolerance=1e9, progress=False)
    return {"fp32": folder / "export" / FORMATS["onnx"], "int8": folder / "export" / QUANTIZED_ONNX}


def session(path: Path, threads: int):
    """The ONNX Runtime session `hf_vit_repro.export.load_exported` serves a graph of an export
    folder with (CPU execution provider, default optimisations, `threads` intra-op threads)."""
    from hf_vit_repro.export import load_exported

    folder = path.parent.parent  # the graphs are in EXPORT/onnx/
    return load_exported(folder, intra_op_num_threads=threads, artefact=path.relative_to(folder).as_posix()).session


def time_sessions(sessions: dict, batch: int, image_size: int, repeats: int, steps: int) -> dict[str, float]:
    x = torch.randn(batch, 3, image_size, image_size).numpy()
    for s in sessions.values():
        for _ in range(2):
            s.run(None, {"pixel_values": x})
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():
            start = time.perf_counter()
            for _ in range(steps):
                s.run(None, {"pixel_values": x})
            times[name].append(batch * steps / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in times.items()}


def speed(rows: list[str], batch: int, repeats: int, steps: int, threads: int) -> list[dict]:
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    results = []
    for row in rows:
        torch.manual_seed(0)
        model = ViTReproForImageClassification(ViTReproConfig.from_variant(ROWS[row][0], num_labels=1000)).eval()
        with tempfile.TemporaryDirectory(prefix="quantize_") as tmp:
            paths = export_both(model, Path(tmp))
            sizes = {f"{name}_mb": path.stat().st_size / 2**20 for name, path in paths.items()}
            sessions = {name: session(path, threads) for name, path in paths.items()}
            speeds = time_sessions(sessions, batch, model.config.image_hw[0], repeats, steps)
        result = {"row": row, "batch": batch, **{f"{k}_img_s": round(v, 3) for k, v in speeds.items()},
                  "int8_over_fp32": round(speeds["int8"] / speeds["fp32"], 3), **{k: round(v, 1) for k, v in sizes.items()}}
        print(json.dumps(result))
        results.append(result)
    return results


def accuracy(checkpoint: str, task: str, split: str, threads: int, batch: int = 64) -> dict:
    import numpy as np

    from transformers import AutoImageProcessor

    from hf_vit_repro import runs
    from hf_vit_repro.analysis import default_image_processor
    from hf_vit_repro.data import load_task
    from hf_vit_repro.modeling_vit_repro import ViTReproForImageClassification

    model = runs.load_pretrained(ViTReproForImageClassification, checkpoint).eval()
    saved = Path(checkpoint) / "preprocessor_config.json"
    processor = AutoImageProcessor.from_pretrained(checkpoint) if saved.is_file() else default_image_processor(model.config)
    dataset = load_task(task, split=split)
    image_key, label_key = "image", "label"
    with tempfile.TemporaryDirectory(prefix="quantize_") as tmp:
        sessions = {name: session(path, threads) for name, path in export_both(model, Path(tmp)).items()}
        predictions = {name: [] for name in sessions}
        labels = []
        for start in range(0, len(dataset), batch):
            rows = dataset[start:start + batch]
            pixels = processor([image.convert("RGB") for image in rows[image_key]], return_tensors="np")["pixel_values"]
            labels += list(rows[label_key])
            for name, s in sessions.items():
                predictions[name] += list(s.run(None, {"pixel_values": pixels.astype(np.float32)})[0].argmax(-1))
    labels = np.array(labels)
    result = {name: float((np.array(p) == labels).mean()) for name, p in predictions.items()}
    result["changed_predictions"] = int((np.array(predictions["fp32"]) != np.array(predictions["int8"])).sum())
    result.update(checkpoint=str(checkpoint), task=task, split=split, num_images=int(len(labels)))
    print(json.dumps(result))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="vit_s16,vit_b16", help=f"comma-separated rows from {sorted(ROWS)}")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="calls per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--checkpoint", default=None, help="a classifier checkpoint: measure the accuracy cost instead")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.checkpoint:
        results = accuracy(args.checkpoint, args.task, args.split, args.threads)
    else:
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = [r for r in rows if r not in ROWS]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {sorted(ROWS)}")
        results = speed(rows, args.batch_size, args.repeats, args.steps, args.threads)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
