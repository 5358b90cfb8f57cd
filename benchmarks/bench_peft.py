"""What each parameter-efficient transfer method (`train.method`) costs in training, against full
fine-tuning: training images/s and peak training memory, one row per method, same model, same
inputs, measured in one process, interleaved method by method (full, linear, bitfit, ... full,
linear, ...), median of the repeats after two warm-up steps each.

Every method trains with what `vit-repro vtab --method` uses: SGD with momentum 0.9 (torch's
fused kernel, `training.build_optimizer`) over the parameters the method trains, cross entropy on
a 100-way head (random labels), fp32, random weights (the speed does not depend on them).

Columns:
  trainable     parameters the method trains, and their fraction of the model's parameters
  train img/s   forward + cross-entropy + backward + SGD step
  train MB      CPU: memory a training step holds at its peak = all parameters + the gradients
                and momentum of the trained ones + the activations autograd saves for backward
                (each storage once, saved-tensor hooks). CUDA: torch.cuda.max_memory_allocated.

    python benchmarks/bench_peft.py                       # ViT-B/16, batch 8 at 224, on the CPU
    python benchmarks/bench_peft.py --device cuda --batch-size 64 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import (  # noqa: E402
    Impl,
    add_measurement_arguments,
    default_results_path,
    interleaved_samples,
    save_results,
    saved_activation_bytes,
)

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification  # noqa: E402
from hf_vit_repro.training import OptimRecipe, build_optimizer  # noqa: E402
from hf_vit_repro.training import peft_methods  # noqa: E402

NUM_CLASSES = 100
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)


def build(method: str, variant: str, image_size: int, device: str, tiny: bool = False) -> Impl:
    """A ViT with `method`'s options (default settings), frozen as the method freezes it, and its optimizer."""
    torch.manual_seed(0)
    updates = peft_methods.config_updates(method)
    if tiny:
        config = ViTReproConfig(image_size=image_size, num_labels=NUM_CLASSES, **TINY, **updates)
    else:
        config = ViTReproConfig.from_variant(variant, image_size=image_size, num_labels=NUM_CLASSES, **updates)
    model = peft_methods.apply_method(ViTReproForImageClassification(config).to(device), method)
    impl = Impl(method, model, lambda x, m=model: m(pixel_values=x).logits)
    impl.optimizer = build_optimizer(model, OptimRecipe(optimizer="sgd"))
    return impl


def train_memory_mb(impl: Impl, x: torch.Tensor, labels: torch.Tensor) -> float:
    model = impl.model.train()
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        F.cross_entropy(impl.logits(x), labels).backward()
        impl.optimizer.step()
        impl.optimizer.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_allocated() / 2**20
    every = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    activations = saved_activation_bytes(lambda: F.cross_entropy(impl.logits(x), labels))
    model.zero_grad(set_to_none=True)
    return (every + 2 * trained + activations) / 2**20  # weights + gradients + SGD momentum + activations


def table(rows: list[dict]) -> str:
    full = next(r for r in rows if r["method"] == "full")
    lines = ["| method | trainable | trainable (%) | train img/s | vs full | train MB | vs full |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['trainable_parameters'] / 1e6:.2f}M | {100 * r['trainable_fraction']:.3g} | "
            f"{r['train_img_s']:.2f} | {r['train_img_s'] / full['train_img_s']:.2f}x | {r['train_mb']:.0f} | "
            f"{r['train_mb'] / full['train_mb']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="ViT-B/16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--methods", default=",".join(peft_methods.METHODS),
                        help="comma-separated, from: " + ", ".join(peft_methods.METHODS) + " (full is always run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model (a check that the script runs)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: a new file in results/)")
    add_measurement_arguments(parser)
    args = parser.parse_args(argv)
    methods = ["full"] + [m for m in args.methods.split(",") if m and m != "full"]
    unknown = [m for m in methods if m not in peft_methods.METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(peft_methods.METHODS)}")
    impls = [build(m, args.variant, args.image_size, args.device, args.tiny) for m in methods]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(args.device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator).to(args.device)
    samples = interleaved_samples(impls, x, labels, "train", args.repeats, args.steps)
    rows = []
    for impl in impls:
        trainable, total = peft_methods.trainable_parameters(impl.model)
        rows.append({"method": impl.name, "variant": "tiny" if args.tiny else args.variant, "image_size": args.image_size,
                     "batch_size": args.batch_size, "trainable_parameters": trainable, "num_parameters": total,
                     "trainable_fraction": trainable / total, "train_img_s": statistics.median(samples[impl.name]),
                     "train_img_s_samples": samples[impl.name], "train_mb": train_memory_mb(impl, x, labels)})
    print(table(rows))
    machine = f"{args.device}-{torch.get_num_threads()}threads"
    save_results(args.out or default_results_path(f"peft-{machine}"), machine, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
