"""Checkpoints: Accelerate state written atomically, found again by `resume=auto`, checked before
they are loaded; and the run's final model.

    RUN_DIR/checkpoints/step_0001000/   model, optimizer, scheduler, RNG (one file per process),
                                        config.json and trainer_state.json (the loop's counters);
                                        under FSDP model and optimizer are sharded folders
                                        (pytorch_model_fsdp_0/, optimizer_0/), one file per process
    RUN_DIR/final/                      save_pretrained folder + image processor + recipe.yaml

Both are written under a temporary name and renamed (`runs.replace_dir`), so a crash never leaves
a half-written checkpoint that `resume=auto` would pick: a checkpoint is complete when its folder
has its final name. A folder holding a run of other hyperparameters, or a checkpoint of another
architecture, is refused with a `RecipeError` that names the differences. A write that the disk
refuses (full disk, quota, I/O error) removes the temporary folder and stops the run with a
one-line `CheckpointWriteError` naming the intact checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import runs
from .build import architecture, describe_architecture
from .recipe import Recipe, RecipeError

#: Name of the per-checkpoint file with the loop's own counters (beside Accelerate's state).
TRAINER_STATE = "trainer_state.json"
#: Where Accelerate's `save_state` puts the model under FSDP with SHARDED_STATE_DICT (a
#: torch.distributed.checkpoint folder: one `__<rank>_0.distcp` file per process + `.metadata`).
SHARDED_MODEL_DIR = "pytorch_model_fsdp_0"


class CheckpointWriteError(OSError):
    """A checkpoint or the final model could not be written (full disk, quota, I/O error); the
    message says what was not written, why, and which earlier checkpoint is intact."""


# What torch.save / safetensors raise when the file system refuses a write: torch's zip writer turns
# ENOSPC into a RuntimeError ("basic_ios::clear: iostream error", then "[enforce fail at
# inline_container.cc] unexpected pos"), safetensors into a SafetensorError ("IoError(Os { code: 28 ...").
_WRITE_FAILURE_MARKERS = ("No space left", "iostream error", "inline_container", "PytorchStreamWriter",
                          "file write failed", "IoError")


def _write_failure(err: BaseException) -> str | None:
    """Why a write failed, when `err` (or an exception it was raised from) is the file system
    refusing it; None for anything else, which keeps its traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err.strerror or str(err) or type(err).__name__
        text = str(err)
        if any(marker in text for marker in _WRITE_FAILURE_MARKERS):
            return f"the disk refused the write ({' '.join(text.split())[:160]})"
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def _atomic_write(tmp: Path, what: str, fallback: str):
    """Run the writes of `what` into the temporary folder `tmp`; if the file system refuses one,
    remove `tmp` (the finished folders were never touched) and raise `CheckpointWriteError`
    saying what was lost, the free space left and `fallback` (what is intact, what to do)."""
    try:
        yield
    except Exception as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            free = f"; {shutil.disk_usage(tmp.parent).free / 2**20:.1f} MiB free on that disk"
        except OSError:
            free = ""
        raise CheckpointWriteError(f"could not write {what}: {reason}{free}. {fallback}") from None


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first (a checkpoint is complete when its
    folder has its final name: it is written under a temporary name and renamed)."""
    folder = Path(run_dir) / runs.CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def recipe_differences(a: Recipe, b: Recipe) -> list[str]:
    """`section.field: a -> b` for every hyperparameter that differs (`mode` and the model, data,
    optim and train sections; names and the runtime `run` section do not count)."""
    da, db = a.to_dict(), b.to_dict()
    changes = [f"mode: {da['mode']!r} -> {db['mode']!r}"] if da["mode"] != db["mode"] else []
    for section in ("model", "data", "optim", "train"):
        for key in da[section]:
            if da[section][key] != db[section][key]:
                changes.append(f"{section}.{key}: {da[section][key]!r} -> {db[section][key]!r}")
    return changes


def check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Before `resume=auto` continues a run folder: raise `RecipeError` if the folder's
    recipe.yaml has other hyperparameters than `recipe` (continuing would silently mix two runs,
    or report a finished run of the old recipe as the new one's)."""
    saved_file = Path(run_dir) / runs.RECIPE
    if not saved_file.is_file():
        return
    import yaml

    saved = Recipe.from_dict(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}, str(saved_file),
                             validate=False)
    changes = recipe_differences(saved, recipe)
    if changes:
        shown = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
        raise RecipeError(
            f"{run_dir} holds a run of another recipe ({shown}); resume=auto would continue it. Choose another "
            "run.output_dir, or delete the folder to start over."
        )


def check_checkpoint_compatible(checkpoint: Path, model) -> None:
    """Raise `RecipeError` before loading if `checkpoint` was written for another architecture
    (its config.json) or holds weights of other shapes (its safetensors header, or under FSDP
    its sharded checkpoint's metadata)."""
    config_file = checkpoint / "config.json"
    if config_file.is_file():
        from ..models import MODEL_TYPES, config_from_dict

        saved = json.loads(config_file.read_text())
        if saved.get("model_type") not in MODEL_TYPES:
            raise RecipeError(
                f"Checkpoint {checkpoint} is not a vit_repro or BiT checkpoint (model_type {saved.get('model_type')!r})."
            )
        theirs = architecture(config_from_dict(saved))
        ours = architecture(model.config)
        if theirs != ours:
            raise RecipeError(
                f"Checkpoint {checkpoint} was written for another architecture ({describe_architecture(theirs)}) than "
                f"this recipe builds ({describe_architecture(ours)}). Use another run.output_dir, or resume=never "
                "with a fresh folder."
            )
    saved_shapes = _saved_shapes(checkpoint)
    if saved_shapes is not None:
        shapes = {_bare(name): tuple(t.shape) for name, t in model.state_dict().items()}
        bad = [
            f"{name}: checkpoint {saved_shapes.get(name)} vs model {shape}"
            for name, shape in shapes.items()
            if saved_shapes.get(name) != shape
        ]
        if bad:
            raise RecipeError(
                f"Checkpoint {checkpoint} does not fit this model ({len(bad)} tensors differ, e.g. {bad[0]}). "
                "Was it written by another recipe? Use another run.output_dir."
            )


def _bare(name: str) -> str:
    """A weight's name without what Accelerate's wrappers add: DDP "module.", compile "_orig_mod."."""
    for prefix in ("module.", "_orig_mod."):
        name = name[len(prefix) :] if name.startswith(prefix) else name
    return name


def _saved_shapes(checkpoint: Path) -> dict[str, tuple[int, ...]] | None:
    """The model weights' shapes in a checkpoint, read from file headers without loading them:
    `model.safetensors`, or under FSDP the torch.distributed.checkpoint metadata of
    `pytorch_model_fsdp_0/` (the full shapes, keys prefixed "model."). None if neither is there."""
    weights = checkpoint / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {_bare(name): tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    if (checkpoint / SHARDED_MODEL_DIR / ".metadata").is_file():
        from torch.distributed.checkpoint import FileSystemReader

        metadata = FileSystemReader(str(checkpoint / SHARDED_MODEL_DIR)).read_metadata().state_dict_metadata
        return {_bare(name.removeprefix("model.")): tuple(m.size) for name, m in metadata.items() if hasattr(m, "size")}
    return None


def check_checkpoint_layout(checkpoint: Path, sharded: bool) -> None:
    """Raise `RecipeError` if `checkpoint` was written by a sharded (FSDP) run and this run is not,
    or the other way round. Accelerate's `load_state` reads `pytorch_model_fsdp_0/` (one shard
    file per process, torch.distributed.checkpoint) under FSDP and `model.safetensors`
    otherwise; the wrong one would fail deep inside it."""
    written_sharded = (checkpoint / SHARDED_MODEL_DIR).is_dir()
    if written_sharded == sharded:
        return
    if written_sharded:
        raise RecipeError(
            f"Checkpoint {checkpoint} was written by a sharded (FSDP) run, and this run is not sharded. Resume it "
            "with the launch that wrote it (accelerate launch --config_file recipes/accelerate/fsdp.yaml ...), or "
            "start in a fresh run.output_dir."
        )
    raise RecipeError(
        f"Checkpoint {checkpoint} was written by an unsharded run, and this run is sharded (FSDP). Resume it "
        "without FSDP (torchrun, or the launch config that wrote it), or start in a fresh run.output_dir."
    )


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (a file truncated, corrupted or unreadable), or None
    when every file in it reads back: safetensors headers must cover their files, JSON must parse,
    and the zip archives `torch.save` writes (optimizer, scheduler, RNG states) must pass their
    CRC check (`zipfile.testzip`, which reads them once); a sharded (FSDP) folder's `.metadata`
    must read and every shard file must hold the byte ranges it lists (`_shards_problem`).
    Formats it does not know are skipped."""
    import zipfile

    for path in sorted(p for p in Path(checkpoint).rglob("*") if p.is_file()):
        name = path.relative_to(checkpoint)
        try:
            if path.suffix == ".distcp" and not (path.parent / ".metadata").is_file():
                return f"{name.parent / '.metadata'} is missing"
            if path.name == ".metadata":
                problem = _shards_problem(path.parent)
                if problem is not None:
                    return f"{name.parent}/{problem}"
            elif path.suffix == ".safetensors":
                runs.check_weights_file(path)
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix in (".bin", ".pkl", ".pt", ".pth"):
                if not zipfile.is_zipfile(path):
                    return f"{name} is truncated or not a torch.save archive"
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return f"{name} is corrupted (bad CRC in {bad})"
        except Exception as err:  # noqa: BLE001 - any failure to read the file back means damage
            return f"{name} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def _shards_problem(folder: Path) -> str | None:
    """What is wrong with a torch.distributed.checkpoint folder (`.metadata` + one `.distcp` file
    per process), judged from the metadata alone: a shard file missing or shorter than the byte
    ranges the metadata puts in it (truncated)."""
    from torch.distributed.checkpoint import FileSystemReader

    needed: dict[str, int] = {}
    for info in FileSystemReader(str(folder)).read_metadata().storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for file, size in sorted(needed.items()):
        path = folder / file
        if not path.is_file():
            return f"{file} is missing"
        if path.stat().st_size < size:
            return f"{file} is truncated ({path.stat().st_size} of {size} bytes)"
    return None


def resume_point(recipe: Recipe, log=print) -> Path | None:
    """The checkpoint a run continues from, decided before any file is written: `run.resume=auto`
    takes the latest intact checkpoint of the run folder (refusing a folder that holds a run of
    other hyperparameters); a damaged one (`checkpoint_problem`) is named and the previous intact
    one used instead. `never` refuses a folder that already holds a run, and a path must be an
    intact checkpoint folder."""
    r, run_dir = recipe.run, recipe.output_dir
    if r.resume == "auto":
        found = list_checkpoints(run_dir)
        if found:
            check_same_recipe(run_dir, recipe)
        damaged = []
        for checkpoint in reversed(found):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                if damaged:
                    log(f"{recipe.name}: checkpoint {damaged[-1][0]} is damaged ({damaged[-1][1]}); resuming from "
                        f"the previous intact checkpoint {checkpoint.name} instead.")
                return checkpoint
            damaged.append((checkpoint.name, problem))
        if damaged:
            shown = "; ".join(f"{name}: {problem}" for name, problem in damaged)
            raise RecipeError(
                f"Every checkpoint in {run_dir / runs.CHECKPOINTS_DIR} is damaged ({shown}). Delete them to start "
                "over (or restore them from a copy), then run again."
            )
        return None
    if r.resume == "never":
        if list_checkpoints(run_dir) or (run_dir / runs.FINAL_DIR).exists():
            raise RecipeError(
                f"{run_dir} already holds a run; pass run.resume=auto to continue it or choose another run.output_dir."
            )
        return None
    checkpoint = Path(r.resume)
    if not (checkpoint / TRAINER_STATE).is_file():
        raise RecipeError(f"run.resume={r.resume!r} is not a checkpoint folder (no {TRAINER_STATE}).")
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise RecipeError(f"run.resume={r.resume!r} is a damaged checkpoint: {problem}. Resume from another one.")
    return checkpoint


def read_counters(checkpoint: Path) -> dict[str, Any]:
    """The loop's counters saved with a checkpoint: step, images_seen, train_time_s, ..."""
    return runs.read_json(checkpoint / TRAINER_STATE)


def save_checkpoint(accelerator, model, run_dir: Path, counters: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `counters["step"]` of the run: Accelerate's state (model, optimizer,
    scheduler, every process's RNG, registered objects such as the EMA weights) plus the model's
    config.json and the loop's `counters`, under a temporary name renamed once complete; then
    delete all but the newest `keep`. A collective: every process calls it."""
    main = accelerator.is_main_process
    final = run_dir / runs.CHECKPOINTS_DIR / checkpoint_name(counters["step"])
    tmp = final.with_name(f".{final.name}.tmp")
    previous = latest_checkpoint(run_dir)
    fallback = (
        f"The previous checkpoint {previous} is intact: free disk space (or delete old checkpoints), then run the "
        "same command again (run.resume=auto) to continue from it." if previous is not None else
        "No earlier checkpoint exists: free disk space (or choose another run.output_dir) and run again."
    )
    with _atomic_write(tmp, f"checkpoint {final.name} into {final.parent}", fallback):
        if main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            accelerator.unwrap_model(model).config.to_json_file(str(tmp / "config.json"))
            runs.write_json(tmp / TRAINER_STATE, counters)
    if main:
        runs.replace_dir(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def save_final_model(accelerator, model, recipe: Recipe, folder: str = runs.FINAL_DIR) -> Path:
    """Write `RUN_DIR/final/` (or `RUN_DIR/<folder>/`, e.g. early stopping's best/):
    `save_pretrained` (with the shipped code for remote loading), the image processor the recipe
    trained with (resolution, mean, std) and the recipe, atomically. A collective: the full state
    dict is gathered from every process under FSDP / DeepSpeed.

    A peft model (`train.method: lora`) is saved merged (`peft_methods.merged_copy`: an ordinary
    checkpoint every command reads), with peft's adapter folder in `<folder>/adapter/`."""
    from . import peft_methods
    state_dict = accelerator.get_state_dict(model)
    final_dir = recipe.output_dir / folder
    if accelerator.is_main_process:
        from transformers import ViTImageProcessor

        size = recipe.model.image_size
        tmp = recipe.output_dir / f".{folder}.tmp"
        fallback = (f"{final_dir.name}/ is unchanged and the run's checkpoints are intact: free disk space, then "
                    "run the same command again (run.resume=auto).")
        with _atomic_write(tmp, f"the model into {final_dir}", fallback):
            if tmp.exists():
                shutil.rmtree(tmp)
            unwrapped = accelerator.unwrap_model(model)
            if peft_methods.is_peft_model(unwrapped):
                peft_methods.merged_copy(unwrapped).save_pretrained(str(tmp))
                unwrapped.save_pretrained(str(tmp / peft_methods.ADAPTER_DIR))
            else:
                with _plain_class(unwrapped) as plain:
                    plain.save_pretrained(str(tmp), state_dict=state_dict)
            ViTImageProcessor(
                do_resize=True, size={"height": size, "width": size}, do_normalize=True,
                image_mean=list(recipe.data.mean), image_std=list(recipe.data.std),
            ).save_pretrained(str(tmp))
            (tmp / runs.RECIPE).write_text(recipe.to_yaml(), encoding="utf-8")
        runs.replace_dir(tmp, final_dir)
    accelerator.wait_for_everyone()
    return final_dir


@contextlib.contextmanager
def _plain_class(model):
    """`model` seen as its own class while it is saved. FSDP2's `fully_shard` swaps a module's
    class for a generated subclass (`FSDPViTReproForImageClassification`), and `save_pretrained`
    names the saved class in `auto_map` and copies the files that define it: torch's FSDP sources
    instead of the shipped model code, a checkpoint that loads only where this package is
    installed. Saving as the plain class writes the same folder as a DDP run's."""
    from torch.distributed.fsdp import FSDPModule

    wrapped = type(model)
    if not issubclass(wrapped, FSDPModule):
        yield model
        return
    model.__class__ = next(c for c in wrapped.__mro__ if not issubclass(c, FSDPModule))
    try:
        yield model
    finally:
        model.__class__ = wrapped


@contextlib.contextmanager
def hold_run_dir(accelerator, run_dir: Path, description: str):
    """Hold `run_dir` for this run (`runs.lock_run_dir`, taken by the main process; every process
    learns the outcome, so all of them stop together with `RecipeError` when another run holds the
    folder). A folder this call created and the run left empty is removed again on exit, so a run
    refused before training leaves nothing behind."""
    from accelerate.utils import broadcast_object_list

    created = not run_dir.exists()
    lock, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            lock = runs.lock_run_dir(run_dir, description)
        except runs.RunFolderBusyError as err:
            refusal = [str(err)]
    if accelerator.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0] is not None:
        raise RecipeError(refusal[0])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
            leftovers = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
            if created and leftovers <= {runs.LOCK, f"{runs.LOCK}.owner"}:
                shutil.rmtree(run_dir, ignore_errors=True)
