"""Training: pretraining and fine-tuning with Accelerate, read from a typed recipe.

    vit-repro train recipes/finetune_cifar10.yaml optim.lr=0.003 run.output_dir=outputs/c10
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m hf_vit_repro train RECIPE ...

Both doors call `run_recipe(load_recipe(path, overrides))`. Where each part lives:

- `recipe`       the typed recipe: sections, validation, YAML loading, `key=value` overrides, smoke
- `optim`        parameter groups, optimizer, learning-rate schedule, EMA, losses
- `objectives`   what is learned: classification or masked patch prediction (loss of a micro-batch,
                 per-image extras of the loader, evaluation)
- `peft_methods` `train.method`: which parameters fine-tuning trains (full, linear, bitfit, LoRA,
                 VPT, AdaptFormer adapters)
- `build`        the run's data (splits, hold-out, transforms) and model (scratch or checkpoint)
- `checkpoints`  naming, listing, compatibility checks, atomic saving, the resume decision, final/
- `distributed`  the Accelerator (FSDP2 on CPUs too, launch mistakes caught) and the micro-batch
                 stream an exact resume continues
- `loop`         the training loop (`train`) and nothing else
- `sweep`        the learning-rate sweep and `run_recipe`
- `cli`          `vit-repro train`

Dependencies point one way: peft_methods <- recipe <- optim <- objectives <- build <- checkpoints <- loop <- sweep <- cli. The
loop's evaluation is `hf_vit_repro.evaluation.classification.evaluate_model`, a lower module; the
VTAB runner (`hf_vit_repro.vtab`), which runs recipes, sits on top of this package.

The paper's settings (shared/PAPER.md, "Training"; paper Appendix B.1):

- Pretraining: Adam (beta1 0.9, beta2 0.999) with decoupled weight decay, batch 4096, linear
  warm-up of 10k steps then linear or cosine decay, gradient clipping at global norm 1 (ImageNet),
  dropout / label smoothing per recipe, a pre-logits "representation" layer.
- Fine-tuning: SGD momentum 0.9, no weight decay, clipping at 1, cosine decay with warm-up,
  batch 512, the pre-logits layer dropped and a zero-initialised K-way head attached, position
  embeddings resampled once at load for the higher resolution, learning rate swept on a held-out
  split (`run_recipe`), optional Polyak (EMA) weights.
- Self-supervised pretraining (Sec. 4.6, Appendix B.1.2; `train.objective: masked_patch_prediction`):
  Adam, learning rate 2e-4, 10k warm-up steps, cosine decay, batch 4096, 1M steps; 50% of the
  patch embeddings corrupted (80% [mask], 10% another patch, 10% kept), the 3-bit mean colour of
  each corrupted patch predicted.
"""

from __future__ import annotations

from ..models import ARCHITECTURE_FIELDS, SMOKE_BACKBONE, SMOKE_BIT, SMOKE_MODEL
from .build import (
    RunData,
    architecture,
    build_data,
    build_model,
    describe_architecture,
    load_checkpoint_config,
    resolve_checkpoint,
)
from .checkpoints import (
    SHARDED_MODEL_DIR,
    TRAINER_STATE,
    CheckpointWriteError,
    check_checkpoint_compatible,
    check_checkpoint_layout,
    check_same_recipe,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    recipe_differences,
    resume_point,
    save_checkpoint,
    save_final_model,
)
from .cli import add_cli
from .loop import TRAIN_LOG, Publisher, TrainingDivergedError, TrainResult, TrainState, train
from .objectives import (
    OBJECTIVE_CLASSES,
    Objective,
    PatchCorruptionDraw,
    evaluate,
    evaluate_masked_patch_prediction,
    objective_for,
)
from .peft_methods import METHODS, apply_method, trainable_parameters
from .optim import (EMA, build_optimizer, build_scheduler, classification_loss, layer_decay_groups, lr_multiplier, mixup,
                    parameter_groups)
from .recipe import (
    AUGMENTATIONS,
    LOSSES,
    MIXED_PRECISIONS,
    MODES,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    SECTIONS,
    DataRecipe,
    ModelRecipe,
    OptimRecipe,
    Recipe,
    RecipeError,
    RunRecipe,
    TrainRecipe,
    apply_overrides,
    load_recipe,
    parse_overrides,
    resolve_key,
    smoke_recipe,
)
from .sweep import SWEEP, SWEEP_DIR, run_recipe, sweep_member

__all__ = [
    "ARCHITECTURE_FIELDS", "AUGMENTATIONS", "CheckpointWriteError", "DataRecipe", "EMA", "LOSSES", "METHODS", "MIXED_PRECISIONS", "MODES",
    "apply_method", "trainable_parameters",
    "ModelRecipe", "OBJECTIVES", "OBJECTIVE_CLASSES", "OPTIMIZERS", "Objective", "OptimRecipe",
    "PatchCorruptionDraw", "Publisher", "Recipe", "RecipeError", "RunData", "RunRecipe", "SCHEDULES", "SECTIONS",
    "SHARDED_MODEL_DIR", "SMOKE_BACKBONE", "SMOKE_BIT", "SMOKE_MODEL", "SWEEP", "SWEEP_DIR",
    "TRAINER_STATE", "TRAIN_LOG", "TrainRecipe", "TrainResult", "TrainState", "TrainingDivergedError",
    "add_cli", "apply_overrides", "architecture", "build_data", "build_model", "build_optimizer",
    "build_scheduler", "check_checkpoint_compatible", "check_checkpoint_layout", "check_same_recipe",
    "checkpoint_name", "classification_loss", "describe_architecture", "evaluate",
    "evaluate_masked_patch_prediction", "latest_checkpoint", "layer_decay_groups", "list_checkpoints",
    "load_checkpoint_config", "load_recipe", "lr_multiplier", "mixup", "objective_for", "parameter_groups", "parse_overrides",
    "recipe_differences", "resolve_checkpoint", "resolve_key", "resume_point",
    "run_recipe", "save_checkpoint", "save_final_model", "smoke_recipe", "sweep_member", "train",
]
