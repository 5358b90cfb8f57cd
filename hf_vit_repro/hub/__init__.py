"""The Hub: model cards built from a run's own files, and publishing.

    vit-repro push outputs/run1 your-name/vit-b16-cifar10 [--dry-run]

- `card`         reading a run folder, the result tables, `model_card`, the `.eval_results/` files
- `model_facts`  the model a checkpoint holds (architecture, parameters) without loading it
- `adapter`      adapter-only repos of LoRA runs (`push --adapter-only`)
- `push`         the staged repo folder (`build_repo_folder`), its checks, the upload (`push_to_hub`)
- `space`        a Gradio Space for a published model (`push --space`: `build_space_folder`, `push_space`)
- `redaction`    the token and secrets, kept out of every file, message and upload
- `cli`          `vit-repro push`
"""

from __future__ import annotations

from .card import (
    TEMPLATE_PATH,
    Sources,
    eval_result_files,
    eval_results,
    locate,
    model_card,
    pretraining_of,
    read_metrics,
    recipe_metadata,
)
from .adapter import build_adapter_folder, locate_adapter, validate_adapter_folder
from .cli import add_cli
from .model_facts import count_parameters, describe_model
from .push import HubPushError, build_repo_folder, push_run, push_to_hub, validate_repo_folder
from .redaction import active_token, redact
from .space import build_space_folder, push_space, space_files, validate_space_folder

__all__ = [
    "TEMPLATE_PATH",
    "HubPushError",
    "Sources",
    "active_token",
    "add_cli",
    "build_adapter_folder",
    "build_repo_folder",
    "build_space_folder",
    "count_parameters",
    "describe_model",
    "eval_result_files",
    "eval_results",
    "locate",
    "locate_adapter",
    "model_card",
    "pretraining_of",
    "push_run",
    "push_space",
    "push_to_hub",
    "read_metrics",
    "recipe_metadata",
    "redact",
    "space_files",
    "validate_adapter_folder",
    "validate_repo_folder",
    "validate_space_folder",
]
