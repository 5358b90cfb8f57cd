"""Starting `vit-repro train` in several CPU processes for the distributed tests: torchrun, and
`accelerate launch` with the repository's launch configs (recipes/accelerate/), each on a free
loopback port (other test runs may share the machine), one thread per process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from hf_vit_repro import runs

# A tiny ViT (2 layers, width 32, 16 px) pretrained for 7 steps of 16 images on 48 digits: with
# micro-batches of 4 each of two processes accumulates 2 of them per update, and 48 images are
# 6 micro-batches per process and epoch, so a run stopped at step 4 resumes inside epoch 2.
RECIPE = """
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
LAUNCH_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
#: What follows a launcher's own arguments to run `vit-repro train` (`python -m hf_vit_repro`).
TRAIN = ["-m", "hf_vit_repro", "train"]


def recipe_file(folder: Path, name: str, **changes) -> Path:
    """`folder/NAME.yaml`: `RECIPE` named NAME, with `changes` ({"train.ema_decay": 0.5, ...})."""
    values = {"name": name, **yaml.safe_load(RECIPE)}
    for key, value in changes.items():
        section, field = key.split(".")
        values[section][field] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / runs.FINAL_DIR / "model.safetensors"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def accelerate_launch(config: str, *args: str) -> list[str]:
    """`accelerate launch --config_file recipes/accelerate/CONFIG ARGS`, on a free port unless
    ARGS name one."""
    port = [] if "--main_process_port" in args else ["--main_process_port", str(free_port())]
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
            str(LAUNCH_CONFIGS / config), *port, *args]


def launch_env() -> dict[str, str]:
    """This environment without launcher settings a developer may have exported, one thread per
    process (two processes share two cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, ok: bool = True, timeout: float = 300) -> str:
    """Wait for a started launch; its output. `ok`: assert that it exited 0, else that it failed."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert (proc.returncode == 0) == ok, f"exit code {proc.returncode}:\n{out[-6000:]}"
    return out


def run(command: list[str], ok: bool = True, timeout: float = 300) -> str:
    return finish(start(command), ok, timeout)
