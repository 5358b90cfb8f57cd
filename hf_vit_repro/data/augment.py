"""Training-time augmentation beyond crop and flip: AugReg's RandAugment + MixUp levels, DeiT's
CutMix, random erasing and repeated augmentation, as recipe fields (`data.augment_level`, ...).

    tf = augment_transform(pretrain_transform(224), randaugment=(2, 15), random_erasing=0.25)
    pixels = tf(image, generator)   # crop + flip, then RandAugment on uint8, normalise, erase

Per image (`AugmentTransform`, in the DataLoader workers): the base transform (crop, flip,
normalise) runs first, then RandAugment on the uint8 pixels (big_vision's order:
`decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2,15)|value_range(-1, 1)`), then random
erasing on the normalised tensor (DeiT / timm's order). Every draw comes from the image's own
generator, so an epoch's images are the same for any number of workers or processes.

Per batch (`mixing.mix_batch`, in the training step): MixUp / CutMix. Per epoch
(`collate.SeededSampler(repeats=k)`): repeated augmentation.

AugReg's levels (`AUGREG_LEVELS`) are big_vision's `RANDAUG_DEF` / `MIXUP_DEF`
(google-research/big_vision `big_vision/configs/vit_i21k.py` and `vit_i1k.py`, identical tables,
commit 0127fb6b337ee2a27bf4e54dea79cff176527356): "none" has neither, "light1" is
`randaug(2,0)` without MixUp (RandAugment at magnitude 0 still changes images, see
`randaugment`), "light2" (2, 10) + p 0.2, "medium1" (2, 15) + p 0.2, "medium2" (2, 15) + p 0.5,
"strong1" (2, 20) + p 0.5, "strong2" (2, 20) + p 0.8.

Random erasing follows timm's `RandomErasing` as DeiT uses it (`--reprob 0.25 --remode pixel
--recount 1`): with probability p, one rectangle of area 2 %-33 % of the image and aspect ratio
log-uniform in [0.3, 1 / 0.3] (10 tries to fit strictly inside), filled with per-pixel standard
normal noise in normalised units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .randaugment import MAX_LEVEL, RandAugment

#: AugReg's named levels -> ((RandAugment layers, magnitude) or None, MixUp p): big_vision's
#: RANDAUG_DEF / MIXUP_DEF, configs/vit_i21k.py @ 0127fb6b337ee2a27bf4e54dea79cff176527356.
AUGREG_LEVELS: dict[str, tuple[tuple[int, int] | None, float]] = {
    "none": (None, 0.0),
    "light1": ((2, 0), 0.0),
    "light2": ((2, 10), 0.2),
    "medium1": ((2, 15), 0.2),
    "medium2": ((2, 15), 0.5),
    "strong1": ((2, 20), 0.5),
    "strong2": ((2, 20), 0.8),
}
#: timm RandomErasing's defaults as DeiT runs it: area fraction and aspect-ratio bounds, tries.
ERASE_AREA: tuple[float, float] = (0.02, 1 / 3)
ERASE_ASPECT: tuple[float, float] = (0.3, 1 / 0.3)
ERASE_ATTEMPTS: int = 10


class RandomErasing:
    """With probability `probability`, one rectangle of a normalised (C, H, W) float image replaced
    by standard normal noise (timm's "pixel" mode). Area fraction uniform in `area`, aspect ratio
    (h / w) log-uniform in `aspect`; a box that does not fit strictly inside is drawn again, up to
    `ERASE_ATTEMPTS` times, then the image is left as it is. `box(height, width, generator)` is
    the draw alone: (top, left, h, w) or None."""

    def __init__(self, probability: float = 0.25, area=ERASE_AREA, aspect=ERASE_ASPECT):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"random erasing probability must lie in [0, 1], got {probability!r}")
        if not 0.0 < area[0] <= area[1] < 1.0 or not 0.0 < aspect[0] <= aspect[1]:
            raise ValueError(f"random erasing needs 0 < area min <= max < 1 and 0 < aspect min <= max, got {area}, {aspect}")
        self.probability, self.area, self.aspect = float(probability), tuple(area), tuple(aspect)

    def box(self, height: int, width: int, generator: torch.Generator | None = None):
        log_lo, log_hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        for _ in range(ERASE_ATTEMPTS):
            draws = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            target = height * width * (self.area[0] + (self.area[1] - self.area[0]) * draws[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * draws[1])
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                return top, left, h, w
        return None

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.probability == 0.0 or float(torch.rand((), generator=generator)) >= self.probability:
            return pixels
        box = self.box(*pixels.shape[-2:], generator)
        if box is None:
            return pixels
        top, left, h, w = box
        pixels = pixels.clone()
        pixels[:, top:top + h, left:left + w] = torch.randn((pixels.shape[0], h, w), generator=generator, dtype=pixels.dtype)
        return pixels

    def __repr__(self) -> str:
        return f"RandomErasing(probability={self.probability:g}, area={self.area}, aspect={self.aspect})"


class AugmentTransform:
    """`transform` (any of the package's transforms: it has `mean`, `std` and takes a generator),
    then RandAugment on its pixels as uint8 (undoing and redoing the normalisation exactly), then
    random erasing. Same call signature as the transforms: `(image, generator=None) -> (3, H, W)`."""

    def __init__(self, transform, randaugment: RandAugment | None = None, random_erasing: RandomErasing | None = None):
        self.transform, self.randaugment, self.random_erasing = transform, randaugment, random_erasing
        mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
        if randaugment is not None and (mean is None or std is None):
            raise ValueError(f"RandAugment needs the transform's mean and std to recover the pixels; {transform!r} has none")
        if mean is not None and std is not None:
            self._std = torch.tensor([255.0 * s for s in std]).view(3, 1, 1)
            self._mean = torch.tensor([255.0 * m for m in mean]).view(3, 1, 1)
            # The transforms' own normalisation: x * scale - shift (`transforms._ToTensor`).
            self._scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)
            self._shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(3, 1, 1)

    @property
    def output_shape(self):
        return getattr(self.transform, "output_shape", (3, 0, 0))

    def __call__(self, image, generator: torch.Generator | None = None) -> torch.Tensor:
        pixels = self.transform(image, generator=generator)
        if self.randaugment is not None:
            values = torch.round(pixels * self._std + self._mean).clamp_(0, 255).to(torch.uint8)
            values = self.randaugment(values, generator)
            pixels = values.to(torch.float32).mul_(self._scale).sub_(self._shift)
        if self.random_erasing is not None:
            pixels = self.random_erasing(pixels, generator)
        return pixels

    def __repr__(self) -> str:
        return f"AugmentTransform({self.transform!r}, randaugment={self.randaugment!r}, random_erasing={self.random_erasing!r})"


def augment_transform(transform, randaugment=None, random_erasing: float = 0.0):
    """`transform` wrapped with RandAugment (`(layers, magnitude)` or None) and random erasing
    (a probability, 0: off); `transform` itself when neither is on."""
    ra = RandAugment(*randaugment) if randaugment else None
    erase = RandomErasing(random_erasing) if random_erasing else None
    return transform if ra is None and erase is None else AugmentTransform(transform, ra, erase)


# ---------------------------------------------------------------- recipe fields
@dataclass
class AugmentRecipe:
    """Augmentation fields of a recipe's `data` section (`DataRecipe` inherits them).

    `augment_level`: one of AugReg's levels (`none`, `light1`, `light2`, `medium1`, `medium2`,
    `strong1`, `strong2`; Steiner et al. 2021, big_vision's `RANDAUG_DEF` / `MIXUP_DEF`), which sets
    `randaugment` and `mixup_p`; null: set them yourself. `randaugment: [layers, magnitude]`
    (big_vision's RandAugment, `hf_vit_repro.data.randaugment`; null: off). `mixup_p`: big_vision's
    MixUp, lambda ~ Beta(p, p) per update (0: off). `cutmix_alpha`: DeiT's CutMix, lambda ~
    Beta(alpha, alpha) and a box of area 1 - lambda (DeiT: 1.0; with `mixup_p` too, each update
    picks one of them at random). `random_erasing`: DeiT's probability (0.25). `repeated_aug`:
    DeiT's repeated augmentation, each image k times per epoch with different augmentations (3).
    A level and an explicit `randaugment` / `mixup_p` that disagrees with it is an error."""

    augment_level: str | None = None
    randaugment: list[float] | None = None
    mixup_p: float | None = None
    cutmix_alpha: float = 0.0
    random_erasing: float = 0.0
    repeated_aug: int = 1


def resolved_augment(data: AugmentRecipe) -> dict[str, Any]:
    """`{"randaugment": (layers, magnitude) or None, "mixup_p": float}` after the level is expanded."""
    randaugment = tuple(data.randaugment) if data.randaugment else None
    mixup_p = data.mixup_p
    if data.augment_level in AUGREG_LEVELS:
        level_ra, level_p = AUGREG_LEVELS[data.augment_level]
        randaugment = level_ra if randaugment is None else randaugment
        mixup_p = level_p if mixup_p is None else mixup_p
    if randaugment is not None:
        randaugment = (int(randaugment[0]), float(randaugment[1]))
    return {"randaugment": randaugment, "mixup_p": float(mixup_p or 0.0)}


def batch_mixing(data: AugmentRecipe) -> dict[str, float] | None:
    """`mixing.mix_batch`'s keyword arguments for a recipe's `data` section, or None when it mixes nothing."""
    mixup_p = resolved_augment(data)["mixup_p"]
    return {"mixup_p": mixup_p, "cutmix_alpha": float(data.cutmix_alpha)} if mixup_p or data.cutmix_alpha else None


def train_augmentation(transform, data: AugmentRecipe):
    """A recipe's training transform with its RandAugment and random erasing (`augment_transform`)."""
    return augment_transform(transform, resolved_augment(data)["randaugment"], data.random_erasing)


def augment_problem(data: AugmentRecipe, train: Any = None) -> str | None:
    """What is wrong with a recipe's augmentation fields (and how to fix it), or None. `train`
    (the recipe's `train` section) is checked against them: MixUp / CutMix need labels and do not
    combine with BiT's `train.mixup_alpha`."""
    level = data.augment_level
    if level is not None and level not in AUGREG_LEVELS:
        return f"`data.augment_level` must be one of {', '.join(map(repr, AUGREG_LEVELS))} or null; got {level!r}."
    ra = data.randaugment
    if ra is not None and (len(ra) != 2 or int(ra[0]) != ra[0] or ra[0] < 0 or not 0 <= ra[1] <= 3 * MAX_LEVEL):
        return (f"`data.randaugment` must be [layers, magnitude] with an integer layers >= 0 and magnitude in "
                f"[0, {3 * MAX_LEVEL:g}] (AugReg: [2, 0..20]), or null; got {ra!r}.")
    if level is not None:
        level_ra, level_p = AUGREG_LEVELS[level]
        if ra is not None and tuple(ra) != tuple(level_ra or ()):
            given = "[" + ", ".join(f"{v:g}" for v in ra) + "]"
            return (f"`data.augment_level: {level}` sets `data.randaugment` to {list(level_ra) if level_ra else None}, "
                    f"but the recipe also sets it to {given}: keep one (set `data.augment_level=null` to choose your own).")
        if data.mixup_p is not None and data.mixup_p != level_p:
            return (f"`data.augment_level: {level}` sets `data.mixup_p` to {level_p}, but the recipe also sets it to "
                    f"{data.mixup_p}: keep one (set `data.augment_level=null` to choose your own).")
    for key in ("mixup_p", "cutmix_alpha"):
        if (value := getattr(data, key)) is not None and value < 0:
            return f"`data.{key}` must be >= 0 (0: off), got {value!r}."
    if not 0.0 <= data.random_erasing <= 1.0:
        return f"`data.random_erasing` is a probability in [0, 1] (DeiT: 0.25), got {data.random_erasing!r}."
    if data.repeated_aug < 1:
        return f"`data.repeated_aug` must be >= 1 (1: off; DeiT: 3), got {data.repeated_aug!r}."
    mixes = resolved_augment(data)["mixup_p"] > 0 or data.cutmix_alpha > 0
    if mixes and train is not None:
        if getattr(train, "objective", "classification") != "classification":
            fix = ("set `data.mixup_p: 0` and `data.cutmix_alpha: 0`" if level is None else
                   f"level {level} mixes with p {AUGREG_LEVELS[level][1]}: use `none` or `light1`, or `data.augment_level=null` "
                   "with `data.randaugment` and `data.cutmix_alpha: 0`")
            return f"MixUp / CutMix mix labels, which `train.objective: {train.objective}` has none of: {fix}."
        if getattr(train, "mixup_alpha", 0.0):
            return ("`train.mixup_alpha` (BiT's MixUp) and `data.mixup_p` / `data.cutmix_alpha` (AugReg / DeiT) both mix "
                    "batches: keep one.")
    return None
