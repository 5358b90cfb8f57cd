"""`vit-repro`'s one place where errors meet the user (`cli.main`): bad input in any command is one
line, `vit-repro CMD: error: ...`, exit code 2, never a traceback; Ctrl-C is one line too. The
cases here are the table of bad inputs in docs/bad-input.md."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, cli, runs

from .conftest import randomize_, tiny_kwargs
from .evaluation_fixtures import save_classifier


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10)))).eval()
    return save_classifier(model, tmp_path_factory.mktemp("good") / "ckpt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def commands(checkpoint, images, out):
    """Every command that loads a checkpoint, as a user types it."""
    return {
        "evaluate": ["evaluate", str(checkpoint), "digits", "--max-images", "4", "--output-dir", str(out / "m.json"), "--no-progress"],
        "fewshot": ["fewshot", str(checkpoint), "digits", "--shots", "1", "--seeds", "1", "--no-cache",
                    "--output-dir", str(out / "f.json"), "--no-progress"],
        "analyze": ["analyze", str(checkpoint), "--images", str(images), "--output-dir", str(out / "a"), "--no-progress"],
        "convert": ["convert", str(checkpoint), str(out / "converted")],
    }


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, command, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"vit-repro {command}: error: "), err
    assert [line for line in lines if "error:" in line] == [lines[-1]], err  # the message is one line
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def test_commands_run_on_the_good_checkpoint_without_progress_bars(checkpoint, images, tmp_path, capsys):
    """The baseline the error cases below are variations of. `--no-progress` means no bar at all:
    neither the command's own nor those transformers and datasets draw (issue 14, item 20)."""
    for name, argv in commands(checkpoint, images, tmp_path).items():
        code, err = run_cli(argv, capsys)
        assert code == 0, (name, err)
        if "--no-progress" in argv:
            assert "it/s" not in err and "%|" not in err and "Loading weights" not in err, (name, err)
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()  # switched back on after the command


def test_vtab_no_progress_reaches_the_training_runs(checkpoint, tmp_path, capsys, monkeypatch):
    from hf_vit_repro.vtab import runner as vtab

    seen = {}

    def fake_run_vtab(checkpoint, tasks, **kwargs):
        seen.update(kwargs)
        return {"tasks": {}, "path": str(tmp_path / "vtab.json")}

    monkeypatch.setattr(vtab, "run_vtab", fake_run_vtab)
    monkeypatch.setattr(vtab, "vtab_table", lambda record: "")
    assert run_cli(["vtab", str(checkpoint), "--tasks", "dtd", "--no-progress"], capsys)[0] == 0
    assert "run.progress_bar=false" in seen["overrides"]
    assert run_cli(["vtab", str(checkpoint), "--tasks", "dtd"], capsys)[0] == 0
    assert "run.progress_bar=false" not in seen["overrides"]


def test_truncated_weights_are_named_by_every_command(checkpoint, images, tmp_path, capsys):
    """An interrupted download: model.safetensors cut in half (issue 14, item 8)."""
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name, argv in commands(broken, images, tmp_path / "out").items():
        code, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, name, str(weights), "is truncated or not a safetensors file (interrupted download?)")
    assert not (tmp_path / "out" / "converted").exists()
    # publishing it, and fine-tuning from it, name it too
    out = tmp_path / "out"
    for name, argv in {
        "push": ["push", str(broken), "someone/x", "--dry-run", "--output-dir", str(out / "hub")],
        "train": ["train", "recipes/demo/finetune_vit.yaml", f"model.init_from={broken}", f"run.output_dir={out / 'run'}",
                  "run.progress_bar=false"],
    }.items():
        code, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, name, str(weights), "is truncated or not a safetensors file (interrupted download?)")
    assert not (out / "hub").exists() and not (out / "run").exists()
    # a bare weights file given to convert
    argv = ["convert", str(weights), str(tmp_path / "bare"), "--timm-architecture", "vit_tiny_patch16_224"]
    assert_one_line_error(*run_cli(argv, capsys), "convert", str(weights), "interrupted download?")


def test_damaged_npz_files_are_named_and_not_called_pickles(tmp_path, capsys):
    np.savez(tmp_path / "ViT-Ti_16.npz", **{"Transformer/encoder_norm/scale": np.ones(8, dtype=np.float32)})
    data = (tmp_path / "ViT-Ti_16.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"<html>404 Not Found</html>\n" * 20)  # what a bad URL saves
    code, err = run_cli(["convert", str(tmp_path / "cut.npz"), str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "convert", str(tmp_path / "cut.npz"), "truncated")
    assert "BadZipFile" not in err
    code, err = run_cli(["convert", str(tmp_path / "garbage.npz"), str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "convert", str(tmp_path / "garbage.npz"), "is not an .npz archive")
    assert "pickle" not in err and "--allow-pickle" not in err


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"hidden_size": 65, "num_attention_heads": 12}, ["config.json", "`hidden_size` (65) must be divisible"]),
        ({"pooling": "mean"}, ["config.json", "`pooling` must be one of 'token', 'gap'; got 'mean'"]),
        ({"num_attention_heads": -4}, ["config.json", "`num_attention_heads` must be a positive integer, got -4"]),
    ],
)
def test_bad_config_values_are_one_line_errors_in_every_command(checkpoint, images, tmp_path, capsys, change, fragments):
    """Bad values in config.json (issue 14, item 9): the clear message alone, exit code 2."""
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, **change}))
    for name, argv in commands(bad, images, tmp_path / "out").items():
        assert_one_line_error(*run_cli(argv, capsys), name, *fragments)


def test_resolution_not_a_multiple_of_the_patch_size(checkpoint, tmp_path, capsys):
    for name, argv in (
        ("evaluate", ["evaluate", str(checkpoint), "digits", "--resolution", "30", "--output-dir", str(tmp_path / "m.json")]),
        ("fewshot", ["fewshot", str(checkpoint), "digits", "--resolution", "30", "--output-dir", str(tmp_path / "f.json")]),
    ):
        code, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, name, "resolution 30 is not a multiple of the model's patch size (8 px); use e.g. 32")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "f.json").exists()


def test_library_errors_keep_a_clear_message():
    from huggingface_hub.errors import StrictDataclassError

    with pytest.raises(StrictDataclassError) as info:
        ViTReproConfig(**tiny_kwargs(pooling="mean"))
    assert cli.user_error_message(info.value) == "`pooling` must be one of 'token', 'gap'; got 'mean'."
    assert cli.user_error_message(KeyError("no such task 'x'")) == "no such task 'x'"
    assert cli.user_error_message(ValueError("two\nlines")) == "two lines"
    assert cli.user_error_message(RuntimeError("a bug")) is None  # a bug keeps its traceback
    assert issubclass(runs.CheckpointError, ValueError)


def test_ctrl_c_prints_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    from hf_vit_repro.evaluation import classification

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(classification, "evaluate_checkpoint", interrupted)
    try:
        code, err = run_cli(["evaluate", str(checkpoint), "digits", "--output-dir", str(tmp_path / "m.json")], capsys)
    except KeyboardInterrupt:  # would stop the whole test session
        pytest.fail("KeyboardInterrupt escaped cli.main")
    assert code == 130 and "Traceback" not in err and err.strip() == "vit-repro evaluate: interrupted"


def test_mistyped_task_and_a_folder_that_is_no_checkpoint(checkpoint, images, tmp_path, capsys):
    for name, argv in commands(checkpoint, images, tmp_path).items():
        if name in ("evaluate", "fewshot"):
            argv = [word if word != "digits" else "digitz" for word in argv]
            assert_one_line_error(*run_cli(argv, capsys), name, "unknown task 'digitz'. Did you mean 'digits'?")
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, argv in commands(empty, images, tmp_path).items():
        if name != "convert":
            assert_one_line_error(*run_cli(argv, capsys), name, f"'{empty}' is neither a run folder")


def test_train_with_an_image_size_the_patches_do_not_tile(tmp_path, capsys):
    """`model.image_size=30` with 4 px patches: the config accepts it (as ViTConfig would), the
    model refuses it when built, and the user sees that message alone (issue 14, item 9)."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "pretrain_vit.yaml"
    argv = ["train", str(recipe), "model.image_size=30", f"run.output_dir={tmp_path / 'run'}"]
    assert_one_line_error(*run_cli(argv, capsys), "train", "`image_size` 30 must be divisible by `patch_size` 4")
    assert not (tmp_path / "run" / runs.CHECKPOINTS_DIR).exists()


def test_a_launchers_report_names_the_bad_input(tmp_path):
    """Under torchrun a worker's bad-input error ends in torchrun's own ChildFailedError report; its
    "Root Cause" shows the error file the worker wrote, which is now our one line (issue 24: the
    report said `error_file: <N/A>` below a traceback, and the package's line scrolled away)."""
    import subprocess
    import sys

    missing = tmp_path / "no-such-checkpoint"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         "-m", "hf_vit_repro", "evaluate", str(missing), "digits", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert result.returncode != 0
    root_cause = result.stderr[result.stderr.rindex("Root Cause"):]
    assert "error_file: <N/A>" not in root_cause
    line = next(l for l in result.stderr.splitlines() if l.startswith("vit-repro evaluate: error:"))
    assert str(missing) in line and f"traceback : {line}" in root_cause


def test_the_launcher_error_file_is_written_once(tmp_path, monkeypatch, capsys):
    """Outside a launcher nothing is written; an error file already recorded is kept."""
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert cli.main(["evaluate", str(tmp_path / "missing"), "digits", "--no-progress"]) == 2
    assert list(tmp_path.iterdir()) == []
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    assert cli.main(["evaluate", str(tmp_path / "missing"), "digits", "--no-progress"]) == 2
    recorded = json.loads(error_file.read_text())["message"]["message"]
    assert recorded.startswith("vit-repro evaluate: error:") and "missing" in recorded
    assert cli.main(["evaluate", str(tmp_path / "other"), "digits", "--no-progress"]) == 2
    assert json.loads(error_file.read_text())["message"]["message"] == recorded
    capsys.readouterr()
