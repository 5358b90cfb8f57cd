"""Speed and memory of this package's ViT against transformers' and timm's, side by side.

Same configuration, random weights, same inputs; every implementation is measured in the same
process, interleaved repeat by repeat (A B C A B C ...) so machine drift hits all alike; each
figure is the median of the repeats after warm-up (2 iterations), and each ratio compares medians of one run.

Columns:
  infer img/s   forward passes under torch.inference_mode(); the "onnxruntime" rows run our model
                exported with `hf_vit_repro.export` (ONNX, dynamic batch) in an ONNX Runtime session
                (CPU execution provider, default graph optimisations, as many intra-op threads as
                torch uses); inference only
  train img/s   forward + cross-entropy + backward + AdamW step (the same optimizer for all:
                torch's fused AdamW by default, as transformers' Trainer and our training loop
                use it; `--optimizer foreach` for torch's default multi-tensor one)
  train MB      CPU: memory a training step holds at its peak = parameters + gradients + AdamW
                state + the activations autograd saves for backward (counted exactly, each
                storage once, with saved-tensor hooks). CUDA: torch.cuda.max_memory_allocated.

  peak          CPU: share of the machine's own matrix-product peak for the row's precision,
                measured in the same run (`matmul_peak`: square fp32 and bf16 products, best of
                several sizes, before the rows and after them; the higher of the two, since a busy
                moment lowers one); img/s x FLOPs per image (x 3 for a training step) / that peak.
                The results record the CPU's model and instruction-set flags (AMX, AVX-512...).

    python benchmarks/bench_models.py                 # the CPU table (what `make bench` runs)
    python benchmarks/bench_models.py --precisions fp32,bf16   # fp32, then bf16 autocast (default on a CPU)
    python benchmarks/bench_models.py --rows vit_s16 --batch-size 4 --repeats 5
    python benchmarks/bench_models.py --rows vit_s16,vit_b16 --batch-size 1 --modes infer --out ...
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from hf_vit_repro.flops import forward_flops  # forward FLOPs per image of any config (matmuls and convs)
from hf_vit_repro.precision import Bf16Weights  # bf16 copies of a model's weights (--bf16-weights)

# Dense bf16 tensor-core peak, FLOP/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def gpu_peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in GPU_PEAK_BF16.items() if key in device_name), None)


def cpu_machine() -> str:
    """The CPU machine's name in results files and their default names: `cpu-<arch>-<N>cores`."""
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def cpu_description() -> dict:
    """The CPU's model name (/proc/cpuinfo, else platform), its instruction-set flags that decide
    matrix-product speed (torch.cpu.get_capabilities()), and what the package's precision policy
    makes of them."""
    from hf_vit_repro.precision import cpu_capabilities, resolve_precision

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    caps = cpu_capabilities()
    return {"model": name, "logical_cores": os.cpu_count(),
            "flags": sorted(k for k, v in caps.items() if v is True),
            "auto_precision": resolve_precision("auto", "cpu")}


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> float:
    """The best FLOP/s of square (n x n) @ (n x n) products in `dtype` on the CPU (2 n^3 FLOPs
    each), over `sizes`, each timed `repeats` times after one warm-up: what this machine's matrix
    units deliver in practice, with torch's own kernels (oneDNN / MKL)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


ROWS = {
    # row -> (our variant name, timm model name)
    "vit_s16": ("ViT-S/16", "vit_small_patch16_224"),
    "vit_b16": ("ViT-B/16", "vit_base_patch16_224"),
    "r50_b16": ("R50+ViT-B/16", "vit_base_r50_s16_224"),
}


@dataclass
class Impl:
    name: str
    model: torch.nn.Module | None  # None: not a torch module (an ONNX Runtime session)
    logits: Callable[[torch.Tensor], torch.Tensor]
    trains: bool = True


def onnxruntime_impl(model: torch.nn.Module, threads: int) -> Impl:
    """`model` exported to ONNX by `hf_vit_repro.export.export_model` (checked against PyTorch
    there) and run in an ONNX Runtime session with `threads` intra-op threads."""
    from hf_vit_repro.export import export_model, load_exported

    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        export_model(model, Path(tmp) / "export", format="onnx", progress=False)
        run = load_exported(Path(tmp) / "export", intra_op_num_threads=threads)  # the session holds the graph
    return Impl("onnxruntime", None, lambda x: run(x)["logits"], trains=False)


def onnxruntime_available() -> bool:
    try:
        from hf_vit_repro.export import require_onnx

        require_onnx()
        return True
    except ImportError:
        return False


def build(row: str, num_classes: int = 1000, onnxruntime: bool = False) -> list[Impl]:
    """Our model, transformers' ViT (plain rows only) and timm's, with identical architectures;
    with `onnxruntime`, also our model exported to ONNX and served by ONNX Runtime."""
    import timm
    from transformers import ViTConfig, ViTForImageClassification

    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    variant, timm_name = ROWS[row]
    config = ViTReproConfig.from_variant(variant, num_labels=num_classes)
    ours = ViTReproForImageClassification(config)
    impls = [Impl("hf_vit_repro", ours, lambda x, m=ours: m(x).logits)]
    if config.backbone_config is None:
        hf = ViTForImageClassification(
            ViTConfig(
                hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
                num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
                patch_size=config.patch_size, image_size=config.image_size, num_labels=num_classes,
                layer_norm_eps=1e-6, attn_implementation="sdpa",
            )
        )
        impls.append(Impl("transformers", hf, lambda x, m=hf: m(x).logits))
    tm = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
    impls.append(Impl("timm", tm, tm))
    counts = {impl.name: sum(p.numel() for p in impl.model.parameters()) for impl in impls}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"{row}: the implementations differ in size: {counts}")
    if onnxruntime:
        impls.insert(1, onnxruntime_impl(ours, torch.get_num_threads()))
    return impls


def saved_activation_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn` runs."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(storages.values())


def measure(impl: Impl, x: torch.Tensor, labels: torch.Tensor, mode: str, steps: int) -> float:
    """Images per second of `steps` iterations of `mode` ("infer" or "train")."""
    model = impl.model
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    if mode == "infer":
        if model is not None:
            model.eval()
        with torch.inference_mode():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                impl.logits(x)
            sync()
    else:
        model.train()
        optimizer = impl.optimizer
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(impl.logits(x), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
    return steps * x.shape[0] / (time.perf_counter() - start)


def interleaved_samples(impls: list[Impl], x, labels, mode: str, repeats: int, steps: int) -> dict[str, list[float]]:
    """Images/s of each implementation, `repeats` times, in the order A B C A B C ... after two
    warm-up iterations each, so drift of the machine hits all alike. Training leaves out the
    implementations that only infer."""
    impls = [impl for impl in impls if mode == "infer" or impl.trains]
    for impl in impls:
        measure(impl, x, labels, mode, 2)
    samples = {impl.name: [] for impl in impls}
    for _ in range(repeats):
        for impl in impls:
            samples[impl.name].append(measure(impl, x, labels, mode, steps))
    return samples


def add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="measurements per implementation (median taken)")
    parser.add_argument("--steps", type=int, default=2, help="iterations per measurement")


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_results_path(stem: str) -> Path:
    """`results/<stem>-<YYYYmmdd-HHMMSS>.json`, a file that does not exist yet: a run never
    overwrites the committed results the READMEs cite (pass --out to choose the file)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{stem}-{stamp}.json"
    number = 1
    while path.exists():
        number += 1
        path = RESULTS_DIR / f"{stem}-{stamp}-{number}.json"
    return path


def save_results(out: Path, machine: str, rows: list[dict], extra: dict | None = None) -> None:
    """The results JSON: machine, versions, the command that produced it, every row (and `extra`:
    the CPU's description and matrix-product peaks)."""
    from hf_vit_repro.runs import software_versions, write_json

    write_json(out, {
        "machine": machine, "processor": platform.processor(), "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": software_versions(), **(extra or {}), "rows": rows,
    })
    print(f"wrote {out}")


def train_memory_mb(impl: Impl, x: torch.Tensor, labels: torch.Tensor) -> float:
    model = impl.model
    model.train()
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        loss = F.cross_entropy(impl.logits(x), labels)
        loss.backward()
        impl.optimizer.step()
        impl.optimizer.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_allocated() / 2**20
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = saved_activation_bytes(lambda: F.cross_entropy(impl.logits(x), labels))
    model.zero_grad(set_to_none=True)
    # parameters + gradients + AdamW's two moments + saved activations
    return (4 * params + activations) / 2**20


def set_mfu(result: dict, peak: float | None) -> None:
    """The MFU columns of a row's implementations against `peak` FLOP/s, each with its model's own FLOPs
    (MFU counts work done: ours skips most of the last block's work)."""
    if not peak:
        return
    for name, entry in result["impls"].items():
        if not {"infer_img_s", "train_img_s"} & entry.keys():
            continue
        flops = 1e9 * result["ours_forward_gflops_per_image" if name == "hf_vit_repro" else "forward_gflops_per_image"]
        if "infer_img_s" in entry:
            entry["infer_mfu"] = entry["infer_img_s"] * flops / peak
        if "train_img_s" in entry:
            entry["train_mfu"] = entry["train_img_s"] * 3 * flops / peak


def run_row(
    row: str, batch_size: int, repeats: int, steps: int, device: str, amp: str | None = None, compile: bool = False,
    optimizer: str = "fused", modes: tuple[str, ...] = ("infer", "train"), onnxruntime: bool = False,
    cpu_peak: float | None = None, bf16_weights: bool = False,
) -> dict:
    """Measure one row. On a GPU, `amp="bf16"` runs under bf16 autocast and `compile=True` wraps
    every implementation in torch.compile (the same settings for all); `onnxruntime` adds our
    model served by ONNX Runtime (CPU, float32, inference only). `cpu_peak`: the FLOP/s the MFU
    columns divide by on a CPU (`matmul_peak` of the row's precision). `bf16_weights` (with
    `amp="bf16"`): inference of every implementation runs on bf16 copies of its weights swapped
    in (`hf_vit_repro.precision.Bf16Weights`, what `--precision bf16` does for ours), autocast
    still around it; training is unchanged."""
    torch.manual_seed(0)
    impls = build(row, onnxruntime=onnxruntime)
    for impl in impls:
        if impl.model is None:
            continue
        call = torch.compile(impl.logits) if compile else impl.logits
        if amp:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]

            swap = Bf16Weights(impl.model) if bf16_weights and amp == "bf16" else None

            def call(x, _inner=call, _dtype=dtype, _swap=swap):
                copies = _swap.swapped() if _swap is not None and torch.is_inference_mode_enabled() else nullcontext()
                with copies, torch.autocast(device_type=device.split(":")[0], dtype=_dtype):
                    return _inner(x).float()

        impl.logits = call
    resolution = 224
    x = torch.randn(batch_size, 3, resolution, resolution, device=device)
    labels = torch.randint(0, 1000, (batch_size,), device=device)
    for impl in impls:
        if impl.model is not None:
            impl.model.to(device)
            impl.optimizer = torch.optim.AdamW(impl.model.parameters(), lr=1e-5, **{optimizer: True})
    from hf_vit_repro import ViTReproConfig

    config = ViTReproConfig.from_variant(ROWS[row][0], num_labels=1000)
    flops = forward_flops(config, resolution)
    flops_of = {impl.name: flops for impl in impls}
    flops_of["hf_vit_repro"] = forward_flops(config, resolution, class_token_only_last_block=True)
    result = {"row": row, "variant": ROWS[row][0], "batch_size": batch_size, "resolution": resolution,
              "amp": amp, "precision": amp or "fp32", "peak_flops": cpu_peak if not device.startswith("cuda") else None, "compile": compile, "bf16_weights": bool(bf16_weights and amp == "bf16"), "optimizer": f"AdamW({optimizer}=True)",
              "forward_gflops_per_image": flops / 1e9, "ours_forward_gflops_per_image": flops_of["hf_vit_repro"] / 1e9,
              "parameters": sum(p.numel() for p in impls[0].model.parameters()), "modes": list(modes),
              "threads": torch.get_num_threads(), "impls": {}}
    for impl in impls:
        result["impls"][impl.name] = {}
    for mode in modes:
        samples = interleaved_samples(impls, x, labels, mode, repeats, steps)
        for name, values in samples.items():
            entry = result["impls"][name]
            entry[f"{mode}_img_s"] = statistics.median(values)
            entry[f"{mode}_samples"] = values
    if "train" in modes:
        for impl in impls:
            if impl.trains:
                result["impls"][impl.name]["train_mb"] = train_memory_mb(impl, x, labels)
    set_mfu(result, gpu_peak_flops(torch.cuda.get_device_name()) if device.startswith("cuda") else cpu_peak)
    ours = result["impls"]["hf_vit_repro"]
    for name, entry in result["impls"].items():
        if name == "hf_vit_repro":
            continue
        for key, column in (("infer_img_s", "infer_x"), ("train_img_s", "train_x"), ("train_mb", "mem_x")):
            if key in entry:
                ours[f"{column}_{name}"] = ours[key] / entry[key]
    return result


def table(results: list[dict]) -> str:
    """The results as text; "-" where an implementation or a mode was not measured."""
    mfu = any("infer_mfu" in e for r in results for e in r["impls"].values())

    def cell(value, fmt: str, width: int) -> str:
        return f"{value:>{width}{fmt}}" if value is not None else f"{'-':>{width}}"

    head = f"{'row':<9} {'prec':>4} {'batch':>5} {'impl':<13} {'infer img/s':>11} {'train img/s':>11} {'train MB':>9}"
    head += f" {'infer MFU':>9} {'train MFU':>9}" if mfu else ""
    lines = [head + "   ours vs it (infer, train, memory)"]
    for res in results:
        ours = res["impls"]["hf_vit_repro"]
        for name, entry in res["impls"].items():
            ratio = ""
            if name != "hf_vit_repro":
                ratio = "   " + "  ".join(
                    cell(ours.get(f"{column}_{name}"), ".2f", 4) + ("x" if f"{column}_{name}" in ours else " ")
                    for column in ("infer_x", "train_x", "mem_x")
                )
            line = (
                f"{res['row']:<9} {res.get('precision', res.get('amp') or 'fp32'):>4} {res['batch_size']:>5} {name:<13} {cell(entry.get('infer_img_s'), '.1f', 11)} "
                f"{cell(entry.get('train_img_s'), '.1f', 11)} {cell(entry.get('train_mb'), '.0f', 9)}"
            )
            if mfu:
                line += f" {cell(entry.get('infer_mfu'), '.1%', 9)} {cell(entry.get('train_mfu'), '.1%', 9)}"
            lines.append(line + ratio)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows from {list(ROWS)}")
    add_measurement_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype (GPU rows)")
    parser.add_argument("--precisions", default=None,
                        help="CPU: comma-separated fp32, bf16 (autocast), each row measured in each (default: both; "
                        "--amp bf16 means bf16 only)")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="bf16 inference of every implementation on bf16 copies of its weights, as "
                        "`--precision bf16` runs ours (hf_vit_repro.precision.Bf16Weights); default: autocast alone")
    parser.add_argument("--compile", action="store_true", help="torch.compile every implementation")
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                        help="torch.optim.AdamW implementation, the same for every model (default: fused)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads, and ONNX Runtime's (default: torch's default, all cores)")
    parser.add_argument("--modes", default="infer,train", help="comma-separated: infer, train (default both)")
    parser.add_argument("--no-onnxruntime", dest="onnxruntime", action="store_false",
                        help="leave out the ONNX Runtime rows (they need the [export] extra; CPU, fp32 only)")
    parser.add_argument("--out", default=None,
                        help="results JSON (default: a new benchmarks/results/<machine>-<date>-<time>.json)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or set(modes) - {"infer", "train"}:
        parser.error(f"--modes takes infer and/or train, got {args.modes!r}")
    # ONNX Runtime serves the float32 model on the CPU: no rows under autocast, compile or on a GPU.
    onnxruntime = args.onnxruntime and args.device == "cpu" and not args.amp and not args.compile
    if onnxruntime and not onnxruntime_available():
        print("onnx/onnxruntime not installed (pip install 'hf-vit-repro[export]'): no ONNX Runtime rows")
        onnxruntime = False
    from tqdm import tqdm

    cpu = not args.device.startswith("cuda")
    precisions = [p for p in (args.precisions or ("fp32,bf16" if cpu and not args.amp else (args.amp or "fp32"))).split(",") if p]
    if set(precisions) - {"fp32", "bf16", "fp16"}:
        parser.error(f"--precisions takes fp32, bf16, got {args.precisions!r}")
    extra, peaks = {}, {}
    if cpu:
        # the machine's own peaks, measured now (before the rows, so they see the same machine load)
        peaks = {p: matmul_peak({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p])
                 for p in precisions}
        extra = {"cpu": cpu_description(), "matmul_peak_gflops": {p: v / 1e9 for p, v in peaks.items()}}
        print(f"CPU: {extra['cpu']['model']}; matrix-product peak "
              + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    results = [
        run_row(row, args.batch_size, args.repeats, args.steps, args.device,
                None if precision == "fp32" else precision, args.compile, args.optimizer, modes,
                onnxruntime and precision == "fp32", peaks.get(precision), args.bf16_weights)
        for precision in precisions for row in tqdm(rows, desc=f"rows ({precision})")
    ]
    if cpu:
        # measured again after the rows: on a shared machine one measurement can land in a busy moment, which
        # would inflate every share; the MFU columns use the higher of the two
        after = {p: matmul_peak({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p])
                 for p in precisions}
        used = {p: max(peaks[p], after[p]) for p in precisions}
        extra["matmul_peak_gflops_after"] = {p: v / 1e9 for p, v in after.items()}
        extra["matmul_peak_gflops_used"] = {p: v / 1e9 for p, v in used.items()}
        for result in results:
            result["peak_flops"] = used[result["precision"]]
            set_mfu(result, used[result["precision"]])
    print(table(results))
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_machine()
    save_results(Path(args.out) if args.out else default_results_path(machine.replace(" ", "_")), machine, results,
                 extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
