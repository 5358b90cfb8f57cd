"""The package's precision policy: which numeric precision inference and training run in.

    resolve_precision("auto", "cpu")   # "bf16" on a CPU with AMX or AVX512-BF16, else "fp32"
    resolve_precision("fp32", "cpu")   # always what was asked for

`auto` (the default of `evaluate`, `fewshot`, `vtab`, `analyze`, the Python API and recipes'
`run.mixed_precision`) follows the hardware:

- CPU: bf16 where the CPU multiplies bf16 natively: AMX (Intel's matrix tiles, `amx_bf16` +
  `amx_tile`; Sapphire Rapids and later; issue 27: ViT-S/16 inference 3.3x, training 2x fp32 on a
  2-core Xeon) or AVX512-BF16 (`avx512_bf16`; AMD Zen 4, Intel Cooper Lake): measured on a 2-core
  AMD EPYC (Zen 4), ViT-S/16 inference 1.78x, training 1.65x and ViT-B/16 inference 1.90x fp32
  (benchmarks/README.md). Elsewhere fp32: without either, bf16 is emulated or converted, with no
  bf16 matrix-product instruction to gain from.
- CUDA: unchanged from before the policy: inference in fp32, training (`training=True`) in bf16
  where the GPU supports it.
- Any other device: fp32.

`vit-repro export` takes the same words, but its `auto` means fp32: an artefact runs on a machine
whose CPU the export cannot know (`export_precision`).

bf16 runs through `torch.autocast` (`autocast`): the weights stay fp32, matrix products and
convolutions run in bf16, reductions and normalisations in fp32 (autocast's own op lists). For
inference on the CPU, `PrecisionRun` given the model also swaps in bf16 copies of its weights
(`Bf16Weights`), so that autocast does not cast them again on every call.
Inference in bf16 is checked against fp32 on its first batch (`PrecisionRun`, tolerance
`BF16_TOLERANCE`) and falls back to fp32, with a one-line message, when the two disagree.

This module imports only torch: evaluation, training and export all use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: What users may ask for (`--precision`, `precision=`).
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Tolerance:
    """How far a bf16 output may be from the fp32 one on the same batch.

    `rtol`, `atol`: the root-mean-square difference of the outputs (logits or features) must be
    at most `rtol` times the fp32 outputs' root-mean-square plus `atol` (bf16 keeps 8 significant
    bits, 0.4%; after a ViT-S/16's 12 blocks the logits differ by about 1% RMS).
    `max_changed_top1`: for logits, the largest share of the batch's images whose top-1 class may
    change. A change counts only where fp32 prefers its class by more than the logit tolerance (the
    RMS bound above): a near-tie that flips is within the precision's noise, not a failure."""

    rtol: float = 0.05
    atol: float = 1e-3
    max_changed_top1: float = 0.02


BF16_TOLERANCE = Tolerance()


#: Set to "fp32" or "bf16" to decide what `auto` means on the CPU for every command and process
#: (a launcher's workers included), whatever the CPU's flags say.
PRECISION_ENV = "HF_VIT_REPRO_CPU_PRECISION"


def cpu_capabilities() -> Mapping[str, Any]:
    """The CPU's instruction-set flags: `torch.cpu.get_capabilities()` (torch >= 2.9), else the
    flags of /proc/cpuinfo (Linux) as {flag: True}. Tests replace this function to play another CPU."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return {flag: True for flag in line.split(":", 1)[1].split()}
    except OSError:
        pass
    return {}


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices on AMX tiles (needs both `amx_bf16` and `amx_tile`)."""
    caps = cpu_capabilities()
    return bool(caps.get("amx_bf16")) and bool(caps.get("amx_tile"))


def cpu_has_fast_bf16() -> bool:
    """Whether `auto` means bf16 on this CPU: AMX, or AVX512-BF16's bf16 dot-product instructions
    (module docstring: the measurements behind it)."""
    return cpu_has_amx_bf16() or bool(cpu_capabilities().get("avx512_bf16"))


def resolve_precision(precision: str = "auto", device: str | torch.device | None = None, *,
                      training: bool = False) -> str:
    """"bf16" or "fp32": `precision` itself when forced, else the policy of the module docstring
    for `device` (default: the CPU). `training`: on CUDA, `auto` trains in bf16 where the GPU has
    it (inference stays fp32, as before the policy). A ValueError names the accepted values."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cpu":
        chosen = os.environ.get(PRECISION_ENV, "").strip().lower()
        if chosen:
            if chosen not in ("bf16", "fp32"):
                raise ValueError(f"{PRECISION_ENV} must be bf16 or fp32 (what `auto` means on this CPU), got {chosen!r}")
            return chosen
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if kind == "cuda":
        return "bf16" if training and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def autocast(precision: str, device: str | torch.device):
    """A context that runs its body in `precision` ("bf16": `torch.autocast` on the device's
    type; "fp32": nothing, and autocast switched off in case a caller left it on)."""
    kind = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    if precision == "fp32":
        return torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext()
    raise ValueError(f"autocast needs a resolved precision (bf16 or fp32), got {precision!r}")


def compare_outputs(reference: torch.Tensor, candidate: torch.Tensor, *, classes: bool,
                    tolerance: Tolerance | None = None) -> dict[str, Any]:
    """How far `candidate` (bf16) is from `reference` (fp32), both (N, ...) and compared in fp32:
    {"ok", "rms_difference", "rms_reference", "limit"} and, with `classes` (logits (N, K)),
    "changed_top1" (share of rows whose argmax changed) and "counted_changed_top1" (those where
    fp32's margin for its class exceeds the limit; see `Tolerance`)."""
    tolerance = tolerance if tolerance is not None else BF16_TOLERANCE
    ref = reference.detach().float()
    cand = candidate.detach().float()
    if ref.shape != cand.shape:
        raise ValueError(f"outputs of different shapes: {tuple(ref.shape)} and {tuple(cand.shape)}")
    rms_ref = float(ref.pow(2).mean().sqrt()) if ref.numel() else 0.0
    rms_diff = float((cand - ref).pow(2).mean().sqrt()) if ref.numel() else 0.0
    limit = tolerance.rtol * rms_ref + tolerance.atol
    stats: dict[str, Any] = {"rms_difference": rms_diff, "rms_reference": rms_ref, "limit": limit}
    ok = math.isfinite(rms_diff) and rms_diff <= limit
    if classes and ref.ndim == 2 and ref.shape[0] and ref.shape[1] > 1:
        top_ref, top_cand = ref.argmax(1), cand.argmax(1)
        changed = top_ref != top_cand
        rows = torch.arange(ref.shape[0])
        margin = ref[rows, top_ref] - ref[rows, top_cand]
        counted = changed & (margin > limit)
        stats["changed_top1"] = float(changed.float().mean())
        stats["counted_changed_top1"] = float(counted.float().mean())
        ok = ok and stats["counted_changed_top1"] <= tolerance.max_changed_top1
    stats["ok"] = bool(ok)
    return stats


class Bf16Weights:
    """bf16 copies of a model's fp32 parameters and floating buffers, swapped in for a call.

    `with weights.swapped(): ...` points every fp32 parameter's and buffer's `.data` at its bf16
    copy and restores the original fp32 tensors (the same objects, so nothing is rounded) on
    exit, also after an exception. A copy is made at first use and again only when its tensor
    changed since (an optimizer step bumps `_version`; a new `.data` changes the pointer), so a
    model trained between evaluations is never seen with stale weights.

    Why: under `torch.autocast` every matrix product casts its fp32 weight to bf16 on every call.
    With the weights already bf16 and autocast still on around the call (it casts the inputs and
    keeps layer norms and softmax in fp32 as before), ViT-S/16 and ViT-B/16 inference ran 1.13-1.23x
    faster than autocast alone on a 2-core Xeon with AMX (docs/inference-paths.md).
    Works through wrappers that keep their weights as parameters (peft's LoRA, hooks); the
    first-batch check of `PrecisionRun` compares the result with fp32 either way."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._copies: dict[int, tuple[torch.Tensor, int, int]] = {}

    def _tensors(self) -> list[torch.Tensor]:
        # parameters() and buffers() each list a shared tensor once, and no tensor is both
        return [t for t in (*self.model.parameters(), *self.model.buffers()) if t.dtype == torch.float32]

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        stamp = (tensor._version, tensor.data_ptr())
        cached = self._copies.get(id(tensor))
        if cached is None or cached[1:] != stamp:
            with torch.inference_mode(False), torch.no_grad():
                cached = (tensor.detach().to(torch.bfloat16), *stamp)
            self._copies[id(tensor)] = cached
        return cached[0]

    @contextlib.contextmanager
    def swapped(self):
        originals = [(tensor, tensor.data) for tensor in self._tensors()]
        try:
            for tensor, _ in originals:
                tensor.data = self._copy(tensor)
            yield
        finally:
            for tensor, data in originals:
                tensor.data = data


def quantized_modules(model: torch.nn.Module | None) -> list[str]:
    """Names of `model`'s torch-quantised modules (`torch.ao.nn.quantized`, e.g. what
    `torch.ao.quantization.quantize_dynamic` puts in place of `nn.Linear`): they compute in int8 on
    float32 inputs, and bf16 activations from autocast make them fail."""
    if model is None:
        return []
    return [name for name, module in model.named_modules()
            if type(module).__module__.startswith("torch.ao.nn.quantized")]


def _bf16_weights_for(model: torch.nn.Module | None, device: torch.device) -> Bf16Weights | None:
    """`Bf16Weights` where they are used: a CPU model that has fp32 parameters to cast."""
    if model is None or device.type != "cpu":
        return None
    if not any(p.dtype == torch.float32 for p in model.parameters()):
        return None
    return Bf16Weights(model)


class PrecisionRun:
    """Runs a model's forward passes in the resolved precision, checking bf16 once.

    `run(forward)` calls `forward()` (a closure over the model and one batch) under `autocast`.
    The first bf16 call also runs it in fp32 and compares (`compare_outputs`, `classes` says
    whether the outputs are logits); when they disagree, this and every later batch run in fp32,
    and one line on stderr says why. `agree(ok) -> bool` lets data-parallel processes take one
    decision (all must pass). `record()` is what results files store.

    `model`: the module the closure runs. On the CPU its fp32 weights then take part in bf16
    calls as bf16 copies (`Bf16Weights`), made once instead of cast by autocast on every call;
    the first-batch check covers this path too. A model with torch-quantised modules
    (`quantized_modules`) runs in fp32 under `auto` (the record's "note" says why), and a forced
    bf16 is refused with a ValueError."""

    def __init__(self, precision: str, device: str | torch.device, *, classes: bool = True,
                 tolerance: Tolerance | None = None, agree: Callable[[bool], bool] | None = None,
                 what: str = "evaluation", model: torch.nn.Module | None = None):
        self.requested = precision
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.classes, self.agree, self.what = classes, agree, what
        self.tolerance = tolerance if tolerance is not None else BF16_TOLERANCE
        self.check: dict[str, Any] | None = None
        self.note: str | None = None
        quantized = quantized_modules(model) if self.precision == "bf16" else []
        if quantized:
            if precision == "bf16":
                raise ValueError(f"{what}: --precision bf16 cannot run a model with torch-quantised modules "
                                 f"({', '.join(quantized[:3])}{', ...' if len(quantized) > 3 else ''}): they compute "
                                 "in int8 on float32 inputs; use --precision fp32 or auto")
            self.precision = "fp32"
            self.note = "torch-quantised modules: auto runs them in fp32"
        self.weights = _bf16_weights_for(model, self.device) if self.precision == "bf16" else None

    def _bf16(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        swap = self.weights.swapped() if self.weights is not None else contextlib.nullcontext()
        with swap, autocast("bf16", self.device):
            return forward()

    def __call__(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.precision == "bf16" and self.check is None:
            with autocast("fp32", self.device):
                reference = forward()
            candidate = self._bf16(forward)
            self.check = compare_outputs(reference, candidate, classes=self.classes, tolerance=self.tolerance)
            ok = self.check["ok"] if self.agree is None else self.agree(self.check["ok"])
            if not ok:
                self.precision = "fp32"
                self.check["fell_back"] = True
                print(f"{self.what}: bf16 disagrees with fp32 on the first batch ({self._reason()}); "
                      "running in fp32 (force with --precision bf16|fp32)", file=sys.stderr, flush=True)
                self.weights = None  # the fp32 model from here on: its bf16 copies are not needed
                return reference
            return candidate
        if self.precision == "bf16":
            return self._bf16(forward)
        with autocast(self.precision, self.device):
            return forward()

    def _reason(self) -> str:
        c = self.check
        if c["ok"]:
            return "another process's check failed"
        if not c["rms_difference"] <= c["limit"]:
            return f"RMS difference {c['rms_difference']:.3g} > {c['limit']:.3g}"
        return f"{100 * c['counted_changed_top1']:.1f}% of top-1 predictions changed"

    def record(self) -> dict[str, Any]:
        """{"precision": used, "requested": asked for, "bf16_weights": whether bf16 ran on bf16
        copies of the weights (when it ran), and "bf16_check": the first batch's comparison with
        its tolerance (when bf16 was tried)}."""
        out: dict[str, Any] = {"precision": self.precision, "requested": self.requested}
        if self.note:
            out["note"] = self.note
        if self.precision == "bf16":
            out["bf16_weights"] = self.weights is not None
        if self.check is not None:
            out["bf16_check"] = {**self.check, "tolerance": dataclasses.asdict(self.tolerance)}
        return out


def add_precision_argument(parser, default: str = "auto", help: str | None = None) -> None:
    """`--precision {auto,bf16,fp32}`, the flag every inference command shares (and `export`,
    whose `help` says what `auto` means for an artefact)."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=default,
        help=help or "numeric precision: auto (bf16 on CPUs with AMX or AVX512-BF16, checked against fp32 on the "
        "first batch; else fp32), "
        f"bf16 or fp32 (default {default})",
    )


__all__ = [
    "PRECISIONS",
    "Tolerance",
    "BF16_TOLERANCE",
    "cpu_capabilities",
    "cpu_has_amx_bf16",
    "cpu_has_fast_bf16",
    "resolve_precision",
    "autocast",
    "compare_outputs",
    "Bf16Weights",
    "quantized_modules",
    "PrecisionRun",
    "add_precision_argument",
]
