"""`vit-repro study data-size CONFIG`, `vit-repro study compute CONFIG`, `vit-repro study augreg CONFIG`,
`vit-repro study report DIR`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_study_config
    from .runner import run_study

    config = load_study_config(args.config, kind=args.kind)
    if args.no_progress:  # also the libraries' own bars (dataset indexing, weight shards)
        import datasets
        from transformers.utils import logging

        datasets.disable_progress_bars()
        logging.disable_progress_bar()
    if args.output_dir:
        config.output_dir = args.output_dir
    launcher = "accelerate launch -m hf_vit_repro" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "vit-repro"
    command = " ".join([launcher, "study", args.kind, shlex.quote(args.config), *map(shlex.quote, args.overrides)]
                       + ([f"--output-dir {shlex.quote(args.output_dir)}"] if args.output_dir else []))
    try:
        study = run_study(config, args.overrides, fresh=args.fresh, progress=not args.no_progress, command=command)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped mid-step; finished runs and checkpoints are kept
        print(f"vit-repro study: interrupted; run the same command again to continue {config.folder}.", file=sys.stderr)
        return 130
    return 130 if study.get("interrupted") else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import runs
    from .report import write_report
    from .runner import STUDY_JSON

    folder = Path(args.study_dir)
    if not (folder / STUDY_JSON).is_file():
        raise FileNotFoundError(f"{folder} holds no {STUDY_JSON}; run `vit-repro study data-size|compute|augreg CONFIG` first.")
    study = runs.read_json(folder / STUDY_JSON)
    if not study.get("runs"):
        raise ValueError(f"{folder / STUDY_JSON} records no finished run yet, so there is nothing to report; run the "
                         "study's command again (`vit-repro study data-size|compute|augreg CONFIG`) to continue it.")
    written = write_report(study, folder)
    print("Wrote " + ", ".join(map(str, written)))
    return 0


def add_cli(subparsers) -> None:
    from ..cli_options import add_no_progress, add_output_dir

    p = subparsers.add_parser(
        "study",
        help="the paper's data-size and compute studies (Figures 3-5, Table 6) and AugReg's Figure 1",
        description="Pretrain a list of models (ViT, hybrid, BiT ResNet) on nested subsets of a dataset (data-size, "
        "paper Figures 3 and 4; augreg: at each augmentation/regularisation level, AugReg's Figure 1) or for given epochs "
        "(compute, Figure 5 and Table 6), transfer each by few-shot linear "
        "evaluation and/or fine-tuning, and write STUDY_DIR/study.json, study.md and the plot. Each run is an "
        "ordinary recipe run in STUDY_DIR/runs/; an interrupted study continues where it stopped. Data-parallel: "
        "`accelerate launch -m hf_vit_repro study ...` or `torchrun ... -m hf_vit_repro study ...`.",
    )
    sub = p.add_subparsers(dest="study_command", required=True, metavar="KIND")
    for kind, what in (("data-size", "accuracy against pretraining examples (Figures 3 and 4)"),
                       ("compute", "transfer accuracy against pretraining exaFLOPs (Figure 5, Table 6)"),
                       ("augreg", "accuracy against pretraining examples per augmentation/regularisation level (AugReg Fig. 1)")):
        q = sub.add_parser(kind, help=what, description=f"Run {'an' if kind == 'augreg' else 'a'} {kind} study config: {what}. The shipped miniature: "
                           f"recipes/studies/{kind.replace('-', '_')}.yaml (offline, 2 CPU cores, minutes).")
        q.add_argument("config", help=f"study config YAML, e.g. recipes/studies/{kind.replace('-', '_')}.yaml")
        q.add_argument("overrides", nargs="*", metavar="key=value",
                       help="recipe overrides for every run of the study, e.g. run.num_workers=1 smoke=true")
        add_output_dir(q, "the config's output_dir, else outputs/studies/<name>")
        q.add_argument("--fresh", action="store_true", help="delete the study's earlier runs first and start over")
        add_no_progress(q)
        q.set_defaults(func=_cmd_run, kind=kind)
    q = sub.add_parser("report", help="redraw a study's plot and table from its study.json",
                       description="Redraw STUDY_DIR's plot (data_size.png or compute.png) and study.md from study.json.")
    q.add_argument("study_dir", help="the study folder (holding study.json)")
    q.set_defaults(func=_cmd_report)
