"""hf_vit_repro: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for the Hugging Face ecosystem.

Importing the package registers its config and models with transformers' Auto classes; that
registration is this module's only side effect.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
)

from .configuration_vit_repro import ViTReproConfig
from .modeling_vit_repro import (
    MaskedPatchPredictionOutput,
    PatchCorruption,
    ViTReproBackbone,
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
    ViTReproModel,
    ViTReproPreTrainedModel,
    masked_patch_prediction_targets,
    resample_position_embeddings,
    resize_position_embeddings_in_state_dict,
    sample_patch_corruption,
)
from .variants import variant_kwargs, variant_names

__version__ = "0.1.0"

AutoConfig.register(ViTReproConfig.model_type, ViTReproConfig, exist_ok=True)
AutoModel.register(ViTReproConfig, ViTReproModel, exist_ok=True)
AutoModelForImageClassification.register(ViTReproConfig, ViTReproForImageClassification, exist_ok=True)
AutoModelForMaskedImageModeling.register(ViTReproConfig, ViTReproForMaskedImageModeling, exist_ok=True)
# Masked patch prediction is this model's pretraining objective (as ViTMAEForPreTraining is ViT-MAE's).
AutoModelForPreTraining.register(ViTReproConfig, ViTReproForMaskedPatchPrediction, exist_ok=True)
# Dense-prediction heads (UperNet, DPT) build their backbone with AutoBackbone.from_config.
AutoBackbone.register(ViTReproConfig, ViTReproBackbone, exist_ok=True)
# `save_pretrained` writes `auto_map` and copies the shipped files, so checkpoints load with
# trust_remote_code=True where this package is not installed.
ViTReproConfig.register_for_auto_class()
ViTReproModel.register_for_auto_class("AutoModel")
ViTReproForImageClassification.register_for_auto_class("AutoModelForImageClassification")
ViTReproForMaskedImageModeling.register_for_auto_class("AutoModelForMaskedImageModeling")
ViTReproForMaskedPatchPrediction.register_for_auto_class("AutoModelForPreTraining")
ViTReproBackbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "ViTReproConfig",
    "ViTReproModel",
    "ViTReproForImageClassification",
    "ViTReproForMaskedImageModeling",
    "ViTReproForMaskedPatchPrediction",
    "ViTReproBackbone",
    "MaskedPatchPredictionOutput",
    "PatchCorruption",
    "ViTReproPreTrainedModel",
    "masked_patch_prediction_targets",
    "sample_patch_corruption",
    "resample_position_embeddings",
    "resize_position_embeddings_in_state_dict",
    "variant_kwargs",
    "variant_names",
]
