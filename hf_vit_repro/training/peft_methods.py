"""Parameter-efficient transfer: which parameters a fine-tuning run trains (`train.method`).

    vit-repro vtab CHECKPOINT --method lora
    vit-repro train recipes/finetune_vtab.yaml train.method=vpt-deep train.method_options='{tokens: 50}'

The one place a method is defined: what it adds to the model's config before the model is built
(`config_updates`), and which parameters it trains once it is (`apply_method`). The head (the new
zero-initialised classifier of fine-tuning) is trained by every method.

- `full`: every parameter (the paper's fine-tuning, the default).
- `linear`: the classifier only; the encoder is frozen (the "Linear" row of every PEFT table).
- `bitfit`: every bias (dense layers, norms, the patch embedding) and the classifier (Ben Zaken et
  al., ACL 2022).
- `lora`: Hugging Face `peft`'s LoRA (Hu et al., ICLR 2022) on the fused `qkv`, `o_proj`, `fc1` and
  `fc2` of every block, the classifier in `modules_to_save`. Defaults: rank `r` 8, the rank of the
  LoRA rows in the VTAB-1k tables since NOAH (Zhang et al. 2022; 0.29M parameters for ViT-B/16);
  `targets` all four dense layers of the blocks by default, as the issue asks (`targets: [qkv]`,
  the fused query/key/value alone, has the published rows' 0.29M); `alpha` = `r` (the LoRA paper
  sets alpha to the first r it tries and does not tune it, Sec. 4.1), no dropout. peft's IA3 works on the same layers
  (tests/test_wrappers.py); it has no recipe name.
- `vpt-shallow` / `vpt-deep`: Visual Prompt Tuning (Jia et al., ECCV 2022): `tokens` learned prompts
  after the class token at the first block (shallow) or at every block (deep), the model's
  `prompt_tokens` / `prompt_deep` config fields; prompts and classifier are trained. `tokens` 10 by
  default: one point of the paper's per-task grid of prompt lengths, not its per-task choice.
- `adapter`: AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck MLP (`bottleneck` 64, ReLU,
  output scale `scale` 0.1, the paper's defaults) in parallel to each block's MLP, the model's
  `adapter_bottleneck` / `adapter_scale` fields; adapters and classifier are trained.

Checkpoints: VPT and adapter runs save an ordinary checkpoint (the config holds the option, the
weights the prompts / adapters): `from_pretrained` loads it, with or without this package. A LoRA
run saves `final/` as the merged model (`merge_and_unload`: plain dense layers, the same logits
within float32 rounding) so every command that reads a checkpoint reads it, and the peft adapter
folder `final/adapter/` that `PeftModel.from_pretrained(base, folder)` loads on the base model
(`base_model` below).

This module imports no other part of the package at import time but `runs` (the run folder's
names, standard library only): the recipe's validation reads its tables.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

from ..runs import ADAPTER_DIR  # where a LoRA run's peft adapter folder goes, inside final/ (re-exported)

METHODS = ("full", "linear", "bitfit", "lora", "vpt-shallow", "vpt-deep", "adapter")
DEFAULT_METHOD = "full"
#: Each method's options (`train.method_options`) and their defaults (module docstring: sources).
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "linear": {},
    "bitfit": {},
    "lora": {"r": 8, "alpha": 8.0, "dropout": 0.0, "targets": ["qkv", "o_proj", "fc1", "fc2"]},
    "vpt-shallow": {"tokens": 10},
    "vpt-deep": {"tokens": 10},
    "adapter": {"bottleneck": 64, "scale": 0.1},
}
#: The dense layers LoRA adapts: every block's fused query/key/value, attention output and MLP layers.
LORA_TARGET_MODULES = ("qkv", "o_proj", "fc1", "fc2")
#: The classification head every method trains (`model.classifier`, ours and transformers' BiT's).
HEAD = "classifier"
#: Methods that change a ViT's modules (a BiT ResNet has no blocks to prompt or adapt).
VIT_ONLY = ("lora", "vpt-shallow", "vpt-deep", "adapter")


def options_problem(method: str, options: dict[str, Any]) -> str | None:
    """None, or what is wrong with `train.method_options` for `method`: an unknown key (naming the
    method's keys) or a value out of range. The recipe turns it into a `RecipeError`."""
    known = METHOD_OPTIONS.get(method, {})
    for key, value in options.items():
        if key not in known:
            keys = ", ".join(known) or "none"
            return f"`train.method_options.{key}` is not an option of method {method!r}; its options: {keys}."
        if key == "targets":
            if not isinstance(value, (list, tuple)) or not value or not set(value) <= set(LORA_TARGET_MODULES):
                return (f"`train.method_options.targets` must be a non-empty list of the block's dense layers "
                        f"({', '.join(LORA_TARGET_MODULES)}), got {value!r}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"`train.method_options.{key}` must be a number, got {value!r}."
    values = resolved_options(method, options)
    for key in ("r", "tokens", "bottleneck"):
        if key in values and (values[key] < 1 or values[key] != int(values[key])):
            return f"`train.method_options.{key}` must be a positive integer, got {values[key]!r}."
    if "dropout" in values and not 0.0 <= values["dropout"] < 1.0:
        return f"`train.method_options.dropout` must be a probability in [0, 1), got {values['dropout']!r}."
    if "alpha" in values and values["alpha"] <= 0:
        return f"`train.method_options.alpha` must be > 0, got {values['alpha']!r}."
    return None


def resolved_options(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults updated with `options`."""
    return {**METHOD_OPTIONS.get(method, {}), **(options or {})}


def config_updates(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config fields the method needs before the model is built: VPT's prompts, AdaptFormer's
    adapters (the other methods change no module of their own)."""
    values = resolved_options(method, options)
    if method in ("vpt-shallow", "vpt-deep"):
        return {"prompt_tokens": int(values["tokens"]), "prompt_deep": method == "vpt-deep"}
    if method == "adapter":
        return {"adapter_bottleneck": int(values["bottleneck"]), "adapter_scale": float(values["scale"])}
    return {}


def is_peft_model(model) -> bool:
    """True for a model wrapped by Hugging Face peft (a `PeftModel`)."""
    return type(model).__module__.split(".")[0] == "peft"


PEFT_MISSING = "`train.method: lora` trains through Hugging Face peft, which is not installed: pip install 'hf-vit-repro[peft]'"


def _peft():
    """The `peft` package (the `peft` extra), or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(PEFT_MISSING) from err
    return peft


def lora_config(options: dict[str, Any] | None = None):
    """The `peft.LoraConfig` of `lora` (module docstring): the dense layers `targets` of every block
    (default all four), the classifier in `modules_to_save`."""
    values = resolved_options("lora", options)
    return _peft().LoraConfig(r=int(values["r"]), lora_alpha=float(values["alpha"]), lora_dropout=float(values["dropout"]),
                      target_modules=list(values["targets"]), modules_to_save=[HEAD], bias="none")


def _trains(method: str, name: str) -> bool:
    """Whether `method` trains the parameter `name` of the (unwrapped) model."""
    if method == "full":
        return True
    if name.startswith(f"{HEAD}."):
        return True
    if method == "bitfit":
        return name.endswith(".bias")
    if method in ("vpt-shallow", "vpt-deep"):
        return name.endswith("embeddings.prompt_embeddings")
    if method == "adapter":
        return ".adapter." in name
    return False  # linear


def apply_method(model, method: str, options: dict[str, Any] | None = None):
    """Freeze what `method` does not train and return the model to train: the same model with
    `requires_grad` set, or for `lora` a `peft.PeftModel` around it (peft freezes the base and
    trains the LoRA matrices and a copy of the classifier). Raises ValueError for a method the
    model cannot take (a BiT ResNet has no blocks to prompt or adapt; a config built without the
    method's prompts or adapters)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "full":
        return model
    config = model.config
    if method in VIT_ONLY and getattr(config, "model_type", None) != "vit_repro":
        raise ValueError(f"method {method!r} adapts a ViT's blocks; this model is a {type(model).__name__}: use full, "
                         "linear or bitfit")
    if not hasattr(model, HEAD):
        raise ValueError(f"method {method!r} trains a classifier head, which {type(model).__name__} does not have")
    for key, value in config_updates(method, options).items():
        if getattr(config, key) != value:
            raise ValueError(f"method {method!r} needs the model built with {key}={value!r} (it has "
                             f"{getattr(config, key)!r}): build it after `config_updates`")
    if method == "lora":
        return _peft().get_peft_model(model, lora_config(options))
    for name, param in model.named_parameters():
        param.requires_grad_(_trains(method, name))
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts of the model as trained (a peft model counts its LoRA
    matrices and the classifier once: peft's frozen original of a module in `modules_to_save` is
    counted in the total, as peft's `print_trainable_parameters` does)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def merged_copy(model):
    """A plain model equal to a peft model: a deep copy with the adapter folded into the dense
    layers (`merge_and_unload`), the trained classifier in place of the original; the model
    itself is left as it was. Any other model is returned as is."""
    if not is_peft_model(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


__all__ = [
    "ADAPTER_DIR",
    "DEFAULT_METHOD",
    "HEAD",
    "LORA_TARGET_MODULES",
    "METHODS",
    "METHOD_OPTIONS",
    "apply_method",
    "config_updates",
    "is_peft_model",
    "lora_config",
    "merged_copy",
    "options_problem",
    "resolved_options",
    "trainable_parameters",
]


def recipe_problem(train, variant: str | None) -> str | None:
    """What is wrong with a recipe's `train.method` / `train.method_options` (None: nothing): a
    known method, options it has, and a classifier to train (every method but `full` trains a
    classification head); the methods that adapt a ViT's blocks refuse a BiT ResNet variant."""
    if train.method not in METHODS:
        return f"`train.method` must be one of {', '.join(map(repr, METHODS))}; got {train.method!r}."
    problem = options_problem(train.method, train.method_options)
    if problem:
        return problem
    if train.method == "lora" and importlib.util.find_spec("peft") is None:
        return PEFT_MISSING + "."
    if train.method != "full" and train.objective != "classification":
        return (f"`train.method: {train.method}` trains a classifier head; `train.objective: {train.objective}` "
                "has none: use `train.method: full`.")
    if train.method in VIT_ONLY and variant is not None:
        from ..models import family_for_variant

        if not (family := family_for_variant(variant)).has_blocks:
            return (f"`train.method: {train.method}` adapts a ViT's blocks; {variant} is a {family.name}: use full, "
                    "linear or bitfit.")
    return None
