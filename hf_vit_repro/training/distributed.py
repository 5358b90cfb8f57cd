"""Accelerate set-up for the loop: the accelerator (process group, mixed precision, trackers,
compilation) and the stream of micro-batches that an exactly resumed run continues mid-epoch.

Exact resume needs the data order and every augmentation to be functions of (seed, epoch, row)
(`hf_vit_repro.data.SeededSampler`), the position inside the epoch recomputed from the step, and
every sampler of a (possibly resumed, possibly sharded) loader told its epoch (`pin_epoch`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .. import runs
from .recipe import Recipe, RecipeError


def resolve_mixed_precision(value: str) -> str:
    """`run.mixed_precision`; "auto" takes the launcher's choice (`accelerate launch` config /
    ACCELERATE_MIXED_PRECISION), else bf16 where the GPU supports it, else fp32 ("no")."""
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return os.environ["ACCELERATE_MIXED_PRECISION"]
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(recipe: Recipe, run_dir: Path):
    """A fresh Accelerator (its singleton state reset, so one process can train several runs)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    import torch

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    trackers = list(recipe.run.trackers) or None
    return Accelerator(
        # Without a GPU, asking for the CPU is what makes Accelerate join torchrun's processes
        # (gloo, MULTI_CPU) instead of letting each train alone.
        cpu=not torch.cuda.is_available(),
        mixed_precision=resolve_mixed_precision(recipe.run.mixed_precision),
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / runs.LOGS_DIR)),
        # Samplers Accelerate does not know (ours is one) are kept; a plain RandomSampler becomes
        # seedable, which exact resume needs (DESIGN.md, pitfalls).
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if recipe.run.compile else None,
    )


def micro_batches(accelerator, dataloader, start: int) -> Iterator[dict]:
    """Endless micro-batches from position `start` (counted in this process's batches since the
    run began): epoch = start // batches-per-epoch, the rest skipped inside that epoch. Each epoch
    pins the sampler's epoch (`set_epoch`), so order and augmentations depend on it alone."""
    per_epoch = len(dataloader)
    if per_epoch == 0:
        raise RecipeError(
            "The training split is smaller than one micro-batch; lower train.micro_batch_size or use more data."
        )
    epoch, offset = divmod(start, per_epoch)
    while True:
        loader = accelerator.skip_first_batches(dataloader, offset) if offset else dataloader
        pin_epoch(loader, epoch)
        yield from loader
        epoch, offset = epoch + 1, 0


def pin_epoch(loader, epoch: int) -> None:
    """`set_epoch` on the loader and on every sampler nested in it. Surprise: Accelerate's own
    `set_epoch` looks two levels deep, but a resumed multi-process loader nests three
    (SkipBatchSampler > BatchSamplerShard > BatchSampler > our sampler), so the sampler would
    keep counting epochs by itself and shuffle the resumed epoch differently."""
    loader.set_epoch(epoch)
    stack, seen = [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if hasattr(node, "set_epoch"):
            node.set_epoch(epoch)
        stack += [getattr(node, "batch_sampler", None), getattr(node, "sampler", None)]


class StopRequest:
    """Ctrl-C (SIGINT) during training asks the run to stop after the current update with a
    checkpoint, instead of killing it mid-step; a second Ctrl-C interrupts at once. The request is
    summed over processes with the step's other totals (`loop`), so every process stops after the
    same update even when the signal reaches them at different moments. Installed only in the main
    thread (Python delivers signals there); elsewhere it never fires."""

    def __init__(self, say=print):
        self.requested = False
        self._say = say
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("\nStopping after this step with a checkpoint (Ctrl-C again to abort at once).")

    def __enter__(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
