"""RandAugment as big_vision runs it for AugReg (Steiner et al. 2021, "How to train your ViT?").

    ra = RandAugment(num_layers=2, magnitude=15)          # AugReg's `randaug(2,15)` ("medium1/2")
    image = ra(image_uint8, generator)                    # (3, H, W) uint8 tensor -> same shape

Source: google-research/big_vision `big_vision/pp/autoaugment.py` (`distort_image_with_randaugment`,
reached through `pp/archive/randaug.py`'s `randaug(num_layers, magnitude)` op), commit
0127fb6b337ee2a27bf4e54dea79cff176527356; itself a fork of tensorflow/tpu's EfficientNet
`autoaugment.py`. What it does, and what this module reproduces:

- Each of `num_layers` layers picks one of 16 operations uniformly (`RANDAUG_OPS`: AutoContrast,
  Equalize, Invert, Rotate, Posterize, Solarize, Color, Contrast, Brightness, Sharpness, ShearX,
  ShearY, TranslateX, TranslateY, Cutout, SolarizeAdd) and always applies it: the per-op
  probability in [0.2, 0.8] that big_vision draws is never used by its RandAugment.
- One fixed `magnitude` M for every op and image, on a scale where `_MAX_LEVEL` = 10 is the
  "full" strength and larger values go beyond it (AugReg uses M = 0, 10, 15, 20). The arguments
  are big_vision's `level_to_arg` formulas (`op_arguments`): rotate 30 M / 10 degrees, shear
  0.3 M / 10, translate 100 M / 10 pixels (absolute pixels, not a fraction of the image: 200 px
  at M = 20), cutout half-size 40 M / 10 pixels, enhance factors 1.8 M / 10 + 0.1, posterize
  int(4 M / 10) bits, solarize threshold int(256 M / 10), solarize-add int(110 M / 10). Rotate,
  shear and translate are negated with probability 1/2.
- Consequences worth knowing: at M = 0 (AugReg's "light1", "actually not nothing!") Solarize
  inverts the whole image, Posterize keeps 1 bit and the enhance ops blend 90 % towards grey /
  black / blur; with M >= 10 Solarize at threshold >= 256 and Posterize at 8 bits do nothing;
  Posterize gets *weaker* as M grows (torchvision's gets stronger).
- Pixels uncovered by Rotate / Shear / Translate and the Cutout square are grey (128, 128, 128);
  geometric ops use nearest-neighbour sampling, rotate about the image centre, shear about the
  top-left corner (tensorflow_addons' `transform` / `rotate` / `translate`).

Where this module differs from big_vision:

- It runs on a torch uint8 (3, H, W) tensor with the package's per-image `torch.Generator`
  (deterministic per image for any number of workers or processes), not on TF's stateful RNG;
  the random draws are the same in distribution, not the same numbers.
- Arithmetic follows TF's float32 formulas (truncating casts, `tf.image.rgb_to_grayscale`'s
  weights 0.2989 / 0.5870 / 0.1140 and its x 255.5 conversion back, the unrounded /13 smoothing
  kernel of Sharpness, round-half-away-from-zero nearest sampling); pixels where float32
  rounding in torch and TF differ by one unit in the last place may differ by 1.
- Contrast keeps big_vision's quirk: its "mean" is the histogram's total count / 256, i.e.
  H * W / 256 clipped to 255 (196 for a 224 x 224 image), not the image's mean grey level that
  PIL's `ImageEnhance.Contrast` uses. Reproducing AugReg means reproducing that.
- Posterize with 0 bits shifts right and left by 8, which TF documents as implementation-defined;
  TF's CPU kernels clamp the shift to 7 (keep the top bit), which is what this module does.

Compared with `torchvision.transforms.RandAugment`: torchvision has 14 ops (Identity instead of
Cutout and SolarizeAdd; no Invert), a magnitude in bins out of 31 mapped to fractions of the
image for translate (0.45 W), rotate up to 30 degrees, enhance factors in [0.1, 1.9] centred on 1
(0.9 either way, signed), posterize 8 -> 4 bits and solarize 255 -> 0 as the magnitude grows, and
fill 0 by default; so the same "M" is a different augmentation. timm's `rand-m*` policies come
from the same tensorflow/tpu code (the same level formulas for most ops) but have 15 ops (no
Cutout: timm does random erasing apart), translate by a fraction of the image, and apply each
chosen op with probability 0.5 by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: big_vision's `_MAX_LEVEL`: the magnitude of "full strength".
MAX_LEVEL: float = 10.0
#: Grey used for pixels uncovered by a geometric op or the Cutout square (`replace_value`).
FILL: int = 128
#: `HParams(cutout_const=40, translate_const=100)` of `distort_image_with_randaugment`.
CUTOUT_CONST: int = 40
TRANSLATE_CONST: int = 100
#: The op list of `distort_image_with_randaugment`, in its order.
RANDAUG_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)
#: Ops whose argument is negated with probability 1/2 (`_randomly_negate_tensor`).
SIGNED_OPS: frozenset[str] = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
# tf.image.rgb_to_grayscale's weights.
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def op_arguments(name: str, magnitude: float) -> tuple[float, ...]:
    """big_vision's `level_to_arg(hparams)[name](magnitude)` before the random sign: the op's
    arguments at `magnitude` (e.g. `("Rotate", 15)` -> `(45.0,)` degrees; `("Posterize", 15)` -> `(6,)`
    bits). Ops without arguments give `()`."""
    level = float(magnitude)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (level / MAX_LEVEL * 30.0,)
    if name == "Posterize":
        return (int(level / MAX_LEVEL * 4),)
    if name == "Solarize":
        return (int(level / MAX_LEVEL * 256),)
    if name == "SolarizeAdd":
        return (int(level / MAX_LEVEL * 110),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (level / MAX_LEVEL * 1.8 + 0.1,)
    if name in ("ShearX", "ShearY"):
        return (level / MAX_LEVEL * 0.3,)
    if name == "Cutout":
        return (int(level / MAX_LEVEL * CUTOUT_CONST),)
    if name in ("TranslateX", "TranslateY"):
        return (level / MAX_LEVEL * float(TRANSLATE_CONST),)
    raise ValueError(f"unknown RandAugment op {name!r}; the ops are {', '.join(RANDAUG_OPS)}")


# ---------------------------------------------------------------- the ops, on uint8 (3, H, W)
def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """TF's `tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)`: clip, then truncate."""
    return values.clamp(0.0, 255.0).to(torch.uint8)


def blend(image1: torch.Tensor, image2: torch.Tensor, factor: float) -> torch.Tensor:
    """`image1 + factor * (image2 - image1)` in float32, clipped and truncated (0: image1, 1: image2,
    above 1 extrapolates away from image1): big_vision's `blend`, PIL's `Image.blend`."""
    if factor == 0.0:
        return image1.clone()
    if factor == 1.0:
        return image2.clone()
    first = image1.to(torch.float32)
    return _to_uint8(first + float(factor) * (image2.to(torch.float32) - first))


def grey(image: torch.Tensor) -> torch.Tensor:
    """`tf.image.rgb_to_grayscale` of a uint8 image: (1, H, W) uint8."""
    r, g, b = (image[c].to(torch.float32) * (1.0 / 255.0) for c in range(3))
    lum = r * _GREY_WEIGHTS[0] + g * _GREY_WEIGHTS[1] + b * _GREY_WEIGHTS[2]
    return _to_uint8(lum * 255.5).unsqueeze(0)


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Each channel stretched linearly so its minimum becomes 0 and its maximum 255."""
    out = image.clone()
    for c in range(3):
        lo, hi = float(image[c].min()), float(image[c].max())
        if hi > lo:
            scale = 255.0 / (hi - lo)
            out[c] = _to_uint8(image[c].to(torch.float32) * scale + (-lo * scale))
    return out


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel, PIL's `ImageOps.equalize` rule."""
    out = image.clone()
    for c in range(3):
        channel = image[c].to(torch.int64)
        histo = torch.bincount(channel.flatten(), minlength=256)
        nonzero = histo[histo != 0]
        step = int((nonzero.sum() - nonzero[-1]) // 255)
        if step == 0:
            continue
        lut = (torch.cumsum(histo, 0) + step // 2) // step
        lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]]).clamp(0, 255)
        out[c] = lut[channel].to(torch.uint8)
    return out


def invert(image: torch.Tensor) -> torch.Tensor:
    return 255 - image


def posterize(image: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top `bits` bits (the shift clamped to 7, as TF's kernels do for bits = 0)."""
    shift = min(max(8 - int(bits), 0), 7)
    return (image >> shift) << shift


def solarize(image: torch.Tensor, threshold: int) -> torch.Tensor:
    """Pixels at or above `threshold` become 255 - pixel (threshold 0: the whole image inverted)."""
    return torch.where(image.to(torch.int64) < int(threshold), image, 255 - image)  # int64: 256 does not wrap to 0


def solarize_add(image: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    """Pixels below `threshold` get `addition` added (clipped to [0, 255])."""
    added = (image.to(torch.int64) + int(addition)).clamp(0, 255).to(torch.uint8)
    return torch.where(image.to(torch.int64) < int(threshold), added, image)


def color(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Saturation: blend from the grey image (factor 0) through the image (1) and beyond."""
    return blend(grey(image).expand(3, -1, -1), image, factor)


def contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend from a constant grey through the image; the grey is big_vision's H * W / 256 (see the
    module docstring), not the mean intensity."""
    height, width = image.shape[-2:]
    level = _to_uint8(torch.tensor(height * width / 256.0, dtype=torch.float32))
    return blend(torch.full_like(image, int(level)), image, factor)


def brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(torch.zeros_like(image), image, factor)


def sharpness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend from a smoothed image (PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 on the inner
    pixels, the border kept) through the image; factor > 1 sharpens."""
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = torch.nn.functional.conv2d(image.to(torch.float32).unsqueeze(1), kernel.view(1, 1, 3, 3)).squeeze(1)
    degenerate = image.clone()
    degenerate[:, 1:-1, 1:-1] = _to_uint8(smooth)
    return blend(degenerate, image, factor)


def _round_half_away(values: torch.Tensor) -> torch.Tensor:
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def project(image: torch.Tensor, matrix: Sequence[float], fill: int = FILL) -> torch.Tensor:
    """Affine resampling as tensorflow_addons' `transform` with nearest sampling: output pixel (x, y)
    (column, row) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2) for `matrix` = (a0, a1, a2, b0,
    b1, b2), rounded half away from zero; reads outside the image give `fill`."""
    a0, a1, a2, b0, b1, b2 = (float(m) for m in matrix)
    height, width = image.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1).expand(height, width)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1).expand(height, width)
    x_in = _round_half_away(a0 * xs + a1 * ys + a2).to(torch.int64)
    y_in = _round_half_away(b0 * xs + b1 * ys + b2).to(torch.int64)
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    read = image[:, y_in.clamp(0, height - 1), x_in.clamp(0, width - 1)]
    return torch.where(inside, read, torch.full_like(read, fill))


def rotate(image: torch.Tensor, degrees: float, fill: int = FILL) -> torch.Tensor:
    """Rotation about the image centre ((W - 1) / 2, (H - 1) / 2) (`tfa.image.rotate`'s matrix)."""
    height, width = image.shape[-2:]
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return project(image, (cos, -sin, x_offset, sin, cos, y_offset), fill)


def shear_x(image: torch.Tensor, level: float, fill: int = FILL) -> torch.Tensor:
    return project(image, (1.0, level, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image: torch.Tensor, level: float, fill: int = FILL) -> torch.Tensor:
    return project(image, (1.0, 0.0, 0.0, level, 1.0, 0.0), fill)


def translate_x(image: torch.Tensor, pixels: float, fill: int = FILL) -> torch.Tensor:
    """Content moves `pixels` to the left (big_vision's sign convention; the sign is random anyway)."""
    return project(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image: torch.Tensor, pixels: float, fill: int = FILL) -> torch.Tensor:
    return project(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


def cutout(image: torch.Tensor, pad_size: int, center: tuple[int, int], fill: int = FILL) -> torch.Tensor:
    """The square of half-size `pad_size` about `center` = (row, column), clipped to the image,
    set to `fill` (pad_size 0: unchanged)."""
    height, width = image.shape[-2:]
    row, col = center
    out = image.clone()
    out[:, max(0, row - pad_size):min(height, row + pad_size), max(0, col - pad_size):min(width, col + pad_size)] = fill
    return out


_OPS = {
    "AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate,
    "Posterize": posterize, "Solarize": solarize, "Color": color, "Contrast": contrast,
    "Brightness": brightness, "Sharpness": sharpness, "ShearX": shear_x, "ShearY": shear_y,
    "TranslateX": translate_x, "TranslateY": translate_y, "SolarizeAdd": solarize_add,
}


def apply_op(image: torch.Tensor, name: str, magnitude: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One RandAugment op at `magnitude`, with its random sign (and Cutout's position) drawn from
    `generator`. image: (3, H, W) uint8."""
    args = op_arguments(name, magnitude)
    if name == "Cutout":
        height, width = image.shape[-2:]
        center = (int(torch.randint(0, height, (), generator=generator)), int(torch.randint(0, width, (), generator=generator)))
        return cutout(image, args[0], center)
    if name in SIGNED_OPS and bool(torch.rand((), generator=generator) < 0.5):
        args = (-args[0],)
    return _OPS[name](image, *args)


class RandAugment:
    """`num_layers` ops drawn uniformly from `RANDAUG_OPS`, each applied at `magnitude` (big_vision's
    `randaug(num_layers, magnitude)`). `__call__(image, generator=None)`: (3, H, W) uint8 tensor ->
    the same; all draws come from `generator` (torch's global RNG when None). Picklable."""

    def __init__(self, num_layers: int = 2, magnitude: float = 10.0):
        if int(num_layers) != num_layers or num_layers < 0:
            raise ValueError(f"RandAugment num_layers must be an integer >= 0, got {num_layers!r}")
        if not 0 <= magnitude <= 3 * MAX_LEVEL:
            raise ValueError(f"RandAugment magnitude must lie in [0, {3 * MAX_LEVEL:g}] (AugReg uses 0-20), got {magnitude!r}")
        self.num_layers, self.magnitude = int(num_layers), float(magnitude)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"RandAugment takes a (3, H, W) uint8 tensor, got {image.dtype} {tuple(image.shape)}")
        for _ in range(self.num_layers):
            name = RANDAUG_OPS[int(torch.randint(0, len(RANDAUG_OPS), (), generator=generator))]
            image = apply_op(image, name, self.magnitude, generator)
        return image

    def __repr__(self) -> str:
        return f"RandAugment(num_layers={self.num_layers}, magnitude={self.magnitude:g})"
