"""Training objectives: the seam between the loop and what a run learns (`train.objective`).

    objective = objective_for(recipe)
    loader = make_dataloader(..., **objective.loader_options(model))
    loss = objective.step_loss(model, batch, key)  # one micro-batch, a scalar; key seeds its draws
    result = objective.evaluate(model, dataset, recipe, accelerator)

Everything else (accumulation, clipping, schedules, checkpoints, exact resume, data parallelism)
is the loop's and the same for every objective.

- `classification`: labelled images, the classifier's cross entropy (`train.loss`, label
  smoothing, MixUp when `train.mixup_alpha` > 0), a ViT, hybrid or BiT ResNet, scored by `hf_vit_repro.evaluation.classification.evaluate_model` (accuracy, top-5,
  per class).
- `masked_patch_prediction` (paper Sec. 4.6, Appendix B.1.2): no labels are read. The corruption
  of every image (`sample_patch_corruption`) is drawn in the data pipeline by `PatchCorruptionDraw`
  from that image's own generator, after its augmentation; the generator is seeded from (seed,
  epoch, row), so a step's corruption is the same under any number of processes or workers and
  after a resume. The loss is `ViTReproForMaskedPatchPrediction`'s: the mean over the corrupted
  patches. Every image has exactly round(rate x N) corrupted patches, so the mean of k equal
  micro-batch losses is the loss of the k-times larger batch, as for classification. Scored by
  `evaluate_masked_patch_prediction`: that loss and the accuracy of the predicted colours on the
  evaluation split, with a corruption fixed per row (no classification metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.augment import batch_mixing
from ..data.mixing import mix_batch
from ..evaluation.classification import evaluate_model
from ..modeling_vit_repro import (
    PatchCorruption,
    ViTReproForImageClassification,
    ViTReproForMaskedPatchPrediction,
    masked_patch_prediction_losses,
    sample_patch_corruption,
)
from ..models import family_of
from .optim import classification_loss, mixup
from .recipe import Recipe


class Objective:
    """What one `train.objective` changes in a run (see the module docstring). `accuracy_metric`
    names the metric of `evaluate` that the run reports as its accuracy (`TrainResult.eval_accuracy`,
    the learning-rate sweep's criterion); a run without it reports None."""

    name: str = ""
    model_class: type = ViTReproForImageClassification
    needs_labels: bool = True
    accuracy_metric: str = "accuracy"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def model_class_for(self, config) -> type:
        """The model class trained for `config` (a `ViTReproConfig`, or a `BitConfig`)."""
        return self.model_class

    def scores_accuracy(self, config) -> bool:
        """Whether `evaluate` reports `accuracy_metric` for a model of `config` (early stopping
        and the learning-rate sweep choose by it)."""
        return True

    def config_updates(self) -> dict[str, Any]:
        """`ViTReproConfig` fields the objective sets from the recipe (on a new or a loaded config)."""
        return {}

    def loader_options(self, model) -> dict[str, Any]:
        """Keyword arguments of `make_dataloader` for the training batches of `model`."""
        return {"labels": self.needs_labels}

    def step_loss(self, model, batch: dict[str, torch.Tensor], key: tuple[int, ...]) -> torch.Tensor:
        """The loss of one micro-batch (a scalar, mean over the batch). `key` = (seed, update,
        micro-batch, process) seeds whatever the step draws, so a resumed step draws the same."""
        raise NotImplementedError

    def evaluate(self, model, dataset, recipe: Recipe, accelerator) -> dict[str, Any]:
        """`{"metrics": {...}, "num_images", "num_skipped", ...}` on every process; leaves the model training."""
        raise NotImplementedError


class Classification(Objective):
    name = "classification"

    def model_class_for(self, config):
        return family_of(config).classifier_class()

    def step_loss(self, model, batch, key):
        t = self.recipe.train
        pixels, mixed = batch["pixel_values"], None
        if t.mixup_alpha:  # BiT-HyperRule's MixUp
            pixels, other, lam = mixup(pixels, batch["labels"], t.mixup_alpha, key)
            mixed = (other, lam)
        elif (mix := batch_mixing(self.recipe.data)) is not None:  # AugReg's MixUp, DeiT's CutMix
            pixels, other, lam = mix_batch(pixels, batch["labels"], key, **mix)
            mixed = (other, lam)
        logits = model(pixel_values=pixels).logits
        return classification_loss(logits, batch["labels"], t.loss, t.label_smoothing, mixed)

    def evaluate(self, model, dataset, recipe, accelerator):
        return evaluate(model, dataset, recipe, accelerator)


class MaskedPatchPrediction(Objective):
    name = "masked_patch_prediction"
    model_class = ViTReproForMaskedPatchPrediction
    needs_labels = False
    accuracy_metric = "masked_patch_accuracy"

    def config_updates(self):
        # The colour targets are computed on de-normalised pixels: the data's normalisation, and
        # the recipe's own mpp_* choices over those of a checkpoint it continues.
        m, d = self.recipe.model, self.recipe.data
        chosen = {key: value for key, value in m.config.items() if key.startswith("mpp_")}
        return {**chosen, "mpp_image_mean": list(d.mean), "mpp_image_std": list(d.std)}

    def scores_accuracy(self, config):
        return config.mpp_target != "l2_patch"  # a regression target has a loss, no accuracy

    def loader_options(self, model):
        return {"labels": False, "per_image": PatchCorruptionDraw.from_config(model.config)}

    def step_loss(self, model, batch, key):
        return model(
            pixel_values=batch["pixel_values"], corruption=batch["corruption"],
            replacement_index=batch["replacement_index"],
        ).loss

    def evaluate(self, model, dataset, recipe, accelerator):
        result = evaluate_masked_patch_prediction(
            accelerator.unwrap_model(model), dataset, batch_size=recipe.train.eval_batch_size,
            image_size=recipe.model.image_size, mean=recipe.data.mean, std=recipe.data.std, seed=recipe.train.seed,
            num_workers=recipe.run.num_workers, accelerator=accelerator, strict=recipe.data.strict,
        )
        model.train()
        return result


OBJECTIVE_CLASSES: dict[str, type[Objective]] = {cls.name: cls for cls in (Classification, MaskedPatchPrediction)}


def objective_for(recipe: Recipe) -> Objective:
    """The `Objective` of `recipe.train.objective`."""
    return OBJECTIVE_CLASSES[recipe.train.objective](recipe)


def evaluate(model, dataset, recipe: Recipe, accelerator) -> dict[str, Any]:
    """Score a classifier on `dataset` with `hf_vit_repro.evaluation.evaluate_model` (accuracy,
    top-5, per-class; data-parallel) at the recipe's resolution, mean and std, in the run's
    precision (bf16 when it trains in bf16, else fp32). Leaves the model in training mode."""
    unwrapped = accelerator.unwrap_model(model)
    result = evaluate_model(
        unwrapped, dataset, batch_size=recipe.train.eval_batch_size, mean=recipe.data.mean, std=recipe.data.std,
        num_workers=recipe.run.num_workers, accelerator=accelerator, progress=False, strict=recipe.data.strict,
        precision="bf16" if accelerator.mixed_precision == "bf16" else "fp32",
    )
    model.train()
    return result


# ----------------------------------------------------------------------------- masked patch prediction


@dataclass(frozen=True)
class PatchCorruptionDraw:
    """The data loader's `per_image` hook for masked patch prediction: for one transformed image
    `(C, H, W)` and its generator, `{"corruption": (N,), "replacement_index": (N,)}` int64 from
    `sample_patch_corruption(N, rate, split, generator)`, N = (H // ph) * (W // pw) (any grid,
    non-square too). Picklable, so it runs in DataLoader workers."""

    patch_hw: tuple[int, int]
    rate: float = 0.5
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @classmethod
    def from_config(cls, config) -> "PatchCorruptionDraw":
        """The draw a `ViTReproConfig` asks for (`patch_hw`, `mpp_corruption_rate`, `mpp_corruption_split`)."""
        return cls(tuple(config.patch_hw), float(config.mpp_corruption_rate),
                   tuple(float(p) for p in config.mpp_corruption_split))

    def __call__(self, pixel_values: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        height, width = pixel_values.shape[-2:]
        num_patches = (height // self.patch_hw[0]) * (width // self.patch_hw[1])
        corruption, replacement_index = sample_patch_corruption(
            num_patches, rate=self.rate, split=self.split, generator=generator
        )
        return {"corruption": corruption, "replacement_index": replacement_index}


def evaluate_masked_patch_prediction(
    model,
    dataset,
    *,
    batch_size: int = 64,
    image_size: int | None = None,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    seed: int = 0,
    num_workers: int = 0,
    accelerator=None,
    strict: bool = True,
) -> dict[str, Any]:
    """A `ViTReproForMaskedPatchPrediction` scored on `dataset` (an "image" column; labels are not
    read), data-parallel when `accelerator` spans processes.

    Images are resized to `image_size` (default: the model's) and normalised with mean/std; row
    i's corruption is drawn from its generator seeded from (`seed`, row), so it is the same for
    every batch size and process count. Returns, on every process: `metrics` =
    {"masked_patch_loss": the model's loss over all corrupted patches of the split,
    "masked_patch_accuracy": the fraction of them whose colour class (for the 4x4 target: cell
    colour) is predicted right; absent for the `"l2_patch"` regression target}, `num_images`,
    `num_skipped` (unreadable images, skipped when `strict` is False).
    """
    from ..data import eval_transform, make_dataloader
    from ..evaluation.classification import make_accelerator

    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty; nothing to evaluate")
    accelerator = accelerator or make_accelerator()
    config = model.config
    size = image_size or config.image_hw[0]
    # The "label" the loader carries is the row index: placeholders of unreadable images (row -1)
    # are dropped after the gather, which also drops the rows Accelerate repeats to even batches.
    indexed = dataset.select_columns(["image"]).add_column("label", np.arange(n, dtype=np.int64))
    loader = make_dataloader(
        indexed, eval_transform(size, mean, std), batch_size, shuffle=False, seed=seed, num_workers=num_workers,
        strict=strict, placeholder_label=None if strict else -1, per_image=PatchCorruptionDraw.from_config(config),
    )
    loader = accelerator.prepare_data_loader(loader)
    was_training = model.training
    model = model.to(accelerator.device).eval()
    colour = config.mpp_target != "l2_patch"
    totals = torch.zeros(3, dtype=torch.float64)  # loss summed over corrupted patches, their count, hits
    images = 0
    with torch.no_grad():
        for batch in loader:
            out = model(pixel_values=batch["pixel_values"], corruption=batch["corruption"],
                        replacement_index=batch["replacement_index"])
            corrupted = (out.corruption != PatchCorruption.NONE).double()
            losses = masked_patch_prediction_losses(out.logits, out.targets, config.mpp_target).double()
            stats = [(losses * corrupted).sum(1), corrupted.sum(1)]
            if colour:
                hits = (out.logits.argmax(-1) == out.targets).double()
                hits = hits.mean(-1) if hits.dim() == 3 else hits  # the 4x4 target: fraction of cells right
                stats.append((hits * corrupted).sum(1))
            stats, rows = accelerator.gather_for_metrics((torch.stack(stats, 1), batch["labels"]))
            keep = (rows >= 0).cpu()
            totals[: stats.shape[1]] += stats.cpu()[keep].sum(0)
            images += int(keep.sum())
    skipped = int(accelerator.reduce(torch.tensor(loader.collate_fn.pop_skipped(), device=accelerator.device),
                                     reduction="sum"))
    model.train(was_training)
    if images == 0:
        raise ValueError(f"none of the {n} images could be read; check the dataset's files")
    metrics = {"masked_patch_loss": float(totals[0] / totals[1])}
    if colour:
        metrics["masked_patch_accuracy"] = float(totals[2] / totals[1])
    return {"metrics": metrics, "num_images": images, "num_skipped": skipped}
