"""Int8 quantisation of an exported float32 ONNX graph with ONNX Runtime (`vit-repro export --quantize`).

Two ways, one name each (`QUANTIZATIONS`; `int8` is an alias of `DEFAULT_INT8`):

- `int8-dynamic`: `onnxruntime.quantization.quantize_dynamic`. Int8 weights of every MatMul (one
  scale per tensor); each activation is quantised per call with the scale of its own range
  (DynamicQuantizeLinear + MatMulInteger). Needs no data; costs a range computation per call.
- `int8-static`: `onnxruntime.quantization.quantize_static`, QDQ format (QuantizeLinear /
  DequantizeLinear pairs that ONNX Runtime fuses into integer kernels), weights int8 per output
  channel (`per_channel=True`, axis recorded in each weight's DequantizeLinear), activations
  uint8 with fixed scales calibrated on images of the task (`Calibration`). Only MatMul, Gemm and
  Conv are quantised (`STATIC_OPS`): LayerNorm, Softmax and GELU stay float, as ONNX Runtime's
  guide advises for transformers (quantising every op moved the logits of a small trained ViT
  five times as far in a trial, 27% against 5% of their scale). The x86 settings follow
  `quantize_static`'s guide for CPUs with VNNI (uint8 activations, int8 weights,
  `reduce_range=False`); `reduce_range=True` would suit CPUs without VNNI.

A statically quantised graph is only exact on inputs like its calibration images: its fixed
activation scales clip whatever lies beyond the calibrated ranges, so random pixels (the float32
graph's check) are no fair test (a trained 2-layer ViT's int8 logits moved by 70% of their scale
on N(0, 1) pixels against 5% on digits). Its check therefore runs on held-out images of the
calibration source (`CHECK_IMAGES`, not used for calibration), which the export folder keeps so
that `verify` can repeat it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: `quantize=` choices (ONNX only). "int8" is the alias of `DEFAULT_INT8`.
QUANTIZATIONS = ("int8", "int8-dynamic", "int8-static")
#: What "int8" means: dynamic, chosen by measurement (benchmarks/README.md, "Static (calibrated) against
#: dynamic int8"): on the demo's digits test split dynamic changed none of 300 float32 predictions and
#: static one (both within 0.5 points), dynamic needs no calibration data, and static was no faster on
#: ViT-S/16 and ViT-B/16 (0.80-0.93x dynamic on the 2-core AMD EPYC, one outlier run aside).
DEFAULT_INT8 = "int8-dynamic"
#: `Calibration.method` -> ONNX Runtime's `CalibrationMethod` name.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DEFAULT_CALIBRATION_IMAGES = 128
#: Held-out images of the calibration source the static graph is checked on (kept in the export folder).
CHECK_IMAGES = 16
#: The ops `int8-static` quantises (see the module docstring).
STATIC_OPS = ("MatMul", "Gemm", "Conv")
#: The held-out check images in an export folder, float16 (N, C, H, W) as the image processor made them.
CHECK_INPUTS = "quantization_check_inputs.npy"


def canonical(quantize: str | None) -> str | None:
    """The quantisation `quantize` names ("int8" -> `DEFAULT_INT8`), None for none."""
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    return DEFAULT_INT8 if quantize == "int8" else quantize


@dataclass(frozen=True)
class Calibration:
    """Where `int8-static` takes its calibration images: `source` is a folder of images, a local
    dataset folder or Hub dataset id (read by `hf_vit_repro.data.load_task`, as `vit-repro
    evaluate` reads them) or a task of the registry (`vit-repro data tasks`, e.g. "digits");
    `split` of it (default "train": keep the test split for measuring); `images` of them drawn by
    a seeded permutation (`seed`), then `CHECK_IMAGES` more for the check; `method`: "minmax"
    (the calibrated range is the observed one), "percentile" (99.999th percentile of |x|) or
    "entropy" (the KL-optimal threshold); `data_dir`: a local copy of a registry task."""

    source: str
    images: int = DEFAULT_CALIBRATION_IMAGES
    method: str = "minmax"
    split: str = "train"
    data_dir: str | None = None
    seed: int = 0

    def problem(self) -> str | None:
        """What is wrong with these settings, in one line, or None."""
        if not str(self.source).strip():
            return "--calibration-data is empty: give an image folder, a dataset folder or Hub id, or a registry task"
        if not isinstance(self.images, int) or self.images < 1:
            return f"--calibration-images must be a positive integer, got {self.images!r}"
        if self.method not in CALIBRATION_METHODS:
            return f"unknown calibration method {self.method!r}; choose one of: {', '.join(CALIBRATION_METHODS)}"
        return None


def options_problem(quantize: str | None, calibration: Calibration | None) -> str | None:
    """One line on what is wrong with a quantisation and its calibration, or None."""
    kind = canonical(quantize)
    if kind == "int8-static" and calibration is None:
        return (f"--quantize {quantize} calibrates its activation scales on images of the task: pass "
                "--calibration-data FOLDER | DATASET | TASK (e.g. --calibration-data digits), or use --quantize int8-dynamic")
    if kind != "int8-static" and calibration is not None:
        return f"--calibration-data applies to --quantize int8-static only (got --quantize {quantize or 'none'})"
    return calibration.problem() if calibration is not None else None


def calibration_pixels(calibration: Calibration, image_processor) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """`(calibration pixels, check pixels, description)`: float32 (N, C, H, W) arrays made by
    `image_processor` from `calibration.images` images of the source and up to `CHECK_IMAGES` more
    (held out), drawn in the order of a seeded permutation of the split. Fewer images than asked
    are used when the source has fewer (the description says how many); a source of fewer than
    two images is refused."""
    from .data import load_task, stable_permutation

    try:
        dataset = load_task(str(calibration.source), calibration.split, calibration.data_dir, labels=False)
    except (ValueError, KeyError) as err:  # DataError, UnknownTaskError: say which option was wrong
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ValueError(f"--calibration-data {str(calibration.source)!r}: {message}") from err
    n = len(dataset)
    if n < 2:
        raise ValueError(f"calibration source {calibration.source!r} ({calibration.split}) holds {n} image(s); "
                         "give at least 2 (one to calibrate on, one to check on)")
    check = min(CHECK_IMAGES, max(1, n // 5))
    used = min(calibration.images, n - check)
    order = [int(i) for i in stable_permutation(n, calibration.seed)[: used + check]]

    def pixels(rows: list[int]) -> np.ndarray:
        images = [dataset[i]["image"].convert("RGB") for i in rows]
        return np.asarray(image_processor(images, return_tensors="np")["pixel_values"], dtype=np.float32)

    description = {**asdict(calibration), "images": used, "images_asked": calibration.images, "check_images": check,
                   "num_source_images": n, "image_processor": type(image_processor).__name__}
    return pixels(order[:used]), pixels(order[used:]), description


class _Batches:
    """ONNX Runtime's `CalibrationDataReader` protocol over an (N, C, H, W) array, in batches of
    `batch_size` (a remainder smaller than that is left out)."""

    def __init__(self, name: str, pixels: np.ndarray, batch_size: int):
        starts = range(0, max(len(pixels) - batch_size + 1, 1), batch_size)
        self.feeds = iter([{name: pixels[i:i + batch_size]} for i in starts])

    def get_next(self):
        return next(self.feeds, None)


def _fixed_batch(path: Path, input_name: str) -> int | None:
    """The batch size of a graph traced without a dynamic batch axis (None when it is dynamic)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dim = next(i for i in graph.input if i.name == input_name).type.tensor_type.shape.dim[0]
    return None if dim.dim_param or not dim.dim_value else dim.dim_value


def quantize_onnx(plain: Path, quantized: Path, quantize: str, input_name: str, calibration: np.ndarray | None = None,
                  method: str = "minmax") -> dict[str, Any]:
    """Quantise the float32 graph `plain` (no `value_info`: the quantiser's shape inference rejects
    one of torch.onnx's) into `quantized` as `quantize` says; returns the settings used (for the
    export report). `calibration`: the (N, C, H, W) pixels `int8-static` calibrates on."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    kind = canonical(quantize)
    # the calibrator saves a copy of the float32 graph with every activation as an output: beyond
    # protobuf's 2 GB (a ViT-H/14) its weights must go to a file of their own
    large = sum(p.stat().st_size for p in plain.parent.glob(f"{plain.name}*")) > 2**31 - 2**28
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger ("consider pre-processing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "int8-dynamic":
                quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8)
                settings = {"method": "dynamic int8: onnxruntime.quantization.quantize_dynamic, QInt8 weights (per tensor), "
                            "per-call activation scales", "weight_type": "QInt8", "per_channel": False}
            else:
                batches = _Batches(input_name, calibration, _fixed_batch(plain, input_name) or 16)
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the calibrators print
                    quantize_static(
                        str(plain), str(quantized), batches, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(STATIC_OPS), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                        use_external_data_format=large,
                    )  # fmt: skip
                settings = {"method": "static int8: onnxruntime.quantization.quantize_static, QDQ, QInt8 weights per "
                            "channel, QUInt8 activations with calibrated scales", "weight_type": "QInt8",
                            "activation_type": "QUInt8", "per_channel": True, "reduce_range": False,
                            "op_types": list(STATIC_OPS), "calibration_method": method}
    finally:
        root.setLevel(level)
    return {"quantize": kind, **settings, "onnxruntime": onnxruntime.__version__}


def save_check_inputs(folder: Path, pixels: np.ndarray) -> Path:
    """Keep the held-out check images in the export folder (float16: the check compares two runs
    on the same values, so their precision does not matter and the file is half the size)."""
    path = folder / CHECK_INPUTS
    np.save(path, pixels.astype(np.float16))
    return path


def load_check_inputs(folder: Path) -> np.ndarray:
    return np.load(folder / CHECK_INPUTS).astype(np.float32)


def weight_axes(path: Path) -> dict[str, int | None]:
    """`{weight initializer: axis}` of every DequantizeLinear in an ONNX graph whose input is a
    constant (a quantised weight): the axis of per-channel scales, None for one scale per tensor."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {t.name for t in graph.initializer}
    axes = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in constants:
            axis = next((a.i for a in node.attribute if a.name == "axis"), None)
            scale = next(t for t in graph.initializer if t.name == node.input[1])
            axes[node.input[0]] = axis if len(scale.dims) == 1 and scale.dims[0] > 1 else None
    return axes


def add_calibration_arguments(parser) -> None:
    """`vit-repro export`'s `--calibration-*` options and the shared `--data-dir`."""
    from .cli_options import add_data_dir

    parser.add_argument("--calibration-data", default=None, metavar="FOLDER|DATASET|TASK",
                        help="int8-static: images to calibrate on: a folder of images, a dataset folder or Hub dataset id, "
                        "or a registry task (e.g. digits); preprocessed with the checkpoint's image processor")
    parser.add_argument("--calibration-split", default="train",
                        help="split of --calibration-data to draw from (default train; a plain image folder is 'train')")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help=f"images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES}); "
                        f"{CHECK_IMAGES} more are held out for the check")
    parser.add_argument("--calibration-method", default="minmax", choices=tuple(CALIBRATION_METHODS),
                        help="how activation ranges are taken from the calibration images: minmax (default), percentile, entropy")
    add_data_dir(parser)


def calibration_from_args(args) -> Calibration | None:
    """The `--calibration-*` options as a `Calibration` (None without --calibration-data)."""
    from .cli_options import data_dir_for

    if args.calibration_data is None:
        return None
    return Calibration(args.calibration_data, images=args.calibration_images, method=args.calibration_method,
                       split=args.calibration_split, data_dir=data_dir_for(args.data_dir, args.calibration_data))


__all__ = [
    "QUANTIZATIONS",
    "DEFAULT_INT8",
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_IMAGES",
    "CHECK_IMAGES",
    "CHECK_INPUTS",
    "STATIC_OPS",
    "Calibration",
    "canonical",
    "options_problem",
    "calibration_pixels",
    "quantize_onnx",
    "save_check_inputs",
    "load_check_inputs",
    "weight_axes",
    "add_calibration_arguments",
    "calibration_from_args",
]
