"""hf_vit_repro.data.transforms: shapes, value ranges, flip rules, crop bounds and mode
conversions, each on a constructed image whose expected output is known."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_repro.data import (
    VIT_MEAN,
    VIT_STD,
    decode_image,
    eval_transform,
    finetune_transform,
    image_stats,
    pretrain_transform,
    task_transforms,
    to_rgb,
)
from hf_vit_repro.data.transforms import INCEPTION_RATIO, INCEPTION_SCALE, fewshot_transform, sample_inception_box

from .vtab_protocol import VTAB_PROTOCOL

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _photo() -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("flower.jpg"))  # 427 x 640 RGB


def _halves(width=40, height=30) -> Image.Image:
    """Left half black, right half white."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, width // 2 :] = 255
    return Image.fromarray(array)


# ------------------------------------------------------------------------------------------
# Shapes and values.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda s: pretrain_transform(s),
        lambda s: finetune_transform(s, VIT_MEAN, VIT_STD),
        lambda s: finetune_transform(s, VIT_MEAN, VIT_STD, flip=False, random_crop=False),
        lambda s: eval_transform(s, VIT_MEAN, VIT_STD),
        lambda s: eval_transform(s, VIT_MEAN, VIT_STD, crop=True),
    ],
)
def test_output_shape_dtype_and_range(make):
    photo = _photo()
    for size, expected in ((32, (3, 32, 32)), ((24, 40), (3, 24, 40))):
        out = make(size)(photo, generator=_gen(0))
        assert out.shape == expected and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0
        assert out.min() < -0.5 and out.max() > 0.5  # a photo spans most of the range


def test_normalisation_matches_the_image_processor():
    """At the model's resolution no resizing happens, so the tensor must equal what the
    checkpoint's ViTImageProcessor produces (0.5/0.5: x / 127.5 - 1; and ImageNet stats)."""
    from transformers import ViTImageProcessor

    image = _photo().resize((32, 32))
    for mean, std in ((VIT_MEAN, VIT_STD), (IMAGENET_MEAN, IMAGENET_STD)):
        processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(mean), image_std=list(std))
        expected = processor(image, return_tensors="pt")["pixel_values"][0]
        assert image_stats(processor) == (mean, std)
        ours = eval_transform(32, *image_stats(processor))(image)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # By hand: value 51 -> 51 / 127.5 - 1 = -0.6 with the ViT statistics.
    constant = Image.new("RGB", (5, 7), (51, 51, 51))
    torch.testing.assert_close(eval_transform(8)(constant), torch.full((3, 8, 8), -0.6))


def test_image_stats_reads_a_saved_processor(tmp_path):
    from transformers import ViTImageProcessor

    ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path)
    assert image_stats(tmp_path) == (VIT_MEAN, VIT_STD)
    with pytest.raises(ValueError, match="3 values"):
        eval_transform(8, mean=(0.5, 0.5), std=(0.5, 0.5, 0.5))


# ------------------------------------------------------------------------------------------
# Flip rules.
# ------------------------------------------------------------------------------------------


def _orientation(out: torch.Tensor) -> str:
    left, right = out[:, :, :2].mean(), out[:, :, -2:].mean()
    assert abs(left - right) > 1.5  # one side black (-1), the other white (+1)
    return "as is" if left < right else "mirrored"


def test_flip_happens_about_half_the_time_and_is_an_exact_mirror():
    image = _halves()
    flip = finetune_transform(16, flip=True, random_crop=False)
    keep = finetune_transform(16, flip=False, random_crop=False)
    unflipped = keep(image)
    seen = []
    for seed in range(40):
        out = flip(image, generator=_gen(seed))
        seen.append(_orientation(out))
        assert torch.equal(out, unflipped) or torch.equal(out, unflipped.flip(-1))
    assert 8 <= seen.count("mirrored") <= 32
    assert {_orientation(keep(image, generator=_gen(s))) for s in range(40)} == {"as is"}


def _hand(image: Image.Image, size: int) -> torch.Tensor:
    """PIL bilinear resize to a square, scaled to [-1, 1], channels first: written out here."""
    array = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1


@pytest.mark.parametrize("task", sorted(VTAB_PROTOCOL))
def test_vtab_task_training_transform_crops_and_flips_as_the_paper_says(task):
    """Against the table written from the paper / BiT (tests/vtab_protocol.py): with the crop, the
    output is a moving 32 x 32 window of the photo resized to 37 x 37 (BiT's 448 -> 384 ratio);
    without it, the photo resized straight to 32 x 32. With the flip, both orientations occur;
    without it, never the mirror."""
    crop, flip, _, _ = VTAB_PROTOCOL[task]
    photo = _photo().resize((64, 48))
    train, evaluate = task_transforms(task, 32)
    big, plain = _hand(photo, 37), _hand(photo, 32)
    windows = {(t, l): big[:, t : t + 32, l : l + 32] for t in range(6) for l in range(6)}
    offsets, mirrored = set(), set()
    for seed in range(24):
        out = train(photo, generator=_gen(seed))
        candidates = windows if crop else {"plain": plain}
        found = [(where, m) for where, ref in candidates.items() for m in (False, True)
                 if torch.allclose(out, ref.flip(-1) if m else ref, atol=1e-5)]
        assert len(found) == 1, (task, seed, found)
        offsets.add(found[0][0])
        mirrored.add(found[0][1])
    assert (len(offsets) > 3) == crop, (task, offsets)
    assert (mirrored == {False, True}) == flip and (True in mirrored) == flip, (task, mirrored)
    torch.testing.assert_close(evaluate(photo), plain, atol=1e-5, rtol=0)  # test time: resize only


def test_transfer_sets_crop_and_flip():
    train, evaluate = task_transforms("pets", 16)
    assert train.random_crop and train.flip and not evaluate.crop


def test_pretrain_transform_flips_too():
    image = _halves(64, 64)
    # Crops that miss one half are possible; count only those that see both colours.
    results = set()
    for seed in range(60):
        out = pretrain_transform(16)(image, generator=_gen(seed))
        if abs(out[:, :, :2].mean() - out[:, :, -2:].mean()) > 1.5:
            results.add(_orientation(out))
    assert results == {"as is", "mirrored"}


# ------------------------------------------------------------------------------------------
# Crops.
# ------------------------------------------------------------------------------------------


def test_inception_box_respects_scale_and_ratio_bounds():
    generator = _gen(0)
    areas, ratios = [], []
    for width, height in ((640, 427), (100, 100), (50, 300)):
        for _ in range(500):
            left, top, w, h = sample_inception_box(width, height, generator=generator)
            assert 0 <= left and 0 <= top and left + w <= width and top + h <= height
            if (w, h) == (width, height) and width != height:
                continue  # the whole-image fallback
            area = w * h / (width * height)
            # Rounding each side to whole pixels moves area and ratio a little.
            slack = 1 / min(w, h) * 2
            assert INCEPTION_SCALE[0] * (1 - slack) <= area <= INCEPTION_SCALE[1] + 1e-9
            assert INCEPTION_RATIO[0] * (1 - slack) <= w / h <= INCEPTION_RATIO[1] * (1 + slack)
            areas.append(area)
            ratios.append(w / h)
    assert min(areas) < 0.1 and max(areas) > 0.9  # the whole range is used
    assert min(ratios) < 0.8 and max(ratios) > 1.25


def test_inception_box_falls_back_to_the_whole_image():
    # A 1 x 200 strip has no crop with aspect ratio in [3/4, 4/3] and area >= 5%.
    assert sample_inception_box(1, 200, generator=_gen(0)) == (0, 0, 1, 200)


def test_pretrain_crop_is_resized_from_inside_the_image():
    """An image whose red channel is the column index: the crop's output covers a contiguous
    range of columns of width consistent with the sampled box."""
    width, height = 200, 100
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :, 0] = np.arange(width, dtype=np.uint8)[None, :]
    image = Image.fromarray(array)
    transform = pretrain_transform(32, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))  # identity scaling
    for seed in range(10):
        left, top, w, h = sample_inception_box(width, height, generator=_gen(seed))
        out = transform(image, generator=_gen(seed))
        red = out[0]
        columns = red[0] if red[0, 0] <= red[0, -1] else red[0].flip(0)  # undo a flip
        assert left - 1 <= columns.min() and columns.max() <= left + w  # inside the box (bilinear)
        assert columns[-1] - columns[0] >= w * 0.8  # spans the box


def test_finetune_random_crop_is_a_window_of_the_resized_image():
    photo = _photo()
    transform = finetune_transform(32, flip=False)  # resize to 37 x 37, crop 32 x 32
    assert transform.resize_size == (37, 37)
    resized = torch.from_numpy(np.asarray(photo.resize((37, 37), Image.Resampling.BILINEAR)).copy())
    resized = resized.permute(2, 0, 1).float() / 127.5 - 1
    offsets = set()
    for seed in range(20):
        out = transform(photo, generator=_gen(seed))
        matches = [(t, l) for t in range(6) for l in range(6) if torch.allclose(out, resized[:, t : t + 32, l : l + 32], atol=1e-5)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # the window moves


def test_eval_centre_crop_drops_the_borders():
    """40 x 20 image, 10-pixel red bands left and right, grey centre: resizing the short side to
    19 (7/6 of 16) makes it 38 wide; the central 16 columns (11..26) see only grey."""
    array = np.full((20, 40, 3), 128, dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    array[:, 30:] = (255, 0, 0)
    out = eval_transform(16, crop=True)(Image.fromarray(array))
    torch.testing.assert_close(out, torch.full((3, 16, 16), 128 / 127.5 - 1))
    squashed = eval_transform(16)(Image.fromarray(array))  # plain resize keeps the bands
    assert squashed[0, :, 0].mean() > 0.9


@pytest.mark.parametrize("size, resized", [(224, 256), (32, 37), (384, 439)])
def test_fewshot_transform_is_big_visions_resize_then_central_crop(size, resized):
    """big_vision's few-shot pre-processing (configs/common_fewshot.py: resize(256) to a square,
    central_crop(224), offsets (256 - 224) // 2) at `size`, computed by hand with PIL and numpy."""
    photo = _photo()  # 640 x 427: not square, so a shorter-side resize would give another image
    offset = (resized - size) // 2
    array = np.asarray(photo.resize((resized, resized), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = torch.from_numpy(array[offset : offset + size, offset : offset + size].copy()).permute(2, 0, 1) / 127.5 - 1
    transform = fewshot_transform(size)
    assert transform.resize_size == resized
    torch.testing.assert_close(transform(photo), expected, atol=1e-5, rtol=0)


def test_transforms_are_pure_and_picklable():
    import pickle

    photo = _photo()
    for transform in (pretrain_transform(24), finetune_transform(24), eval_transform(24, crop=True)):
        clone = pickle.loads(pickle.dumps(transform))
        assert torch.equal(transform(photo, generator=_gen(3)), clone(photo, generator=_gen(3)))
        assert photo.mode == "RGB" and photo.size == (640, 427)  # input untouched


# ------------------------------------------------------------------------------------------
# Mode conversions.
# ------------------------------------------------------------------------------------------


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(image))


def test_greyscale_and_bilevel():
    assert (_rgb(Image.new("L", (3, 2), 100)) == 100).all()
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert _rgb(bilevel).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert _rgb(palette).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    palette.info["transparency"] = 0  # entry 0 transparent -> white background
    assert _rgb(palette).tolist() == [[[255, 255, 255], [200, 100, 50]]]


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    rgba.putpixel((2, 0), (10, 20, 30, 128))
    out = _rgb(rgba).astype(int)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    blend = [c * 128 / 255 + 255 * (1 - 128 / 255) for c in (10, 20, 30)]
    assert np.abs(out[0, 2] - blend).max() <= 1
    la = Image.new("LA", (1, 1), (60, 0))
    assert _rgb(la).tolist() == [[[255, 255, 255]]]


def test_cmyk():
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (255, 0, 0, 0))  # cyan
    cmyk.putpixel((1, 0), (0, 0, 0, 255))  # black
    cmyk.putpixel((2, 0), (0, 0, 0, 0))  # white paper
    assert _rgb(cmyk).tolist() == [[[0, 255, 255], [0, 0, 0], [255, 255, 255]]]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    expected = [0, 1, 128, 255]  # round(v * 255 / 65535)
    image = Image.fromarray(values)  # mode I;16
    assert image.mode.startswith("I;16")
    assert _rgb(image)[0, :, 0].tolist() == expected
    assert np.asarray(image.convert("L"))[0].tolist() != expected  # what a plain convert does
    # 32-bit "I" (how Pillow may open a 16-bit PNG) and a real 16-bit PNG round trip.
    assert _rgb(Image.fromarray(values.astype(np.int32), mode="I"))[0, :, 1].tolist() == expected
    image.save(tmp_path / "sixteen.png")
    reopened = decode_image(str(tmp_path / "sixteen.png"))
    assert _rgb(reopened)[0, :, 2].tolist() == expected
    # Float images are read as [0, 1].
    assert _rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F"))[0, :, 0].tolist() == [0, 128, 255]


def test_every_transform_converts_modes():
    grey = Image.new("L", (10, 10), 51)
    for transform in (pretrain_transform(8), finetune_transform(8), eval_transform(8)):
        out = transform(grey, generator=_gen(0))
        torch.testing.assert_close(out, torch.full((3, 8, 8), -0.6))
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(buffer, format="JPEG")
    decoded = decode_image({"bytes": buffer.getvalue(), "path": None})
    assert decoded.mode == "CMYK"
    assert eval_transform(8)(decoded).min() > 0.95  # white
    assert math.isclose(float(eval_transform(8)(Image.new("RGB", (8, 8), (255, 0, 0)))[0].mean()), 1.0)
