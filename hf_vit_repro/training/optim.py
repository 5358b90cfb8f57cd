"""Optimisation: parameter groups, the optimizer, the learning-rate schedule, Polyak averaging and
the classification losses (paper Appendix B.1).

- Pretraining: Adam (beta1 0.9, beta2 0.999) with decoupled weight decay scaled by the learning
  rate, `p <- p - lr * (adam_update + wd * p)` (flax.optim.Adam in the original code; PyTorch's
  AdamW); fine-tuning: SGD with momentum 0.9 and no weight decay.
- The learning rate of update t = 1..T follows the original code's formula (vit_jax
  `create_learning_rate_schedule`): `base * min(1, t / warmup) * decay(progress)` with
  `progress = clip((t - warmup) / (T - warmup), 0, 1)`: it reaches `base` exactly at the end of
  warm-up and 0 at the last update for linear and cosine decay.
- BiT-HyperRule's fine-tuning schedule (Kolesnikov et al. 2020, Sec. 3.3) is `step`: after the
  same linear warm-up, the rate is divided by 10 once t passes 30%, 60% and 90% of T.
- Layer-wise learning-rate decay (`optim.layer_decay`, BEiT, Bao et al. 2022; MAE's fine-tuning): with
  L blocks, layer i's parameters get `lr * layer_decay ** (L + 1 - i)`: i = 0 for the embeddings,
  k + 1 for block k, L + 1 for what follows the blocks. The schedule multiplies every group's own
  rate by the same factor (`LambdaLR` scales each group's initial rate), so the ratios hold.
"""

from __future__ import annotations

import math
from typing import Any

from ..data.mixing import mixup  # noqa: F401  (BiT's MixUp; re-exported, `training.mixup`)
from .recipe import EMA_CORRECTIONS, SCHEDULES, OptimRecipe, RecipeError

#: BiT-HyperRule's step decay (BiT paper Sec. 3.3): "decay the learning rate by a factor of 10 at
#: 30%, 60% and 90% of the training steps". (The released bit_hyperrule.py decays its 500-step
#: schedule at steps 200, 300, 400 after a 100-step warm-up; the longer ones at 30/60/90%.)
STEP_DECAY_AT: tuple[float, ...] = (0.3, 0.6, 0.9)
STEP_DECAY_FACTOR = 0.1
#: `step_bit_code`: where BiT's released code (big_transfer's `bit_hyperrule.get_lr`) divides the
#: rate in its 500-step schedule (for < 20k images: decays after steps 200, 300, 400 of 500)
BIT_CODE_DECAY_AT: tuple[float, ...] = (0.4, 0.6, 0.8)


def parameter_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: parameters named by `model.no_weight_decay()` (biases, norms,
    position embeddings, class token; for a BiT ResNet its 1-D parameters, `models.no_weight_decay`)
    with weight decay 0, all others with `weight_decay`. Frozen parameters are left out. Each group
    carries `names` for inspection."""
    from ..models import no_weight_decay

    skip = set(no_weight_decay(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = skip - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"no_weight_decay() names parameters the model does not have: {sorted(unknown)[:5]}")
    decay = [(n, p) for n, p in named if n not in skip]
    no_decay = [(n, p) for n, p in named if n in skip]
    return [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]},
    ]


def layer_index(model) -> tuple[dict[int, int], int]:
    """`({id(parameter): layer}, L)` for a ViT (also wrapped by peft, or a backbone): layer 0 holds
    the embeddings module's parameters (patch embedding or a hybrid's CNN, class token, position
    embeddings, mask token, VPT prompts, deep ones included), layer k + 1 block k's (with its LoRA
    or adapter weights); parameters absent from the map (final norm, pooler, heads) are layer L + 1.
    Found by parameter identity, so peft's renaming does not matter. `RecipeError` for a model with
    no ViT blocks (a BiT ResNet)."""
    import torch

    vit = next((m for m in model.modules() if isinstance(getattr(m, "layers", None), torch.nn.ModuleList)
                and isinstance(getattr(m, "embeddings", None), torch.nn.Module)), None)
    if vit is None:
        raise RecipeError(
            f"`optim.layer_decay` needs a ViT's embeddings and blocks; {type(model).__name__} has none "
            "(a BiT ResNet's stages are not layers here): set `optim.layer_decay: null`."
        )
    layers = {id(p): 0 for p in vit.embeddings.parameters()}
    for k, block in enumerate(vit.layers):
        layers.update({id(p): k + 1 for p in block.parameters()})
    return layers, len(vit.layers)


def layer_decay_groups(model, weight_decay: float, layer_decay: float, lr: float) -> list[dict[str, Any]]:
    """`parameter_groups` split by layer (`layer_index`): for each layer i = 0..L+1 that has trainable
    parameters, a decayed and an exempt group (the same `no_weight_decay()` exemptions), each with
    `lr = lr * layer_decay ** (L + 1 - i)` and its `layer` and `names` for inspection. Empty
    groups are left out."""
    layers, num_layers = layer_index(model)
    base_groups = parameter_groups(model, weight_decay)
    groups = []
    for layer in range(num_layers + 2):
        for base in base_groups:
            chosen = [(n, p) for n, p in zip(base["names"], base["params"])
                      if layers.get(id(p), num_layers + 1) == layer]
            if chosen:
                groups.append({
                    "params": [p for _, p in chosen], "names": [n for n, _ in chosen], "layer": layer,
                    "weight_decay": base["weight_decay"], "lr": lr * layer_decay ** (num_layers + 1 - layer),
                })
    return groups


def build_optimizer(model, optim: OptimRecipe, lr: float | None = None, sharded: bool = False):
    """`torch.optim.AdamW` (paper pretraining) or `SGD` with momentum (paper fine-tuning) over
    `parameter_groups`, or `layer_decay_groups` when `optim.layer_decay` is set and not 1 (1 and
    null give the same two groups). The learning rate set here is the base rate the schedule
    multiplies (every group's own rate, with layer decay).
    `sharded`: the parameters will be FSDP2 DTensors. torch 2.14 has no DTensor rule for the
    fused SGD kernel ("aten._fused_sgd_.default does not have a sharding strategy registered" at
    the first step), so sharded SGD takes torch's default implementation (the same update, one
    parameter at a time); fused AdamW has one and stays fused."""
    import torch

    lr = optim.lr if lr is None else lr
    if optim.layer_decay is None or optim.layer_decay == 1.0:
        named_groups = parameter_groups(model, optim.weight_decay)
    else:
        named_groups = layer_decay_groups(model, optim.weight_decay, optim.layer_decay, lr)
    groups = [{k: v for k, v in g.items() if k not in ("names", "layer")} for g in named_groups]
    fused = optim.fused or None  # None: torch's own default implementation
    if sharded and optim.optimizer == "sgd":
        fused = None
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), eps=optim.eps, fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum, fused=fused)


def lr_multiplier(update: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The factor on the base learning rate for update `update` = 1..total_steps (vit_jax's
    `create_learning_rate_schedule`): `min(1, update / warmup) * decay(progress)`, with
    `progress = clip((update - warmup) / (total - warmup), 0, 1)` and decay `1 - progress`
    (linear), `(1 + cos(pi * progress)) / 2` (cosine) or 1 (constant). It is exactly 1 at the
    end of warm-up and 0 at the last update for linear and cosine decay. `step` (BiT-HyperRule)
    multiplies the warm-up factor by `STEP_DECAY_FACTOR` for every fraction f of `STEP_DECAY_AT`
    with `update > f * total_steps`: what the BiT paper's text says (Kolesnikov et al. 2020,
    Sec. 3.3: the rate decayed by a factor of 10 at 30%, 60% and 90% of the training steps).

    `step_bit_code` is the small schedule as BiT's released code runs it (`bit_hyperrule.get_lr`,
    steps counted from 0, s = update - 1): during warm-up the factor is s / warmup (so the first
    update has rate 0), then it is divided by 10 for every point p of `BIT_CODE_DECAY_AT` x
    total_steps with p < s: with 500 steps and 100 warm-up steps, decays at 40/60/80% (after steps
    200, 300, 400), not the paper text's 30/60/90%. BiT's code uses 30/60/90% only in its 10k and
    20k schedules (for larger data sets): those are the `step` schedule up to this off-by-one."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; one of {SCHEDULES}")
    if schedule == "step_bit_code":
        s = update - 1
        if s < warmup_steps:
            return s / warmup_steps
        return STEP_DECAY_FACTOR ** sum(f * total_steps < s for f in BIT_CODE_DECAY_AT)
    factor = min(1.0, update / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "step":
        return factor * STEP_DECAY_FACTOR ** sum(update > f * total_steps for f in STEP_DECAY_AT)
    if schedule == "constant" or total_steps <= warmup_steps:
        return factor
    progress = min(max((update - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    if schedule == "linear":
        return factor * (1.0 - progress)
    return factor * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, schedule: str):
    """`LambdaLR` applying `lr_multiplier`; PyTorch counts from 0 before the first update, so the
    update t = epoch + 1."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_multiplier(epoch + 1, total_steps, warmup_steps, schedule)
    )


class EMA:
    """Polyak averaging of the weights (paper Appendix B.1.1, optional in fine-tuning):
    `ema <- d_t * ema + (1 - d_t) * param` after every update t = 1, 2, ..., in float32. Saved in
    checkpoints (`state_dict`, with the update count t, so a resumed run continues the same
    average bit for bit), copied into the model at the end (`copy_to`). Under FSDP each process
    averages its own shards (the parameters are DTensors, so are the shadow weights).

    `correction` (`train.ema_correction`) says what `decay` d means in the first updates. The paper
    names only "Polyak & Juditsky averaging with a factor of 0.9999" and no start-up rule, so
    `none` is the default:
    - `none`: the average starts at the weights training starts from (the pretrained ones when
      fine-tuning) and d_t = d; after t updates those initial weights still weigh d^t (13% after
      20k updates at d = 0.9999).
    - `debias`: Adam's bias correction. The average that starts at zero, z_t = d z_{t-1} + (1 - d)
      param_t, divided by (1 - d^t); it weighs only the trained iterates (d^(t-k) normalised).
      Kept already divided: d_t = d (1 - d^(t-1)) / (1 - d^t), so the first update copies the
      weights and the shadow is the corrected average at every step.
    - `warmup`: d_t = min(d, (1 + n) / (10 + n)) with n = t - 1 updates done before this one
      (TensorFlow's `ExponentialMovingAverage(num_updates=...)` rule), starting at the initial
      weights like `none`."""

    def __init__(self, model, decay: float, correction: str = "none"):
        import torch

        if correction not in EMA_CORRECTIONS:
            raise ValueError(f"EMA correction must be one of {', '.join(EMA_CORRECTIONS)}; got {correction!r}.")
        self.decay, self.correction, self.updates = float(decay), correction, 0
        self.shadow = {n: p.detach().to(torch.float32).clone() for n, p in model.named_parameters()}

    def decay_at(self, t: int) -> float:
        """The factor d_t of update t (1-based) under `correction`."""
        d = self.decay
        if self.correction == "debias":
            return d * (1.0 - d ** (t - 1)) / (1.0 - d**t)
        if self.correction == "warmup":
            return min(d, t / (9.0 + t))  # (1 + n) / (10 + n) with n = t - 1
        return d

    def update(self, model) -> None:
        import torch

        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        with torch.no_grad():
            for name, param in model.named_parameters():
                self.shadow[name].lerp_(param.detach().to(torch.float32), weight)

    def copy_to(self, model) -> None:
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, Any]:
        """Full float32 tensors, whatever the sharding. Under FSDP the shadow weights are shards
        (DTensors, laid out like the parameters) and are gathered here: a collective, which
        Accelerate's `save_state` calls on every process before the main one writes."""
        return {"decay": self.decay, "correction": self.correction, "updates": self.updates,
                "shadow": {n: _full_tensor(t) for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Every process reads the full tensors; under FSDP each keeps its own shard of them
        (laid out like the shadow weights it replaces, without communication)."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        self.decay = state["decay"]
        # checkpoints written before the correction existed averaged with a constant decay
        self.correction, self.updates = state.get("correction", "none"), state.get("updates", 0)
        shadow = {}
        for name, full in state["shadow"].items():
            current = self.shadow.get(name)
            if isinstance(current, DTensor):
                shadow[name] = distribute_tensor(full, current.device_mesh, current.placements, src_data_rank=None)
            else:  # read onto the CPU (Accelerate's load_custom_state): back to the model's device
                shadow[name] = full.to(current.device if current is not None else full.device, copy=True)
        self.shadow = shadow


def _full_tensor(tensor):
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def classification_loss(logits, labels, loss: str = "softmax_xent", label_smoothing: float = 0.0, mixed=None):
    """Mean over the batch of softmax cross-entropy, or of sigmoid cross-entropy summed over the
    K classes on (smoothed) one-hot targets. Computed in float32. logits (B, K), labels (B,).
    `mixed` = (other labels, lam) from `mixup`: lam * loss(labels) + (1 - lam) * loss(other)."""
    if mixed is not None:
        other, lam = mixed
        return (lam * classification_loss(logits, labels, loss, label_smoothing)
                + (1.0 - lam) * classification_loss(logits, other, loss, label_smoothing))
    import torch.nn.functional as F

    logits = logits.float()
    if loss == "softmax_xent":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    num_classes = logits.shape[-1]
    targets = F.one_hot(labels, num_classes).float()
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()

