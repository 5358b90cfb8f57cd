"""The documentation site (mkdocs.yml, docs/): it builds with --strict, every python block of every
page runs as written, and every `vit-repro ...` line of its shell blocks parses with the CLI's own
parser (recipe overrides included). The README's blocks: tests/test_readme.py."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from .doc_blocks import DOCS, ROOT, code_blocks, command_problem, parse_problem, run_python_blocks, shell_commands

PAGES = sorted(path for path in DOCS.rglob("*.md") if "_incoming" not in path.parts)
PYTHON_PAGES = [path for path in PAGES if code_blocks(path, "python")]


def _name(path):
    return str(path.relative_to(DOCS))


def _build(config, site_dir):
    """`mkdocs build --strict` as `make docs` runs it, into site_dir: (exit code, its log)."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return done.returncode, done.stdout + done.stderr


def test_site_builds_strict_with_the_api_reference_and_the_readme_quick_start(tmp_path):
    code, log = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert code == 0, log
    site = tmp_path / "site"
    # The API pages come from the docstrings (mkdocstrings resolved the modules, not an empty page) ...
    api = (site / "api" / "training" / "index.html").read_text()
    assert 'id="hf_vit_repro.training.load_recipe"' in api and 'id="hf_vit_repro.training.run_recipe"' in api
    # ... and the home page carries the README's quick start (pymdownx.snippets), not the marker line.
    home = (site / "index.html").read_text()
    assert "run_recipe" in home and "--8&lt;--" not in home and "--8<--" not in home
    models = (site / "models" / "index.html").read_text()
    assert "interpolate_pos_encoding" in models and "ViTReproConfig.from_variant(" in models and "--8&lt;--" not in models
    # The studies' figures travel with their pages.
    assert (site / "studies" / "data_size.png").is_file() and (site / "studies" / "compute.png").is_file()


def test_a_broken_link_fails_the_build_and_drafts_in_incoming_are_left_out(tmp_path):
    """The same config on a copy of docs/ with one broken link on a page and another in a draft
    under _incoming/: the build fails on the page's link and says nothing of the draft's."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("_incoming"))
    (docs / "demo.md").write_text((docs / "demo.md").read_text() + "\nSee [the missing page](no-such-page.md).\n")
    (docs / "_incoming").mkdir()
    (docs / "_incoming" / "draft.md").write_text("# Draft\n\n[not yet written](draft-target.md)\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["markdown_extensions"] = [
        {"pymdownx.snippets": {**ext["pymdownx.snippets"], "base_path": [str(ROOT)]}}
        if isinstance(ext, dict) and "pymdownx.snippets" in ext else ext
        for ext in config["markdown_extensions"]
    ]
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    code, log = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert code != 0
    assert "no-such-page.md" in log
    assert "draft" not in log


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_blocks_of_the_page_run(page, tmp_path, monkeypatch):
    """Each page's python blocks, in order, sharing one namespace, in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    namespace = run_python_blocks(page)
    assert len(namespace) > 1


def test_the_pages_have_python_blocks_to_run():
    """The parametrised test above cannot pass by finding nothing: the pages that showed Python
    in the README still do."""
    names = {_name(page) for page in PYTHON_PAGES}
    expected = {"models.md", "self-supervision.md", "data.md", "training.md", "evaluation.md", "paper.md",
                "analysis.md", "publishing.md", "deploy.md"}
    assert expected <= names, expected - names


@pytest.mark.parametrize("page", [page for page in PAGES if shell_commands(page)], ids=_name)
def test_cli_lines_of_the_page_parse(page):
    """Every `vit-repro ...` line (also under accelerate launch / torchrun) parses with the real
    argparse parser, and a `train RECIPE key=value ...` line's overrides are valid recipe keys."""
    problems = [f"{line}\n    {problem}" for line, args in shell_commands(page) if (problem := command_problem(args))]
    assert not problems, "\n".join(problems)


def test_the_cli_line_check_catches_a_renamed_flag_and_a_bad_recipe_key():
    assert parse_problem(shlex.split("evaluate outputs/run1 cifar10 --split test")) is None
    assert "--splitt" in parse_problem(shlex.split("evaluate outputs/run1 cifar10 --splitt test"))
    assert "invalid choice" in parse_problem(["evaluat", "outputs/run1", "cifar10"])
    # [--markdown]: the notation for an optional part; both spellings are checked.
    assert parse_problem(["data", "tasks", "[--markdown]"]) is None
    assert parse_problem(["data", "tasks", "[--markdwn]"]) is not None
    assert command_problem(["train", "recipes/finetune_cifar10.yaml", "optim.lr=0.003"]) is None
    assert "optim.lrr" in command_problem(["train", "recipes/finetune_cifar10.yaml", "optim.lrr=0.003"])


def test_analyze_command_runs_on_a_run_folder(tmp_path, monkeypatch):
    """The analysis page's `vit-repro analyze outputs/run1 --images ...` line, run as written on a
    tiny run folder at that path (fewer images, to stay fast): its `--images digits/` did not
    exist (issue 24)."""
    from hf_vit_repro import runs
    from hf_vit_repro.cli import main

    from .run_fixtures import make_run

    [args] = [args for _, args in shell_commands(DOCS / "analysis.md") if args[:2] == ["analyze", "outputs/run1"]]
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "outputs" / "run1", evaluated=False, figures=False)
    assert main(args + ["--num-images", "8", "--rollout-images", "1", "--no-progress"]) == 0
    assert (tmp_path / "outputs" / "run1" / runs.ANALYSIS_DIR / runs.ANALYSIS_JSON).is_file()


def test_a_shell_loop_is_checked_for_each_of_its_values():
    from .doc_blocks import cli_commands

    text = "for m in full lora; do\n  vit-repro vtab ckpt --method $m --output-dir runs/${m}\ndone\nvit-repro vtab ckpt\n"
    assert [args for _, args in cli_commands(text)] == [
        ["vtab", "ckpt", "--method", "full", "--output-dir", "runs/full"],
        ["vtab", "ckpt", "--method", "lora", "--output-dir", "runs/lora"],
        ["vtab", "ckpt"],
    ]
    problems = [command_problem(args) for _, args in cli_commands("for m in full lorra; do\n  vit-repro vtab ckpt --method $m\ndone\n")]
    assert problems[0] is None and "lorra" in problems[1]
