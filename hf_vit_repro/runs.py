"""The run folder: where training, evaluation, analysis and publishing meet.

One training run writes one folder; later steps add to it and the publisher reads it. Every
module finds files through these names, so the layout is defined once:

    RUN_DIR/
      recipe.yaml                 the resolved recipe (every hyperparameter the run used)
      train_summary.json          steps, images seen, wall time, hardware, command, final loss
      checkpoints/step_0001000/   Accelerate state (model, optimizer, scheduler, RNG, data position)
      final/                      save_pretrained folder: config.json (auto_map), model.safetensors,
                                  shipped code files, preprocessor_config.json
      best/                       with early stopping: the best validation model (final/ holds the same)
      logs/                       TensorBoard event files
      metrics/<task>_<split>.json one evaluation each (see `metrics_record`)
      fewshot.json                few-shot linear evaluation results
      vtab.json                   VTAB-1k results
      analysis/                   the paper's figures (PNG) and analysis.json

All JSON is written atomically (`write_json`): a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

RECIPE = "recipe.yaml"
TRAIN_SUMMARY = "train_summary.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
#: A LoRA run's peft adapter folder, inside its final/ checkpoint (`training.peft_methods`, `hub.adapter`).
ADAPTER_DIR = "adapter"
BEST_DIR = "best"
LOGS_DIR = "logs"
METRICS_DIR = "metrics"
FEWSHOT = "fewshot.json"
VTAB = "vtab.json"
ANALYSIS_DIR = "analysis"
ANALYSIS_JSON = "analysis.json"


def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[str, Path | None]:
    """`(model folder or Hub id, run folder or None)`. A run folder (one holding `final/`) means its
    final model; a folder without `config.json` is refused; anything else is taken as a Hub id."""
    path = Path(checkpoint)
    if (path / FINAL_DIR / "config.json").is_file():
        return str(path / FINAL_DIR), path
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(checkpoint)!r} is neither a run folder (holding {FINAL_DIR}/config.json) nor a "
            "save_pretrained folder (holding config.json)."
        )
    return str(checkpoint), None


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """With `enabled=False`, the bars transformers, datasets and huggingface_hub draw themselves
    (loading and writing weights, preparing a split, downloads) are off, and turned back on after:
    a command's `--no-progress` (or a recipe's `run.progress_bar: false`) means no bar at all, not
    only the command's own. `cli.main` wraps every command with it."""
    if enabled:
        yield
        return
    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    was = (transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
           not hub_utils.are_progress_bars_disabled())
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            datasets.enable_progress_bars()
        if was[2]:
            hub_utils.enable_progress_bars()


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as it is (a truncated or foreign weights file, a config.json
    with an invalid value); the message names the file and says what to do."""


def check_weights_file(path: str | os.PathLike) -> Path:
    """Raise `CheckpointError` naming `path` unless it is a complete `.safetensors` file (its header
    parses and its data covers exactly what the header lists) or an `.npz` file that is a zip
    archive with an intact directory. Cheap: only headers are read. Other suffixes pass unchecked.

    This is the one check every loader runs before handing a weights file to safetensors, numpy
    or transformers, whose own errors (SafetensorError, BadZipFile, "pickled data") name neither
    the file nor the likely cause, an interrupted download.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt"):
                pass
        except SafetensorError as err:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file (interrupted download?): {err}. "
                "Download or save it again."
            ) from None
    elif path.suffix == ".npz":
        import zipfile

        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load falls back to unpickling whatever is not a zip or .npy file; only a file that
        # starts as a pickle (protocol >= 2) is one. Anything else is not an .npz at all.
        if not magic.startswith(b"PK") and not magic.startswith(b"\x80") and magic != b"\x93NUMPY":
            raise CheckpointError(f"{path} is not an .npz archive (it does not start as a zip file); check the file.")
        if magic.startswith(b"PK"):
            try:
                zipfile.ZipFile(path).close()
            except zipfile.BadZipFile as err:
                raise CheckpointError(
                    f"{path} is truncated or not an .npz archive (interrupted download?): {err}. Download it again."
                ) from None
    return path


def weight_files(checkpoint: str | os.PathLike) -> list[Path]:
    """The weights of a save_pretrained folder: `model.safetensors`, or the shard index followed
    by the shards it names."""
    checkpoint = Path(checkpoint)
    index = checkpoint / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        return [index] + [checkpoint / shard for shard in shards]
    return [checkpoint / "model.safetensors"]


def check_checkpoint_files(source: str | os.PathLike) -> None:
    """`check_weights_file` on a weights file, or on every weights file of a local checkpoint
    folder (shards included). A Hub id has no local files yet: nothing to check."""
    path = Path(source)
    if path.is_file():
        check_weights_file(path)
    elif path.is_dir():
        for weights in sorted(path.glob("*.safetensors")):
            check_weights_file(weights)


def load_pretrained(loader: Any, source: str | os.PathLike, **kwargs: Any) -> Any:
    """`loader.from_pretrained(source, **kwargs)` (a model class or an Auto class) with errors that
    name the file: the weights are checked first (`check_checkpoint_files`), and an invalid value in
    config.json (huggingface_hub's strict validation, or sizes the model cannot be built from)
    becomes a `CheckpointError` saying which file and field. Every command that loads a checkpoint
    goes through here."""
    from huggingface_hub.errors import StrictDataclassError

    from .configuration_vit_repro import ModelSizeError

    check_checkpoint_files(source)
    config_file = Path(source) / "config.json" if Path(source).is_dir() else f"config.json of {source}"
    try:
        return loader.from_pretrained(source, **kwargs)
    except StrictDataclassError as err:
        reason = err.__cause__ or err
        raise CheckpointError(f"{config_file}: {' '.join(str(reason).split())} Fix the value in that file.") from None
    except ModelSizeError as err:  # valid fields that cannot build a model together
        raise CheckpointError(f"{config_file}: {err} Fix the sizes in that file.") from None


def metrics_path(run_dir: str | Path, task: str, split: str) -> Path:
    """`RUN_DIR/metrics/<task>_<split>.json` (task names with "/" are flattened)."""
    return Path(run_dir) / METRICS_DIR / f"{task.replace('/', '__')}_{split}.json"


def metrics_record(
    *,
    checkpoint: str,
    task: str,
    dataset: str,
    split: str,
    resolution: int | tuple[int, int],
    num_images: int,
    metrics: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """The one schema of an evaluation's metrics JSON, written by evaluation and read by the
    model card (`metrics` maps metric name, e.g. "accuracy" or "top5_accuracy", to a value in
    [0, 1])."""
    return {
        "checkpoint": str(checkpoint),
        "task": task,
        "dataset": dataset,
        "split": split,
        "resolution": resolution,
        "num_images": int(num_images),
        "metrics": {name: float(value) for name, value in metrics.items()},
        "versions": software_versions(),
        **extra,
    }


def software_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python and of the libraries a result depends on (plus the distributions named
    in `extra`, e.g. onnxruntime for an export); libraries not installed are left out."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("hf-vit-repro", "torch", "transformers", "accelerate", "datasets", "evaluate", "timm", *extra):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    # NamedTemporaryFile creates the file owner-only; give it the permissions of a normal new file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)
    os.replace(f.name, path)
    return path


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Move the finished folder `tmp` to `final`; an existing `final` is moved aside first and
    removed only after the new one is in place, so an interruption never leaves neither."""
    import shutil

    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


#: The lock file a training run holds in its folder while it writes there (`lock_run_dir`).
LOCK = ".lock"


class RunFolderBusyError(OSError):
    """Another process is training into the same run folder."""


def lock_run_dir(run_dir: str | Path, description: str = ""):
    """Hold an exclusive lock on `run_dir` (an OS file lock on `RUN_DIR/.lock`, released when the
    returned object's `release()` is called or the process dies, so a killed run never leaves a
    stale lock; keep the object: the lock is also released when it is garbage-collected). Raises
    `RunFolderBusyError`, naming the holder, if another process holds it."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK), timeout=0)
    owner = run_dir / f"{LOCK}.owner"
    try:
        lock.acquire()
    except Timeout:
        holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "another process"
        raise RunFolderBusyError(
            f"{run_dir} is in use by {holder}. Two runs writing one folder would corrupt each other's "
            "checkpoints: wait for it to finish, or choose another run.output_dir."
        ) from None
    owner.write_text(f"pid {os.getpid()} on {platform.node()}{f' ({description})' if description else ''}\n",
                     encoding="utf-8")
    return lock
