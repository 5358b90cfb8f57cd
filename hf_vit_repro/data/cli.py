"""`vit-repro data ...`: look at the task registry, check that a dataset loads, export VTAB-1k
indices. Thin wrappers around `registry` and `loading`."""

from __future__ import annotations

import argparse
import collections


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cli_options import add_data_dir

    parser.add_argument("name", help="registry task (see `vit-repro data tasks`), Hub dataset id, or local folder")
    add_data_dir(parser)
    parser.add_argument("--image-column", default=None, help="the source's image column, if not the registry's / guessable")
    parser.add_argument("--label-column", default=None, help="the source's label column, if not the registry's / guessable")


def _cmd_tasks(args: argparse.Namespace) -> int:
    from .registry import TASKS, registry_markdown

    if args.markdown:
        print(registry_markdown())
        return 0
    print(f"{'task':<28} {'classes':>7}  {'group':<11} {'splits':<24} source")
    for spec in TASKS.values():
        print(f"{spec.name:<28} {spec.num_classes:>7}  {spec.vtab_group or '-':<11} {', '.join(spec.splits):<24} {spec.hub_id or 'local'}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from ..cli_options import data_dir_for
    from .loading import load_task

    dataset = load_task(args.name, args.split, data_dir_for(args.data_dir, args.name), image_column=args.image_column,
                        label_column=args.label_column, seed=args.seed)
    labels = dataset.features["label"]
    counts = collections.Counter(int(v) for v in dataset["label"])
    print(f"{args.name} [{args.split}]: {len(dataset)} images, {labels.num_classes} classes, "
          f"{len(counts)} present (most common: {counts.most_common(3)})")
    for i in range(min(args.rows, len(dataset))):
        row = dataset[i]
        image = row["image"]
        print(f"  row {i}: label {row['label']} ({labels.int2str(row['label'])}), image {image.mode} {image.size[0]}x{image.size[1]}")
    return 0


def _cmd_export_vtab(args: argparse.Namespace) -> int:
    from ..cli_options import data_dir_for
    from .loading import export_vtab1k_indices

    path = export_vtab1k_indices(args.name, args.output, data_dir_for(args.data_dir, args.name), seed=args.seed,
                                 image_column=args.image_column, label_column=args.label_column)
    print(f"Wrote {path} (load_task({args.name!r}, 'train800', indices={str(path)!r}) reads it back)")
    return 0


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="the task registry, dataset checks, VTAB-1k index export",
        description="Look at the task registry (the VTAB-1k tasks, the paper's transfer and pretraining sets), "
        "check that a dataset loads into image/label, and export the VTAB-1k rows.",
    )
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = sub.add_parser("tasks", help="print the task registry")
    p.add_argument("--markdown", action="store_true", help="the full table (columns, label rules, why each repo)")
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("show", help="load a split and print its size, classes and first rows")
    _add_source_arguments(p)
    p.add_argument("--split", default="test", help="train, test, validation, train800, val200, train800val200 (default test)")
    p.add_argument("--rows", type=int, default=3, help="rows to print (default 3)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the VTAB-1k draws: val200 where its official rows are not published, both parts "
                   "for tasks outside VTAB (default 0)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("export-vtab", help="write the VTAB-1k train800/val200 row indices of a task to JSON")
    _add_source_arguments(p)
    p.add_argument("output", help="JSON file to write")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the VTAB-1k draws: val200 where its official rows are not published, both parts "
                   "for tasks outside VTAB (default 0)")
    p.set_defaults(func=_cmd_export_vtab)
