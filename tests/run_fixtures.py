"""Tiny run folders in the layout of `hf_vit_repro.runs`, for the tests of what reads them.

Every number written here is arbitrary but distinct, so a test can find each one in what was
produced from it (a model card, a repo folder) and tell which file it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ViTImageProcessor

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, runs

from .conftest import randomize_, tiny_kwargs

LABELS = {0: "cat", 1: "dog", 2: "bird"}
# A tiny hybrid with the R50 structure: three stages, stride 16 (as tests/test_hybrid.py).
TINY_BACKBONE = dict(depths=[2, 1, 2], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=8)

RECIPE_YAML = """\
name: tiny
model:
  variant: null
  image_size: 32
data:
  task: cifar10
  train_split: train
optim:
  optimizer: adam
  lr: 0.00123
  betas: [0.9, 0.999]
  weight_decay: 0.1
  schedule: {warmup_steps: 10, decay: cosine}
train:
  global_batch_size: 64
"""
TRAIN_SUMMARY = {
    "steps": 1234,
    "images_seen": 78976,
    "train_time_s": 4321.0,
    "hardware": {"device_name": "Tiny Test Accelerator", "num_processes": 2, "mixed_precision": "bf16"},
    "command": "vit-repro train recipes/tiny.yaml steps=1234",
    "final_train_loss": 0.3141,
    "compute": {"forward_flops_per_image": 4_412_000_000, "image_size": 224, "images_seen": 78976,
                "training_flops": 3 * 4_412_000_000 * 78976, "training_exaflops": 3 * 4_412_000_000 * 78976 / 1e18,
                "device": "Tiny Test Accelerator", "num_devices": 2, "device_seconds": 8642.0},
    "early_stopping": {"best_validation_accuracy": 0.8125, "best_step": 1000, "stopped_early": True},
}
METRICS = [  # (task, dataset, split, metrics)
    ("cifar10", "uoft-cs/cifar10", "test", {"accuracy": 0.4567, "top5_accuracy": 0.9123}),
    ("digits", "sklearn/digits", "test", {"accuracy": 0.8765}),
]
FEWSHOT = {"results": {"cifar10": {"1": {"mean": 0.2109, "std": 0.0132, "seeds": [0, 1, 2]},
                                   "5": {"mean": 0.3456, "std": 0.0211, "seeds": [0, 1, 2]}}}}
VTAB = {
    "tasks": {
        "dtd": {"group": "natural", "accuracy": 0.5432, "hyperparameters": {"lr": 0.01, "steps": 2500}},
        "eurosat": {"group": "specialized", "accuracy": 0.9321, "hyperparameters": {"lr": 0.003, "steps": 2500}},
        "clevr_count": {"group": "structured", "accuracy": 0.4198, "hyperparameters": {"lr": 0.01, "steps": 2500}},
    },
    "group_means": {"natural": 0.5432, "specialized": 0.9321, "structured": 0.4198},
    "mean": 0.6317,
}
FIGURES = ("position_embedding_similarity", "mean_attention_distance")


def save_tiny_checkpoint(folder: Path, hybrid: bool = False) -> ViTReproForImageClassification:
    """A save_pretrained folder (weights, config with auto_map, code, image processor) of a tiny
    randomised model; returns the model (eval mode)."""
    kwargs = tiny_kwargs(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    if hybrid:
        kwargs.update(image_size=64, patch_size=1, backbone_config=dict(TINY_BACKBONE))
    config = ViTReproConfig(**kwargs)
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(config)).eval()
    model.save_pretrained(folder)
    height, width = config.image_hw
    ViTImageProcessor(size={"height": height, "width": width}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return model


def make_run(
    run: Path,
    *,
    hybrid: bool = False,
    training: bool = True,
    evaluated: bool = True,
    figures: bool = True,
    recipe_extra: str = "",
) -> ViTReproForImageClassification:
    """RUN_DIR with final/, and (as asked) recipe.yaml + train_summary.json, metrics/*.json +
    fewshot.json + vtab.json, analysis/*.png. Returns the final model."""
    model = save_tiny_checkpoint(run / runs.FINAL_DIR, hybrid=hybrid)
    if training:
        (run / runs.RECIPE).write_text(RECIPE_YAML + recipe_extra)
        runs.write_json(run / runs.TRAIN_SUMMARY, TRAIN_SUMMARY)
    if evaluated:
        for task, dataset, split, metrics in METRICS:
            record = runs.metrics_record(
                checkpoint=str(run / runs.FINAL_DIR), task=task, dataset=dataset, split=split,
                resolution=model.config.image_hw[0], num_images=50, metrics=metrics,
            )
            runs.write_json(runs.metrics_path(run, task, split), record)
        runs.write_json(run / runs.FEWSHOT, FEWSHOT)
        runs.write_json(run / runs.VTAB, VTAB)
    if figures:
        (run / runs.ANALYSIS_DIR).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(FIGURES):
            pixels = np.full((8, 8, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(run / runs.ANALYSIS_DIR / f"{name}.png")
    return model
