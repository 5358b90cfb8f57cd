"""The precision of an export (`vit-repro export --precision {auto,bf16,fp32}`).

An export is an artefact for another machine, so `auto` does not follow the exporting CPU
(`precision.resolve_precision`): it means fp32 for both formats.

- ONNX: ONNX Runtime's CPU execution provider (1.31.1) has no bf16 MatMul kernel, so a bf16
  graph does not even load ("Could not find an implementation for MatMul(13)"); `auto` is fp32
  and an explicit bf16 is refused (`onnx_bf16_refusal`). For a smaller, faster ONNX graph use
  `--quantize int8`.
- ExportedProgram: bf16 runs fast only on CPUs with AMX or AVX512-BF16 (and GPUs); elsewhere it
  is emulated and slower than fp32, and it changes the outputs. Whether the machine that will run
  the artefact has either is unknown at export time, and the exporting machine's flags say nothing
  about it (nor does `HF_VIT_REPRO_CPU_PRECISION`, which is about this CPU): `auto` is fp32, the
  artefact that runs well and exactly everywhere, and bf16 is the user's explicit choice.

A bf16 ExportedProgram holds its weights in bf16 and computes in bf16 throughout (the model cast
with `.to(torch.bfloat16)`, not autocast). Its signature is the fp32 export's: `pixel_values`
(and any other float input) is taken in float32 and cast to bf16 as the program's first step,
and float outputs are cast back to float32 as its last, so the image processor's output feeds
it unchanged and callers read the same dtypes whatever the precision (integer and bool inputs,
the self-supervised masks and codes, are untouched). It is checked against the PyTorch model run
eagerly in bf16 on the same inputs, relative to the outputs' scale (`BF16_EXPORT_TOLERANCE` times
an output's largest absolute value, plus 1e-4): the program runs the same bf16 operations, so
only operation order and fusion differ, a few bf16 roundings (2^-8 relative each) at most.
"""

from __future__ import annotations

import torch
from torch import nn

from .precision import PRECISIONS

#: `--precision` of `vit-repro export`: the same words as every other command's.
EXPORT_PRECISIONS = PRECISIONS
#: A bf16 program's parity bound, relative to each output's largest absolute PyTorch (bf16) value.
BF16_EXPORT_TOLERANCE = 0.02

EXPORT_PRECISION_HELP = (
    "numeric precision of the exported artefact: auto (fp32: the artefact runs on a machine whose CPU the "
    "export cannot know, and ONNX Runtime's CPU provider has no bf16 MatMul kernel), fp32, or bf16 "
    "(exported-program only: bf16 weights and compute, float32 inputs and outputs, checked against PyTorch in bf16 "
    f"within {BF16_EXPORT_TOLERANCE:g} x the largest |output|) (default auto)"
)


def onnx_bf16_refusal() -> str:
    """The one-line error for `--format onnx --precision bf16`."""
    try:
        import onnxruntime

        runtime = f"ONNX Runtime {onnxruntime.__version__}"
    except ImportError:
        runtime = "ONNX Runtime"
    return (f"--precision bf16 cannot be exported to ONNX: {runtime}'s CPU provider has "
            "no bf16 MatMul kernel, so the graph would not load; use --format exported-program --precision bf16, "
            "or --quantize int8 for a smaller, faster ONNX graph")


def resolve_export_precision(precision: str, format: str) -> str:
    """"fp32" or "bf16" for an export of `format`: `auto` is fp32 (module docstring); bf16 is
    refused for ONNX with what to do instead. A ValueError names the accepted values."""
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and format == "onnx":
        raise ValueError(onnx_bf16_refusal())
    return "fp32" if precision == "auto" else precision


class Bf16Program(nn.Module):
    """An `export.ExportableModel` over a bf16 model, with the fp32 export's signature: float
    inputs cast to bf16 on the way in, float outputs cast to float32 on the way out."""

    def __init__(self, exportable: nn.Module):
        super().__init__()
        self.exportable = exportable
        self.input_names = exportable.input_names
        self.output_names = exportable.output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = [t.to(torch.bfloat16) if t.is_floating_point() else t for t in inputs]
        return tuple(t.float() if t.is_floating_point() else t for t in self.exportable(*cast))


def as_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` (float32) in the resolved export `precision`, in place."""
    return model.to(torch.bfloat16) if precision == "bf16" else model


def model_precision(model: nn.Module) -> str:
    """"bf16" when the model's floating weights are bf16, else "fp32"."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return "bf16" if dtypes == {torch.bfloat16} else "fp32"


__all__ = [
    "EXPORT_PRECISIONS",
    "BF16_EXPORT_TOLERANCE",
    "EXPORT_PRECISION_HELP",
    "onnx_bf16_refusal",
    "resolve_export_precision",
    "Bf16Program",
    "as_precision",
    "model_precision",
]
