"""bf16 attention on the CPU at a ViT's shapes: each way torch can compute it, timed alone.

Issue 27's inference targets are set by attention: the matrix products of a block run near the CPU's
bf16 peak, attention far below it. This times, for one block of a row's model at batch B and 224 px
(h heads of D/h channels over S tokens): torch's flash kernel (`scaled_dot_product_attention`, what
the package runs), its math kernel, and the composition `softmax(q k^T) v` with its parts alone
(the two batched products and the bf16 softmax). For scale, the block's qkv projection (`F.linear`
of the B x S rows, 2 B S D 3D FLOPs) is timed in the same run: on a shared machine only ratios within
one run compare. Best of the repeats, ms per block and GFLOP/s (4 B h S^2 D/h FLOPs for attention,
half of that for each product).

    python benchmarks/attention_kernels.py --rows vit_s16,vit_b16 --out benchmarks/results/...json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _best_seconds  # noqa: E402
from bench_models import ROWS, cpu_description, cpu_machine, default_results_path, save_results  # noqa: E402


def time_attention(batch: int, heads: int, tokens: int, head_dim: int, repeats: int = 9) -> dict:
    """{way: {"ms", "gflops"}} for one block's bf16 attention at these shapes, and its qkv projection."""
    q, k, v = (torch.randn(batch, heads, tokens, head_dim).to(torch.bfloat16) for _ in range(3))
    width = heads * head_dim
    rows, qkv_weight = torch.randn(batch * tokens, width).to(torch.bfloat16), torch.randn(3 * width, width).to(torch.bfloat16)
    scores = torch.matmul(q, k.transpose(-1, -2))
    probs = torch.softmax(scores, -1)
    flops = 4 * batch * heads * tokens**2 * head_dim
    ways = {
        "flash": (lambda: F.scaled_dot_product_attention(q, k, v), flops),
        "math": (lambda: torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0], flops),
        "bmm_softmax_bmm": (lambda: torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)), -1), v), flops),
        "q_kT": (lambda: torch.matmul(q, k.transpose(-1, -2)), flops / 2),
        "softmax": (lambda: torch.softmax(scores, -1), None),
        "p_v": (lambda: torch.matmul(probs, v), flops / 2),
        "qkv_projection": (lambda: F.linear(rows, qkv_weight), 2 * batch * tokens * width * 3 * width),
    }
    out = {}
    with torch.no_grad():
        for name, (fn, work) in ways.items():
            seconds = _best_seconds(fn, repeats=repeats, calls=10)
            out[name] = {"ms": 1e3 * seconds, "gflops": round(work / seconds / 1e9, 1) if work else None}
    return out


def main(argv=None) -> int:
    from hf_vit_repro import ViTReproConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="vit_s16,vit_b16", help="comma-separated from vit_s16, vit_b16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9, help="measurements per way (the best is kept)")
    parser.add_argument("--out", default=None, help="results JSON (default: a new benchmarks/results/ file)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if bad := [r for r in rows if r not in ("vit_s16", "vit_b16")]:
        parser.error(f"unknown rows {bad}; choose from vit_s16, vit_b16")
    results = []
    for row in rows:
        config = ViTReproConfig.from_variant(ROWS[row][0])
        heads, tokens = config.num_attention_heads, (224 // config.patch_size) ** 2 + 1
        ways = time_attention(args.batch_size, heads, tokens, config.hidden_size // heads, args.repeats)
        results.append({"row": row, "batch_size": args.batch_size, "heads": heads, "tokens": tokens, "ways": ways})
        print(f"{row} (batch {args.batch_size}, {heads} heads over {tokens} tokens): " + ", ".join(
            f"{name} {w['ms']:.2f} ms" + (f" ({w['gflops']:.0f} GFLOP/s)" if w["gflops"] else "")
            for name, w in ways.items()), flush=True)
    machine = cpu_machine()
    save_results(Path(args.out) if args.out else default_results_path(f"{machine}-attention"), machine, results,
                 {"cpu": cpu_description(), "loadavg": open("/proc/loadavg").read().split()[:3]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
