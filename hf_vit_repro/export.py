"""Deployment export: a checkpoint -> an ONNX model (for ONNX Runtime) or a torch.export
ExportedProgram, checked against PyTorch before the folder is written.

    vit-repro export outputs/run1 vit-onnx                         # ONNX, dynamic batch axis: onnx/model.onnx
    vit-repro export outputs/run1 vit-int8 --quantize int8         # + onnx/model_quantized.onnx
    vit-repro export outputs/run1 vit-q --quantize int8-static --calibration-data digits   # calibrated int8
    vit-repro export my-vit vit-pt2 --format exported-program --image-size 384
    vit-repro verify-export vit-onnx --checkpoint outputs/run1     # check an existing folder

The output folder describes itself:

    OUT/
      onnx/model.onnx             the float32 ONNX graph (a model over 2 GB adds model.onnx.data)
      onnx/model_quantized.onnx   with `quantize=`: its int8 quantisation (dynamic or static)
      quantization_check_inputs.npy   int8-static: the held-out images its graph was checked on
      model.pt2                   the ExportedProgram instead, for `format="exported-program"`
      config.json                 the model's config (`image_size` = the exported resolution)
      preprocessor_config.json    the checkpoint's ViTImageProcessor, resizing to that resolution
      export_report.json          format, opset, input/output names and shapes, dynamic axes,
                                  SHA-256 of the artefact, the parity check, software versions,
                                  the image processor's class and backend (`image_processor`)

The ONNX files sit where transformers.js and optimum look for them in a Hub repo (`onnx/model.onnx`
for float32, `onnx/model_quantized.onnx` for the 8-bit graph), beside the config and the image
processor at the folder's root; `vit-repro push --with-export OUT` uploads them with the
checkpoint. (transformers.js also needs a `model_type` it knows, e.g. transformers' own `vit`.)
Folders written before this layout, with `model.onnx` at the root, still load and verify: the
report names each file by its path in the folder.

The graph's inputs and outputs are those of the class the checkpoint's config names in
`architectures` (tables `EXPORT_INPUTS` and `EXPORT_OUTPUTS`, one line per class); N = the
number of patches, K = the number of classes:

    ViTReproForImageClassification    pixel_values -> logits (B, K), pooler_output (B, D')
    ViTReproModel                     pixel_values -> last_hidden_state (B, S, D), pooler_output (B, D)
    ViTReproForMaskedImageModeling    pixel_values, bool_masked_pos -> reconstruction (B, C, H, W), loss ()
    ViTReproForMaskedPatchPrediction  pixel_values, corruption, replacement_index -> logits (B, N, ...)
    ViTReproBackbone                  pixel_values -> feature_maps_0, feature_maps_1, ... (one per map)

A backbone's `feature_maps` (one per `out_features` entry, or per level of its feature pyramid)
become that many graph outputs, in order. Save the backbone first to export one from a classifier:
`ViTReproBackbone.from_pretrained(classifier_dir, out_indices=[...]).save_pretrained(backbone_dir)`.

A classifier's graph also returns the features its head reads (`pooler_output`: the pooled
token after the pre-logits layer, if any; D' = `pooled_size`), so that the parity check compares
the features too: a freshly reset head is zero and its logits are 0 whatever the input, which
alone would check nothing. Runtimes and pipelines read `logits` by name and ignore the extra output.

`pixel_values` `(B, C, H, W)` float32, normalised as the image processor says. The
self-supervised classes take their masks as graph inputs, so the graph draws nothing at random:

- `bool_masked_pos` `(B, N)` bool: True where the patch embedding is replaced by the [mask]
  embedding (masked image modeling).
- `corruption` `(B, N)` int64 `PatchCorruption` codes (0 none, 1 [mask], 2 a random other patch,
  3 kept but predicted) and `replacement_index` `(B, N)` int64 (the patch whose embedding a
  code-2 position takes; read only there), as `sample_patch_corruption` draws them per image
  (masked patch prediction). The graph does not check their values (the eager forward's range
  checks read tensor values, which torch.export cannot trace): pass codes in 0..3 and indices in
  [0, N).

Masked patch prediction exports its per-patch `logits`: `(B, N, 8^C)` for the 3-bit mean colour,
`(B, N, 16, 8^C)` for the 4 x 4 target, `(B, N, C * ph * pw)` for `l2_patch`; not its loss and
targets (a caller computes them from the logits and `masked_patch_prediction_targets` of the
pixels; and torch 2.14's ONNX exporter fails on that cross entropy with a dynamic batch). Masked
image modeling exports its loss beside the `reconstruction`, since it needs no labels (the
target is the input): the L1 distance over the masked pixels of the whole batch, as the eager
forward computes it. It is one scalar per call, not per image (run batch 1 for a per-image
score), and 0 when no patch is masked.

The resolution is baked in: the export runs at the checkpoint's `image_size`, or at `image_size=`
after resampling the position embeddings for good with the model's own
`resize_position_embeddings` (paper Sec. 3.2). Height and width are not dynamic: the model's
`resample_position_embeddings` turns the target grid into Python ints (and skips an unchanged
grid), which torch.export specialises to the traced size. The batch axis is dynamic by default.

Verification (paper-independent, always on): the exported artefact (ONNX Runtime's CPU execution
provider for ONNX, the ExportedProgram's module for pt2) and the PyTorch model run on the same
seeded random inputs (`random_inputs`: N(0, 1) pixels, masks of probability 0.5, corruption
codes and replacement indices uniform over their ranges), at batch sizes 1 and 3 when the batch is
dynamic (traced at 2) or at the traced size; the largest absolute difference of every output must
be within `tolerance` (1e-4 by default, for float32). Everything is written into a temporary sibling folder that is renamed to
`OUT` only after the check passes, so a failed export leaves nothing behind.

Int8 (`quantize=`, `--quantize`, ONNX only; `hf_vit_repro.quantization`): the float32 graph is
exported and checked as above and kept as `onnx/model.onnx`, then quantised into
`onnx/model_quantized.onnx`: "int8-dynamic" by `onnxruntime.quantization.quantize_dynamic` (int8
weights of every MatMul, activation scales computed per call), "int8-static" by `quantize_static`
(QDQ, int8 weights per output channel, activation scales calibrated on `calibration` images of
the task), "int8" meaning `quantization.DEFAULT_INT8`. That graph is checked against PyTorch
relative to the outputs' scale: every output's largest absolute difference must be within
`tolerance` (0.1 by default) times its largest absolute PyTorch value, on the random inputs
(dynamic) or on held-out images of the calibration source, which the folder keeps (static: its
fixed scales clip random pixels; that check is recorded under `quantization.random_input_parity`,
not required). A classifier's checks also record the share of top-1 classes that agree with
PyTorch (`top1_agreement`); the calibration (source, split, images, method) is recorded under
`quantization.calibration`. The report's `artefact`
and `parity` are the int8 graph's (what `load_exported` runs by default); the float32 graph and
its check are under `quantization.float32_artefact` and `quantization.float32_parity`, and
`verify` checks both. The exporter's shape annotations
(`value_info`) are dropped before quantising: ONNX's shape inference, which the quantiser runs,
rejects one of them, and ONNX Runtime infers them again on loading.

Precision (`precision=`, `--precision`; `hf_vit_repro.export_precision`): "auto" (default) and
"fp32" export float32; "bf16" exports a bf16 ExportedProgram (float32 inputs and outputs),
checked against PyTorch in bf16 relative to the outputs' scale, and is refused for ONNX (ONNX
Runtime's CPU provider has no bf16 MatMul). The report records it (`precision`, `requested_precision`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import export_precision, quantization, runs
from .quantization import Calibration

# What each exportable class takes and returns, in order. A new head is one line in each table:
# class name -> the graph inputs (keyword arguments of its forward, each drawn for the parity
# check by `INPUT_SAMPLERS`) and the fields of its output dataclass to export.
EXPORT_INPUTS: dict[str, tuple[str, ...]] = {
    "ViTReproModel": ("pixel_values",),
    "ViTReproForImageClassification": ("pixel_values",),
    "ViTReproForMaskedImageModeling": ("pixel_values", "bool_masked_pos"),
    "ViTReproForMaskedPatchPrediction": ("pixel_values", "corruption", "replacement_index"),
    "ViTReproBackbone": ("pixel_values",),
}
EXPORT_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ViTReproModel": ("last_hidden_state", "pooler_output"),
    "ViTReproForImageClassification": ("logits", "pooler_output"),
    "ViTReproForMaskedImageModeling": ("reconstruction", "loss"),
    "ViTReproForMaskedPatchPrediction": ("logits",),
    "ViTReproBackbone": ("feature_maps",),
}
# Outputs that are no field of the output dataclass but the input of one of the model's modules:
# output name -> module. A classifier's features are what its head reads (see the module docstring).
EXPORT_MODULE_INPUTS: dict[str, dict[str, str]] = {
    "ViTReproForImageClassification": {"pooler_output": "classifier"},
}

# Output fields that hold a tuple of tensors -> how many the model returns; each becomes its own graph
# output `{field}_{i}`.
TUPLE_OUTPUTS: dict[str, Callable[[nn.Module], int]] = {"feature_maps": lambda model: len(model.channels)}
INPUT_NAME = "pixel_values"  # every class's first input
#: The artefact of each format, by its path in the export folder (ONNX: where transformers.js and
#: optimum look in a Hub repo).
FORMATS = {"onnx": "onnx/model.onnx", "exported-program": "model.pt2"}
#: The int8 graph of `quantize="int8"`, beside the float32 one (transformers.js's name for 8-bit).
QUANTIZED_ONNX = "onnx/model_quantized.onnx"
REPORT = "export_report.json"
DEFAULT_TOLERANCE = 1e-4
#: The lowest opset torch.onnx's exporter writes directly; below it the model goes through onnx's
#: version converter, which fails on ViT's LayerNormalization (opset 17) and prints its own traceback.
MIN_ONNX_OPSET = 18
#: `quantize=` choices (ONNX only; `hf_vit_repro.quantization`): int8-dynamic, int8-static (calibrated) and
#: "int8", the alias of `quantization.DEFAULT_INT8`; checked against PyTorch relative to the outputs' scale.
QUANTIZATIONS = quantization.QUANTIZATIONS
DEFAULT_QUANTIZED_TOLERANCE = 0.1
TRACED_BATCH_SIZE = 2
DYNAMIC_CHECK_BATCH_SIZES = (1, 3)  # neither is the traced size
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(ValueError):
    """An export that cannot be made or trusted: the parity check failed, the artefact is missing,
    damaged or does not belong to the checkpoint."""


def require_onnx() -> None:
    """Import the `[export]` extra (onnx, onnxscript, onnxruntime) or say how to install it."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: install them with pip install 'hf-vit-repro[export]'"
        )


class ExportableModel(nn.Module):
    """The input tensors named by `EXPORT_INPUTS`, positional and in that order -> a tuple of the
    output tensors named by `EXPORT_OUTPUTS` (a `TUPLE_OUTPUTS` field flattened into its tensors):
    the plain tensors-in, tensors-out signature exporters and runtimes want."""

    def __init__(self, model: nn.Module):
        super().__init__()
        name = type(model).__name__
        if name not in EXPORT_OUTPUTS:
            raise ValueError(f"cannot export a {name}; exportable classes: {', '.join(EXPORT_OUTPUTS)}")
        self.model = model
        self.input_names = EXPORT_INPUTS[name]
        self.output_fields = EXPORT_OUTPUTS[name]
        self.output_names = tuple(
            f"{field}_{i}" if field in TUPLE_OUTPUTS else field
            for field in self.output_fields
            for i in range(TUPLE_OUTPUTS[field](model) if field in TUPLE_OUTPUTS else 1)
        )
        self.module_inputs = EXPORT_MODULE_INPUTS.get(name, {})

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # `EXPORT_MODULE_INPUTS` are caught by pre-hooks on their modules for this call only, so the
        # wrapped model is left as it was and its own forward decides what the head reads.
        captured: dict[str, torch.Tensor] = {}

        def catch(name: str):
            return lambda module, args: captured.__setitem__(name, args[0])

        hooks = [self.model.get_submodule(module).register_forward_pre_hook(catch(name))
                 for name, module in self.module_inputs.items()]
        try:
            outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        finally:
            for hook in hooks:
                hook.remove()
        flat = []
        for field in self.output_fields:
            if field in captured:
                flat.append(captured[field])
            else:
                flat.extend(outputs[field] if field in TUPLE_OUTPUTS else (outputs[field],))
        return tuple(flat)


# ----------------------------------------------------------------------------- loading


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def load_for_export(checkpoint: str | os.PathLike, progress: bool = True):
    """`(model, image_processor, source)` for a run folder (its `final/`), a save_pretrained folder
    or a Hub id: the class named in the config's `architectures`, float32, eval mode, on the CPU.
    The image processor is the one saved beside the weights, else `default_image_processor`
    (mean = std = 0.5, with a warning). `progress=False` hides transformers' loading bar."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        return _load_for_export(checkpoint)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def checkpoint_config(checkpoint: str | os.PathLike):
    """`(source, config)` of an exportable checkpoint, read without loading weights (so bad
    arguments are reported before any heavy work)."""
    import hf_vit_repro  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig

    path = Path(checkpoint)
    looks_local = path.is_absolute() or str(checkpoint).startswith((".", "~")) or len(path.parts) > 2
    if not path.exists() and looks_local:
        raise FileNotFoundError(
            f"checkpoint {str(checkpoint)!r} does not exist: pass a run folder, a save_pretrained folder or a Hub model id"
        )
    source, _ = runs.resolve_checkpoint(checkpoint)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot read a config from {source!r}: expected a run folder, a save_pretrained folder or a Hub model "
            f"id ({type(err).__name__}: {_one_line(err)})"
        ) from err
    architectures = list(getattr(config, "architectures", None) or [])
    if config.model_type != "vit_repro" or not architectures or architectures[0] not in EXPORT_OUTPUTS:
        raise ValueError(
            f"{source!r} holds a {config.model_type!r} model of class {architectures or 'unknown'}; exportable: "
            f"vit_repro checkpoints of class {', '.join(EXPORT_OUTPUTS)}"
        )
    return source, config


def _load_for_export(checkpoint):
    from transformers import AutoImageProcessor

    from . import modeling_vit_repro
    from .analysis import default_image_processor

    source, config = checkpoint_config(checkpoint)
    model_class = getattr(modeling_vit_repro, config.architectures[0])
    try:  # through runs.load_pretrained: a truncated or foreign weights file is named, not a SafetensorError
        model = runs.load_pretrained(model_class, source, dtype=torch.float32)
    except runs.CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the weights of {source!r} ({type(err).__name__}: {_one_line(err)})") from err
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        warnings.warn(f"no image processor saved with {source!r}; the export folder gets mean = std = 0.5", stacklevel=2)
        processor = default_image_processor(model.config)
    return model.eval(), processor, source


def _check_image_size(config, image_size: int) -> None:
    (sh, sw) = config.token_stride_hw
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image size must be a positive integer, got {image_size!r}")
    if image_size % sh or image_size % sw:
        what = "patch size" if not config.is_hybrid else "patch size times the CNN's stride"
        raise ValueError(f"image size {image_size} is not a multiple of the model's {what} ({sh}x{sw}); pick one that is")


# ----------------------------------------------------------------------------- running an export


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ort_session(path: Path, intra_op_num_threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_exported(
    folder: str | os.PathLike, intra_op_num_threads: int | None = None, artefact: str | None = None
) -> Callable:
    """A callable `(pixel_values, **other_inputs) -> {output name: tensor}` that runs the artefact
    of an export folder (`artefact`: another graph the report lists, e.g. the float32
    `onnx/model.onnx` of an int8 export; default the report's `artefact`): an ONNX Runtime session (CPU execution provider, default graph
    optimisations; `intra_op_num_threads` as given, else ONNX Runtime's default) or the
    ExportedProgram's module. The inputs are those the report lists (`run(x)` for a classifier,
    `run(x, bool_masked_pos=m)` for masked image modeling, `run(x, corruption=c,
    replacement_index=r)` for masked patch prediction), cast to the report's dtypes. No check is
    made here; see `verify`."""
    folder = Path(folder)
    report = _read_report(folder)
    if artefact is not None and artefact not in report["files"]:
        raise ValueError(f"{folder} holds no artefact {artefact!r}; its report lists {', '.join(report['files'])}")
    artefact = folder / (artefact or report["artefact"])
    names = [o["name"] for o in report["outputs"]]
    dtypes = {i["name"]: getattr(torch, i["dtype"]) for i in report["inputs"]}

    def ordered(pixel_values: torch.Tensor, others: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        given = {INPUT_NAME: pixel_values, **others}
        if set(given) != set(dtypes):
            raise ValueError(f"{folder} takes the inputs {', '.join(dtypes)}; got {', '.join(given)}")
        return {name: given[name].detach().cpu().to(dtype) for name, dtype in dtypes.items()}

    if report["format"] == "onnx":
        require_onnx()
        session = _ort_session(artefact, intra_op_num_threads)

        def run(pixel_values: torch.Tensor, **others: torch.Tensor) -> dict[str, torch.Tensor]:
            feed = {name: t.numpy() for name, t in ordered(pixel_values, others).items()}
            return {name: torch.from_numpy(a) for name, a in zip(names, session.run(names, feed))}

        run.session = session
        return run
    module = torch.export.load(str(artefact)).module()

    def run(pixel_values: torch.Tensor, **others: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return dict(zip(names, module(*ordered(pixel_values, others).values())))

    return run


def _num_patches(config) -> int:
    rows, cols = config.grid_size
    return rows * cols


def _sample_pixel_values(batch: int, config, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, config.num_channels, *config.image_hw, generator=generator)


def _sample_mask(batch: int, config, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, _num_patches(config), generator=generator) < 0.5


def _sample_corruption(batch: int, config, generator: torch.Generator) -> torch.Tensor:
    from .modeling_vit_repro import PatchCorruption

    return torch.randint(0, len(PatchCorruption), (batch, _num_patches(config)), generator=generator)


def _sample_replacement_index(batch: int, config, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, _num_patches(config), (batch, _num_patches(config)), generator=generator)


# How the parity check draws each input, `(batch size, config, generator) -> tensor`: pixels
# N(0, 1) (normalised pixels are of that scale), masks of probability 0.5, corruption codes and
# replacement indices uniform over their ranges (every PatchCorruption kind turns up, unlike with
# the paper's 50% rate and 80/10/10 split).
INPUT_SAMPLERS: dict[str, Callable[[int, Any, torch.Generator], torch.Tensor]] = {
    "pixel_values": _sample_pixel_values,
    "bool_masked_pos": _sample_mask,
    "corruption": _sample_corruption,
    "replacement_index": _sample_replacement_index,
}


def random_inputs(names, batch_size: int, config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random inputs `{name: tensor}` of batch size `batch_size` at the config's resolution,
    drawn in the order of `names` from one generator by `INPUT_SAMPLERS` (float32 pixels, bool
    masks, int64 codes and indices)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: INPUT_SAMPLERS[name](batch_size, config, generator) for name in names}


def check_parity(
    run: Callable, model: nn.Module, batch_sizes, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
    relative: bool = False, pixel_values: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Run the exported `run` (called as `load_exported`'s: `run(pixel_values, **other_inputs)`)
    and the PyTorch `model` on the same seeded random inputs (`random_inputs`) of each batch size,
    or on `pixel_values` given (N, C, H, W) in full batches of the largest batch size (a statically
    quantised graph's check on held-out images; a remainder is left out); returns the largest
    absolute difference per output and whether all are within `tolerance` (with `relative`, within
    `tolerance` times that output's largest absolute PyTorch value, plus `DEFAULT_TOLERANCE`; a
    quantised graph's check), and for a classifier the share of inputs whose top-1 class is
    PyTorch's (`top1_agreement`)."""
    exportable = ExportableModel(model).eval()
    diffs = {name: 0.0 for name in exportable.output_names}
    scales = {name: 0.0 for name in exportable.output_names}
    agree, total = 0, 0
    if pixel_values is not None:
        step = max(batch_sizes)
        batches = [{INPUT_NAME: pixel_values[i:i + step]} for i in range(0, len(pixel_values) - step + 1, step)]
    else:
        batches = [random_inputs(exportable.input_names, batch, model.config, seed=seed + i)
                   for i, batch in enumerate(batch_sizes)]
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())  # a bf16 model takes bf16 pixels
    for inputs in batches:
        batch = len(inputs[INPUT_NAME])
        with torch.no_grad():
            expected = exportable(*(t.to(dtype) if t.is_floating_point() else t for t in inputs.values()))
        others = {name: t for name, t in inputs.items() if name != INPUT_NAME}
        got = run(inputs[INPUT_NAME], **others)
        for name, want in zip(exportable.output_names, expected):
            if name not in got or tuple(got[name].shape) != tuple(want.shape):
                shape = tuple(got[name].shape) if name in got else "missing"
                raise ExportError(
                    f"the exported model's output {name!r} has shape {shape} at batch size {batch}, PyTorch's "
                    f"{tuple(want.shape)}: the export does not match the model"
                )
            diff = float((got[name].float() - want.float()).abs().max())
            diffs[name] = max(diffs[name], diff if diff == diff else float("inf"))  # NaN counts as a failure
            scales[name] = max(scales[name], float(want.float().abs().max()))
            if name == "logits" and want.ndim == 2:
                agree += int((got[name].argmax(-1) == want.argmax(-1)).sum())
                total += len(want)
    bounds = {n: tolerance * scales[n] + DEFAULT_TOLERANCE if relative else tolerance for n in diffs}
    result = {
        "batch_sizes": list(batch_sizes) if pixel_values is None else [len(b[INPUT_NAME]) for b in batches],
        "tolerance": tolerance,
        "max_abs_diff": diffs,
        "passed": all(diffs[n] <= bounds[n] for n in diffs),
    }
    if relative:
        result.update(relative=True, max_abs_reference=scales)
    if total:
        result["top1_agreement"] = agree / total
    return result


def _onnx_signature(path: Path) -> tuple[list[dict], list[dict], dict, int]:
    """Inputs and outputs (name, shape with symbolic dims as names, dtype), dynamic axes and the
    default-domain opset of a saved ONNX model (read without loading external weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        out = []
        for v in values:
            dims = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    inputs, outputs = describe(model.graph.input), describe(model.graph.output)
    dynamic = {
        v["name"]: {str(i): d for i, d in enumerate(v["shape"]) if isinstance(d, str)} for v in inputs + outputs
    }
    dynamic = {k: v for k, v in dynamic.items() if v}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return inputs, outputs, dynamic, opset


def _trace(exportable: ExportableModel, sample: tuple, dynamic_shapes) -> torch.export.ExportedProgram:
    """`torch.export.export` (non-strict) of `exportable` on `sample`, less the operations its
    outputs do not need. Masked patch prediction's forward also computes its targets and loss,
    which are not exported; dead-code elimination drops them (with torch 2.14 the ONNX exporter's
    decomposition of that cross entropy fails on a dynamic batch). Both formats start here."""
    with warnings.catch_warnings():
        # The exporters' progress prints and advice for other models are not the user's business.
        warnings.simplefilter("ignore")
        program = torch.export.export(exportable, sample, dynamic_shapes=dynamic_shapes)
    program.graph_module.graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program


def _export_onnx(program: torch.export.ExportedProgram, exportable, path: Path, opset: int | None, dynamic_shapes) -> None:
    """`program` to ONNX (`dynamic_shapes`, those it was traced with, only name its symbolic axes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, dynamo=True, verbose=False, opset_version=opset,
            input_names=list(exportable.input_names), output_names=list(exportable.output_names),
            dynamic_shapes=dynamic_shapes,
        )  # fmt: skip
    onnx_program.save(str(path))


def _prepare_output_dir(output_dir: Path, checkpoint_source: str | None) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder; choose another output folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / REPORT).is_file():
        raise FileExistsError(
            f"{output_dir} already holds files and is not an export folder (no {REPORT}); choose a new or empty folder"
        )
    if checkpoint_source is not None and Path(checkpoint_source).resolve() == output_dir.resolve():
        raise FileExistsError(f"{output_dir} is the checkpoint itself; choose another output folder")


def _check_options(format: str, opset: int | None, tolerance: float | None, quantize: str | None = None,
                   calibration: Calibration | None = None, precision: str = "auto") -> None:
    """Bad arguments are refused before any loading or tracing."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    export_precision.resolve_export_precision(precision, format)  # bf16 ONNX is refused
    quantization.canonical(quantize)  # an unknown name is refused
    if quantize is not None and format != "onnx":
        raise ValueError(f"--quantize {quantize} applies to the onnx format only (ONNX Runtime's quantisation)")
    if problem := quantization.options_problem(quantize, calibration):
        raise ValueError(problem)
    if format == "onnx":
        require_onnx()
    if opset is not None and format != "onnx":
        raise ValueError("--opset applies to the onnx format only")
    if opset is not None and not MIN_ONNX_OPSET <= opset <= _max_onnx_opset():
        raise ValueError(
            f"opset {opset} is not one torch.onnx can write; choose an opset between {MIN_ONNX_OPSET} and the installed "
            f"onnx's {_max_onnx_opset()} (or leave --opset out for torch.onnx's default)"
        )
    _check_tolerance(tolerance)


def _check_tolerance(tolerance: float | None) -> None:
    """A parity tolerance is a positive finite number (None: the default for the export kind, or
    the report's); a negative, zero, NaN or infinite one would make the check meaningless."""
    if tolerance is not None and not (0 < tolerance < float("inf")):
        raise ValueError(f"--tolerance must be a positive finite number, got {tolerance}")


def export_model(
    model: nn.Module,
    output_dir: str | os.PathLike,
    *,
    format: str = "onnx",
    opset: int | None = None,
    dynamic_batch: bool = True,
    image_size: int | None = None,
    image_processor=None,
    tolerance: float | None = None,
    progress: bool = True,
    source: str | None = None,
    quantize: str | None = None,
    calibration: Calibration | str | os.PathLike | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Export an in-memory model (a class of `EXPORT_OUTPUTS`) to `output_dir`; see the module
    docstring for the folder. `image_size` resamples a copy's position embeddings for good before
    export; `opset` defaults to torch.onnx's (20 with torch 2.14). `quantize`: "int8-dynamic",
    "int8-static" (with `calibration`: a `quantization.Calibration`, or its source alone) or "int8"
    (`quantization.DEFAULT_INT8`). `precision`: "auto" (= fp32), "fp32" or "bf16" (exported-program
    only; `hf_vit_repro.export_precision`). Returns the export report.

    Raises `ExportError` (and writes nothing) when the exported model's outputs differ from
    PyTorch's by more than `tolerance` (default 1e-4; with `quantize="int8"`, 0.1 relative to the
    outputs' scale, see the module docstring); `ImportError` naming `pip install
    'hf-vit-repro[export]'` when ONNX export is asked for without onnx, onnxscript and onnxruntime."""
    import copy

    from tqdm.auto import tqdm

    from .analysis import default_image_processor
    from .convert_common import set_processor_size
    from .data import describe_image_processor

    resolved = export_precision.resolve_export_precision(precision, format)
    bf16 = resolved == "bf16"
    if tolerance is None:
        tolerance = export_precision.BF16_EXPORT_TOLERANCE if bf16 else (
            DEFAULT_TOLERANCE if quantize is None else DEFAULT_QUANTIZED_TOLERANCE)
    calibration = _as_calibration(calibration)
    _check_options(format, opset, tolerance, quantize, calibration, precision)
    exportable = ExportableModel(model)  # refuses classes without an output table before any work
    if calibration is not None and exportable.input_names != (INPUT_NAME,):
        raise ValueError(f"--quantize int8-static calibrates on images alone; a {type(model).__name__} also takes "
                         f"{', '.join(exportable.input_names[1:])}: use --quantize int8-dynamic")
    if image_size is not None:
        _check_image_size(model.config, image_size)
    output_dir = Path(output_dir)
    _prepare_output_dir(output_dir, source)

    steps = tqdm(total=4, desc=f"export {format}", unit="step", disable=not progress)
    model = copy.deepcopy(model).float().cpu().eval()
    if image_size is not None:
        model.resize_position_embeddings(image_size)
    model = export_precision.as_precision(model, resolved)
    exportable = ExportableModel(model).eval()
    if bf16:
        exportable = export_precision.Bf16Program(exportable).eval()
    processor = copy.deepcopy(image_processor) if image_processor is not None else default_image_processor(model.config)
    set_processor_size(processor, *model.config.image_hw)  # a timm source's centre crop stays one
    calibrated = None  # (Calibration, calibration pixels, check pixels, description)
    if calibration is not None:  # bad calibration data is reported before tracing
        steps.set_postfix_str("reading calibration images")
        calibrated = (calibration, *quantization.calibration_pixels(calibration, processor))
    sample = tuple(random_inputs(exportable.input_names, TRACED_BATCH_SIZE, model.config, seed=1234).values())
    with torch.no_grad():  # the model's own errors for inputs it cannot take come out here, not from a tracer
        sample_outputs = exportable(*sample)
    # one batch axis shared by every input (`forward(self, *inputs)`: the specs go in a tuple)
    batch_dim = torch.export.Dim("batch")
    dynamic_shapes = (tuple({0: batch_dim} for _ in sample),) if dynamic_batch else None
    check_batches = DYNAMIC_CHECK_BATCH_SIZES if dynamic_batch else (TRACED_BATCH_SIZE,)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))
    try:
        artefact = tmp / FORMATS[format]
        artefact.parent.mkdir(parents=True, exist_ok=True)
        steps.set_postfix_str("tracing")
        program = _trace(exportable, sample, dynamic_shapes)
        if format == "onnx":
            _export_onnx(program, exportable, artefact, opset, dynamic_shapes)
        else:
            torch.export.save(program, str(artefact))
        steps.update()

        steps.set_postfix_str("writing config and image processor")
        # The config loads with trust_remote_code (configuration_vit_repro.py is copied beside it);
        # the folder holds no PyTorch weights, so the model entries of auto_map are dropped.
        auto_map = getattr(model.config, "auto_map", None) or {}
        model.config.auto_map = {k: v for k, v in auto_map.items() if k == "AutoConfig"} or None
        model.config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        steps.update()

        steps.set_postfix_str("describing")
        report = _describe(format, tmp, artefact, exportable, sample, sample_outputs, dynamic_batch, opset, model, source)
        report["image_processor"] = describe_image_processor(processor, "preprocessor_config.json")
        report.update(precision=resolved, requested_precision=precision)
        runs.write_json(tmp / REPORT, report)  # load_exported reads names from it
        steps.update()

        steps.set_postfix_str("checking against PyTorch")
        float32_tolerance = DEFAULT_TOLERANCE if quantize else tolerance
        parity = check_parity(load_exported(tmp), model, check_batches, float32_tolerance, relative=bf16)
        parity["runtime"] = _runtime_name(format)
        report["parity"] = parity
        if not parity["passed"]:
            raise ExportError(
                f"the exported model differs from PyTorch{' in bf16' if bf16 else ''} by more than {_parity_bound(parity)} "
                f"(max abs diff {_diff_summary(parity)}); nothing was written to {output_dir}"
            )
        if quantize:
            steps.set_postfix_str(f"quantizing ({quantization.canonical(quantize)})")
            report = _quantize_int8(tmp, artefact, report, model, check_batches, tolerance, output_dir, quantize, calibrated)
        runs.write_json(tmp / REPORT, report)
        steps.update()
        steps.close()
        runs.replace_dir(tmp, output_dir)
    finally:
        steps.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _diff_summary(parity: dict) -> str:
    return ", ".join(f"{name} {diff:.2e}" for name, diff in parity["max_abs_diff"].items())


def _parity_bound(parity: dict) -> str:
    relative = " x the largest |output| (+1e-4)" if parity.get("relative") else ""
    return f"{parity['tolerance']:g}{relative}"


def _as_calibration(calibration) -> Calibration | None:
    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    return Calibration(str(calibration))


def _quantize_int8(folder: Path, artefact: Path, report: dict, model, batch_sizes, tolerance: float, output_dir: Path,
                   quantize: str = "int8", calibrated: tuple | None = None) -> dict:
    """Quantise the checked float32 `artefact` (`quantization.quantize_onnx`) into `QUANTIZED_ONNX`
    beside it, check that against PyTorch relative to the outputs' scale (a static graph on the
    held-out images of `calibrated`, `(Calibration, calibration pixels, check pixels,
    description)`, kept in the folder for `verify`; its result on the random inputs is recorded,
    not required), and return the report updated (files, artefact and parity of the int8 graph,
    `quantization` with the float32 graph's)."""
    import onnx

    quantized = folder / QUANTIZED_ONNX
    graph = onnx.load(str(artefact))  # with its external weights (model.onnx.data) if any
    del graph.graph.value_info[:]  # shape inference inside the quantiser rejects one of the exporter's
    plain = folder / "float32.tmp.onnx"  # weights beside it: a float32 graph may exceed protobuf's 2 GB
    onnx.save(graph, str(plain), save_as_external_data=True, location="float32.tmp.onnx.data")
    del graph
    settings, calibration_pixels, check_pixels, method = {}, None, None, "minmax"
    if calibrated is not None:
        chosen, calibration_pixels, check_pixels, described = calibrated
        settings, method = {"calibration": described}, chosen.method
        quantization.save_check_inputs(folder, check_pixels)
        check_pixels = torch.from_numpy(quantization.load_check_inputs(folder))  # as `verify` will read them
    settings = {**quantization.quantize_onnx(plain, quantized, quantize, INPUT_NAME, calibration_pixels, method), **settings}
    for temporary in folder.glob("float32.tmp.onnx*"):
        temporary.unlink()
    float32_parity = report["parity"]
    report["files"] = _artefact_files(folder)
    report["artefact"] = QUANTIZED_ONNX
    runs.write_json(folder / REPORT, report)
    run = load_exported(folder)
    parity = check_parity(run, model, batch_sizes, tolerance, relative=True, pixel_values=check_pixels)
    parity["runtime"] = _runtime_name("onnx")
    if check_pixels is not None:
        parity["inputs"] = f"{len(check_pixels)} held-out calibration-source images ({quantization.CHECK_INPUTS})"
        random_parity = check_parity(run, model, batch_sizes, tolerance, relative=True)
        settings["random_input_parity"] = {**random_parity, "note": "not required: fixed activation scales clip "
                                           "inputs beyond the calibrated ranges, such as N(0, 1) pixels"}
        settings["check_inputs"] = {"file": quantization.CHECK_INPUTS, "sha256": _sha256(folder / quantization.CHECK_INPUTS)}
    if not parity["passed"]:
        raise ExportError(
            f"the int8 model differs from PyTorch by more than {_parity_bound(parity)} (max abs diff "
            f"{_diff_summary(parity)}); nothing was written to {output_dir}. Export float32 (no --quantize)"
            + (" or calibrate on more images of the task." if check_pixels is not None else ".")
        )
    report["parity"] = parity
    report["quantization"] = {
        **settings,
        "float32_artefact": artefact.relative_to(folder).as_posix(),
        "float32_parity": float32_parity,
    }
    return report


def _runtime_name(format: str) -> str:
    if format == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    return f"torch {torch.__version__} (torch.export.load(...).module())"


def _tensor_specs(names, tensors, batch) -> list[dict]:
    """`{name, shape, dtype}` of traced tensors, the batch axis (not of a scalar) given as `batch`."""
    return [
        {"name": name, "shape": [batch, *t.shape[1:]] if t.ndim else [], "dtype": str(t.dtype).removeprefix("torch.")}
        for name, t in zip(names, tensors)
    ]


def _artefact_files(folder: Path) -> dict[str, dict]:
    """`{path in the folder: {sha256, bytes}}` of every artefact file (`model*` at any depth: the
    graphs, their external weights), the files `verify` protects."""
    return {
        p.relative_to(folder).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("model*"))
        if p.is_file()
    }


def _describe(format, folder: Path, artefact: Path, exportable, sample, sample_outputs, dynamic_batch, opset, model, source) -> dict:
    """The export report, less the parity check."""
    files = _artefact_files(folder)
    if format == "onnx":
        inputs, outputs, dynamic_axes, actual_opset = _onnx_signature(artefact)
        if opset is not None and actual_opset != opset:
            raise ExportError(
                f"torch.onnx could not produce opset {opset} (it wrote opset {actual_opset}); choose an opset "
                f"between {MIN_ONNX_OPSET} and the installed onnx's {_max_onnx_opset()}"
            )
    else:
        batch = "batch" if dynamic_batch else int(sample[0].shape[0])
        inputs = _tensor_specs(exportable.input_names, sample, batch)
        outputs = _tensor_specs(exportable.output_names, sample_outputs, batch)
        dynamic_axes = {v["name"]: {"0": "batch"} for v in inputs + outputs if v["shape"]} if dynamic_batch else {}
        actual_opset = None
    height, width = model.config.image_hw
    versions = runs.software_versions(extra=ONNX_PACKAGES if format == "onnx" else ())
    return {
        "format": format,
        "artefact": artefact.relative_to(folder).as_posix(),
        "files": files,
        "architecture": type(model).__name__,
        "checkpoint": source,
        "opset": actual_opset,
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_axes": dynamic_axes,
        "image_size": [height, width],
        "traced_batch_size": int(sample[0].shape[0]),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions,
    }


def _max_onnx_opset() -> int:
    import onnx

    return onnx.defs.onnx_opset_version()


def export(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    format: str = "onnx",
    opset: int | None = None,
    dynamic_batch: bool = True,
    image_size: int | None = None,
    tolerance: float | None = None,
    progress: bool = True,
    quantize: str | None = None,
    calibration: Calibration | str | os.PathLike | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Export a checkpoint (run folder, save_pretrained folder or Hub id) to `output_dir` as
    `format` ("onnx" or "exported-program"; `quantize=` "int8-dynamic", "int8-static" with
    `calibration` images, or "int8" for `quantization.DEFAULT_INT8`; `precision` "auto" = "fp32" or
    "bf16", exported-program only), check it against PyTorch and
    write the folder only if the check passes. Returns the export report (also in
    `output_dir/export_report.json`)."""
    calibration = _as_calibration(calibration)
    _check_options(format, opset, tolerance, quantize, calibration, precision)
    source, config = checkpoint_config(checkpoint)
    if image_size is not None:
        _check_image_size(config, image_size)
    _prepare_output_dir(Path(output_dir), source)
    model, processor, source = load_for_export(checkpoint, progress=progress)
    return export_model(
        model, output_dir, format=format, opset=opset, dynamic_batch=dynamic_batch, image_size=image_size,
        image_processor=processor, tolerance=tolerance, progress=progress, source=source, quantize=quantize,
        calibration=calibration, precision=precision,
    )  # fmt: skip


# ----------------------------------------------------------------------------- verifying a folder


def _read_report(folder: Path) -> dict:
    path = folder / REPORT
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected an export folder written by vit-repro export")
    if not path.is_file():
        raise ExportError(f"{folder} has no {REPORT}: it is not an export folder written by vit-repro export")
    try:
        report = runs.read_json(path)
    except ValueError as err:
        raise ExportError(f"{path} is not valid JSON ({_one_line(err)}): re-export the folder") from err
    missing = [key for key in ("format", "artefact", "files", "inputs", "outputs", "architecture", "image_size") if key not in report]
    if missing or report.get("format") not in FORMATS:
        raise ExportError(f"{path} lacks {missing or 'a known format'}: re-export the folder")
    return report


def verify(
    folder: str | os.PathLike, checkpoint: str | os.PathLike | None = None, tolerance: float | None = None
) -> dict[str, Any]:
    """Check an export folder: its artefact files are those the report describes (SHA-256), it
    loads and runs, its outputs are the architecture's, and it matches `checkpoint` (default: the
    checkpoint named in the report) within `tolerance` (default: the report's) on fresh random
    inputs (a static int8 graph on the held-out images its folder keeps, whose SHA-256 is checked
    too), in the report's `precision` (a bf16 program against the checkpoint cast to bf16). An int8 export's float32 graph (`quantization.float32_artefact`) is checked too,
    within its own recorded tolerance. Returns the parity result of the report's artefact; raises
    `ExportError` with what is wrong."""
    _check_tolerance(tolerance)
    folder = Path(folder)
    report = _read_report(folder)
    for name, expected in report["files"].items():
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path} is missing: re-export the folder")
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            raise ExportError(
                f"{path} is not the file that was exported and checked (size or SHA-256 differs from {REPORT}): "
                "it was changed or damaged after export; re-export the folder"
            )
    check_inputs = (report.get("quantization") or {}).get("check_inputs")
    pixel_values = None
    if check_inputs:
        path = folder / check_inputs["file"]
        if not path.is_file() or _sha256(path) != check_inputs["sha256"]:
            raise ExportError(f"{path} is missing or not the file the int8 graph was checked on: re-export the folder")
        pixel_values = torch.from_numpy(quantization.load_check_inputs(folder))
    # (graph, tolerance, relative to the outputs' scale): the report's artefact, and an int8 export's float32 graph
    float32 = (report.get("quantization") or {}).get("float32_artefact")
    graphs = [(report["artefact"], report.get("parity", {}).get("tolerance", DEFAULT_TOLERANCE) if tolerance is None
               else tolerance, bool(report.get("parity", {}).get("relative")))]
    if float32:
        graphs.append((float32, report["quantization"].get("float32_parity", {}).get("tolerance", DEFAULT_TOLERANCE), False))
    runners = {}
    for artefact, _, _ in graphs:
        if report["format"] == "onnx":
            require_onnx()
            import onnx

            try:
                onnx.checker.check_model(str(folder / artefact), full_check=False)
            except Exception as err:  # onnx raises its own ValidationError and protobuf's DecodeError
                raise ExportError(f"{folder / artefact} is not a valid ONNX model ({_one_line(err)[:300]})") from err
        try:
            runners[artefact] = load_exported(folder, artefact=artefact)
        except Exception as err:
            raise ExportError(f"cannot load {folder / artefact} ({type(err).__name__}: {_one_line(err)[:300]})") from err

    checkpoint = checkpoint if checkpoint is not None else report.get("checkpoint")
    if checkpoint is None:
        raise ValueError(f"{REPORT} names no checkpoint; pass the checkpoint to compare with")
    model, _, source = load_for_export(checkpoint)
    if type(model).__name__ != report["architecture"]:
        raise ExportError(
            f"{folder} holds a {report['architecture']} export but {source!r} is a {type(model).__name__}: "
            "they do not match"
        )
    if list(model.config.image_hw) != list(report["image_size"]):
        height, width = report["image_size"]
        if height != width:
            raise ExportError(f"{folder} was exported at {height}x{width}; only square resizes are reproducible")
        model.resize_position_embeddings(height)
    model = export_precision.as_precision(model, report.get("precision", "fp32"))
    dynamic = bool(report.get("dynamic_axes"))
    batches = DYNAMIC_CHECK_BATCH_SIZES if dynamic else (report.get("traced_batch_size", TRACED_BATCH_SIZE),)
    results = []
    for artefact, bound, relative in graphs:
        try:
            own = pixel_values if artefact == report["artefact"] else None  # the float32 graph: random inputs
            parity = check_parity(runners[artefact], model, batches, bound, seed=100, relative=relative, pixel_values=own)
        except ExportError:
            raise
        except Exception as err:  # a runtime error on a damaged or foreign graph
            raise ExportError(f"running {folder / artefact} failed ({type(err).__name__}: {_one_line(err)[:300]})") from err
        parity["runtime"] = _runtime_name(report["format"])
        if not parity["passed"]:
            what = folder if artefact == report["artefact"] else folder / artefact
            raise ExportError(
                f"{what} does not match {source!r}: max abs diff {_diff_summary(parity)} exceeds {_parity_bound(parity)}"
            )
        results.append(parity)
    return results[0]


# ----------------------------------------------------------------------------- publishing


def hub_files(folder: str | os.PathLike, checkpoint: str | os.PathLike) -> list[tuple[Path, str]]:
    """`(file, path in the repo)` of an ONNX export folder for the Hub repo of `checkpoint`:
    `onnx/model.onnx`, `onnx/model_quantized.onnx` (an int8 export), external weights if any, and
    the report as `onnx/export_report.json` (its file names are paths from the repo's root). The
    folder is `verify`-ed against `checkpoint` first (SHA-256 of every graph, parity on fresh
    inputs), so a push never publishes graphs of other weights. Raises `ExportError` for an
    ExportedProgram (the Hub has no convention for it), a folder in the layout before `onnx/`, or
    an export at another resolution than the checkpoint's config (the repo's
    preprocessor_config.json, which transformers.js and optimum read, would feed it wrong sizes)."""
    folder = Path(folder)
    report = _read_report(folder)
    if report["format"] != "onnx":
        raise ExportError(f"{folder} holds a {report['format']} export; only ONNX exports are published (vit-repro export CHECKPOINT OUT)")
    if not all(name.startswith("onnx/") for name in report["files"]):
        raise ExportError(f"{folder} is in the layout before onnx/ (model.onnx at its root): export it again with "
                          "`vit-repro export`, which writes onnx/model.onnx where transformers.js and optimum look")
    _, config = checkpoint_config(checkpoint)
    if list(config.image_hw) != list(report["image_size"]):
        raise ExportError(
            f"{folder} was exported at {'x'.join(map(str, report['image_size']))} px but the checkpoint runs at "
            f"{'x'.join(map(str, config.image_hw))} px (its config.json and preprocessor_config.json): export it at "
            "the checkpoint's resolution (no --image-size) to publish them together"
        )
    verify(folder, checkpoint)
    return [(folder / name, name) for name in report["files"]] + [(folder / REPORT, f"onnx/{REPORT}")]


# ----------------------------------------------------------------------------- CLI


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        report = export(
            args.checkpoint, args.output_dir, format=args.format, opset=args.opset, dynamic_batch=args.dynamic_batch,
            image_size=args.image_size, tolerance=args.tolerance, progress=not args.no_progress, quantize=args.quantize,
            calibration=quantization.calibration_from_args(args), precision=args.precision,
        )  # fmt: skip
    except ImportError as err:
        print(f"vit-repro export: error: {err}", file=sys.stderr)
        return 2
    parity = report["parity"]
    inputs = ", ".join(f"{i['name']} {i['shape']}" for i in report["inputs"])
    shapes = ", ".join(f"{o['name']} {o['shape']}" for o in report["outputs"])
    int8_record = report.get("quantization") or {}
    if int8_record.get("float32_artefact"):
        print(f"Wrote {Path(args.output_dir) / int8_record['float32_artefact']} (float32, max abs diff "
              f"{_diff_summary(int8_record['float32_parity'])} <= {_parity_bound(int8_record['float32_parity'])})")
    print(f"Wrote {Path(args.output_dir) / report['artefact']} ({report['architecture']}, {report['format']}"
          + (f", opset {report['opset']}" if report["opset"] else "") + f", {report['precision']}): {inputs} -> {shapes}")
    kind = int8_record.get("quantize", "int8-dynamic").removeprefix("int8-")
    quantized = f" (int8, {kind})" if int8_record else ""
    on = f", {parity['inputs']}" if parity.get("inputs") else f", batch sizes {parity['batch_sizes']}"
    agreement = f"; top-1 agreement {parity['top1_agreement']:.1%}" if "top1_agreement" in parity else ""
    print(f"Parity with PyTorch{quantized} ({parity['runtime']}{on}): max abs diff "
          f"{_diff_summary(parity)} <= {_parity_bound(parity)}{agreement}")
    if calibration := int8_record.get("calibration"):
        print(f"Calibrated on {calibration['images']} images of {calibration['source']} ({calibration['split']}, "
              f"{calibration['method']})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        parity = verify(args.folder, args.checkpoint, args.tolerance)
    except ImportError as err:
        print(f"vit-repro verify-export: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.folder}: OK ({parity['runtime']}, batch sizes {parity['batch_sizes']}): max abs diff "
          f"{_diff_summary(parity)} <= {_parity_bound(parity)}")
    return 0


def add_cli(subparsers) -> None:
    """`vit-repro export` and `vit-repro verify-export`."""
    from .cli_options import add_no_progress
    from .precision import add_precision_argument

    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or a torch.export ExportedProgram, checked against PyTorch",
        description="Export a checkpoint (run folder, save_pretrained folder or Hub id) for deployment: OUT gets "
        f"onnx/model.onnx (+ onnx/model_quantized.onnx with --quantize; the layout transformers.js and optimum "
        f"read from a Hub repo, uploaded by `vit-repro push --with-export OUT`) or model.pt2, config.json, "
        f"preprocessor_config.json and {REPORT}. The export is run on "
        "random inputs and compared with PyTorch; the folder is written only when every output is within the "
        "tolerance. Masked image modeling and masked patch prediction checkpoints take their masks and corruptions "
        "as graph inputs (see export_report.json). The resolution is fixed (the checkpoint's, or --image-size); the batch axis is dynamic "
        "unless --static-batch. ONNX needs pip install 'hf-vit-repro[export]'.",
    )
    p.add_argument("checkpoint", help="run folder (uses RUN/final), save_pretrained folder or Hub model id")
    p.add_argument("output_dir", help="folder to write (a new or empty folder, or an earlier export to replace)")
    p.add_argument("--format", default="onnx", metavar="{onnx,exported-program}",
                   help="onnx (torch.onnx dynamo exporter, for ONNX Runtime; default) or exported-program (torch.export, .pt2)")
    p.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset, {MIN_ONNX_OPSET} up to the installed onnx's latest (default: torch.onnx's, 20)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--dynamic-batch", dest="dynamic_batch", action="store_true", default=True,
                       help="dynamic batch axis (default)")
    batch.add_argument("--static-batch", dest="dynamic_batch", action="store_false",
                       help=f"fixed batch size {TRACED_BATCH_SIZE}")
    p.add_argument("--image-size", type=int, default=None,
                   help="resample the position embeddings to this resolution for good before export (e.g. 384)")
    p.add_argument("--tolerance", type=float, default=None,
                   help=f"largest absolute difference allowed between export and PyTorch (default {DEFAULT_TOLERANCE:g}; "
                   f"with --quantize, relative to the outputs' largest absolute value, default {DEFAULT_QUANTIZED_TOLERANCE:g}; "
                   "with --precision bf16, relative to it as well)")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                   help="ONNX only: also write onnx/model_quantized.onnx, checked against PyTorch relative to the outputs' "
                   "scale: int8-dynamic (ONNX Runtime's dynamic quantisation: int8 weights, activations quantised per "
                   "call), int8-static (QDQ, int8 weights per channel, activation scales calibrated on "
                   f"--calibration-data) or int8 (= {quantization.DEFAULT_INT8})")
    quantization.add_calibration_arguments(p)
    add_precision_argument(p, help=export_precision.EXPORT_PRECISION_HELP)
    add_no_progress(p)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser(
        "verify-export",
        help="check an export folder: files intact, loads, and matches its checkpoint",
        description=f"Check a folder written by vit-repro export: the artefact's SHA-256 against {REPORT}, that it "
        "loads and runs, and that its outputs match the checkpoint's on fresh random inputs.",
    )
    p.add_argument("folder", help="export folder")
    p.add_argument("--checkpoint", default=None, help=f"checkpoint to compare with (default: the one named in {REPORT})")
    p.add_argument("--tolerance", type=float, default=None, help="difference allowed (default: the report's): absolute for an fp32 export, relative to the outputs' "
                   "largest absolute value for an int8 or bf16 one, as when it was exported")
    p.set_defaults(func=_cmd_verify)


__all__ = [
    "EXPORT_INPUTS",
    "EXPORT_OUTPUTS",
    "FORMATS",
    "QUANTIZED_ONNX",
    "REPORT",
    "DEFAULT_TOLERANCE",
    "DEFAULT_QUANTIZED_TOLERANCE",
    "QUANTIZATIONS",
    "ExportError",
    "ExportableModel",
    "export",
    "export_model",
    "hub_files",
    "verify",
    "load_exported",
    "load_for_export",
    "check_parity",
    "random_inputs",
    "require_onnx",
    "add_cli",
]
