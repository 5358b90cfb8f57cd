"""Evaluation: classification metrics and few-shot linear evaluation.

    vit-repro evaluate RUN cifar10 --split test           # metrics/<task>_<split>.json
    vit-repro fewshot RUN digits vtab/dtd --shots 1 5 10 25   # fewshot.json

Modules: `classification` (`evaluate_model`, `evaluate_checkpoint`: top-1/top-5, per-class, ReaL
through the `evaluate` modules of `hf_vit_repro.metrics`, data-parallel under Accelerate),
`fewshot` (the paper's closed-form regularised least squares on frozen pre-logits features,
big_vision's protocol by default, with a feature cache), `common` (checkpoint loading and
fingerprints). Heavy imports happen inside functions.

Layering: this package sits below `hf_vit_repro.training` (the training loop scores with
`classification.evaluate_model`) and never imports it. The VTAB-1k runner, which fine-tunes and
then evaluates, is an orchestrator above both: `hf_vit_repro.vtab` (`vit-repro vtab`).
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


def add_cli(subparsers) -> None:
    """`vit-repro evaluate`, `vit-repro fewshot` (`vit-repro vtab` is `hf_vit_repro.vtab.add_cli`)."""
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
    "add_cli",
]
