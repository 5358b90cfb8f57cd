"""Parameter-efficient transfer in miniature, offline: a pretrained tiny ViT transferred to
scikit-learn's digits with every `train.method` (full, linear, bitfit, lora, vpt-shallow,
vpt-deep, adapter), one table of (method, trainable parameters, their fraction, test accuracy).

    python benchmarks/peft_digits.py                                  # the demo's ViT, ~10 min on 2 cores
    python benchmarks/peft_digits.py --checkpoint outputs/demo/vit_pretrain
    python benchmarks/peft_digits.py --smoke --output-dir /tmp/peft   # a few steps per method (tests)

The checkpoint: `--checkpoint` (a run folder or save_pretrained folder), else the demo's
pretrained ViT (`outputs/demo/vit_pretrain`, written by `make demo`) when it exists, else that
ViT pretrained on the spot with its recipe (recipes/demo/pretrain_vit.yaml: width 64, 4 layers,
16 px, digits/train). Every method fine-tunes it with the demo's fine-tuning recipe
(recipes/demo/finetune_vit.yaml: SGD with momentum, learning rate 0.03, 8 epochs at 32 px, a
zero-initialised head, digits/train; accuracy on the 300 held-out digits/test images) and the
method's default options (`peft_methods.METHOD_OPTIONS`). One learning rate for all methods: no
per-method selection (the methods' papers tune theirs). The pretraining data are the same
task's training images, so this shows the machinery and the trainable-parameter column, not how
the methods rank on a new task (that is `vit-repro vtab --method`).

Writes OUTPUT_DIR/peft_digits.json and peft_digits.md (the table), and one run folder per method
(OUTPUT_DIR/<method>/, resumed if interrupted). `--smoke` shrinks every run to a few CPU steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from hf_vit_repro import runs
from hf_vit_repro.training import load_recipe, run_recipe
from hf_vit_repro.training.peft_methods import METHODS

DEMO_CHECKPOINT = Path("outputs/demo/vit_pretrain")
PRETRAIN_RECIPE = "recipes/demo/pretrain_vit.yaml"
FINETUNE_RECIPE = "recipes/demo/finetune_vit.yaml"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pretrained(checkpoint: str | None, output_dir: Path, overrides: list[str], progress_bar: bool) -> str:
    """The checkpoint to transfer: given, the demo's, or the demo's ViT pretrained now."""
    if checkpoint is not None:
        return checkpoint
    if (DEMO_CHECKPOINT / runs.FINAL_DIR).is_dir() and not overrides:
        return str(DEMO_CHECKPOINT)
    recipe = load_recipe(PRETRAIN_RECIPE, [*overrides, f"run.output_dir={output_dir / 'pretrain'}",
                                           f"run.progress_bar={str(progress_bar).lower()}", "run.trackers=[]"])
    return str(run_recipe(recipe).run_dir)


def transfer(checkpoint: str, methods: list[str], output_dir: Path, overrides: list[str], progress_bar: bool) -> dict:
    """Fine-tune `checkpoint` with each method; the results record (also written as JSON + markdown)."""
    rows = []
    for method in methods:
        print(f"=== {method} ===", flush=True)
        recipe = load_recipe(FINETUNE_RECIPE, [*overrides, f"model.init_from={checkpoint}", f"train.method={method}",
                                               f"run.output_dir={output_dir / method}",
                                               f"run.progress_bar={str(progress_bar).lower()}", "run.trackers=[]"])
        start = time.perf_counter()
        result = run_recipe(recipe)
        summary = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)
        trainable, total = summary["trainable_parameters"], summary["num_parameters"]
        rows.append({"method": method, "trainable_parameters": trainable, "num_parameters": total,
                     "trainable_fraction": trainable / total, "accuracy": result.eval_accuracy,
                     "steps": result.steps, "train_time_s": round(result.train_time_s, 1),
                     "wall_time_s": round(time.perf_counter() - start, 1), "run_dir": str(result.run_dir)})
    record = {
        "checkpoint": checkpoint,
        "recipe": FINETUNE_RECIPE,
        "overrides": overrides,
        "task": "digits (scikit-learn; train 1497 / test 300 images)" if not overrides else "digits",
        "machine": {"cpu": _cpu(), "python": platform.python_version()},
        "command": " ".join(["python", "benchmarks/peft_digits.py", *sys.argv[1:]]),
        "rows": rows,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json(output_dir / "peft_digits.json", record)
    (output_dir / "peft_digits.md").write_text(markdown(record), encoding="utf-8")
    return record


def markdown(record: dict) -> str:
    lines = ["| method | trainable parameters | trainable (%) | test accuracy (%) | steps | train time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in record["rows"]:
        lines.append(f"| {row['method']} | {row['trainable_parameters']:,} | {100 * row['trainable_fraction']:.2f} | "
                     f"{100 * row['accuracy']:.2f} | {row['steps']} | {row['train_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", default=None, help="pretrained run or checkpoint folder (default: the demo's, "
                        "else pretrained now)")
    parser.add_argument("--output-dir", default="outputs/peft_digits", help="where the runs and the table go")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--smoke", action="store_true", help="a few CPU steps per run (smoke=true)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    overrides = ["smoke=true"] if args.smoke else []
    output_dir = Path(args.output_dir)
    checkpoint = pretrained(args.checkpoint, output_dir, overrides, not args.no_progress)
    record = transfer(checkpoint, methods, output_dir, overrides, not args.no_progress)
    print(markdown(record), end="")
    print(f"Written: {output_dir / 'peft_digits.json'}, {output_dir / 'peft_digits.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
