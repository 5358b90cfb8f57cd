"""`vit-repro vtab`: the VTAB-1k runner's command (`hf_vit_repro.vtab.runner` does the work).

    vit-repro vtab RUN_OR_CHECKPOINT [--tasks all|natural|specialized|structured|NAME ...]
"""

from __future__ import annotations

from ..precision import PRECISIONS
from ..training.peft_methods import METHODS
from . import runner, selection  # looked up on each call, so tests (and callers) may replace runner's functions
from .bit_resolution import RESOLUTION_RULES
from .runner import DEFAULT_PROTOCOL, PLOT, PROTOCOLS, TABLE, resolve_tasks


def _cmd_vtab(args) -> int:
    from ..cli_options import data_dirs_for

    # `--tasks a b key=value` also works: overrides typed after the task names are overrides.
    tasks = [t for t in args.tasks if "=" not in t] or ["all"]
    data_dirs = {}
    if args.data_dir:  # a bare FOLDER is the one task's, when one task is run
        data_dirs = data_dirs_for(args.data_dir, resolve_tasks(tasks), canonical=lambda task: resolve_tasks(task)[0])
    overrides = list(args.overrides) + [t for t in args.tasks if "=" in t]
    if args.no_progress:
        overrides.append("run.progress_bar=false")
    if args.method is not None:
        overrides.append(f"train.method={args.method}")
    if args.precision is not None:  # one switch for fine-tuning and scoring (the recipe's run.mixed_precision)
        overrides.append('run.mixed_precision="%s"' % {"fp32": "no"}.get(args.precision, args.precision))
    protocol, grid = args.protocol, None
    if args.select:
        if protocol not in (DEFAULT_PROTOCOL, "select"):
            raise ValueError(f"--select is a protocol of its own (VPT's grid); it does not combine with --protocol {protocol}")
        protocol = "select"
    if args.select_lr or args.select_weight_decay:
        if protocol != "select":
            raise ValueError("--select-lr / --select-weight-decay set the grid of --select; add --select")
        grid = {**selection.default_grid(), **{k: v for k, v in (("lr", args.select_lr),
                                                                  ("weight_decay", args.select_weight_decay)) if v}}
    record = runner.run_vtab(
        args.checkpoint, tasks, protocol=protocol, output_dir=args.output_dir, recipe=args.recipe, overrides=overrides,
        data_root=args.data_root, data_dirs=data_dirs, pretraining_data=args.pretraining_data,
        keep_checkpoints=args.keep_checkpoints, selection_grid=grid, resolution=args.resolution_rule,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(runner.vtab_report(record), end="")
        print(f"Wrote {record['path']}, {TABLE} and {PLOT}")
    return 0


def add_vtab_cli(subparsers) -> None:
    from ..cli_options import add_data_dir, add_no_progress, add_output_dir

    p = subparsers.add_parser(
        "vtab",
        help="the VTAB-1k benchmark: the paper's protocol by default (or a per-task sweep), resumable",
        description="Run VTAB-1k for a checkpoint. --protocol paper (default): the paper's one setting for all tasks "
        "(learning rate 0.01, 2500 steps, batch 512, 384 px, no per-task sweep), fine-tuned on all 1000 images "
        "(train800val200), the full test split scored. --protocol sweep: per task, fine-tune on train800 for each "
        "learning rate of the sweep, pick the best on val200, then fine-tune on all 1000 (not the paper's protocol; "
        "never compared with its numbers). --protocol bit-hyperrule: BiT-HyperRule's one setting for a BiT ResNet "
        "(recipes/finetune_bit_vtab.yaml: lr 0.003, 500 steps, step decay). Writes vtab.json (protocol, per-task accuracy, settings, rows, group "
        "means, overall mean, the paper's matching Table 9 row), vtab.md (this run and the paper in separate "
        "columns, or 'no matching row') and vtab.png; a finished task is not re-run. key=value arguments after the "
        "checkpoint (or after the task names) override the recipe as in `vit-repro train` (e.g. train.steps=500, "
        "smoke=true); with --protocol paper a change to its settings is recorded as a departure.",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id")
    p.add_argument("--tasks", nargs="+", default=["all"],
                   help="all (default), natural, specialized, structured, or task names (dtd, vtab/eurosat, ...)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                   help="paper (default): one setting for all tasks; sweep: a learning rate chosen per task on val200; "
                   "bit-hyperrule: BiT-HyperRule's one setting (BiT ResNets); select: VPT's grid (same as --select)")
    p.add_argument("--select", action="store_true",
                   help="VPT's selection protocol (--method vpt-shallow / vpt-deep): per task a grid of learning rates x "
                   "weight decays fine-tuned on train800 and chosen on val200, then train800val200 with the chosen "
                   "setting; VPT's schedule (SGD, cosine, 100 epochs, batch 128, 224 px); resumable")
    p.add_argument("--select-lr", type=float, nargs="+", default=None, metavar="LR",
                   help="the grid's learning rates per 256 images (default VPT's: 50 25 10 5 2.5 1 0.5 0.25 0.1 0.05; "
                   "each multiplied by batch / 256 as VPT does)")
    p.add_argument("--select-weight-decay", type=float, nargs="+", default=None, metavar="WD",
                   help="the grid's weight decays (default VPT's: 0.01 0.001 0.0001 0)")
    p.add_argument("--resolution-rule", choices=RESOLUTION_RULES, default="paper",
                   help="paper (default): every task at the recipe's resolution (384 px, the paper's VTAB protocol); "
                   "bit-hyperrule (with --protocol bit-hyperrule): BiT's code's rule per task, 160 -> 128 px for images "
                   "below 96 x 96 (CIFAR-100, SVHN, EuroSAT, dSprites), else 512 -> 480")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="which parameters are trained: full (default, the paper's fine-tuning), linear (the head), "
                   "bitfit (biases and head), lora (peft LoRA on qkv/o_proj/fc1/fc2), vpt-shallow / vpt-deep (prompt "
                   "tokens), adapter (AdaptFormer); options with train.method_options={...}")
    p.add_argument("--pretraining-data", default=None, metavar="NAME",
                   help="the checkpoint's pretraining data (ImageNet, ImageNet-21k, JFT-300M), to find the paper's "
                   "Table 9 row (default: read from the run's recipe when it was a pretraining run)")
    p.add_argument("--recipe", default=None, help="base fine-tuning recipe (default: recipes/finetune_vtab.yaml, "
                   "recipes/finetune_bit_vtab.yaml for --protocol bit-hyperrule)")
    p.add_argument("--data-root", default=None, help="folder holding local copies at <root>/<Hub id of the task>")
    add_data_dir(p)
    add_output_dir(p, "the run folder, else outputs/vtab/...", old=["--output"])
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep training checkpoints and sweep models of finished tasks (default: deleted)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fine-tuning and scoring precision: auto (bf16 on GPUs and on CPUs with AMX or AVX512-BF16, "
                   "else fp32), bf16 or "
                   "fp32 (default: the recipe's run.mixed_precision, auto in recipes/finetune_vtab.yaml)")
    add_no_progress(p)  # the recipe's run.progress_bar=false
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (right after the checkpoint)")
    p.set_defaults(func=_cmd_vtab)


def _cmd_vtab_methods(args) -> int:
    from .methods import write_methods_table

    paths = write_methods_table(args.results, args.output_dir or ".")
    print(paths["table"].read_text(encoding="utf-8"), end="")
    print(f"Wrote {paths['table']}, {paths['summary'].name} and {paths['tasks'].name}")
    return 0


def add_vtab_methods_cli(subparsers) -> None:
    from ..cli_options import add_output_dir

    p = subparsers.add_parser(
        "vtab-methods",
        help="one table of VTAB-1k results by parameter-efficient method, beside the published numbers",
        description="Read one `vit-repro vtab` output folder (or vtab.json) per method and write vtab_methods.md, "
        "vtab_methods.csv (per method: trainable parameters and fraction, Natural / Specialized / Structured means, "
        "mean over tasks and mean of groups, the published row's means over the same tasks) and vtab_methods_tasks.csv "
        "(per method and task: this run and the published accuracy). Published: ViT-B/16 ImageNet-21k rows of "
        "hf_vit_repro.paper_results.peft_vtab, with their sources.",
    )
    p.add_argument("results", nargs="+", help="vit-repro vtab output folders or vtab.json files, one per method")
    add_output_dir(p, "the current folder")
    p.set_defaults(func=_cmd_vtab_methods)


def add_cli(subparsers) -> None:
    """`vit-repro vtab` and `vit-repro vtab-methods` (hf_vit_repro.cli adds each module's subcommands through
    `add_cli`)."""
    add_vtab_cli(subparsers)
    add_vtab_methods_cli(subparsers)


__all__ = ["add_cli", "add_vtab_cli", "add_vtab_methods_cli"]
