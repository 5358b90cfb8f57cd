"""Compute accounting of a training run (paper Sec. 4.4 and Table 6): what a run cost, in the
units the paper compares models by.

    training FLOPs = 3 x forward FLOPs per image x images seen     (backward = 2 x forward)

Forward FLOPs come from the architecture (`hf_vit_repro.flops.forward_flops`, a formula, not a
measurement: a multiply-add is 2 FLOPs, matmuls and convolutions only). The paper's Table 6
"pre-training exaFLOPs" are this product for 7 or 14 epochs of JFT-300M, and its
"TPUv3-core-days" (Table 2) are the same idea as `device_seconds` here: accelerator time, summed
over the devices that trained.

`compute_record` fills the `compute` entry of RUN_DIR/train_summary.json, which the model card
and `vit-repro study` read.
"""

from __future__ import annotations

import functools
import logging
import platform
from typing import Any

logger = logging.getLogger(__name__)

#: FLOPs in one exaFLOP (the unit of the paper's Table 6).
EXA = 1e18
TRAINING_FLOPS_RULE = "3 x forward FLOPs per image x images seen (backward = 2 x forward); multiply-add = 2 FLOPs"


def compute_record(config, image_size: int, images_seen: int, train_time_s: float, num_devices: int,
                   device: str) -> dict[str, Any]:
    """The `compute` entry of a run's summary.

    `config` is the trained model's config, `image_size` the training resolution, `images_seen`
    the images of every update (all processes), `train_time_s` the wall time of the updates,
    `num_devices` the processes that trained (one accelerator each; on a CPU, a process and its
    threads) and `device` what they ran on. `device_seconds` = wall time x devices: a resumed run
    counts its earlier sessions as if they ran on as many devices as the last one. An
    architecture `forward_flops` cannot count leaves the FLOPs None and says why
    (`flops_unavailable`) rather than failing the finished run.
    """
    record: dict[str, Any] = {"forward_flops_per_image": None, "image_size": int(image_size),
                              "images_seen": int(images_seen), "training_flops": None, "training_exaflops": None}
    try:
        from ..flops import forward_flops

        forward = int(forward_flops(config, image_size))
    except (ImportError, NotImplementedError, ValueError, TypeError) as err:
        # A finished run must not fail at its summary: say why its FLOPs are missing instead.
        logger.warning("no FLOPs for this architecture: %s", err)
        record["flops_unavailable"] = f"{type(err).__name__}: {err}"
    else:
        training = 3 * forward * int(images_seen)
        record.update(forward_flops_per_image=forward, training_flops=training, training_exaflops=training / EXA)
    return {
        **record,
        "rule": TRAINING_FLOPS_RULE,
        "device": device,
        "num_devices": int(num_devices),
        "device_seconds": round(float(train_time_s) * int(num_devices), 3),
    }


def device_description(device) -> str:
    """A `torch.device` in words: the GPU's name ("NVIDIA H100 80GB HBM3"), or for the CPU its model
    ("cpu: AMD EPYC 7B13") where the system says it."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = _cpu_model()
    return f"{device.type}: {model}" if model and device.type == "cpu" else device.type


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None
