"""Image transforms of the paper, as pure callables: PIL image -> float tensor (3, S, S).

Each transform is a small picklable object (so DataLoader workers can use it under any start
method) with `__call__(image, generator=None)`. The random ones draw from `generator` when one is
given and from torch's global RNG otherwise; the same image and the same generator state give
the same tensor, nothing else is read or written.

Sources (see shared/PAPER.md, "Training"):

- Pretraining (paper, Sec. 4.1 / App. B.1; google-research/vision_transformer
  `input_pipeline.py`): Inception-style crop, `tf.image.sample_distorted_bounding_box` with
  area in [5%, 100%] and aspect ratio in [3/4, 4/3], resized to the model's resolution, then a
  random horizontal flip.
- Fine-tuning (BiT, Kolesnikov et al. 2020, Sec. 3.3, whose VTAB pre-processing the paper
  follows, Appendix B.1.1): resize to a square a little larger than the resolution, take a random
  crop of the resolution (a plain window: no scale or aspect jitter), flip at random. This is
  google-research/big_transfer `input_pipeline_tf2_or_jax.py` (`tf.image.resize` to
  `resize_size`, `tf.image.random_crop` to `crop_size`, flip) with BiT's sizes 448 -> 384 for
  images above 96 x 96 (the paper's resolution; `bit_hyperrule.py` picks the pair), and big_vision
  `configs/transfer.py`'s `resize_crop` (`resize(448)|random_crop(384)|flip_lr`). Per task (the
  registry's `TaskSpec.crop` / `TaskSpec.flip`, `task_transforms`): no flip where a mirror changes
  the label, no crop where a crop does (VTAB's dSprites, SmallNORB azimuth, CLEVR, DMLab,
  KITTI); without the crop the image is resized straight to the resolution.
- Fine-tuning as vit_jax runs it (`crop="inception"`, recipe `data.augmentation: finetune_inception`):
  google-research/vision_transformer `vit_jax/input_pipeline.py` (`get_data`, mode "train"), the
  pipeline of its fine-tuning code (`vit_jax/train.py`), does not resize-and-crop: it takes an
  Inception crop, `tf.image.sample_distorted_bounding_box(area_range=(0.05, 1.0),
  min_object_covered=0)` with TF's default aspect-ratio range (0.75, 1.33), resizes it to
  `config.pp.crop` (384; `pp.resize` is not read there) and flips at random. The paper's text says
  BiT's random crop, so that stays the default; this option follows the released code.
- Evaluation: resize straight to the resolution (the original code: "usage of crop_size here is
  intentional"; BiT's test-time pre-processing too), or a central crop: `crop="resize_small"`
  (or `True`) resizes the shorter side first (big_vision's `resize_small|central_crop`),
  `crop="resize"` resizes to a square first (big_vision's `resize|central_crop`, its few-shot
  pre-processing: `resize(256)|central_crop(224)`, `configs/common_fewshot.py`; `fewshot_transform`).
- Normalisation: `(x / 255 - mean) / std` per channel with the checkpoint's image processor's
  mean/std; the ViT checkpoints use 0.5/0.5, so inputs lie in [-1, 1] (the original code's
  `(im - 127.5) / 127.5`).

Surprises handled here (`to_rgb`): greyscale, bilevel, palette (with or without transparency),
RGBA/LA (composited on white), CMYK and YCbCr images become RGB; 16-bit images ("I;16*", and
"I", which Pillow uses for 16-bit PNGs) are scaled by 255/65535 instead of being clipped at 255
as `Image.convert` does; float images ("F") are read as values in [0, 1].

Resizing uses Pillow's bilinear filter, which (unlike `tf.image.resize`) antialiases when it
shrinks an image, as torchvision's PIL path does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

# The mean/std of the ViT checkpoints' image processors: inputs in [-1, 1].
VIT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
VIT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# Inception crop bounds of the original code (`sample_distorted_bounding_box`).
INCEPTION_SCALE: tuple[float, float] = (0.05, 1.0)
INCEPTION_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
# Square resize before the random crop when fine-tuning, and the shorter side before a central
# crop at evaluation: big_vision transfers at 384 from 448 (448 / 384 = 7 / 6).
RESIZE_RATIO: float = 448 / 384
# Transparent pixels are composited onto this colour.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return `image` as an 8-bit RGB image (the input itself if it already is one).

    - "1", "L", "P" without transparency, "CMYK", "YCbCr", "RGBX", ...: `Image.convert("RGB")`.
    - "RGBA", "LA", "PA", "RGBa", "La" and "P" with a transparency entry: alpha-composited onto
      white (`ALPHA_BACKGROUND`), so transparent pixels do not show whatever colour happens to be
      stored under them.
    - "I;16", "I;16B", "I;16L", "I;16N" and "I" (Pillow's mode for 16-bit greyscale PNGs): value
      v in [0, 65535] becomes round(v * 255 / 65535) (65535 -> 255, 32768 -> 128), not
      min(v, 255) as `convert("L")` does.
    - "F": values are read as intensities in [0, 1] and scaled to [0, 255].
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        grey = ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; checked positive."""
    if isinstance(size, int):
        height = width = size
    else:
        height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return height, width


def _stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got mean={mean} std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std}")
    return mean, std


def image_stats(processor: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of an image processor (e.g. `ViTImageProcessor.from_pretrained(checkpoint)`),
    or of a checkpoint folder / Hub id holding `preprocessor_config.json`.

    The ViT checkpoints say 0.5/0.5 (inputs in [-1, 1]); ImageNet-statistics checkpoints
    (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) are read the same way. A single number is
    broadcast to the three channels.
    """
    if isinstance(processor, (str, bytes)) or hasattr(processor, "__fspath__"):
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(processor))
    mean = getattr(processor, "image_mean", None)
    std = getattr(processor, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"{type(processor).__name__} has no image_mean/image_std; pass mean and std explicitly")
    mean = [float(mean)] * 3 if isinstance(mean, (int, float)) else [float(m) for m in mean]
    std = [float(std)] * 3 if isinstance(std, (int, float)) else [float(s) for s in std]
    return _stats(mean, std)  # type: ignore[return-value]


def describe_image_processor(processor: Any, source: str | None = None) -> dict[str, Any]:
    """What a metrics file or an export report records about an image processor:
    `{"class": "ViTImageProcessor", "backend": "torchvision", "source": ...}`. `backend` is
    transformers' own name (5.x: "torchvision" for the fast class, "pil" for the `...Pil` slow
    one; None for a processor without one); `source` says where it came from (the folder's
    `preprocessor_config.json`, or the default used when none was saved)."""
    return {"class": type(processor).__name__, "backend": getattr(processor, "backend", None), "source": source}


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(high_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=generator))


def sample_inception_box(
    width: int,
    height: int,
    scale: tuple[float, float] = INCEPTION_SCALE,
    ratio: tuple[float, float] = INCEPTION_RATIO,
    generator: torch.Generator | None = None,
    attempts: int = 100,
) -> tuple[int, int, int, int]:
    """A random crop box (left, top, crop_width, crop_height) of an image `width` x `height`.

    Area fraction uniform in `scale`, aspect ratio (w / h) log-uniform in `ratio`, position
    uniform; up to `attempts` tries (as `sample_distorted_bounding_box`'s `max_attempts=100`),
    then the whole image, as the original code's `use_image_if_no_bounding_boxes=True`. Every box
    returned lies inside the image and (except that fallback) has area fraction within `scale`
    up to rounding.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(width - w, generator), _randint(height - h, generator), w, h
    return 0, 0, width, height


class _ToTensor:
    """Shared tail of every transform: RGB PIL image -> normalised float tensor (3, H, W)."""

    def __init__(self, image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float]):
        self.image_size = _pair(image_size)
        self.mean, self.std = _stats(mean, std)
        # (x / 255 - mean) / std == x * scale - shift, one multiply-add per value.
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(3, 1, 1)
        self._shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(3, 1, 1)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (3, *self.image_size)

    def _to_tensor(self, image: Image.Image, flip: bool = False) -> torch.Tensor:
        array = np.asarray(image, dtype=np.uint8)
        if flip:
            array = array[:, ::-1]
        pixels = torch.from_numpy(np.ascontiguousarray(array).transpose(2, 0, 1).copy())
        return pixels.to(torch.float32).mul_(self._scale).sub_(self._shift)

    def _resize(self, image: Image.Image, box: tuple[float, float, float, float] | None = None) -> Image.Image:
        height, width = self.image_size
        if box is None and image.size == (width, height):
            return image
        return image.resize((width, height), Image.Resampling.BILINEAR, box=box)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._describe().items())
        return f"{type(self).__name__}({fields})"

    def _describe(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std}


class InceptionCropTransform(_ToTensor):
    """Inception crop + random horizontal flip (pretraining; `pretrain_transform`)."""

    def __init__(self, image_size, mean=VIT_MEAN, std=VIT_STD, scale=INCEPTION_SCALE, ratio=INCEPTION_RATIO, flip=True):
        super().__init__(image_size, mean, std)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), bool(flip)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = to_rgb(image)
        left, top, w, h = sample_inception_box(*image.size, self.scale, self.ratio, generator)
        image = self._resize(image, box=(left, top, left + w, top + h))
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return self._to_tensor(image, flip)

    def _describe(self):
        return {**super()._describe(), "scale": self.scale, "ratio": self.ratio, "flip": self.flip}


class ResizeCropTransform(_ToTensor):
    """Resize to a square `resize_size`, random crop to the resolution, random flip (fine-tuning;
    `finetune_transform`). With `random_crop=False` the image is resized straight to the
    resolution (the VTAB protocol); with `flip=False` it is never flipped."""

    def __init__(self, image_size, mean=VIT_MEAN, std=VIT_STD, flip=True, random_crop=True, resize_size=None):
        super().__init__(image_size, mean, std)
        height, width = self.image_size
        if resize_size is None:
            resize_size = (round(height * RESIZE_RATIO), round(width * RESIZE_RATIO))
        self.resize_size = _pair(resize_size)
        if random_crop and (self.resize_size[0] < height or self.resize_size[1] < width):
            raise ValueError(f"resize_size {self.resize_size} is smaller than the crop {self.image_size}")
        self.flip, self.random_crop = bool(flip), bool(random_crop)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = to_rgb(image)
        if self.random_crop:
            big_h, big_w = self.resize_size
            height, width = self.image_size
            top, left = _randint(big_h - height, generator), _randint(big_w - width, generator)
            image = image.resize((big_w, big_h), Image.Resampling.BILINEAR).crop((left, top, left + width, top + height))
        else:
            image = self._resize(image)
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return self._to_tensor(image, flip)

    def _describe(self):
        return {**super()._describe(), "flip": self.flip, "random_crop": self.random_crop, "resize_size": self.resize_size}


EVAL_CROPS = ("resize_small", "resize")
#: How fine-tuning crops (`finetune_transform(crop=...)`): "random", the paper's text (BiT's resize then
#: random crop), or "inception", vit_jax's fine-tuning pipeline (module docstring).
FINETUNE_CROPS = ("random", "inception")
#: The recipe's fine-tuning `data.augmentation` values -> their crop.
FINETUNE_AUGMENTATIONS = {"finetune": "random", "finetune_inception": "inception"}


class EvalTransform(_ToTensor):
    """Deterministic evaluation transform (`eval_transform`, `fewshot_transform`). `crop`: False
    (resize straight to the resolution), "resize_small" (or True: shorter side to `resize_size`,
    then the central crop) or "resize" (a `resize_size` square, then the central crop)."""

    def __init__(self, image_size, mean=VIT_MEAN, std=VIT_STD, crop=False, resize_size=None):
        super().__init__(image_size, mean, std)
        if crop is True:
            crop = "resize_small"
        if crop not in (False, None, *EVAL_CROPS):
            raise ValueError(f"crop must be False, True or one of {EVAL_CROPS}, got {crop!r}")
        self.crop = crop or False
        self.resize_size = resize_size if resize_size is None else int(resize_size)
        if self.crop and self.resize_size is not None and self.resize_size < max(self.image_size):
            raise ValueError(f"resize_size {self.resize_size} is smaller than the crop {self.image_size}")

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = to_rgb(image)
        if not self.crop:
            return self._to_tensor(self._resize(image))
        height, width = self.image_size
        short = self.resize_size or round(max(height, width) * RESIZE_RATIO)
        w, h = image.size
        if self.crop == "resize":
            new_w = new_h = short
        else:
            factor = short / min(w, h)
            new_w, new_h = max(width, round(w * factor)), max(height, round(h * factor))
        left, top = (new_w - width) // 2, (new_h - height) // 2  # big_vision's central_crop offsets
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR).crop((left, top, left + width, top + height))
        return self._to_tensor(image)

    def _describe(self):
        return {**super()._describe(), "crop": self.crop, "resize_size": self.resize_size}


def pretrain_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
    *,
    scale: tuple[float, float] = INCEPTION_SCALE,
    ratio: tuple[float, float] = INCEPTION_RATIO,
) -> InceptionCropTransform:
    """The paper's pretraining preprocessing: Inception crop (area 5-100%, aspect 3/4-4/3)
    resized to `image_size`, random horizontal flip, normalisation. Output (3, H, W) float32."""
    return InceptionCropTransform(image_size, mean, std, scale=scale, ratio=ratio)


def finetune_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
    flip: bool = True,
    *,
    random_crop: bool = True,
    resize_size: int | Sequence[int] | None = None,
    crop: str = "random",
) -> ResizeCropTransform | InceptionCropTransform:
    """The paper's transfer preprocessing (BiT's): resize to a `resize_size` square (default
    7/6 of the resolution, BiT's and big_vision's 448 -> 384), random crop to `image_size`,
    random flip when `flip`. `random_crop=False` resizes straight to the resolution (VTAB tasks
    whose label a crop changes); `task_transforms` picks both switches for a registry task.
    `crop="inception"` takes vit_jax's fine-tuning crop instead of the random window: an Inception
    crop (area 5-100%, aspect 3/4-4/3) resized to `image_size` (`resize_size` does not apply).
    Output (3, H, W) float32."""
    if crop not in FINETUNE_CROPS:
        raise ValueError(f"crop must be one of {FINETUNE_CROPS}, got {crop!r}")
    if crop == "inception" and random_crop:
        return InceptionCropTransform(image_size, mean, std, flip=flip)
    return ResizeCropTransform(image_size, mean, std, flip=flip, random_crop=random_crop, resize_size=resize_size)


def eval_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
    crop: bool = False,
    *,
    resize_size: int | None = None,
) -> EvalTransform:
    """Evaluation preprocessing: resize to `image_size` (the original code), or with `crop=True`
    (or "resize_small") resize the shorter side to `resize_size` (default 7/6 of the resolution)
    and take the central crop, or with `crop="resize"` resize to a `resize_size` square first
    (big_vision's two variants). Output (3, H, W) float32."""
    return EvalTransform(image_size, mean, std, crop=crop, resize_size=resize_size)


#: big_vision's few-shot pre-processing resizes to 256 for a 224 crop (`configs/common_fewshot.py`).
FEWSHOT_RESIZE_RATIO: float = 256 / 224


def fewshot_resize_size(image_size: int) -> int:
    """The square big_vision's few-shot evaluator resizes to before its central crop:
    round(image_size * 256 / 224) (224 -> 256, 384 -> 439, 32 -> 37)."""
    return int(round(int(image_size) * FEWSHOT_RESIZE_RATIO))


def fewshot_transform(
    image_size: int,
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
) -> EvalTransform:
    """big_vision's few-shot pre-processing (`configs/common_fewshot.py`: `resize(256)|
    central_crop(224)`, at other resolutions the same ratio): resize the image to a
    `fewshot_resize_size(image_size)` square, take the central `image_size` crop (offset
    (resized - size) // 2), normalise. Output (3, S, S) float32."""
    return EvalTransform(image_size, mean, std, crop="resize", resize_size=fewshot_resize_size(image_size))


def task_transforms(
    task,
    image_size: int | Sequence[int],
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
    *,
    crop: str = "random",
    resize_size: int | Sequence[int] | None = None,
) -> tuple[ResizeCropTransform | InceptionCropTransform, EvalTransform]:
    """(train, eval) transforms for fine-tuning on a registry task (name or `TaskSpec`).

    Training: the paper's transfer preprocessing (resize to a 7/6 larger square, or `resize_size`,
    random crop, random flip; `crop="inception"`: vit_jax's Inception crop instead) with the task's
    own switches: no crop where `spec.crop` is False (the image is resized straight to the
    resolution) and no flip where `spec.flip` is False, BiT's per-task rule for VTAB (registry
    docstring). Evaluation: resize to the resolution.
    """
    from .registry import get_task

    spec = get_task(task) if isinstance(task, str) else task
    train = finetune_transform(image_size, mean, std, flip=spec.flip, random_crop=spec.crop, resize_size=resize_size,
                               crop=crop)
    return train, eval_transform(image_size, mean, std)
