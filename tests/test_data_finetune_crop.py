"""Fine-tuning crops (`data.transforms.finetune_transform(crop=...)`, recipe `data.augmentation`):
the paper text's random crop (default) and vit_jax's Inception crop (`finetune_inception`), with
`data.resize_size` for the random crop's square.

The Inception crop's box is read back from the output pixels: the test image encodes each pixel's
column in red and its row in green, so the cropped window's extent is the range of those values.
"""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_vit_repro.data.collate import hash_indices
from hf_vit_repro.data.transforms import (
    INCEPTION_RATIO,
    INCEPTION_SCALE,
    InceptionCropTransform,
    ResizeCropTransform,
    finetune_transform,
    sample_inception_box,
    task_transforms,
)
from hf_vit_repro.training import Recipe, RecipeError, build_data

WIDTH, HEIGHT, OUT = 256, 192, 64


def coordinate_image() -> Image.Image:
    """Red = column * 255 / (W - 1), green = row * 255 / (H - 1), blue 0."""
    x = np.round(np.arange(WIDTH) * 255 / (WIDTH - 1))
    y = np.round(np.arange(HEIGHT) * 255 / (HEIGHT - 1))
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[..., 0] = x[None, :]
    pixels[..., 1] = y[:, None]
    return Image.fromarray(pixels)


def window_of(pixels: torch.Tensor) -> tuple[float, float]:
    """(width, height) in source pixels of the window a transform output (3, S, S; mean = std = 0.5) shows."""
    values = (pixels * 0.5 + 0.5) * 255
    width = (values[0].max() - values[0].min()).item() * (WIDTH - 1) / 255 + 1
    height = (values[1].max() - values[1].min()).item() * (HEIGHT - 1) / 255 + 1
    return width, height


def image_generators(count: int, seed: int = 0):
    """Per-image generators as the data loader seeds them (`collate`: one seed per row and epoch)."""
    for value in hash_indices(np.arange(count), seed).tolist():
        yield torch.Generator().manual_seed(int(value) & ((1 << 63) - 1))


def test_inception_crop_statistics_over_per_image_seeds():
    image, transform = coordinate_image(), finetune_transform(OUT, crop="inception")
    assert isinstance(transform, InceptionCropTransform) and transform.flip
    assert (transform.scale, transform.ratio) == (INCEPTION_SCALE, INCEPTION_RATIO) == ((0.05, 1.0), (3 / 4, 4 / 3))
    areas, aspects = [], []
    for i, generator in enumerate(image_generators(300)):
        state = generator.get_state()
        _, _, w, h = sample_inception_box(WIDTH, HEIGHT, generator=torch.Generator().set_state(state))
        seen_w, seen_h = window_of(transform(image, generator=generator))
        # the output shows the sampled box (edge pixels blend under the bilinear resize: a few px)
        assert abs(seen_w - w) <= 4 and abs(seen_h - h) <= 4, (i, (w, h), (seen_w, seen_h))
        areas.append(w * h / (WIDTH * HEIGHT))
        aspects.append(w / h)
    areas, aspects = np.array(areas), np.array(aspects)
    rounding = 2 / 40  # a side of at least sqrt(0.05 * 256 * 192) / (4/3) ~ 40 px, rounded by half a pixel each way
    assert areas.min() >= INCEPTION_SCALE[0] * (1 - rounding) and areas.max() <= 1.0
    assert aspects.min() >= INCEPTION_RATIO[0] * (1 - rounding) and aspects.max() <= INCEPTION_RATIO[1] * (1 + rounding)
    # the area spreads over its range (a random window of a fixed size, the default crop, never would)
    assert (areas < 0.3).mean() > 0.15 and (areas > 0.7).mean() > 0.1
    assert (aspects < 0.9).mean() > 0.15 and (aspects > 1.1).mean() > 0.15


def test_random_crop_default_shows_a_fixed_window():
    image, transform = coordinate_image(), finetune_transform(OUT)
    assert isinstance(transform, ResizeCropTransform) and transform.resize_size == (75, 75)  # 7/6 of 64
    for generator in image_generators(20):
        seen_w, seen_h = window_of(transform(image, generator=generator))
        # a 64 crop of the 75 square: 64/75 of each side of the source
        assert abs(seen_w - WIDTH * 64 / 75) <= 6 and abs(seen_h - HEIGHT * 64 / 75) <= 6


def test_inception_crop_is_deterministic_per_image_seed():
    image, transform = coordinate_image(), finetune_transform(OUT, crop="inception")
    first = [transform(image, generator=g) for g in image_generators(8, seed=3)]
    again = [transform(image, generator=g) for g in image_generators(8, seed=3)]
    other = [transform(image, generator=g) for g in image_generators(8, seed=4)]
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_task_rules_still_apply_to_the_inception_crop():
    train, _ = task_transforms("vtab/clevr_count", OUT, crop="inception")  # no crop on CLEVR count
    assert isinstance(train, ResizeCropTransform) and not train.random_crop
    train, _ = task_transforms("vtab/smallnorb_azimuth", OUT, crop="inception")  # a crop, no flip
    assert isinstance(train, InceptionCropTransform) and not train.flip
    with pytest.raises(ValueError, match="crop must be one of"):
        finetune_transform(OUT, crop="center")


def _recipe(**data) -> Recipe:
    return Recipe.from_dict({
        "name": "crop", "mode": "finetune",
        "model": {"variant": None, "image_size": 32,
                  "config": {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "intermediate_size": 64}},
        "data": {"task": "digits", "eval_split": None, **data},
        "optim": {"warmup_steps": 0},
        "train": {"steps": 2, "global_batch_size": 2, "micro_batch_size": 2},
    })


def test_recipe_options_pick_the_transform():
    images = Dataset.from_dict({"image": [coordinate_image()] * 4, "label": [0, 1, 0, 1]})
    default = build_data(_recipe(), train_dataset=images).train_transform
    assert isinstance(default, ResizeCropTransform) and default.resize_size == (37, 37)
    inception = build_data(_recipe(augmentation="finetune_inception"), train_dataset=images).train_transform
    assert isinstance(inception, InceptionCropTransform) and inception.image_size == (32, 32)
    precrop = build_data(_recipe(resize_size=40), train_dataset=images).train_transform
    assert isinstance(precrop, ResizeCropTransform) and precrop.resize_size == (40, 40)
    with pytest.raises(RecipeError, match="`augmentation: finetune_inception` does not use it"):
        _recipe(augmentation="finetune_inception", resize_size=40)
    with pytest.raises(RecipeError, match=r"`data.resize_size` \(16\) must be at least `model.image_size` \(32\)"):
        _recipe(resize_size=16)
    with pytest.raises(RecipeError, match="`data.resize_size` must be > 0"):
        _recipe(resize_size=0)
    with pytest.raises(RecipeError, match="`data.augmentation` must be one of"):
        _recipe(augmentation="inception")
