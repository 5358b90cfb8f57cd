"""Accelerate set-up for the loop: the accelerator (process group, sharding, mixed precision,
trackers, compilation), what the run's summary records about it, and the stream of micro-batches
that an exactly resumed run continues mid-epoch.

Sharding (FSDP2) is asked for by the launcher, not the recipe: `accelerate launch --config_file
recipes/accelerate/fsdp.yaml` exports ACCELERATE_USE_FSDP=true and the plugin's FSDP_* settings.
On GPUs Accelerate takes it from there. On CPUs Accelerate 1.15 drops it without a word
(`enable_fsdp_on_cpu` says where), so the loop switches the accelerator to FSDP itself, and from
then on runs Accelerate's own FSDP2 code, the code a GPU run takes. A launch that asks for FSDP or
for several processes and cannot have them is never silent: it stops (`RecipeError`) or warns and
the warning lands in `train_summary.json` (`describe_distribution`); `accelerate launch --cpu`
with the FSDP config, which starts one unsharded process, is refused (`launch_refusal`).

Exact resume needs the data order and every augmentation to be functions of (seed, epoch, row)
(`hf_vit_repro.data.SeededSampler`), the position inside the epoch recomputed from the step, and
every sampler of a (possibly resumed, possibly sharded) loader told its epoch (`pin_epoch`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import runs
from .recipe import Recipe, RecipeError


def resolve_mixed_precision(value: str) -> str:
    """`run.mixed_precision` as Accelerate names it ("no", "bf16", "fp16"). "auto" takes the
    launcher's choice (`accelerate launch` config / ACCELERATE_MIXED_PRECISION), else the package's
    precision policy for training (`hf_vit_repro.precision.resolve_precision`): bf16 where the GPU
    supports it, bf16 on a CPU with AMX or AVX512-BF16 (without a GPU), else fp32 ("no")."""
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return os.environ["ACCELERATE_MIXED_PRECISION"]
    import torch

    from ..precision import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16" if resolve_precision("auto", device, training=True) == "bf16" else "no"


def make_accelerator(recipe: Recipe, run_dir: Path):
    """A fresh Accelerator (its singleton state reset, so one process can train several runs)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from accelerate.utils import DistributedType, ProjectConfiguration

    import torch

    refusal = launch_refusal()
    if refusal is not None:
        raise RecipeError(refusal)
    # After a run under FSDP the per-process state says FSDP (Accelerate writes it there on GPUs,
    # `enable_fsdp_on_cpu` on CPUs), and an AcceleratorState built on it skips the branch that
    # creates the FSDP plugin: the next run of this process (a learning-rate sweep's) would fail
    # in `prepare`. That state is then rebuilt too; the process group itself is kept.
    fsdp_before = PartialState._shared_state.get("distributed_type") == DistributedType.FSDP
    AcceleratorState._reset_state(reset_partial_state=fsdp_before)
    GradientState._reset_state()
    trackers = list(recipe.run.trackers) or None
    accelerator = Accelerator(
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
    if fsdp_requested():
        enable_fsdp_on_cpu(accelerator)
        # FSDP2 warns that the patch embedding (a shard unit) returns a view ((B, D, h, w) ->
        # (B, N, D)): in-place ops on it would skip a hook. Its only consumers are out of place
        # (`torch.cat` with the class token, `+ position_embeddings`), and training equals the
        # unsharded run (tests/test_training_fsdp.py).
        warnings.filterwarnings(
            "ignore", message=r"FSDP2-wrapped module \(FSDPViTReproPatchEmbeddings\) returned a view"
        )
    if accelerator.is_main_process:
        for warning in launch_warnings(accelerator):
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return accelerator


def finish_trackers(accelerator) -> None:
    """End the run's trackers (TensorBoard, ...). Not `accelerator.end_training()`: that also
    destroys the process group, and the next run of this process (a learning-rate sweep's next
    member, the VTAB runner's next task) would find none (a hang or an error in its first
    collective). The group lives as long as the process; `vit-repro train` ends it at exit."""
    for tracker in accelerator.trackers:
        tracker.finish()


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP: `accelerate launch` exports ACCELERATE_USE_FSDP=true
    for a config with `distributed_type: FSDP` (recipes/accelerate/fsdp.yaml), beside the
    plugin's settings (FSDP_VERSION, FSDP_AUTO_WRAP_POLICY, FSDP_TRANSFORMER_CLS_TO_WRAP, ...)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator) -> None:
    """Make a run that asked for FSDP shard, or stop it: a no-op where Accelerate already chose
    FSDP (GPUs); FSDP2 over CPU processes (gloo); `RecipeError` where nothing can be sharded.

    Where Accelerate 1.15 refuses: `AcceleratorState.__init__` (accelerate/state.py) turns the
    distributed type into FSDP only inside `elif self.distributed_type in [MULTI_GPU, MULTI_MLU,
    ..., MULTI_NEURON]`; a CPU process group is MULTI_CPU, so the plugin is dropped (no message,
    no `state.fsdp_plugin`) and the run trains as DDP. Asking for the GPU path instead
    (`cpu=False`) gives the same MULTI_CPU without a GPU. torch's FSDP2 (`fully_shard`) itself
    runs on CPUs with gloo, so this function does what that branch does (distributed type FSDP on
    the accelerator's and the partial state, the plugin built from the FSDP_* variables, the
    run's mixed precision set on it). From then on `prepare` (`fully_shard` on every auto-wrap
    unit, the patch embedding, the final norm and the root, with the optimizer moved onto the
    sharded DTensor parameters), `no_sync`, `clip_grad_norm_`, `save_state` / `load_state`
    (torch.distributed.checkpoint, one shard file per process) and `get_state_dict` (the full
    state dict, a collective) are Accelerate's FSDP2 code, unchanged.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if accelerator.distributed_type == DistributedType.FSDP:
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise RecipeError(
            f"FSDP was asked for (ACCELERATE_USE_FSDP=true, e.g. by recipes/accelerate/fsdp.yaml), but this run is "
            f"{_distribution_name(accelerator)}, which cannot be sharded. Start it with `accelerate launch "
            "--config_file recipes/accelerate/fsdp.yaml --num_processes N -m hf_vit_repro train ...` (without "
            "--cpu), or unset ACCELERATE_USE_FSDP to train unsharded."
        )
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* from the environment, as Accelerator() does
    if plugin.fsdp_version != 2:
        raise RecipeError(
            f"FSDP version {plugin.fsdp_version} was asked for on CPU processes; only FSDP2 runs there. Set "
            "fsdp_config.fsdp_version: 2 in the launch config (as recipes/accelerate/fsdp.yaml does)."
        )
    state = accelerator.state
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # Every AcceleratorState() (Accelerate builds them on the fly) copies the partial state's
    # fields over its own: without this the run would be DDP again at its first checkpoint.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if not accelerator.is_fsdp2:
        raise RuntimeError("switching the accelerator to FSDP2 on CPU failed; is accelerate the pinned version?")


def is_sharded(accelerator) -> bool:
    """Whether the run's parameters are sharded by FSDP (on GPUs, or on CPUs by `enable_fsdp_on_cpu`)."""
    return accelerator.distributed_type.name == "FSDP"


def launch_warnings(accelerator) -> list[str]:
    """What went wrong between the launcher and this run without stopping it (empty if nothing).

    `accelerate launch --cpu --num_processes N` (and any launch config with `use_cpu: true` or
    `distributed_type: MULTI_CPU`, without an mpirun hostfile) starts ONE process: Accelerate's
    simple launcher only exports MASTER_ADDR / MASTER_PORT for the N it was asked for. That
    signature (ACCELERATE_USE_CPU=true, MASTER_ADDR set, no WORLD_SIZE, one process) is caught
    here."""
    env = os.environ
    found = []
    if (
        accelerator.num_processes == 1
        and env.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and env.get("MASTER_ADDR")
        and "WORLD_SIZE" not in env
    ):
        found.append(
            "accelerate launch was asked for several CPU processes (--cpu with --num_processes > 1, or a CPU launch "
            "config) but started only one: this run trains as a single process. For N CPU processes use `torchrun "
            "--standalone --nproc_per_node N -m hf_vit_repro train ...`, or `accelerate launch --multi_gpu "
            "--num_processes N` (CPU processes on a machine without GPUs)."
        )
    return found


def launcher_argv() -> list[str] | None:
    """The arguments of the `accelerate launch` that started this process (what follows `launch`
    on its command line), or None when the parent process is no such launch or its command line
    cannot be read (/proc: Linux only). Its simple launcher exports no trace of the launch config
    (no ACCELERATE_USE_FSDP), so the parent's command line is the one witness left."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    for i, part in enumerate(parts[:-1]):
        if Path(part).name == "accelerate" and parts[i + 1] == "launch":
            return parts[i + 2:]
    return None


def launch_refusal(argv: list[str] | None = None) -> str | None:
    """Why this run must not start as launched, or None. `accelerate launch --config_file
    recipes/accelerate/fsdp.yaml --cpu` reads the FSDP config and then, because of --cpu, starts
    one plain process (its simple launcher): the run would train unsharded without a word, so it
    is refused. `argv`: the launch's arguments (default `launcher_argv()`)."""
    argv = launcher_argv() if argv is None else argv
    if not argv:
        return None
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DistributedType

    try:
        args = launch_command_parser().parse_args(argv)
        if not args.cpu or not args.config_file:
            return None
        from accelerate.commands.config.config_args import load_config_from_file

        asked = load_config_from_file(args.config_file).distributed_type
    except (SystemExit, Exception):  # not a launch we can read: nothing to say about it
        return None
    if asked != DistributedType.FSDP:
        return None
    return (
        f"the launch config {args.config_file} asks for FSDP, but --cpu makes accelerate launch drop it and start one "
        "unsharded process. Leave out --cpu: `accelerate launch --config_file recipes/accelerate/fsdp.yaml "
        "--num_processes N -m hf_vit_repro train ...` shards over CPU processes (gloo) on a machine without GPUs."
    )


def describe_distribution(accelerator, model) -> dict:
    """The `hardware` fields of `train_summary.json` about how the run was spread: Accelerate's
    `distributed_type` ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP", ...), `num_nodes` (the launcher's
    node count: torchrun's GROUP_WORLD_SIZE), `sharding` (None, or the FSDP version, the wrapped
    modules counted by class, e.g. {"ViTReproLayer": 12, ...}, and the checkpoint's state-dict
    type) and `warnings` (`launch_warnings`). `model` is the prepared model."""
    sharding = None
    if is_sharded(accelerator):
        plugin = accelerator.state.fsdp_plugin
        sharding = {
            "fsdp_version": plugin.fsdp_version,
            "units": dict(sorted(Counter(cls.__name__ for cls in shard_units(model)).items())),
            "state_dict_type": getattr(plugin.state_dict_type, "name", str(plugin.state_dict_type)),
        }
    return {
        "distributed_type": accelerator.distributed_type.name,
        "num_nodes": int(os.environ.get("GROUP_WORLD_SIZE", "1")),
        "sharding": sharding,
        "warnings": launch_warnings(accelerator),
    }


def shard_units(model) -> list[type]:
    """The classes of the modules of `model` that FSDP wrapped, outermost first (FSDP2 swaps a
    wrapped module's class for a generated `FSDP<Class>` subclass; FSDP1 wraps it in an object)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    units = []
    for module in model.modules():
        if isinstance(module, FSDPModule):
            units.append(next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule)))
        elif isinstance(module, FullyShardedDataParallel):
            units.append(type(module.module))
    return units


def _distribution_name(accelerator) -> str:
    if accelerator.num_processes == 1:
        return "a single process without a process group"
    return f"{accelerator.num_processes} processes of type {accelerator.distributed_type.name}"


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
