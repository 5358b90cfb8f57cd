"""Data parallelism on the CPU: two processes (torchrun, gloo; Accelerate's MULTI_CPU) train the
same loss curve and weights as one process with the same global batch, and a two-process run
stopped after a checkpoint and resumed ends with the same weights as an uninterrupted one."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_vit_repro import runs, training
from hf_vit_repro.training import load_recipe, train

RECIPE = """
name: ddp
mode: pretrain
model:
  variant: null
  image_size: 16
  representation_size: 8
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, patch_size: 8}
data: {task: digits, augmentation: finetune, max_train_examples: 48, eval_split: null}
optim: {optimizer: adamw, lr: 3.0e-3, weight_decay: 0.1, warmup_steps: 1, schedule: cosine}
train: {steps: 7, global_batch_size: 16, micro_batch_size: 16}
run: {checkpoint_every: 0, progress_bar: false, trackers: [], log_every: 1}
"""


def torchrun(path, *overrides):
    # Two processes, micro-batches of 4: each process accumulates 2 of them per update, so the
    # no_sync / all-reduce path and the sharded sampler are both exercised.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hf_vit_repro", "train", str(path), "train.micro_batch_size=4", *overrides,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def weights(run_dir):
    return load_file(str(run_dir / runs.FINAL_DIR / "model.safetensors"))


def test_two_cpu_processes_match_one_process_and_resume_exactly(tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text(RECIPE)
    one = train(load_recipe(path, [f"run.output_dir={tmp_path / 'one'}"]))
    torchrun(path, f"run.output_dir={tmp_path / 'two'}")
    # 48 images = 6 micro-batches per process and epoch, 2 per update: stopped at step 4, the
    # resumed session starts inside the second epoch (the sampler must be pinned three levels
    # deep) and trains steps 5-7, two of them with a learning rate above 0.
    out = torchrun(path, f"run.output_dir={tmp_path / 'resumed'}", "run.stop_after=4")
    assert "stopped after 4 steps" in out and not (tmp_path / "resumed" / runs.FINAL_DIR).exists()
    assert "Resuming ddp" in torchrun(path, f"run.output_dir={tmp_path / 'resumed'}")

    summary = runs.read_json(tmp_path / "two" / runs.TRAIN_SUMMARY)
    assert summary["hardware"]["num_processes"] == 2 and summary["gradient_accumulation_steps"] == 2
    assert summary["images_seen"] == 7 * 16
    lines = (tmp_path / "two" / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    two_losses = [json.loads(line)["loss"] for line in lines]
    assert len(two_losses) == 7
    assert two_losses == pytest.approx([loss for _, loss in one.losses], rel=1e-5, abs=1e-6)
    a, b, c = weights(one.run_dir), weights(tmp_path / "two"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() == c.keys()
    # Adam divides by the root of the squared gradient, so where a gradient is ~0 the different
    # summation order of the all-reduce shows up at ~1e-5 in a weight; updates here are ~1e-2.
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3)
        assert torch.equal(b[name], c[name]), name  # same layout, stopped and resumed: bit for bit
    # The weights moved: the comparison is not between two untouched initialisations.
    assert a["classifier.weight"].abs().sum() > 0


MPP_RECIPE = """
name: ddp_mpp
mode: pretrain
model:
  variant: null
  image_size: 16
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, patch_size: 4}
data: {task: digits, augmentation: finetune, max_train_examples: 48, max_eval_examples: 21}
optim: {optimizer: adamw, lr: 3.0e-3, weight_decay: 0.1, warmup_steps: 1, schedule: cosine}
train: {objective: masked_patch_prediction, steps: 4, global_batch_size: 16, micro_batch_size: 16, eval_batch_size: 4}
run: {checkpoint_every: 0, progress_bar: false, trackers: [], log_every: 1}
"""


def test_masked_patch_prediction_on_two_cpu_processes_matches_one_process(tmp_path):
    # The corruption of every image comes from its own generator in the data pipeline, so both
    # processes see exactly the batches one process sees (crops and corruptions alike); 2 micro-batches
    # per process. (No dropout: its random numbers come from each process's own torch RNG.)
    # The evaluation (21 images in batches of 4 on 2 processes: Accelerate pads the last batch)
    # must count every image once.
    path = tmp_path / "mpp.yaml"
    path.write_text(MPP_RECIPE)
    one = train(load_recipe(path, [f"run.output_dir={tmp_path / 'one'}"]))
    torchrun(path, f"run.output_dir={tmp_path / 'two'}")
    lines = (tmp_path / "two" / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == pytest.approx([loss for _, loss in one.losses],
                                                                          rel=1e-5, abs=1e-6)
    a, b = weights(one.run_dir), weights(tmp_path / "two")
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("qkv.bias"):
            # The key bias (the middle third) has a true gradient of 0: softmax ignores a shift shared
            # by all keys. Adam scales the rounding noise standing in for it up to steps of any size.
            x, y = torch.cat([x[:32], x[64:]]), torch.cat([y[:32], y[64:]])
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-3, msg=lambda text: f"{name}: {text}")
    assert a["vit.embeddings.mask_token"].abs().sum() > 0  # the [mask] embedding (zero at init) was trained
    evals = [runs.read_json(run / runs.TRAIN_SUMMARY)["eval"] for run in (one.run_dir, tmp_path / "two")]
    assert evals[0]["num_images"] == evals[1]["num_images"] == 21
    for key in ("masked_patch_loss", "masked_patch_accuracy"):
        assert evals[1][key] == pytest.approx(evals[0][key], rel=1e-4, abs=1e-5), key
