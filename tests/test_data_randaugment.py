"""hf_vit_repro.data.randaugment: each op against PIL (ImageOps / ImageEnhance / Image.transform)
or a hand-computed result on a real photo, big_vision's magnitude -> argument formulas, and the
per-image seeding of RandAugment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from hf_vit_repro.data import randaugment as ra


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """sklearn's china.jpg, shrunk to 96 x 72 (a real image with a full histogram)."""
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0]).resize((96, 72), Image.Resampling.BILINEAR)


def tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def max_diff(ours: torch.Tensor, pil: Image.Image) -> int:
    return int((ours.to(torch.int64) - tensor(pil).to(torch.int64)).abs().max())


def pil_affine(image: Image.Image, matrix, fill=ra.FILL) -> Image.Image:
    """PIL's nearest affine transform with TF's convention: PIL maps output pixel *centres* and
    floors, TF maps integer pixel indices and rounds, so the offsets shift by half a pixel."""
    a0, a1, a2, b0, b1, b2 = matrix
    data = (a0, a1, a2 + 0.5 - 0.5 * (a0 + a1), b0, b1, b2 + 0.5 - 0.5 * (b0 + b1))
    return image.transform(image.size, Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=(fill,) * 3)


def agreement(ours: torch.Tensor, pil: Image.Image) -> float:
    return float((ours == tensor(pil)).all(0).float().mean())


def test_pixel_ops_equal_pil_imageops(photo):
    x = tensor(photo)
    assert torch.equal(ra.invert(x), tensor(ImageOps.invert(photo)))
    assert torch.equal(ra.equalize(x), tensor(ImageOps.equalize(photo)))
    assert max_diff(ra.autocontrast(x), ImageOps.autocontrast(photo)) <= 1
    for bits in range(1, 9):
        assert torch.equal(ra.posterize(x, bits), tensor(ImageOps.posterize(photo, bits))), bits
    # 0 bits: TF clamps the shift to 7 and keeps the top bit (PIL would return black)
    assert torch.equal(ra.posterize(x, 0), tensor(ImageOps.posterize(photo, 1)))
    for threshold in (0, 64, 128, 200, 256, 512):
        assert torch.equal(ra.solarize(x, threshold), tensor(ImageOps.solarize(photo, min(threshold, 256)))), threshold
    assert torch.equal(ra.solarize(x, 0), ra.invert(x))  # magnitude 0: Solarize inverts everything
    a = np.array(photo).astype(np.int64)
    by_hand = np.where(a < 128, np.clip(a + 77, 0, 255), a).astype(np.uint8)
    assert torch.equal(ra.solarize_add(x, 77), torch.from_numpy(by_hand).permute(2, 0, 1))


@pytest.mark.parametrize("factor", [0.1, 0.55, 1.0, 1.9])
def test_enhance_ops_match_pil_imageenhance(photo, factor):
    x = tensor(photo)
    # Brightness blends with black in both: only float vs double rounding may differ.
    assert max_diff(ra.brightness(x, factor), ImageEnhance.Brightness(photo).enhance(factor)) <= 1
    # Colour and sharpness: PIL's grey (ITU-R 601 in fixed point) and its smoothing round, TF's
    # truncate, so the degenerate image differs by <= 1 and the blend scales that by |1 - factor|.
    tol = 1 + math.ceil(abs(1 - factor))
    assert max_diff(ra.color(x, factor), ImageEnhance.Color(photo).enhance(factor)) <= tol
    assert max_diff(ra.sharpness(x, factor), ImageEnhance.Sharpness(photo).enhance(factor)) <= tol


def test_contrast_blends_with_big_vision_grey_of_area_over_256(photo):
    x = tensor(photo)
    grey_level = min(int(96 * 72 / 256), 255)  # 27: big_vision's "mean" is the histogram count / 256
    for factor in (0.1, 0.55, 1.9):
        reference = Image.blend(Image.new("RGB", photo.size, (grey_level,) * 3), photo, factor)
        assert max_diff(ra.contrast(x, factor), reference) <= 1
    # ... which is not PIL's Contrast (the mean grey level of this photo is far from 27)
    assert max_diff(ra.contrast(x, 0.1), ImageEnhance.Contrast(photo).enhance(0.1)) > 10
    big = torch.zeros(3, 224, 224, dtype=torch.uint8)
    assert int(ra.contrast(big, 0.0)[0, 0, 0]) == 196  # 224 * 224 / 256: the grey of AugReg's images


def test_geometric_ops_match_pil_affine_and_rotate(photo):
    x = tensor(photo)
    for level in (0.3, -0.45, 0.6):
        assert agreement(ra.shear_x(x, level), pil_affine(photo, (1, level, 0, 0, 1, 0))) > 0.995
        assert agreement(ra.shear_y(x, level), pil_affine(photo, (1, 0, 0, level, 1, 0))) > 0.995
    for degrees in (30.0, -45.0, 60.0):
        # PIL rotates about the centre with the same matrix as tfa.image.rotate; at +-45 degrees many
        # sample points fall on pixel edges, where the two round differently
        reference = photo.rotate(degrees, Image.Resampling.NEAREST, fillcolor=(ra.FILL,) * 3)
        assert agreement(ra.rotate(x, degrees), reference) > 0.98
    # Translation by whole pixels, by hand: the content moves left / up, grey comes in.
    moved = ra.translate_x(x, 10.0)
    assert torch.equal(moved[:, :, :86], x[:, :, 10:]) and bool((moved[:, :, 86:] == ra.FILL).all())
    moved = ra.translate_y(x, -7.0)
    assert torch.equal(moved[:, 7:], x[:, :65]) and bool((moved[:, :7] == ra.FILL).all())
    assert bool((ra.translate_x(x, 200.0) == ra.FILL).all())  # big_vision's 200 px at M = 20 can empty an image


def test_cutout_greys_a_clipped_square(photo):
    x = tensor(photo)
    out = ra.cutout(x, 8, (20, 30))
    changed = (out != x).any(0)
    assert bool((out[:, 12:28, 22:38] == ra.FILL).all()) and torch.equal(out[:, :12], x[:, :12])
    assert int(changed.sum()) <= 16 * 16
    corner = ra.cutout(x, 8, (0, 95))  # clipped at the top-right corner: 8 x 9 pixels
    assert bool((corner[:, :8, 87:] == ra.FILL).all()) and torch.equal(corner[:, 8:], x[:, 8:])
    assert torch.equal(ra.cutout(x, 0, (20, 30)), x)


# big_vision autoaugment.py's level_to_arg (randaug: cutout_const=40, translate_const=100), the
# formulas as written there, before `_randomly_negate_tensor`.
BIG_VISION = {
    "Rotate": lambda m: (m / 10.0) * 30.0,
    "Posterize": lambda m: int((m / 10.0) * 4),
    "Solarize": lambda m: int((m / 10.0) * 256),
    "SolarizeAdd": lambda m: int((m / 10.0) * 110),
    "Color": lambda m: (m / 10.0) * 1.8 + 0.1,
    "Contrast": lambda m: (m / 10.0) * 1.8 + 0.1,
    "Brightness": lambda m: (m / 10.0) * 1.8 + 0.1,
    "Sharpness": lambda m: (m / 10.0) * 1.8 + 0.1,
    "ShearX": lambda m: (m / 10.0) * 0.3,
    "ShearY": lambda m: (m / 10.0) * 0.3,
    "Cutout": lambda m: int((m / 10.0) * 40),
    "TranslateX": lambda m: (m / 10.0) * 100.0,
    "TranslateY": lambda m: (m / 10.0) * 100.0,
}


def test_magnitude_to_arguments_follow_big_vision():
    assert ra.MAX_LEVEL == 10.0 and len(ra.RANDAUG_OPS) == 16 == len(set(ra.RANDAUG_OPS))
    assert set(ra.RANDAUG_OPS) == set(BIG_VISION) | {"AutoContrast", "Equalize", "Invert"}
    for name in ra.RANDAUG_OPS:
        for m in (0, 1, 5, 9.5, 10, 15, 20, 30):
            expected = (BIG_VISION[name](m),) if name in BIG_VISION else ()
            assert ra.op_arguments(name, m) == pytest.approx(expected), (name, m)
    # AugReg's magnitudes, spelled out: M = 15 ("medium") and M = 20 ("strong")
    assert ra.op_arguments("Rotate", 15) == (45.0,) and ra.op_arguments("Posterize", 15) == (6,)
    assert ra.op_arguments("Posterize", 20) == (8,) and ra.op_arguments("Solarize", 20) == (512,)
    assert ra.op_arguments("TranslateX", 20) == (200.0,) and ra.op_arguments("Cutout", 20) == (80,)
    assert ra.op_arguments("Color", 0) == pytest.approx((0.1,)) and ra.op_arguments("Color", 20) == pytest.approx((3.7,))
    with pytest.raises(ValueError, match="unknown RandAugment op 'Identity'"):
        ra.op_arguments("Identity", 10)


def test_signed_ops_take_both_signs_and_the_rest_never_negate(photo):
    x = tensor(photo)
    lefts = [torch.equal(ra.apply_op(x, "TranslateX", 1, torch.Generator().manual_seed(s)), ra.translate_x(x, 10.0))
             for s in range(40)]
    assert 5 < sum(lefts) < 35  # about half each way
    rights = [torch.equal(ra.apply_op(x, "TranslateX", 1, torch.Generator().manual_seed(s)), ra.translate_x(x, -10.0))
              for s in range(40)]
    assert all(a != b for a, b in zip(lefts, rights))
    assert torch.equal(ra.apply_op(x, "Solarize", 5, torch.Generator().manual_seed(0)), ra.solarize(x, 128))


def test_randaugment_layers_are_uniform_ops_seeded_per_image(photo):
    x = tensor(photo)
    aug = ra.RandAugment(1, 15)
    seen = set()
    for seed in range(120):
        g = torch.Generator().manual_seed(seed)
        name = ra.RANDAUG_OPS[int(torch.randint(0, 16, (), generator=g))]
        seen.add(name)
        expected = ra.apply_op(x, name, 15, g)
        assert torch.equal(aug(x, torch.Generator().manual_seed(seed)), expected), (seed, name)
    assert seen == set(ra.RANDAUG_OPS)  # every op is drawn
    two = ra.RandAugment(2, 20)
    first = two(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, two(x, torch.Generator().manual_seed(5)))  # same seed, same image
    assert sum(not torch.equal(first, two(x, torch.Generator().manual_seed(s))) for s in range(6, 12)) >= 5
    # AugReg's light1 is randaug(2, 0): "actually not nothing!"
    light = ra.RandAugment(2, 0)
    assert sum(not torch.equal(light(x, torch.Generator().manual_seed(s)), x) for s in range(20)) >= 10
    assert torch.equal(ra.RandAugment(0, 10)(x), x)
    with pytest.raises(ValueError, match="uint8"):
        two(x.float())
    with pytest.raises(ValueError, match="magnitude"):
        ra.RandAugment(2, 31)
