"""`vit-repro train RECIPE [key=value ...]`: the command-line door into `run_recipe`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .loop import TrainingDivergedError
from .recipe import all_keys, load_recipe
from .sweep import run_recipe


def _cmd_train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.print_recipe:
        print(recipe.to_yaml(), end="")
        return 0
    launcher = "accelerate launch -m hf_vit_repro" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "vit-repro"
    command = " ".join([launcher, "train", shlex.quote(args.recipe), *map(shlex.quote, args.overrides)])
    try:
        return _train_and_report(recipe, command, getattr(args, "publish", None))
    finally:  # the process group outlives the runs of a sweep (`distributed.finish_trackers`)
        from accelerate import PartialState

        if PartialState._shared_state:
            PartialState().destroy_process_group()


def _train_and_report(recipe, command: str, publish=None) -> int:
    """`publish`: what `run.push_to_hub` publishes the run with (the top-level CLI sets `hub.push_run`)."""
    try:
        result = run_recipe(recipe, command=command, publish=publish)
    except TrainingDivergedError as err:
        print(f"vit-repro train: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # a second Ctrl-C: stopped mid-step, without a new checkpoint
        print(f"vit-repro train: interrupted; {recipe.output_dir} keeps its last checkpoint: run the same command "
              "again to continue from it.", file=sys.stderr)
        return 130
    if result.interrupted:
        return 130
    from accelerate import PartialState

    if PartialState().is_main_process and result.completed:
        loss = "n/a" if result.final_train_loss is None else f"{result.final_train_loss:.4f}"
        acc = "" if result.eval_accuracy is None else f", eval accuracy {result.eval_accuracy:.4f}"
        print(f"Wrote {result.run_dir} ({result.steps} steps, final train loss {loss}{acc}).")
    return 0


def add_cli(subparsers) -> None:
    keys = ", ".join(sorted(k for k in all_keys() if "." in k))
    p = subparsers.add_parser(
        "train",
        help="train a recipe (pretraining or fine-tuning) with Accelerate",
        description="Run a recipe from recipes/ (pretraining or fine-tuning, the paper's settings). In one "
        "process: `vit-repro train RECIPE [key=value ...]`; data-parallel: `accelerate launch [--config_file "
        "recipes/accelerate/...] -m hf_vit_repro train RECIPE ...`. Overrides are `section.field=value` (YAML "
        "values; bare field names work where unambiguous, e.g. `smoke=true`, `resume=auto`, `lr=0.003`). "
        "The run folder (run.output_dir, default outputs/<name>) receives recipe.yaml, checkpoints/, final/, "
        "logs/ (TensorBoard), metrics/ and train_summary.json.",
        epilog=f"Recipe keys: {keys}; and model.config.<any ViTReproConfig field, or BitConfig field for a BiT variant>.",
    )
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/finetune_cifar10.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=0.01 smoke=true")
    p.add_argument("--print", dest="print_recipe", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=_cmd_train)
