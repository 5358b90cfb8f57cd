"""A tiny classifier that actually classifies: a randomised tiny ViT whose head is the few-shot
least-squares map fitted on digits features, folded into a linear layer. Its predictions vary
from image to image (a randomised head predicts one class for everything), so an evaluation
that counted an image twice or lost one would show in its numbers."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTImageProcessor

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

from .conftest import randomize_, tiny_kwargs

DIGIT_NAMES = {i: f"digit {i}" for i in range(10)}


def tiny_digits_classifier(seed: int = 0, shots: int = 20, l2: float = 1.0) -> ViTReproForImageClassification:
    from hf_vit_repro.data import fewshot_subset, load_task
    from hf_vit_repro.evaluation import extract_features, fit_least_squares

    config = ViTReproConfig(**tiny_kwargs(num_labels=10, id2label=DIGIT_NAMES, label2id={v: k for k, v in DIGIT_NAMES.items()}))
    model = randomize_(ViTReproForImageClassification(config), std=0.2, seed=seed).eval()
    train = fewshot_subset(load_task("digits", "train"), shots, seed=seed)
    # The head is evaluated with the plain resize of `evaluate_model`, so fit it on features of
    # that pre-processing (not the few-shot protocol's central crop).
    x, y = extract_features(model, train, range(len(train)), preprocessing="resize", progress=False, precision="fp32")
    fit = fit_least_squares(torch.from_numpy(x), torch.from_numpy(y), 10)
    w = fit.weights(l2)  # (D + 1, K) on standardised features + a bias feature of 100
    scale = 1.0 / fit.std[0]
    with torch.no_grad():
        model.classifier.weight.copy_((w[:-1] * scale[:, None]).T.float())
        model.classifier.bias.copy_((100.0 * w[-1] - (fit.mean[0] * scale) @ w[:-1]).float())
    return model


def save_classifier(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    size = model.config.image_hw[0]
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder
