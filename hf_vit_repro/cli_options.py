"""The command line's shared flags, each defined once: `--output-dir`, `--device`, `--data-dir`,
`--no-progress` and `--skip-unreadable` mean the same thing in every `vit-repro` subcommand that
has them. Subcommands add them with the `add_*` helpers below, never with their own
`add_argument`; `tests/test_cli_flags.py` walks every subcommand and checks that they agree.

Old spellings (`--output`, `--out`, `--cpu`) keep working for one release: they print a one-line
deprecation message on stderr and store into the new flag's destination. Only stdlib imports
here, so `vit-repro --help` stays fast."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Sequence

# The help text of each shared flag. `--output-dir` adds the subcommand's default after it.
OUTPUT_DIR_HELP = "where the results are written"
DEVICE_HELP = "torch device, e.g. cpu, cuda or cuda:1 (default: cuda if available, else cpu)"
DATA_DIR_HELP = ("local copy of the data laid out like the Hub repo (read instead of the Hub): FOLDER for the one "
                 "task, or TASK=FOLDER for one task among several (repeatable)")
NO_PROGRESS_HELP = "no progress bars (logs, CI)"
SKIP_UNREADABLE_HELP = ("skip images that cannot be decoded and count them in the results (default: stop, naming "
                        "the image)")

# The flags above, by option string: what the flag test checks.
SHARED_FLAGS = {
    "--output-dir": "output_dir",
    "--device": "device",
    "--data-dir": "data_dir",
    "--no-progress": "no_progress",
    "--skip-unreadable": "skip_unreadable",
}
# Old spelling -> the shared flag that replaces it (kept for one release).
DEPRECATED_SPELLINGS = {"--output": "--output-dir", "--out": "--output-dir", "--cpu": "--device cpu"}


class _Deprecated(argparse.Action):
    """An old spelling: warns on stderr (one line) and stores into the new flag's `dest`."""

    def __init__(self, option_strings, dest, new: str, nargs=None, const=None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; use "
              f"{self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_output_dir(parser: argparse.ArgumentParser, default_note: str, *, old: Sequence[str] = ()) -> None:
    """`--output-dir PATH` (dest `output_dir`, default None: the command resolves its own default, which
    `default_note` describes). `old`: deprecated spellings of this subcommand (`--output`, `--out`)."""
    parser.add_argument("--output-dir", default=None, metavar="PATH", help=f"{OUTPUT_DIR_HELP} (default: {default_note})")
    for spelling in old:
        parser.add_argument(spelling, dest="output_dir", action=_Deprecated, new="--output-dir", metavar="PATH",
                            help=argparse.SUPPRESS)


def add_device(parser: argparse.ArgumentParser, *, old_cpu: bool = False) -> None:
    """`--device DEVICE` (dest `device`, default None = cuda if available, else cpu). `old_cpu`: also the
    deprecated `--cpu` switch, which means `--device cpu`."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    if old_cpu:
        parser.add_argument("--cpu", dest="device", action=_Deprecated, new="--device cpu", nargs=0, const="cpu",
                            help=argparse.SUPPRESS)


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """`--data-dir FOLDER | TASK=FOLDER`, repeatable (dest `data_dir`, a list or None). Read it back with
    `data_dir_for` (a command of one task) or `data_dirs_for` (a command of several)."""
    parser.add_argument("--data-dir", action="append", default=None, metavar="[TASK=]FOLDER", help=DATA_DIR_HELP)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def add_skip_unreadable(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-unreadable", action="store_true", help=SKIP_UNREADABLE_HELP)


def _split(item: str) -> tuple[str | None, str]:
    """(TASK, FOLDER) of a `--data-dir` value; TASK is None for a bare FOLDER. A value with '=' is
    TASK=FOLDER unless it is itself an existing path (a folder whose name holds '=')."""
    task, sep, folder = item.partition("=")
    if not sep or os.path.exists(item):
        return None, item
    if not task or not folder:
        raise ValueError(f"--data-dir takes FOLDER or TASK=FOLDER, got {item!r}")
    return task, folder


def data_dirs_for(values: Iterable[str] | None, tasks: Sequence[str], canonical=lambda task: task) -> dict[str, str]:
    """{task: folder} of the `--data-dir` values of a command over `tasks`. A bare FOLDER is allowed
    only when there is exactly one task; `canonical` maps a TASK as typed to the name `tasks` uses."""
    tasks = list(tasks)
    out: dict[str, str] = {}
    for item in values or []:
        task, folder = _split(item)
        if task is None:
            if len(tasks) != 1:
                raise ValueError(f"--data-dir {item!r} names no task, but {len(tasks)} tasks are run; write "
                                 "--data-dir TASK=FOLDER for each")
            task = tasks[0]
        else:
            task = canonical(task)
        if task in out:
            raise ValueError(f"--data-dir gives two folders for {task!r} ({out[task]!r} and {folder!r}); give one")
        out[task] = folder
    return out


def data_dir_for(values: Iterable[str] | None, task: str) -> str | None:
    """The `--data-dir` folder of a command of one task (None without one). TASK=FOLDER must name `task`."""
    values = list(values or [])
    for item in values:
        named, folder = _split(item)
        if named is not None and named != task:
            raise ValueError(f"--data-dir {item!r} names task {named!r}, but this command reads {task!r}; write "
                             "--data-dir FOLDER")
    found = data_dirs_for(values, [task], canonical=lambda _: task)
    return found.get(task)


__all__ = [
    "OUTPUT_DIR_HELP", "DEVICE_HELP", "DATA_DIR_HELP", "NO_PROGRESS_HELP", "SKIP_UNREADABLE_HELP",
    "SHARED_FLAGS", "DEPRECATED_SPELLINGS",
    "add_output_dir", "add_device", "add_data_dir", "add_no_progress", "add_skip_unreadable",
    "data_dirs_for", "data_dir_for",
]
