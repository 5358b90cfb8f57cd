"""CPU inference paths of this package's ViT side by side: where the time goes, how fast each path
runs against the machine's own matrix-product peak, and how close its logits stay to fp32 on real
images (issue 27, item 2).

    python benchmarks/bench_inference.py                          # ViT-S/16 and ViT-B/16, batch 8, 224 px
    python benchmarks/bench_inference.py --rows vit_s16 --paths eager-fp32,eager-bf16,compiled-bf16
    python benchmarks/bench_inference.py --no-profile --out benchmarks/results/...json

Paths (`--paths`, default all; each returns float32 logits):

  eager-fp32              the model as it is, fp32 (the baseline of every ratio)
  eager-bf16              torch.autocast(bf16) around the eager model (today's `--precision bf16`)
  eager-bf16-weights      a copy with bf16 weights and bf16 inputs, no autocast
  eager-bf16-copies       what `--precision bf16` runs: `hf_vit_repro.precision.PrecisionRun` given the
                          model, i.e. bf16 copies of its weights swapped in, autocast around the call
                          (blocks on oneDNN's fused linears with packed weights: `_packed_bf16_forward`)
  eager-bf16-copies-native  the same with the blocks on torch's native encoder-layer kernel instead
  compiled-fp32           torch.compile (inductor, default mode, `freezing=True`) of the fp32 model
  compiled-bf16           the same under bf16 autocast (freezing folds the weights' casts)
  compiled-bf16-weights   torch.compile of the bf16-weight copy
  ort-fp32                our ONNX export (hf_vit_repro.export) in ONNX Runtime, CPU provider
  ort-int8-dynamic        its `quantize_dynamic` int8 graph (hf_vit_repro.quantization, int8-dynamic)
  ort-int8-static         its `quantize_static` QDQ graph, per-channel int8 weights, activation scales
                          calibrated on --calibration-images real images other than the evaluated ones
  openvino-bf16           the same ONNX export compiled by OpenVINO's CPU plugin with its bf16 inference
                          precision hint (AMX kernels, fused attention and layer norms); needs
                          `pip install openvino`, not a dependency of the package

Every compiled path runs under torch.no_grad() (freezing needs it), the eager ones too. Timing:
interleaved (A B C ... A B C ...), `--repeats` measurements of `--steps` calls each after two
warm-up calls, medians; img/s x the model's forward FLOPs / the machine's bf16 (or fp32) matrix
product peak measured in the same run (`bench_models.matmul_peak`, before and after the rows; the
higher of the two, since a busy moment on a shared machine lowers one). `best_*`: the fastest
repeat of each path and its ratio to the fastest baseline repeat (less sensitive to other load).
Compile time is the wall time of the first compiled call (dynamo trace + inductor + C++ build).

Exactness: random seeded weights (no pretrained ViT-S/B is on the machine), real images: crops of
scikit-learn's two sample photographs and its 8x8 digits upscaled to 224 px, normalised with mean
and std 0.5 (the ViT image processor's default). Per path: max |logit difference| to eager fp32,
its RMS, top-1 agreement, and `hf_vit_repro.precision.compare_outputs`' verdict with
`BF16_TOLERANCE` (the first-batch check `--precision auto` runs).

The last batch of an evaluation is smaller: `--tail-batch` (default 3) calls each compiled path
once more at that size and records the time of that call and the number of compilations
(`torch._dynamo` frame counter), with inductor's defaults (automatic dynamic shapes) and with
the tail padded to the full batch with copies of its last image (`padded`).

`kernel_bound` (`--no-kernel-bound` to skip): the model's bf16 matrix products and its attention
kernel timed alone at the model's shapes, everything else counted as free: the fastest torch's
kernels could run this forward, as img/s and as a share of the bf16 peak.

The profile (`--no-profile` to skip): torch.profiler self CPU time per operator of the eager bf16
paths (autocast, bf16 weights, bf16 copies), `--profile-steps` calls, grouped (matmul, attention, layernorm,
gelu, casts, other) and the top operators with their shares.
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import ROWS, cpu_description, cpu_machine, default_results_path, matmul_peak, save_results  # noqa: E402

PATHS = ("eager-fp32", "eager-bf16", "eager-bf16-weights", "eager-bf16-copies", "eager-bf16-copies-native",
         "compiled-fp32", "compiled-bf16", "compiled-bf16-weights", "ort-fp32", "ort-int8-dynamic", "ort-int8-static",
         "openvino-bf16")

# operator name -> group of the profile (first matching substring wins; the rest is "other")
GROUPS = (
    ("casts", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")),
    ("attention", ("attention", "sdpa", "_transformer_encoder_layer_fwd", "aten::bmm", "softmax",
                   "_native_multi_head_attention", "aten::baddbmm", "transform_bias_rescale_qkv")),
    ("matmul", ("aten::addmm", "addmm_activation", "aten::mm", "aten::linear", "aten::matmul", "mkldnn", "onednn",
                "aten::convolution", "aten::_convolution", "conv")),
    ("layernorm", ("layer_norm",)),
    ("gelu", ("gelu",)),
)


def real_images(count: int, offset: int = 0, size: int = 224) -> torch.Tensor:
    """`count` real images (N, 3, size, size), normalised to [-1, 1]: alternately a crop of one of
    scikit-learn's two sample photographs (a seeded scale and position) and one of its 8x8 digits
    upscaled (bilinear, grey to RGB). `offset` picks other images (calibration vs evaluation)."""
    from sklearn.datasets import load_digits, load_sample_images

    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    digits = torch.from_numpy(load_digits().images).float() / 16
    rng = np.random.default_rng(1234 + offset)
    out = []
    for i in range(offset, offset + count):
        if i % 2 == 0:
            photo = photos[(i // 2) % len(photos)]
            h, w = photo.shape[1:]
            side = int(rng.integers(160, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            image = photo[:, y:y + side, x:x + side]
        else:
            image = digits[(i * 37) % len(digits)].expand(3, 8, 8)
        out.append(F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return (torch.stack(out) - 0.5) / 0.5


def compile_model(module: torch.nn.Module) -> Callable:
    """torch.compile with inductor's freezing (weights folded as constants; inference only). Freezing
    is a global inductor setting read when a graph compiles: it stays on for the rest of the process."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(module)


def onnx_sessions(model: torch.nn.Module, wanted: list[str], calibration: np.ndarray, threads: int) -> dict[str, Callable]:
    """ONNX Runtime sessions of our fp32 export and its int8 quantisations (hf_vit_repro.quantization)."""
    import onnx
    import onnxruntime as ort

    from hf_vit_repro.export import FORMATS, export_model
    from hf_vit_repro.quantization import quantize_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        export_model(model, Path(tmp) / "export", format="onnx", progress=False)
        fp32 = Path(tmp) / "export" / FORMATS["onnx"]
        graph = onnx.load(str(fp32))
        del graph.graph.value_info[:]  # as hf_vit_repro.export does before quantising
        plain = Path(tmp) / "plain.onnx"
        onnx.save(graph, str(plain))
        paths = {"ort-fp32": fp32}
        for kind in ("int8-dynamic", "int8-static"):
            if f"ort-{kind}" in wanted:
                paths[f"ort-{kind}"] = Path(tmp) / f"{kind}.onnx"
                quantize_onnx(plain, paths[f"ort-{kind}"], kind, "pixel_values",
                              calibration if kind == "int8-static" else None)
        for name, path in paths.items():
            if name in wanted:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                runs[name] = (lambda x, s=session: torch.from_numpy(s.run(["logits"], {"pixel_values": x.numpy()})[0]))
        if "openvino-bf16" in wanted:
            runs["openvino-bf16"] = openvino_bf16(fp32, threads)
    return runs


def openvino_bf16(onnx_path: Path, threads: int) -> Callable:
    """x -> logits of the ONNX graph compiled by OpenVINO's CPU plugin in bf16 (read into memory here)."""
    try:
        import openvino as ov
    except ImportError:
        raise SystemExit("the openvino-bf16 path needs OpenVINO: pip install openvino") from None
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())


def build_paths(model, wanted: list[str], calibration: torch.Tensor, threads: int) -> dict[str, Callable]:
    """{path: x -> float32 logits}; a compiled path compiles on its first call (timed by `run_row`)."""
    calls: dict[str, Callable] = {}
    bf16_model = None
    if any(p.endswith("bf16-weights") for p in wanted):
        bf16_model = copy.deepcopy(model).to(torch.bfloat16).eval()
    for name in wanted:
        if name.startswith(("ort-", "openvino-")):
            continue
        compiled = name.startswith("compiled-")
        module = bf16_model if name.endswith("bf16-weights") else model
        fn = compile_model(module) if compiled else module
        if name.endswith("bf16-weights"):
            calls[name] = lambda x, f=fn: f(x.to(torch.bfloat16)).logits.float()
        elif name.startswith("eager-bf16-copies"):
            from hf_vit_repro.precision import PrecisionRun

            if name.endswith("-native"):
                module = copy.deepcopy(model)
                for layer in module.vit.layers:
                    layer._packed_bf16_inference = False
            run = PrecisionRun("bf16", "cpu", model=module)  # its first call (a warm-up) checks against fp32
            calls[name] = lambda x, r=run, m=module: r(lambda: m(x).logits).float()
        elif name.endswith("bf16"):
            def call(x, f=fn):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return f(x).logits.float()
            calls[name] = call
        else:
            calls[name] = lambda x, f=fn: f(x).logits
    onnx_wanted = [p for p in wanted if p.startswith(("ort-", "openvino-"))]  # the paths that run our ONNX export
    if onnx_wanted:
        calls.update(onnx_sessions(model, onnx_wanted, calibration.numpy(), threads))
    return {name: calls[name] for name in wanted}


def frame_count() -> int:
    import torch._dynamo.utils as dynamo_utils

    return int(dynamo_utils.counters["stats"]["unique_graphs"])


def profile(calls: dict[str, Callable], x: torch.Tensor, steps: int, top: int) -> dict:
    """{path: {"total_ms", "groups": {group: share}, "top": [[op, ms per call, share], ...]}}."""
    result = {}
    for name, call in calls.items():
        call(x), call(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                call(x)
        times = collections.Counter()
        for event in prof.key_averages():
            times[event.key] += event.self_cpu_time_total / 1e3 / steps
        total = sum(times.values())
        groups = collections.Counter()
        for op, ms in times.items():
            group = next((g for g, keys in GROUPS if any(k in op.lower() for k in keys)), "other")
            groups[group] += ms
        result[name] = {
            "total_ms_per_call": round(total, 2),
            "groups": {g: round(ms / total, 4) for g, ms in groups.most_common()},
            "top": [[op, round(ms, 2), round(ms / total, 4)] for op, ms in times.most_common(top)],
        }
    return result


def exactness(calls: dict[str, Callable], images: torch.Tensor, batch: int) -> dict:
    from hf_vit_repro.precision import BF16_TOLERANCE, compare_outputs

    logits = {name: torch.cat([call(images[i:i + batch]) for i in range(0, len(images), batch)]).float()
              for name, call in calls.items()}
    reference = logits["eager-fp32"]
    out = {}
    for name, value in logits.items():
        check = compare_outputs(reference, value, classes=True, tolerance=BF16_TOLERANCE)
        out[name] = {"max_abs_logit_diff": float((value - reference).abs().max()),
                     "rms_diff": check["rms_difference"], "rms_reference": check["rms_reference"],
                     "top1_agreement": float((value.argmax(1) == reference.argmax(1)).float().mean()),
                     "policy_check_ok": check["ok"], "counted_changed_top1": check.get("counted_changed_top1")}
    return out


def time_paths(calls: dict[str, Callable], x: torch.Tensor, repeats: int, steps: int) -> dict[str, list[float]]:
    for call in calls.values():
        call(x), call(x)
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(steps):
                call(x)
            samples[name].append(steps * x.shape[0] / (time.perf_counter() - start))
    return samples


def padded(call: Callable, full: int) -> Callable:
    """`call` on batches padded to `full` rows with copies of their last image, outputs cut back:
    one compiled shape serves an evaluation's smaller last batch."""
    def run(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < full:
            x = torch.cat([x, x[-1:].expand(full - n, *x.shape[1:])])
        return call(x)[:n]
    return run


def _best_seconds(fn: Callable[[], object], repeats: int = 7, calls: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def kernel_bound(config, batch: int, resolution: int = 224) -> dict:
    """The fastest a bf16 forward could run with torch's own kernels at this model's shapes: each of
    a block's matrix products (qkv, output projection, fc1, fc2, as `F.linear` on (batch x tokens)
    rows) and its attention (`scaled_dot_product_attention`, torch's flash kernel on the CPU) timed
    alone in bf16, best of the repeats, with everything else (layer norms, GELU, residual adds,
    reshapes) free. Blocks as ours run them: the last one projects keys and values for all tokens
    and the rest for the class token only (about nothing). {"ms": per op, "batch_ms": the bound}."""
    d, h, tokens = config.hidden_size, config.num_attention_heads, (resolution // config.patch_size) ** 2 + 1
    rows = batch * tokens
    bf16 = torch.bfloat16
    x, x4 = torch.randn(rows, d, dtype=bf16), torch.randn(rows, config.intermediate_size, dtype=bf16)
    patches = torch.randn(batch * (tokens - 1), 3 * config.patch_size**2, dtype=bf16)

    def linear(inp, out_features):
        weight = torch.randn(out_features, inp.shape[1], dtype=bf16)
        bias = torch.randn(out_features, dtype=bf16)
        return _best_seconds(lambda: F.linear(inp, weight, bias))

    q, k, v = (torch.randn(batch, h, tokens, d // h, dtype=bf16) for _ in range(3))
    with torch.no_grad():
        ms = {
            "qkv": linear(x, 3 * d), "o_proj": linear(x, d), "fc1": linear(x, config.intermediate_size),
            "fc2": linear(x4, d),
            "attention": _best_seconds(lambda: F.scaled_dot_product_attention(q, k, v)),
            "patch_embedding": linear(patches, d),
        }
    ms = {name: 1e3 * s for name, s in ms.items()}
    block = sum(ms[n] for n in ("qkv", "o_proj", "fc1", "fc2", "attention"))
    batch_ms = (config.num_hidden_layers - 1) * block + ms["qkv"] * 2 / 3 + ms["patch_embedding"]
    return {"ms": {n: round(v, 3) for n, v in ms.items()}, "batch_ms": round(batch_ms, 2)}


def tail_batches(model, x: torch.Tensor, tail: int) -> dict:
    """Compiled bf16 autocast at the full batch then at `tail`: inductor's default (a second,
    dynamic-shape compilation) against padding the tail to the full batch (no new compilation)."""
    out = {}
    for mode in ("default", "padded"):
        torch._dynamo.reset()
        before = frame_count()
        fn = compile_model(model)

        def call(v, f=fn):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return f(v).logits.float()

        if mode == "padded":
            call = padded(call, x.shape[0])
        start = time.perf_counter()
        full = call(x)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        part = call(x[:tail])
        tail_first_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(3):
            call(x[:tail])
        tail_s = (time.perf_counter() - start) / 3
        out[mode] = {"first_call_s": round(first_s, 2), "first_tail_call_s": round(tail_first_s, 2),
                     "tail_call_s": round(tail_s, 4), "graphs_compiled": frame_count() - before,
                     "tail_max_abs_diff_to_full_rows": float((part - full[:tail]).abs().max())}
    torch._dynamo.reset()
    return out


def run_row(row: str, wanted: list[str], batch: int, repeats: int, steps: int, args) -> dict:
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification
    from hf_vit_repro.flops import forward_flops

    torch.manual_seed(0)
    config = ViTReproConfig.from_variant(ROWS[row][0], num_labels=1000)
    model = ViTReproForImageClassification(config).eval()
    with torch.no_grad():  # a fresh head is zero (logits all 0): give it random weights, logits of std ~1
        model.classifier.weight.normal_(0, config.hidden_size ** -0.5, generator=torch.Generator().manual_seed(0))
    flops = forward_flops(config, 224, class_token_only_last_block=True)
    images = real_images(args.images)
    calibration = real_images(args.calibration_images, offset=10_000)
    x = images[:batch]
    result = {"row": row, "variant": ROWS[row][0], "batch_size": batch, "resolution": 224,
              "forward_gflops_per_image": flops / 1e9, "paths": {}}
    if args.kernel_bound:
        result["kernel_bound"] = kernel_bound(config, batch, 224)
    with torch.no_grad():
        if args.profile:
            eager = [p for p in ("eager-bf16", "eager-bf16-weights", "eager-bf16-copies", "eager-bf16-copies-native") if p in wanted]
            calls = build_paths(model, eager, calibration, torch.get_num_threads())
            result["profile"] = profile(calls, x, args.profile_steps, args.top)
            del calls
        calls = build_paths(model, wanted, calibration, torch.get_num_threads())
        for name, call in calls.items():
            start = time.perf_counter()
            call(x)
            result["paths"][name] = {"first_call_s": round(time.perf_counter() - start, 2)}
        for name, values in exactness(calls, images, batch).items():
            result["paths"][name].update(values)
        samples = time_paths(calls, x, repeats, steps)
        if args.tail_batch and any(p.startswith("compiled-") for p in wanted):  # it compiles: only for compiled paths
            result["tail_batch"] = {"tail": args.tail_batch, **tail_batches(model, x, args.tail_batch)}
    base = {p: statistics.median(samples[p]) for p in ("eager-fp32", "eager-bf16") if p in samples}
    best = {p: max(samples[p]) for p in base}
    for name, values in samples.items():
        entry = result["paths"][name]
        img_s = statistics.median(values)
        entry.update(img_s=round(img_s, 3), best_img_s=round(max(values), 3), samples=[round(v, 3) for v in values])
        for b, v in base.items():
            entry[f"x_{b}"] = round(img_s / v, 3)
            entry[f"best_x_{b}"] = round(max(values) / best[b], 3)
    return result


def table(results: list[dict]) -> str:
    lines = [f"{'row':<8} {'path':<22} {'img/s':>7} {'x fp32':>7} {'x bf16':>7} {'bf16 peak':>9} {'first s':>8} "
             f"{'max|d|':>8} {'top-1':>6} {'check':>6}"]
    for res in results:
        for name, e in res["paths"].items():
            lines.append(f"{res['row']:<8} {name:<22} {e['img_s']:>7.1f} {e.get('x_eager-fp32', 0):>7.2f} "
                         f"{e.get('x_eager-bf16', 0):>7.2f} {e.get('share_of_bf16_peak', 0):>9.1%} {e['first_call_s']:>8.1f} "
                         f"{e['max_abs_logit_diff']:>8.4f} {e['top1_agreement']:>6.1%} {str(e['policy_check_ok']):>6}")
        for name, prof in res.get("profile", {}).items():
            lines.append(f"  profile {name}: {prof['total_ms_per_call']:.1f} ms/call; "
                         + ", ".join(f"{g} {s:.0%}" for g, s in prof["groups"].items()))
        if "tail_batch" in res:
            lines.append(f"  tail batch: {res['tail_batch']}")
        if "kernel_bound" in res:
            bound = res["kernel_bound"]
            lines.append(f"  kernel bound (bf16 products and attention alone, the rest free): {bound['img_s']:.1f} img/s, "
                         f"{bound['share_of_bf16_peak']:.1%} of the bf16 peak; ms per batch: {bound['ms']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="vit_s16,vit_b16", help=f"comma-separated rows from {list(ROWS)[:2]}")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated from {', '.join(PATHS)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="measurements per path (median taken)")
    parser.add_argument("--steps", type=int, default=2, help="calls per measurement")
    parser.add_argument("--images", type=int, default=16, help="real images the logits are compared on")
    parser.add_argument("--calibration-images", type=int, default=32, help="ort-int8-static: images to calibrate on")
    parser.add_argument("--tail-batch", type=int, default=3, help="last-batch size to compile for (0: skip)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler pass")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=10, help="operators listed per profile")
    parser.add_argument("--no-kernel-bound", dest="kernel_bound", action="store_false",
                        help="skip timing the model's bf16 matrix products and attention alone (`kernel_bound`)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--out", default=None, help="results JSON (default: a new benchmarks/results/ file)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    wanted = [p for p in args.paths.split(",") if p]
    if bad := [r for r in rows if r not in ROWS or r == "r50_b16"]:
        parser.error(f"unknown rows {bad}; choose from vit_s16, vit_b16")
    if bad := [p for p in wanted if p not in PATHS]:
        parser.error(f"unknown paths {bad}; choose from {', '.join(PATHS)}")
    if "eager-fp32" not in wanted:
        wanted.insert(0, "eager-fp32")  # the reference of every comparison
    if args.batch_size < 1 or not 0 <= args.tail_batch < args.batch_size:
        parser.error("--batch-size must be >= 1 and --tail-batch between 0 and the batch size minus 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {p: matmul_peak(d) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    extra = {"cpu": cpu_description(), "loadavg_before": open("/proc/loadavg").read().split()[:3],
             "matmul_peak_gflops": {p: v / 1e9 for p, v in peaks.items()}}
    print(f"CPU: {extra['cpu']['model']}; load {extra['loadavg_before']}; peaks "
          + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    results = [run_row(row, wanted, args.batch_size, args.repeats, args.steps, args) for row in rows]
    after = {p: matmul_peak(d) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    extra["matmul_peak_gflops_after"] = {p: v / 1e9 for p, v in after.items()}
    # a shared machine: a busy moment lowers one measurement; the shares use the higher of the two
    extra["matmul_peak_gflops_used"] = {p: max(peaks[p], after[p]) / 1e9 for p in peaks}
    for res in results:
        for entry in res["paths"].values():
            for p in peaks:
                entry[f"share_of_{p}_peak"] = round(entry["img_s"] * res["forward_gflops_per_image"] * 1e9
                                                    / max(peaks[p], after[p]), 4)
        if "kernel_bound" in res:
            bound = res["kernel_bound"]
            bound["img_s"] = round(1e3 * res["batch_size"] / bound["batch_ms"], 2)
            bound["share_of_bf16_peak"] = round(bound["img_s"] * res["forward_gflops_per_image"] * 1e9
                                                / max(peaks["bf16"], after["bf16"]), 4)
    extra["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    if "openvino-bf16" in wanted:
        import openvino

        extra["openvino_version"] = openvino.__version__
    print(table(results))
    machine = cpu_machine()
    save_results(Path(args.out) if args.out else default_results_path(f"{machine}-inference"), machine, results, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
