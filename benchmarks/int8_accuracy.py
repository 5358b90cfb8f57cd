"""Static (calibrated) against dynamic int8: accuracy on the demo's test split and speed, one run.

    python benchmarks/int8_accuracy.py --checkpoint outputs/demo/vit_finetune --out results/int8-....json
    python benchmarks/int8_accuracy.py --checkpoint '' --methods minmax --speed-rows vit_s16,vit_b16

Accuracy: the checkpoint's classifier (the demo's fine-tuned ViT: `make demo`, or its two recipes
run by hand) is exported by `hf_vit_repro.export.export_model` once with `quantize="int8-dynamic"`
(which keeps the float32 graph beside the int8 one) and once per calibration method with
`quantize="int8-static"`, calibrated on `--calibration-images` images of `--task`'s train split
(`--calibration-split`). Every graph and the PyTorch model classify the task's test split,
preprocessed as `vit-repro evaluate` does (`data.eval_transform` with the checkpoint's mean and
std); rows give the accuracy, its change against the float32 graph in points, how many
predictions differ from it, and img/s over the split (ONNX Runtime sessions as `load_exported`
makes them, `--threads` intra-op threads, interleaved repeat by repeat, median). No graph is
refused for its error (tolerance 1e9): this script measures what the exporter would check.

Speed (`--speed-rows`, e.g. vit_s16): the same three graphs of a model of `bench_models.ROWS`
(random weights, 224 px; the static one calibrated on the same task's images resized to 224),
timed on random pixels at `--batch-size` with `quantize_onnx.time_sessions`. Random weights say
nothing about accuracy; these rows are for the speed of a real-sized ViT.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import ROWS, cpu_description, cpu_machine  # noqa: E402
from quantize_onnx import session, time_sessions  # noqa: E402


def export_graphs(model, processor, folder: Path, task: str, split: str, images: int, methods: list[str]) -> dict[str, Path]:
    """{"fp32": ..., "int8-dynamic": ..., "int8-static-<method>": ...}: the graphs' paths."""
    from hf_vit_repro.export import FORMATS, QUANTIZED_ONNX, export_model
    from hf_vit_repro.quantization import Calibration

    common = dict(format="onnx", tolerance=1e9, progress=False, image_processor=processor)
    export_model(model, folder / "dynamic", quantize="int8-dynamic", **common)
    graphs = {"fp32": folder / "dynamic" / FORMATS["onnx"], "int8-dynamic": folder / "dynamic" / QUANTIZED_ONNX}
    for method in methods:
        calibration = Calibration(task, images=images, method=method, split=split)
        export_model(model, folder / f"static-{method}", quantize="int8-static", calibration=calibration, **common)
        graphs[f"int8-static-{method}"] = folder / f"static-{method}" / QUANTIZED_ONNX
    return graphs


def split_pixels(model, processor, task: str, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """The split as `vit-repro evaluate` feeds it: (N, C, H, W) float32 and the labels."""
    from hf_vit_repro.data import eval_transform, image_stats, load_task

    mean, std = image_stats(processor)
    transform = eval_transform(model.config.image_hw, mean, std)
    dataset = load_task(task, split)
    return torch.stack([transform(image) for image in dataset["image"]]), np.asarray(dataset["label"])


def accuracy(checkpoint: str, task: str, split: str, calibration_split: str, images: int, methods: list[str], threads: int,
             batch: int, repeats: int) -> list[dict]:
    from hf_vit_repro.export import load_for_export

    model, processor, _ = load_for_export(checkpoint, progress=False)
    pixels, labels = split_pixels(model, processor, task, split)
    with torch.no_grad():
        reference = torch.cat([model(pixel_values=pixels[i:i + batch]).logits for i in range(0, len(pixels), batch)])
    torch_predictions = reference.argmax(-1).numpy()
    with tempfile.TemporaryDirectory(prefix="int8_accuracy_") as tmp:
        graphs = export_graphs(model, processor, Path(tmp), task, calibration_split, images, methods)
        sessions = {name: session(path, threads) for name, path in graphs.items()}
        feeds = [pixels[i:i + batch].numpy() for i in range(0, len(pixels), batch)]
        predictions, logits = {}, {}
        for name, s in sessions.items():
            logits[name] = np.concatenate([s.run(["logits"], {"pixel_values": x})[0] for x in feeds])
            predictions[name] = logits[name].argmax(-1)
        speeds = {name: [] for name in sessions}
        for _ in range(repeats):  # interleaved: machine drift hits every graph alike
            for name, s in sessions.items():
                start = time.perf_counter()
                for x in feeds:
                    s.run(["logits"], {"pixel_values": x})
                speeds[name].append(len(pixels) / (time.perf_counter() - start))
        sizes = {name: path.stat().st_size for name, path in graphs.items()}
    fp32 = float((predictions["fp32"] == labels).mean())
    rows = [{"graph": "pytorch", "accuracy": float((torch_predictions == labels).mean())}]
    scale = float(np.abs(reference.numpy()).max())
    for name in sessions:
        acc = float((predictions[name] == labels).mean())
        rows.append({
            "graph": name, "accuracy": acc, "points_vs_fp32": round(100 * (acc - fp32), 3),
            "changed_vs_fp32": int((predictions[name] != predictions["fp32"]).sum()),
            "top1_agreement_with_pytorch": float((predictions[name] == torch_predictions).mean()),
            "max_abs_logit_diff_over_scale": float(np.abs(logits[name] - reference.numpy()).max()) / scale,
            "img_s": round(statistics.median(speeds[name]), 1), "mb": round(sizes[name] / 2**20, 3),
        })
    for row in rows[1:]:
        row["speed_vs_fp32"] = round(row["img_s"] / rows[1]["img_s"], 3)
    for row in rows:
        print(json.dumps(row))
    return rows


def speed(rows: list[str], task: str, calibration_split: str, images: int, methods: list[str], threads: int, batch: int,
          repeats: int, steps: int) -> list[dict]:
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification
    from hf_vit_repro.analysis import default_image_processor

    results = []
    for row in rows:
        torch.manual_seed(0)
        model = ViTReproForImageClassification(ViTReproConfig.from_variant(ROWS[row][0], num_labels=1000)).eval()
        with tempfile.TemporaryDirectory(prefix="int8_speed_") as tmp:
            graphs = export_graphs(model, default_image_processor(model.config), Path(tmp), task, calibration_split, images,
                                   methods)
            sessions = {name: session(path, threads) for name, path in graphs.items()}
            speeds = time_sessions(sessions, batch, model.config.image_hw[0], repeats, steps)
        result = {"row": row, "batch": batch, **{f"{k}_img_s": round(v, 2) for k, v in speeds.items()},
                  **{f"{k}_vs_fp32": round(v / speeds["fp32"], 3) for k, v in speeds.items() if k != "fp32"}}
        print(json.dumps(result))
        results.append(result)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/demo/vit_finetune",
                        help="a classifier (run folder or save_pretrained); '' for the speed rows alone")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--split", default="test", help="the split accuracy is measured on")
    parser.add_argument("--calibration-split", default="train")
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--methods", default="minmax,percentile,entropy", help="calibration methods of the static graphs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="calls per speed measurement (--speed-rows)")
    parser.add_argument("--speed-rows", default="", help=f"comma-separated rows of {sorted(ROWS)} to time as well")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = [r.strip() for r in args.speed_rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose from {sorted(ROWS)}")
    started = time.time()
    results = {
        "command": shlex.join(["python", "benchmarks/int8_accuracy.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": cpu_machine(), "cpu": cpu_description(),
        "threads": args.threads, "load_average_before": list(os.getloadavg()),
        "accuracy": accuracy(args.checkpoint, args.task, args.split, args.calibration_split, args.calibration_images, methods,
                             args.threads, args.batch_size, args.repeats) if args.checkpoint else [],
        "speed": speed(rows, args.task, args.calibration_split, args.calibration_images, methods, args.threads,
                       args.batch_size, args.repeats, args.steps),
    }
    results.update(load_average_after=list(os.getloadavg()), seconds=round(time.time() - started, 1),
                   checkpoint=args.checkpoint, task=args.task, split=args.split)
    import onnxruntime

    results["versions"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
