"""Where a training step's time goes: torch.profiler's self time per operator, in ms per step,
for this package's ViT and the references (`bench_models.py`'s models, same settings: fp32,
random weights, cross-entropy, backward, fused AdamW).

    python benchmarks/profile_models.py                      # ViT-S/16, batch 8, 4 profiled steps
    python benchmarks/profile_models.py --row vit_b16 --top 15
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import ROWS, build  # noqa: E402


def profile_row(row: str, batch_size: int, steps: int) -> dict[str, dict[str, float]]:
    """{implementation: {operator: self CPU ms per training step}} after two warm-up steps."""
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, 224, 224)
    labels = torch.randint(0, 1000, (batch_size,))
    result = {}
    for impl in build(row):
        model = impl.model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def step():
            F.cross_entropy(impl.logits(x), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step(), step()
        with torch.profiler.profile() as prof:
            for _ in range(steps):
                step()
        times = collections.Counter()
        for event in prof.key_averages():
            times[event.key] += event.self_cpu_time_total / 1e3 / steps
        result[impl.name] = dict(times)
    return result


def table(result: dict[str, dict[str, float]], top: int) -> str:
    names = list(result)
    ours = result[names[0]]
    keys = sorted(set().union(*result.values()), key=lambda k: -ours.get(k, 0.0))[:top]
    lines = [f"{'operator (self ms per step)':<52}" + "".join(f"{n[:14]:>15}" for n in names)]
    for key in keys:
        lines.append(f"{key[:52]:<52}" + "".join(f"{result[n].get(key, 0.0):>15.1f}" for n in names))
    lines.append(f"{'total':<52}" + "".join(f"{sum(result[n].values()):>15.1f}" for n in names))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", default="vit_s16", choices=list(ROWS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="profiled training steps (after 2 warm-up steps)")
    parser.add_argument("--top", type=int, default=12, help="operators to list, by our self time")
    args = parser.parse_args(argv)
    print(table(profile_row(args.row, args.batch_size, args.steps), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
