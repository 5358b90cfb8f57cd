"""Evaluation: classification metrics, few-shot linear evaluation and the VTAB-1k benchmark.

    vit-repro evaluate RUN cifar10 --split test           # metrics/<task>_<split>.json
    vit-repro fewshot RUN digits vtab/dtd --shots 1 5 10 25   # fewshot.json
    vit-repro vtab RUN --tasks natural                     # vtab.json, vtab.md, vtab.png

Modules: `classification` (`evaluate_model`, `evaluate_checkpoint`: top-1/top-5, per-class, ReaL
through the `evaluate` modules of `hf_vit_repro.metrics`, data-parallel under Accelerate),
`fewshot` (the paper's closed-form regularised least squares on frozen pre-logits features,
big_vision's protocol by default, with a feature cache), `vtab` (the VTAB-1k protocol, the
paper's or a per-task sweep, task by task, resumable), `common` (checkpoint loading and
fingerprints). Heavy imports happen inside functions.

Layering: `classification`, `fewshot` and `common` sit below `hf_vit_repro.training` (the training
loop scores with `classification.evaluate_model`); `vtab` fine-tunes with the training package and
so sits above it. Its names are therefore loaded on first use (`__getattr__` below), so importing
this package, or the training loop, never imports the VTAB runner.
"""

from __future__ import annotations

from .classification import evaluate_checkpoint, evaluate_model, real_label_sets
from .common import LoadedCheckpoint, load_checkpoint, model_fingerprint
from .fewshot import (
    DEFAULT_L2,
    L2_GRID,
    FeatureCache,
    LeastSquares,
    accuracy_by_l2,
    extract_features,
    fewshot_checkpoint,
    fewshot_evaluate,
    fewshot_protocol,
    fit_least_squares,
    write_fewshot_results,
)

#: Names re-exported from `vtab` on first use (see the layering note above).
_VTAB_NAMES = ("DEFAULT_LR_SWEEP", "PAPER_SETTING", "aggregate", "resolve_tasks", "run_vtab", "vtab_report", "vtab_table")


def __getattr__(name: str):
    if name in _VTAB_NAMES:
        from . import vtab

        return getattr(vtab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_cli(subparsers) -> None:
    """`vit-repro evaluate`, `vit-repro fewshot` (`vit-repro vtab` is added by `vtab.add_cli`)."""
    from .classification import add_evaluate_cli
    from .fewshot import add_fewshot_cli

    add_evaluate_cli(subparsers)
    add_fewshot_cli(subparsers)


__all__ = [
    "evaluate_model",
    "evaluate_checkpoint",
    "real_label_sets",
    "LoadedCheckpoint",
    "load_checkpoint",
    "model_fingerprint",
    "fewshot_evaluate",
    "fewshot_checkpoint",
    "fewshot_protocol",
    "write_fewshot_results",
    "fit_least_squares",
    "accuracy_by_l2",
    "extract_features",
    "FeatureCache",
    "LeastSquares",
    "L2_GRID",
    "DEFAULT_L2",
    "run_vtab",
    "resolve_tasks",
    "aggregate",
    "vtab_table",
    "vtab_report",
    "PAPER_SETTING",
    "DEFAULT_LR_SWEEP",
    "add_cli",
]
