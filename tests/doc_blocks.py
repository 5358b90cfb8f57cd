"""The code blocks of the README and the docs pages, for tests/test_readme.py and tests/test_docs.py:
python blocks run as written, and every `vit-repro ...` line of a shell block parses with the CLI's
own argument parser (so a renamed flag or subcommand fails a test)."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# A fenced block, also indented under a list item: its language and body, and the line its body
# starts on (for tracebacks).
_FENCE = re.compile(r"^([ \t]*)```(?!`)([\w-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = ("bash", "shell", "sh", "console")


def code_blocks(path: Path, *languages: str) -> list[tuple[int, str]]:
    """(first body line, body) of each fenced block in `languages`, in page order."""
    text = path.read_text()
    return [
        (text.count("\n", 0, match.start(3)) + 1, textwrap.dedent(match.group(3)))
        for match in _FENCE.finditer(text)
        if match.group(2) in languages
    ]


def run_python_blocks(path: Path) -> dict:
    """Execute the page's python blocks in order in one namespace (in the current directory);
    a failure's traceback names the page and its line."""
    namespace: dict = {"__name__": f"docs:{path.name}"}
    for line, body in code_blocks(path, "python"):
        exec(compile("\n" * (line - 1) + body, str(path), "exec"), namespace)
    return namespace


def optional_spellings(tokens: list[str]) -> tuple[list[str], list[str]]:
    """`[--markdown]`, `[key=value ...]`: the docs' notation for optional parts. The arguments with
    those parts left out, and with them kept (brackets removed); both must parse."""
    without, kept, depth = [], [], 0
    for token in tokens:
        inner = token
        if token.startswith("["):
            depth, inner = depth + 1, inner[1:]
        closes = depth > 0 and token.endswith("]")
        if closes:
            inner = inner[:-1]
        if depth == 0:
            without.append(token)
        if inner:
            kept.append(inner)
        if closes:
            depth -= 1
    return without, kept


def cli_commands(text: str) -> list[tuple[str, list[str]]]:
    """(line, arguments after `vit-repro`) for each `vit-repro ...` command of a shell block, also
    when started as `python -m hf_vit_repro`, `accelerate launch ... -m hf_vit_repro` or
    `torchrun ... -m hf_vit_repro`. Continuation lines are joined; comments are dropped."""
    commands = []
    loops: list[tuple[str, list[str]]] = []  # the enclosing `for VAR in VALUES; do` loops
    for line in text.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        if not tokens:
            continue
        if tokens[0] == "for" and "in" in tokens and tokens[-1] == "do":
            loops.append((tokens[1], [value.rstrip(";") for value in tokens[tokens.index("in") + 1:-1] if value != ";"]))
            continue
        if tokens == ["done"] and loops:
            loops.pop()
            continue
        if loops:  # each value of each loop variable, so `--method $method` is checked for every method
            for values in itertools.product(*(values for _, values in loops)):
                expanded = line
                for (name, _), value in zip(loops, values):
                    expanded = expanded.replace("${" + name + "}", value).replace("$" + name, value)
                commands += cli_commands(expanded)
            continue
        if Path(tokens[0]).name == "vit-repro":
            args = tokens[1:]
        elif "hf_vit_repro" in tokens and tokens[tokens.index("hf_vit_repro") - 1] == "-m":
            args = tokens[tokens.index("hf_vit_repro") + 1:]
        else:
            continue
        commands.append((line.strip(), args))
    return commands


def shell_commands(path: Path) -> list[tuple[str, list[str]]]:
    return [command for _, body in code_blocks(path, *SHELL_LANGUAGES) for command in cli_commands(body)]


def parse_problem(args: list[str]) -> str | None:
    """None when both spellings of the arguments (optional groups left out, and kept) parse with
    `vit-repro`'s parser; otherwise argparse's message. Nothing is run."""
    from hf_vit_repro.cli import build_parser

    for argv in optional_spellings(args):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build_parser().parse_args(argv)
        except SystemExit:
            return f"{shlex.join(argv)}: {stderr.getvalue().strip().splitlines()[-1]}"
    return None


def command_problem(args: list[str]) -> str | None:
    """`parse_problem`, and for `train RECIPE key=value ...` with a recipe of this repository: the
    overrides name recipe keys that exist (read, not run)."""
    problem = parse_problem(args)
    if problem is None and args[0] == "train" and (ROOT / args[1]).is_file():
        from hf_vit_repro.training import load_recipe

        try:
            load_recipe(ROOT / args[1], [arg for arg in optional_spellings(args[2:])[1] if "=" in arg])
        except ValueError as err:
            problem = str(err)
    return problem
