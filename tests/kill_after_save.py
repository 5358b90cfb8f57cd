"""`python tests/kill_after_save.py STEP RANK vit-repro-args...`: run `vit-repro` in a process that
kills itself (SIGKILL, no clean-up) as soon as Accelerate's `save_state` has written its part of
checkpoint STEP, if it is process RANK. The checkpoint's files are then on disk under the
temporary name, not yet renamed: a crash between the shard writes and the rename. Started by
tests/test_training_fsdp.py under `accelerate launch` (the launcher then stops the other process).
"""

import os
import signal
import sys
from pathlib import Path

import accelerate

from hf_vit_repro.cli import main
from hf_vit_repro.training import checkpoint_name

STEP, RANK = int(sys.argv[1]), int(sys.argv[2])
_save_state = accelerate.Accelerator.save_state


def save_state_then_die(self, output_dir=None, **kwargs):
    result = _save_state(self, output_dir, **kwargs)
    if Path(output_dir).name == f".{checkpoint_name(STEP)}.tmp" and self.process_index == RANK:
        print(f"process {RANK}: killed after writing its part of {output_dir}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return result


accelerate.Accelerator.save_state = save_state_then_die
sys.exit(main(sys.argv[3:]))
