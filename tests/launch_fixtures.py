"""Starting `vit-repro train` in several CPU processes for the distributed tests: torchrun, and
`accelerate launch` with the repository's launch configs (recipes/accelerate/), each on a free
loopback port (other test runs may share the machine), one thread per process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

LAUNCH_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
#: What follows a launcher's own arguments to run `vit-repro train` (`python -m hf_vit_repro`).
TRAIN = ["-m", "hf_vit_repro", "train"]


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
