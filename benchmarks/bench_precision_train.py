"""Training speed of this package's ViT in fp32 against bf16 autocast, measured step by step in turn.

`make bench` (bench_models.py) measures every fp32 row before every bf16 row, minutes apart, so its
bf16 / fp32 ratio carries whatever the machine's speed did in between (on the project's shared VMs
it drifted by up to 1.4x between runs). Here two copies of one model (same initial weights, each
with its own fused AdamW) train in turn, fp32 then bf16, `--repeats` times: both precisions see the
same moments of the machine. The ratio of issue 27's training target is bf16 / fp32 images per
second; `pair_ratios` are the ratios of each adjacent (fp32, bf16) pair, whose median resists drift.

    python benchmarks/bench_precision_train.py --rows vit_b16 --repeats 7 --steps 2
    python benchmarks/bench_precision_train.py --rows vit_s16,vit_b16 --out benchmarks/results/...json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import ROWS, Impl, cpu_description, cpu_machine, default_results_path, interleaved_samples, save_results  # noqa: E402


def precision_pair(model: torch.nn.Module) -> list[Impl]:
    """Two Impls training copies of `model`: "fp32" as it is, "bf16" under bf16 autocast (what
    `run.mixed_precision: auto` means on a CPU with AMX or AVX512-BF16)."""
    impls = []
    for name in ("fp32", "bf16"):
        copy_ = copy.deepcopy(model).train()

        def logits(x, m=copy_, bf16=name == "bf16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return m(x).logits.float()

        impl = Impl(name, copy_, logits)
        impl.optimizer = torch.optim.AdamW(copy_.parameters(), lr=1e-5, fused=True)
        impls.append(impl)
    return impls


def measure_pair(model: torch.nn.Module, batch: int, resolution: int, repeats: int, steps: int) -> dict:
    """{"fp32": img/s, "bf16": img/s, "ratio": bf16 / fp32 of the medians, "pair_ratios": per repeat,
    "samples": every measurement}; the inputs are random, `num_labels` classes."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution)
    labels = torch.randint(0, model.config.num_labels, (batch,))
    samples = interleaved_samples(precision_pair(model), x, labels, "train", repeats, steps)
    fp32, bf16 = (statistics.median(samples[p]) for p in ("fp32", "bf16"))
    pairs = [b / f for f, b in zip(samples["fp32"], samples["bf16"])]
    return {"fp32": fp32, "bf16": bf16, "ratio": bf16 / fp32, "pair_ratios": pairs,
            "median_pair_ratio": statistics.median(pairs), "samples": samples}


def main(argv=None) -> int:
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="vit_s16,vit_b16", help=f"comma-separated rows from {list(ROWS)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="measurements per precision (median taken)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per measurement")
    parser.add_argument("--out", default=None, help="results JSON (default: a new benchmarks/results/ file)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if bad := [r for r in rows if r not in ROWS]:
        parser.error(f"unknown rows {bad}; choose from {list(ROWS)}")
    if args.batch_size < 1 or args.repeats < 1 or args.steps < 1:
        parser.error("--batch-size, --repeats and --steps must be >= 1")
    results = []
    for row in rows:
        torch.manual_seed(0)
        model = ViTReproForImageClassification(ViTReproConfig.from_variant(ROWS[row][0], num_labels=1000))
        result = {"row": row, "batch_size": args.batch_size,
                  **measure_pair(model, args.batch_size, 224, args.repeats, args.steps)}
        print(f"{row}: fp32 {result['fp32']:.2f} img/s, bf16 {result['bf16']:.2f} img/s, bf16 / fp32 "
              f"{result['ratio']:.2f}x (median of the pairs {result['median_pair_ratio']:.2f}x)", flush=True)
        results.append(result)
    machine = cpu_machine()
    out = Path(args.out) if args.out else default_results_path(f"{machine}-precision-train")
    save_results(out, machine, results, {"cpu": cpu_description(), "loadavg": open("/proc/loadavg").read().split()[:3]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
