"""Forward FLOPs of one image for a model config: `forward_flops(config, image_size) -> int`.

TEMPORARY (branch `studies`): the BiT branch brings the package's own `flops.py` with the ViT
formula moved out of benchmarks/bench_models.py and formulas for the hybrid CNN and the BiT
ResNets; at the merge that file replaces this one and the callers
(`hf_vit_repro.training.compute`) keep working through the same signature. Until then:

- ViT encoder, patch embedding and head: the formula of `benchmarks/bench_models.py`
  (`vit_flops_per_image`, every block on all tokens, as the paper's architecture computes it;
  a multiply-add counts 2 FLOPs), read from the source checkout;
- the pre-logits layer (`representation_size`, the paper's pretraining head): 2 * D * R, which
  that formula leaves out;
- a hybrid's ResNet: counted by `torch.utils.flop_counter.FlopCounterMode` on the meta device
  (no memory, no compute), i.e. 2 FLOPs per multiply-add of every convolution.

Norms, activations, softmax and weight standardisation are not counted (as usual for FLOP
budgets, and as the paper's Table 6 exaFLOPs: 3 x forward x images seen reproduces them).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import sys
from pathlib import Path

_BENCH_MODELS = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"


@functools.lru_cache(maxsize=1)
def _bench_formula():
    if not _BENCH_MODELS.is_file():
        raise ImportError(
            f"hf_vit_repro.flops needs {_BENCH_MODELS} (the ViT FLOPs formula); install the package from a source "
            "checkout (pip install -e .)."
        )
    spec = importlib.util.spec_from_file_location("_hf_vit_repro_bench_models", _BENCH_MODELS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module.vit_flops_per_image


def backbone_flops(config, image_size: int) -> int:
    """FLOPs of a hybrid's ResNet on one `image_size` x `image_size` image (0 for a plain ViT),
    counted by torch's FlopCounterMode on meta tensors."""
    if getattr(config, "backbone_config", None) is None:
        return 0
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BitBackbone

    backbone_config = copy.deepcopy(config.backbone_config)
    backbone_config._attn_implementation = "eager"  # BitBackbone accepts no other
    with torch.device("meta"):
        backbone = BitBackbone(backbone_config)
        pixels = torch.empty(1, config.num_channels, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        backbone(pixels)
    return int(counter.get_total_flops())


def forward_flops(config, image_size: int) -> int:
    """Forward FLOPs of one image at `image_size` (square) for a `ViTReproConfig`, plain or
    hybrid: encoder, patch embedding, pre-logits layer, head, and the hybrid's CNN."""
    flops = _bench_formula()(config, image_size)
    if config.representation_size:
        flops += 2 * config.hidden_size * config.representation_size
    return int(flops + backbone_flops(config, image_size))
