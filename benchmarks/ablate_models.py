"""Before/after rows for each of the model's fast paths: the same model with the path on and off.

Every pair is measured like `bench_models.py` (same process, interleaved A B A B ..., median of
the repeats after warm-up, fp32, random weights) on copies of one model, so the ratio isolates
the change. Paths:

  class_token_last_block  the classifier runs its last block on the class token alone (token
                          pooling); off = classifier on the base model's full output
  channels_last_cnn       the hybrid's BiT CNN in NHWC; off = NCHW
  mlp_recompute           GELU recomputed in backward (a memory option, off by default); the
                          "on" column is the option, so expect < 1x speed and < 1x memory
  block_checkpointing     activation checkpointing of every block (a memory option, off by
                          default; transformers' mechanism)
  fused_adamw             torch's fused AdamW; off = its default multi-tensor AdamW
  native_inference        CPU inference through torch's fused encoder-layer kernel; off = the
                          composed modules

    python benchmarks/ablate_models.py                       # all paths (about 6 min here)
    python benchmarks/ablate_models.py --paths fused_adamw --repeats 7
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import (  # noqa: E402
    Impl,
    add_measurement_arguments,
    cpu_machine,
    default_results_path,
    interleaved_samples,
    save_results,
    train_memory_mb,
)

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification  # noqa: E402


def _logits(model):
    return lambda x: model(x).logits


def _full_path_logits(model):
    return lambda x: model.classifier(model.vit(x).pooler_output)


def _without_native_kernel(model):
    for layer in model.vit.layers:
        layer._use_native_fast_path = lambda *args: False
    return _logits(model)


def _nchw(model):
    model.vit.embeddings.patch_embeddings.channels_last = False
    return _logits(model)


def _block_checkpointing(model):
    model.activation_checkpointing_enable()
    return _logits(model)


def _recompute(model):
    model.set_mlp_activation_recompute()
    return _logits(model)


# path -> (variant, modes, build "off" logits, build "on" logits, optimizer kwargs off / on)
PATHS = {
    "class_token_last_block": ("ViT-S/16", ("infer", "train"), _full_path_logits, _logits, None),
    "channels_last_cnn": ("R50+ViT-B/16", ("infer", "train"), _nchw, _logits, None),
    "mlp_recompute": ("ViT-S/16", ("train",), _logits, _recompute, None),
    "block_checkpointing": ("ViT-S/16", ("train",), _logits, _block_checkpointing, None),
    "fused_adamw": ("ViT-S/16", ("train",), _logits, _logits, ({"foreach": True}, {"fused": True})),
    "native_inference": ("ViT-S/16", ("infer",), _without_native_kernel, _logits, None),
}


def run_path(path: str, batch_size: int, repeats: int, steps: int) -> dict:
    variant, modes, off, on, optimizers = PATHS[path]
    torch.manual_seed(0)
    model = ViTReproForImageClassification(ViTReproConfig.from_variant(variant, num_labels=1000))
    with torch.no_grad():  # zero-initialised head and CNN unit scales would hide logit differences
        for name, param in model.named_parameters():
            if name.endswith("weight") and not param.any():
                param.normal_(std=0.02)
    impls = []
    for name, make_logits, opt_kwargs in zip(("off", "on"), (off, on), optimizers or ({"fused": True},) * 2):
        copy_ = copy.deepcopy(model)
        impl = Impl(name, copy_, make_logits(copy_))
        impl.optimizer = torch.optim.AdamW(copy_.parameters(), lr=1e-5, **opt_kwargs)
        impls.append(impl)
    x = torch.randn(batch_size, 3, 224, 224)
    labels = torch.randint(0, 1000, (batch_size,))
    for impl in impls:
        impl.model.eval()
    with torch.no_grad():
        gap = (impls[0].logits(x) - impls[1].logits(x)).abs().max().item()
    result = {"path": path, "variant": variant, "batch_size": batch_size, "max_abs_logit_difference": gap}
    for mode in modes:
        samples = interleaved_samples(impls, x, labels, mode, repeats, steps)
        for impl in impls:
            result[f"{mode}_img_s_{impl.name}"] = statistics.median(samples[impl.name])
        result[f"{mode}_on_vs_off"] = result[f"{mode}_img_s_on"] / result[f"{mode}_img_s_off"]
    if "train" in modes:
        mb = [train_memory_mb(impl, x, labels) for impl in impls]
        result.update(train_mb_off=mb[0], train_mb_on=mb[1], memory_on_vs_off=mb[1] / mb[0])
    return result


def table(results: list[dict]) -> str:
    lines = [f"{'path':<24} {'variant':<13} {'infer on/off':>12} {'train on/off':>12} {'memory on/off':>13} {'max |dlogit|':>12}"]
    for r in results:
        cells = [f"{r[key]:.3f}x" if key in r else "-" for key in ("infer_on_vs_off", "train_on_vs_off", "memory_on_vs_off")]
        lines.append(
            f"{r['path']:<24} {r['variant']:<13} {cells[0]:>12} {cells[1]:>12} {cells[2]:>13} {r['max_abs_logit_difference']:>12.1e}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {list(PATHS)}")
    add_measurement_arguments(parser)
    parser.add_argument("--out", default=None,
                        help="results JSON (default: a new benchmarks/results/ablation_<machine>-<date>-<time>.json)")
    args = parser.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown paths {unknown}; choose from {list(PATHS)}")
    from tqdm import tqdm

    results = [run_path(path, args.batch_size, args.repeats, args.steps) for path in tqdm(paths, desc="paths")]
    print(table(results))
    machine = cpu_machine()
    save_results(Path(args.out) if args.out else default_results_path(f"ablation_{machine}"), machine, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
