"""The training loop under damage and interference: a damaged latest checkpoint, a second run into
the same folder, Ctrl-C, and the training log of a resumed run."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from hf_vit_repro import runs, training
from hf_vit_repro.cli import main
from hf_vit_repro.training import RecipeError, train

from .test_training import final_weights, tiny_recipe

CHANGES = {"train.steps": 5, "run.checkpoint_every": 1, "run.keep_checkpoints": 3, "run.log_every": 1}


class Killed(Exception):
    pass


def kill_after(step):
    def callback(state):
        if state.step == step:  # callbacks run after the step's checkpoint is written
            raise Killed

    return callback


def assert_same_weights(a_dir, b_dir):
    a, b = final_weights(a_dir), final_weights(b_dir)
    assert a.keys() == b.keys()
    for name in a:  # same process layout, same kernels: a resumed run is bit for bit the uninterrupted one
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------ damaged checkpoints


def test_checkpoint_problem_names_truncated_and_corrupted_files(tmp_path):
    recipe = tiny_recipe(tmp_path, **{**CHANGES, "train.steps": 2})
    train(recipe)
    checkpoint = training.latest_checkpoint(recipe.output_dir)
    assert training.checkpoints.checkpoint_problem(checkpoint) is None

    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "model.safetensors" in training.checkpoints.checkpoint_problem(checkpoint)
    weights.write_bytes(data)

    optimizer = checkpoint / "optimizer.bin"
    blob = bytearray(optimizer.read_bytes())
    with zipfile.ZipFile(optimizer) as archive:  # flip bytes inside a stored tensor: only its CRC can tell
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = int.from_bytes(blob[info.header_offset + 26 : info.header_offset + 28], "little"), \
        int.from_bytes(blob[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + 8  # inside the member's data (the local header's sizes)
    blob[start : start + 8] = bytes(8) if blob[start : start + 8] != bytes(8) else b"\xff" * 8
    optimizer.write_bytes(bytes(blob))
    assert "optimizer.bin is corrupted" in training.checkpoints.checkpoint_problem(checkpoint)
    (checkpoint / "optimizer.bin").write_bytes(b"")
    assert "optimizer.bin is truncated" in training.checkpoints.checkpoint_problem(checkpoint)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    reference = train(tiny_recipe(tmp_path, "reference", **CHANGES))
    recipe = tiny_recipe(tmp_path, "damaged", **CHANGES)
    with pytest.raises(Killed):
        train(recipe, callbacks=[kill_after(3)])
    latest = training.latest_checkpoint(recipe.output_dir)
    assert latest.name == "step_0000003"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # an interrupted copy, a full disk...
    capsys.readouterr()

    resumed = train(recipe)
    out = capsys.readouterr().out
    assert "step_0000003 is damaged (model.safetensors" in out and "previous intact checkpoint step_0000002" in out
    assert resumed.losses[0][0] == 3  # resumed after step 2
    assert_same_weights(reference.run_dir, resumed.run_dir)


def test_every_checkpoint_damaged_is_an_error_naming_them(tmp_path):
    recipe = tiny_recipe(tmp_path, **CHANGES)
    with pytest.raises(Killed):
        train(recipe, callbacks=[kill_after(2)])
    for checkpoint in training.list_checkpoints(recipe.output_dir):
        (checkpoint / "scheduler.bin").write_bytes(b"not a zip")
    with pytest.raises(RecipeError, match=r"Every checkpoint .* is damaged \(step_0000002: scheduler.bin"):
        train(recipe)
    explicit = recipe.replace(**{"run.resume": str(training.list_checkpoints(recipe.output_dir)[0])})
    with pytest.raises(RecipeError, match="damaged checkpoint: scheduler.bin"):
        train(explicit)


def disk_full_at(monkeypatch, step, error):
    """torch.save (the optimizer, scheduler and RNG files) fails while the checkpoint of `step` is
    written: half the file reaches the disk, then `error()` is raised, as when the disk fills up."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if training.checkpoint_name(step) not in str(f):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error()

    monkeypatch.setattr(torch, "save", save)


def enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def torch_zip_writer_failure():  # what torch.save really raises on a full disk (seen on a 1.5 MB tmpfs)
    try:
        raise RuntimeError("basic_ios::clear: iostream error")
    except RuntimeError:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7680 vs 7572")
        except RuntimeError as err:
            return err


@pytest.mark.parametrize("error", [enospc, torch_zip_writer_failure])
def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys, error):
    reference = train(tiny_recipe(tmp_path, "reference", **CHANGES))
    recipe = tiny_recipe(tmp_path, "full", **CHANGES)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    capsys.readouterr()
    with monkeypatch.context() as patch:
        disk_full_at(patch, 3, error)
        code = main(["train", str(recipe_file)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "could not write checkpoint step_0000003" in err and "step_0000002 is intact" in err
    checkpoints = recipe.output_dir / runs.CHECKPOINTS_DIR
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000001", "step_0000002"]  # no half-written folder
    assert all(training.checkpoints.checkpoint_problem(c) is None for c in training.list_checkpoints(recipe.output_dir))
    # space freed: the same command continues from step 2 and ends where an uninterrupted run does
    assert main(["train", str(recipe_file)]) == 0
    assert_same_weights(reference.run_dir, recipe.output_dir)


def test_a_failure_that_is_not_the_disk_keeps_its_traceback(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path, **CHANGES)
    disk_full_at(monkeypatch, 2, lambda: RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        train(recipe)


# ------------------------------------------------------------------ one run per folder


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"train.steps": 1, "optim.warmup_steps": 0})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hf_vit_repro import runs; "
         f"lock = runs.lock_run_dir({str(recipe.output_dir)!r}, 'training other'); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RecipeError, match=rf"is in use by pid {holder.pid} on .* \(training other\)"):
            train(recipe)
        assert not (recipe.output_dir / runs.RECIPE).exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: no stale lock after a kill -9
    assert train(recipe).steps == 1


def test_a_run_refused_before_training_leaves_no_folder(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"data.task": "no/such-dataset", "data.data_dir": str(tmp_path / "missing")})
    with pytest.raises(RecipeError):
        train(recipe)
    assert not recipe.output_dir.exists()


# ------------------------------------------------------------------ Ctrl-C and the log of a resumed run


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test: a pytest-xdist worker, or a process started in the
    background, may begin with SIGINT ignored, and the run must restore whatever was there."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, capsys, default_sigint):
    reference = train(tiny_recipe(tmp_path, "reference", **{**CHANGES, "run.checkpoint_every": 0}))
    recipe = tiny_recipe(tmp_path, "interrupted", **{**CHANGES, "run.checkpoint_every": 0})

    def ctrl_c_at_step_2(state):
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # let the handler run

    stopped = train(recipe, callbacks=[ctrl_c_at_step_2])
    assert not stopped.completed and stopped.interrupted and stopped.steps == 3  # the request is seen at step 3
    out = capsys.readouterr().out
    assert "stopped at step 3/5 (interrupted)" in out and "step_0000003" in out
    assert [p.name for p in training.list_checkpoints(recipe.output_dir)] == ["step_0000003"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler removed again
    assert_same_weights(reference.run_dir, train(recipe).run_dir)


def test_second_ctrl_c_in_the_cli_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.cli, "run_recipe", interrupted)
    code = main(["train", "recipes/demo/pretrain_vit.yaml", f"run.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "interrupted" in err and "run the same command again" in err


def test_resumed_run_logs_every_step_once(tmp_path):
    recipe = tiny_recipe(tmp_path, **{**CHANGES, "run.checkpoint_every": 2})
    with pytest.raises(Killed):
        train(recipe, callbacks=[kill_after(3)])  # step 3 was logged, its checkpoint never written
    log = recipe.output_dir / runs.LOGS_DIR / training.TRAIN_LOG
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    train(recipe)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ unreadable images: one rule everywhere


def with_an_empty_jpeg(split: str, row: int):
    from datasets import Image

    from hf_vit_repro.data import load_task

    dataset = load_task("digits", split).select(range(16))
    dataset = dataset.cast_column("image", Image(decode=False))
    rows = dataset.to_list()
    rows[row]["image"] = {"bytes": b"", "path": f"broken_{split}.jpg"}
    from datasets import Dataset

    return Dataset.from_list(rows, features=dataset.features).cast_column("image", Image())


def test_non_strict_runs_skip_and_count_unreadable_images_in_training_and_evaluation(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"train.steps": 2, "optim.warmup_steps": 0})
    result = train(recipe, train_dataset=with_an_empty_jpeg("train", 3), eval_dataset=with_an_empty_jpeg("test", 5))
    summary = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)
    assert summary["skipped_images"] == 1  # 16 images, batches of 8, two steps: the broken one was read once
    assert summary["eval"]["num_images"] == 15 and summary["eval"]["num_skipped"] == 1
    assert runs.read_json(runs.metrics_path(result.run_dir, "digits", "test"))["num_skipped"] == 1


def test_strict_runs_stop_at_the_unreadable_image_naming_it(tmp_path):
    from hf_vit_repro.data import CorruptImageError

    recipe = tiny_recipe(tmp_path, **{"train.steps": 1, "optim.warmup_steps": 0, "data.strict": True})
    with pytest.raises(CorruptImageError, match=r"row 5 .*broken_test.jpg.*strict mode"):
        train(recipe, eval_dataset=with_an_empty_jpeg("test", 5))
    assert (recipe.output_dir / runs.FINAL_DIR).is_dir()  # the weights were saved before the evaluation failed
