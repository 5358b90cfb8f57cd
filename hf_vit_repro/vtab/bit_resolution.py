"""BiT's fine-tuning resolution rule, as an option for BiT ResNets on VTAB-1k (`vit-repro vtab --protocol
bit-hyperrule --resolution-rule bit-hyperrule`).

What each source says:

- The ViT paper (Appendix B.1.1): VTAB-1k is fine-tuned at 384 px for every task; the package's
  `bit-hyperrule` protocol keeps that resolution by default (recipes/finetune_bit_vtab.yaml).
- BiT's released code (google-research/big_transfer `bit_hyperrule.py`, `get_resolution`): an image
  whose area is below 96 x 96 is resized to 160 and randomly cropped to 128; any other to 512, cropped
  to 480. `RESOLUTION_RULES["bit-hyperrule"]` follows the code.
- The BiT paper (Kolesnikov et al. 2020, Sec. 3.3) states the same 96 x 96 threshold and 160 -> 128
  for small images, but 448 -> 384 for the others (`data.transforms` uses that 448 -> 384 pair).

The rule is defined on a dataset's original image size. `VTAB_IMAGE_SIZES` lists the fixed sizes of the
TFDS sources of the VTAB-1k tasks that have one (TFDS catalog feature shapes: CIFAR-100 and SVHN 32 x 32,
EuroSAT RGB and dSprites 64 x 64, Patch Camelyon and SmallNORB 96 x 96); the other tasks' images are
photographs, rendered scenes or satellite tiles of varying size, all larger than 96 x 96.
"""

from __future__ import annotations

#: The area threshold of `get_resolution`: images with area below 96 x 96 are "small".
SMALL_AREA = 96 * 96
#: (precrop, crop) of BiT's code (`bit_hyperrule.get_resolution`) for small and for other images.
BIT_CODE_SMALL = (160, 128)
BIT_CODE_LARGE = (512, 480)
#: `--resolution-rule` choices: the paper's one 384 px for every task, or BiT's rule per task.
RESOLUTION_RULES = ("paper", "bit-hyperrule")
RESOLUTION_TEXT = {
    "paper": "384 px for every task (the paper's VTAB protocol, Appendix B.1.1)",
    "bit-hyperrule": "BiT's released code (bit_hyperrule.py get_resolution): tasks whose images have an area below "
    "96 x 96 are resized to 160 and cropped to 128, the others resized to 512 and cropped to 480 (the BiT paper, "
    "Sec. 3.3, gives 160 -> 128 and 448 -> 384)",
}
#: (height, width) of the images of a VTAB task's TFDS source, where the source has one fixed size.
VTAB_IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "vtab/cifar100": (32, 32),
    "vtab/svhn": (32, 32),
    "vtab/eurosat": (64, 64),
    "vtab/dsprites_location": (64, 64),
    "vtab/dsprites_orientation": (64, 64),
    "vtab/patch_camelyon": (96, 96),
    "vtab/smallnorb_azimuth": (96, 96),
    "vtab/smallnorb_elevation": (96, 96),
}


def bit_hyperrule_resolution(height: int, width: int) -> tuple[int, int]:
    """(precrop, crop) for images of `height` x `width`, as BiT's `get_resolution`: (160, 128) when
    the area is below 96 x 96, else (512, 480). A 96 x 96 image is not below: (512, 480)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"an image size is two positive numbers, got {height} x {width}")
    return BIT_CODE_SMALL if height * width < SMALL_AREA else BIT_CODE_LARGE


def task_resolution(task: str) -> tuple[int, int]:
    """(precrop, crop) of BiT's rule for a VTAB task (registry name, "vtab/..." or bare): from
    `VTAB_IMAGE_SIZES`, and (512, 480) for the tasks whose images are all larger than 96 x 96."""
    from ..data import VTAB_TASKS

    name = task if task.startswith("vtab/") else f"vtab/{task}"
    if name not in VTAB_TASKS:
        raise KeyError(f"{task!r} is not a VTAB-1k task; VTAB tasks: {', '.join(VTAB_TASKS)}")
    if name in VTAB_IMAGE_SIZES:
        return bit_hyperrule_resolution(*VTAB_IMAGE_SIZES[name])
    return BIT_CODE_LARGE


__all__ = [
    "BIT_CODE_LARGE",
    "BIT_CODE_SMALL",
    "RESOLUTION_RULES",
    "RESOLUTION_TEXT",
    "VTAB_IMAGE_SIZES",
    "bit_hyperrule_resolution",
    "task_resolution",
]
