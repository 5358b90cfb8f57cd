"""The README's Python snippets run as written, its `vit-repro` lines parse, and its table of
commands names every subcommand. The docs pages: tests/test_docs.py."""

from .doc_blocks import README, code_blocks, command_problem, run_python_blocks, shell_commands


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    assert len(code_blocks(README, "python")) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = run_python_blocks(README)
    assert namespace["logits"].shape == (1, 10)
    assert (tmp_path / "my-vit" / "modeling_vit_repro.py").exists()
    assert type(namespace["model"]).__name__ == "ViTReproForImageClassification"
    # The quick start fine-tuned on the image folder it wrote (not on a stand-in task), and the
    # dry-run push folder holds that run's weights and card.
    assert namespace["recipe"].data.task == "my-images"
    assert (tmp_path / "outputs" / "mine" / "metrics" / "my-images_test.json").is_file()
    assert {"README.md", "model.safetensors", "config.json"} <= {p.name for p in namespace["folder"].iterdir()}


def test_readme_cli_lines_parse():
    commands = shell_commands(README)
    assert len(commands) >= 5
    problems = [f"{line}: {problem}" for line, args in commands if (problem := command_problem(args))]
    assert not problems, problems


def test_readme_command_table_names_every_subcommand():
    """A subcommand added to `vit-repro` gets its line in the README's table (and a docs page)."""
    from hf_vit_repro.cli import build_parser

    [subparsers] = [action for action in build_parser()._actions if action.dest == "command"]
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `vit-repro ")]
    named = {row.split("`")[1].split()[1] for row in rows}
    assert named == set(subparsers.choices), set(subparsers.choices) ^ named
    assert all("](docs/" in row for row in rows)
