"""What the three evaluations share: loading a checkpoint for evaluation, where results go, and
the fingerprint that keys cached features."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Config entries that do not change what the network computes (bookkeeping, label names, output
# switches); everything else, and every weight, enters `model_fingerprint`.
_FINGERPRINT_IGNORED = {
    "transformers_version", "architectures", "auto_map", "id2label", "label2id", "num_labels", "problem_type",
    "torch_dtype", "dtype", "output_attentions", "output_hidden_states", "return_dict", "use_cache",
}


@dataclass
class LoadedCheckpoint:
    """A classifier ready to evaluate: the model (eval mode), where it came from, and the input
    normalisation its image processor asks for."""

    model: Any
    source: str
    run_dir: Path | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: `data.describe_image_processor` of the processor saved beside the weights (class, backend),
    #: recorded in the metrics files; `source` says when none was saved and the default was used.
    image_processor: dict[str, Any] | None = None


def load_checkpoint(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> LoadedCheckpoint:
    """`AutoModelForImageClassification` from a checkpoint folder, a run folder (its `final/`) or a
    Hub id, in eval mode on `device` (default: CUDA when available), with the mean/std of the image
    processor saved beside it (0.5/0.5, the ViT checkpoints' values, with a warning when none is),
    and that processor's class and backend (`image_processor`, as `AutoImageProcessor` loads it)."""
    import hf_vit_repro  # noqa: F401  (registers the Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..runs import CheckpointError, load_pretrained, resolve_checkpoint
    from ..data import VIT_MEAN, VIT_STD, describe_image_processor, image_stats

    source, run_dir = resolve_checkpoint(checkpoint)
    try:
        model = load_pretrained(AutoModelForImageClassification, source)
    except CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load a classifier from {source!r}: expected a save_pretrained folder (config.json and weights), "
            f"a run folder holding final/, or a Hub model id ({type(err).__name__}: {err})"
        ) from err
    try:
        processor = AutoImageProcessor.from_pretrained(source)
        mean, std = image_stats(processor)
        described = describe_image_processor(processor, f"{source}/preprocessor_config.json")
    except (OSError, ValueError):
        warnings.warn(f"no image processor saved with {source!r}; normalising with mean 0.5, std 0.5", stacklevel=2)
        mean, std = VIT_MEAN, VIT_STD
        described = {"class": None, "backend": None, "source": "none saved with the checkpoint: mean 0.5, std 0.5"}
    device = torch.device(device) if device is not None else default_device()
    return LoadedCheckpoint(model.to(device).eval(), source, run_dir, mean, std, described)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_size_of(model) -> int:
    """The square resolution a model runs at (its family's `image_size`: a ViT's `image_size`, the size a
    BiT ResNet was trained at as stored in its config)."""
    from ..models import family_of

    size = family_of(model).image_size(model)
    if size is None:
        raise ValueError(
            "the model's config records no image_size (a BiT ResNet trained elsewhere); pass the resolution to "
            "evaluate at (--resolution / image_size=...)"
        )
    return size


def check_resolution(model, resolution: int) -> int:
    """`resolution` if the model can run at it (a positive multiple of its token stride: the patch
    size, times the CNN's stride for hybrids; a BiT ResNet runs at any positive size), else a
    ValueError saying which sizes work."""
    from ..models import family_of

    return family_of(model).check_resolution(model, resolution)


def model_fingerprint(model) -> str:
    """SHA-256 of everything that decides a model's outputs: every tensor of its state dict (name,
    dtype, shape, bytes) and its config minus bookkeeping entries. A checkpoint folder and the
    same weights in memory get the same fingerprint; one changed weight changes it."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in _FINGERPRINT_IGNORED and not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_label(task: str, data_dir: str | os.PathLike | None = None) -> str:
    """What a metrics record calls the data: the Hub id of a registry task (noting a local copy),
    or the name given."""
    from ..data import TASKS

    spec = TASKS.get(task)
    name = (spec.hub_id or f"{spec.name} (local)") if spec is not None else str(task)
    return f"{name} (local copy {data_dir})" if data_dir else name


def default_output_dir(checkpoint: str | os.PathLike, run_dir: Path | None, kind: str) -> Path:
    """A run folder's own folder, else `outputs/<kind>/<checkpoint name>` (never inside the
    checkpoint folder, whose contents are what gets published)."""
    if run_dir is not None:
        return Path(run_dir)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(checkpoint).strip("/")).strip("_") or "checkpoint"
    return Path("outputs") / kind / name


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (printed by the commands and written beside their JSON)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Text counterpart of `runs.write_json`: temporary file in the same folder, then rename."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
    return path


__all__ = [
    "LoadedCheckpoint",
    "load_checkpoint",
    "default_device",
    "image_size_of",
    "check_resolution",
    "model_fingerprint",
    "dataset_label",
    "default_output_dir",
    "format_table",
    "write_text_atomic",
]
