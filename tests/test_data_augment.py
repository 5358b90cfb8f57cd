"""hf_vit_repro.data.augment / mixing and SeededSampler(repeats=k): RandAugment and random erasing
inside the transforms, MixUp / CutMix label mixing, repeated augmentation, AugReg's levels as
recipe fields, and the same augmented images for any number of DataLoader workers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_vit_repro.data import SeededSampler, finetune_transform, load_task, make_dataloader, pretrain_transform
from hf_vit_repro.data.augment import (
    AUGREG_LEVELS, AugmentRecipe, AugmentTransform, RandomErasing, augment_problem, augment_transform, batch_mixing,
    resolved_augment,
)
from hf_vit_repro.data.mixing import cutmix_box, mix_batch, soft_targets
from hf_vit_repro.data.randaugment import RandAugment
from hf_vit_repro.training.optim import classification_loss


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[1]).resize((80, 60), Image.Resampling.BILINEAR)


def test_augreg_levels_are_big_vision_tables():
    # big_vision configs/vit_i21k.py RANDAUG_DEF / MIXUP_DEF (the same in vit_i1k.py)
    assert AUGREG_LEVELS == {
        "none": (None, 0.0), "light1": ((2, 0), 0.0), "light2": ((2, 10), 0.2), "medium1": ((2, 15), 0.2),
        "medium2": ((2, 15), 0.5), "strong1": ((2, 20), 0.5), "strong2": ((2, 20), 0.8),
    }
    assert resolved_augment(AugmentRecipe(augment_level="medium2")) == {"randaugment": (2, 15.0), "mixup_p": 0.5}
    assert resolved_augment(AugmentRecipe(augment_level="none")) == {"randaugment": None, "mixup_p": 0.0}
    assert resolved_augment(AugmentRecipe(randaugment=[2, 9], mixup_p=0.3)) == {"randaugment": (2, 9.0), "mixup_p": 0.3}
    assert batch_mixing(AugmentRecipe(augment_level="light1")) is None
    assert batch_mixing(AugmentRecipe(augment_level="strong2", cutmix_alpha=1.0)) == {"mixup_p": 0.8, "cutmix_alpha": 1.0}


@pytest.mark.parametrize("fields, message", [
    (dict(augment_level="heavy"), "must be one of 'none', 'light1'"),
    (dict(augment_level="light2", randaugment=[2, 15]), r"sets `data.randaugment` to \[2, 10\].*\[2, 15\].*augment_level=null"),
    (dict(augment_level="none", randaugment=[1, 5]), "sets `data.randaugment` to None"),
    (dict(augment_level="strong1", mixup_p=0.2), "sets `data.mixup_p` to 0.5"),
    (dict(randaugment=[2.5, 10]), "integer layers"),
    (dict(randaugment=[2, 40]), r"magnitude in \[0, 30\]"),
    (dict(cutmix_alpha=-1.0), "`data.cutmix_alpha` must be >= 0"),
    (dict(random_erasing=1.5), "probability in"),
    (dict(repeated_aug=0), "`data.repeated_aug` must be >= 1"),
])
def test_augment_problems_say_what_to_change(fields, message):
    assert augment_problem(AugmentRecipe(**fields)) is not None
    import re

    assert re.search(message, augment_problem(AugmentRecipe(**fields)))


def test_a_level_agrees_with_the_same_explicit_values():
    assert augment_problem(AugmentRecipe(augment_level="strong2", randaugment=[2, 20], mixup_p=0.8, cutmix_alpha=1.0)) is None


def test_recipe_fields_validate_and_expand(tmp_path):
    from hf_vit_repro.training import RecipeError, load_recipe

    path = "recipes/pretrain_vit_b16_imagenet1k.yaml"
    recipe = load_recipe(path, ["data.augment_level=strong1", "data.random_erasing=0.25", "data.repeated_aug=3"])
    assert recipe.data.augment_level == "strong1" and recipe.data.repeated_aug == 3
    assert "augment_level: strong1" in recipe.to_yaml()
    with pytest.raises(RecipeError, match="sets `data.mixup_p` to 0.5"):
        load_recipe(path, ["data.augment_level=strong1", "data.mixup_p=0.8"])
    with pytest.raises(RecipeError, match="masked_patch_prediction"):
        load_recipe("recipes/pretrain_mpp_vit_b16_imagenet21k.yaml", ["data.mixup_p=0.2"])
    with pytest.raises(RecipeError, match="BiT's MixUp"):
        load_recipe("recipes/finetune_bit_cifar10.yaml", ["data.cutmix_alpha=1.0"])


def test_build_data_wraps_the_training_transform(tmp_path):
    from hf_vit_repro.training import load_recipe
    from hf_vit_repro.training.build import build_data

    digits = load_task("digits", "train").select(range(8))
    recipe = load_recipe("recipes/demo/pretrain_vit.yaml", ["data.augment_level=medium1", "data.random_erasing=0.25"])
    tf = build_data(recipe, digits, digits).train_transform
    assert isinstance(tf, AugmentTransform) and tf.randaugment.magnitude == 15 and tf.random_erasing.probability == 0.25
    plain = build_data(load_recipe("recipes/demo/pretrain_vit.yaml"), digits, digits).train_transform
    assert not isinstance(plain, AugmentTransform)


def test_augment_transform_recovers_the_pixels_exactly_and_seeds_per_image(photo):
    base = pretrain_transform(32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    identity = AugmentTransform(base, RandAugment(0, 10))  # uint8 round trip and back
    for seed in range(5):
        assert torch.equal(identity(photo, torch.Generator().manual_seed(seed)), base(photo, torch.Generator().manual_seed(seed)))
    tf = augment_transform(base, (2, 20), 0.5)
    out = [tf(photo, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(torch.equal(o, tf(photo, torch.Generator().manual_seed(s))) for s, o in enumerate(out))
    assert sum(not torch.equal(o, base(photo, torch.Generator().manual_seed(s))) for s, o in enumerate(out)) >= 6
    assert augment_transform(base, None, 0.0) is base
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(tf))(photo, torch.Generator().manual_seed(1)), out[1])


def test_random_erasing_boxes_respect_area_and_aspect_bounds():
    erase = RandomErasing(0.25)
    g = torch.Generator().manual_seed(0)
    boxes = [erase.box(60, 80, g) for _ in range(400)]
    assert sum(b is None for b in boxes) < 10  # 10 tries almost always find a box that fits
    for top, left, h, w in (b for b in boxes if b is not None):
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80 and h < 60 and w < 80
        # rounding h and w to whole pixels moves the area and the ratio a little
        assert 0.02 * 4800 * 0.8 <= h * w <= 4800 / 3 * 1.1
        assert 0.3 * 0.75 <= h / w <= 1 / 0.3 * 1.35
    areas = [h * w / 4800 for _, _, h, w in (b for b in boxes if b is not None)]
    assert min(areas) < 0.06 and max(areas) > 0.28  # the whole [2 %, 33 %] range is used
    pixels = torch.zeros(3, 60, 80)
    erased = [RandomErasing(0.25)(pixels, torch.Generator().manual_seed(s)) for s in range(200)]
    hit = [bool((e != 0).any()) for e in erased]
    assert 30 <= sum(hit) <= 70  # probability 0.25 of 200
    noise = torch.cat([e[e != 0] for e in erased])
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1.0) < 0.05  # N(0, 1) per pixel


def _batch(n=6, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g), torch.tensor([0, 1, 2, 3, 4, 0][:n])


def test_big_vision_mixup_rolls_by_one_with_lam_at_least_half_per_update():
    pixels, labels = _batch()
    mixed, other, lam = mix_batch(pixels, labels, (0, 7, 1, 0), mixup_p=0.2)
    assert 0.5 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * pixels + (1 - lam) * pixels.roll(1, 0))
    assert torch.equal(other, torch.tensor([0, 0, 1, 2, 3, 4]))
    assert mix_batch(pixels, labels, (0, 7, 2, 1), mixup_p=0.2)[2] == lam  # every micro-batch, process
    assert mix_batch(pixels, labels, (0, 8, 1, 0), mixup_p=0.2)[2] != lam
    lams = [mix_batch(pixels, labels, (0, u), mixup_p=0.2)[2] for u in range(300)]
    # a ~ Beta(0.2, 0.2) is mostly near 0 or 1, so max(a, 1 - a) is mostly near 1
    a = np.random.default_rng(0).beta(0.2, 0.2, 20000)
    assert np.mean(lams) == pytest.approx(np.maximum(a, 1 - a).mean(), abs=0.03)
    assert mix_batch(pixels, labels, (0, 1))[2] == 1.0


def test_cutmix_lambda_is_the_unpasted_area_and_soft_labels_sum_to_one():
    pixels, labels = _batch(size=16)
    for update in range(30):
        mixed, other, lam = mix_batch(pixels, labels, (3, update, 0, 0), cutmix_alpha=1.0)
        from_partner = (mixed == pixels.roll(1, 0)) & (mixed != pixels)
        pasted = from_partner.all(1).all(0)  # (H, W): pixels taken from the partner in every image, channel
        assert lam == pytest.approx(1.0 - float(pasted.float().mean()))
        kept = (mixed == pixels).all(1).all(0)
        assert bool((pasted | kept).all())
        targets = soft_targets(labels, other, lam, 5, label_smoothing=0.1)
        torch.testing.assert_close(targets.sum(-1), torch.ones(6))
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.3, 0.9, 1.0):
        top, bottom, left, right = cutmix_box(16, 12, lam, rng)
        assert 0 <= top <= bottom <= 16 and 0 <= left <= right <= 12
        assert bottom - top <= int(16 * math.sqrt(1 - lam)) and right - left <= int(12 * math.sqrt(1 - lam))
    # with both on, each update picks one: some updates paste boxes, some blend
    kinds = {mix_batch(pixels, labels, (0, u), mixup_p=0.8, cutmix_alpha=1.0)[0].eq(pixels).any().item() for u in range(20)}
    assert kinds == {True, False}


@pytest.mark.parametrize("loss", ["softmax_xent", "sigmoid_xent"])
def test_mixed_loss_equals_the_loss_on_soft_targets(loss):
    pixels, labels = _batch()
    _, other, lam = mix_batch(pixels, labels, (0, 3), mixup_p=0.5)
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    targets = soft_targets(labels, other, lam, 5, label_smoothing=0.1)
    if loss == "softmax_xent":
        expected = -(targets * F.log_softmax(logits, -1)).sum(-1).mean()
    else:
        expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()
    ours = classification_loss(logits, labels, loss, label_smoothing=0.1, mixed=(other, lam))
    torch.testing.assert_close(ours, expected)


def test_repeated_sampler_repeats_each_image_k_times_with_new_seeds():
    sampler = SeededSampler(20, shuffle=True, seed=4, repeats=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 20  # the epoch keeps its length
    rows = [r for r, _ in first]
    counts = {r: rows.count(r) for r in rows}
    assert len(counts) == 7 and sorted(counts.values()) == [2] + [3] * 6  # ceil(20 / 3) images, the last cut
    assert all(rows[i] == rows[i - i % 3] for i in range(20))  # the copies follow each other
    assert len({s for _, s in first}) == 20  # every copy augmented differently
    second = list(sampler)
    assert second != first and {r for r, _ in second} != set(counts)
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(SeededSampler(20, shuffle=True, seed=4, repeats=3)) == first
    one = list(SeededSampler(20, shuffle=True, seed=4))
    assert [r for r, _ in first[::3]] == [r for r, _ in one[:7]]  # k = 1's order, each row k times
    with pytest.raises(ValueError, match="repeats"):
        SeededSampler(20, shuffle=True, repeats=0)


def test_repeated_aug_across_two_processes_covers_each_copy_once(digits):
    """Accelerate deals a prepared loader's batches to 2 processes: together they see each image k times."""
    from accelerate.data_loader import prepare_data_loader

    from collections import Counter

    def images(loader):  # each augmented image, by its bytes
        return Counter(bytes(image.numpy().tobytes()) for b in loader for image in b["pixel_values"])

    def loader():
        return make_dataloader(digits, augment_transform(finetune_transform(8), (2, 10)), 4, shuffle=True, seed=1, repeats=2)

    ranks = [images(prepare_data_loader(loader(), device=torch.device("cpu"), num_processes=2, process_index=rank,
                                        put_on_device=False)) for rank in range(2)]
    whole = images(loader())
    assert sum(whole.values()) == len(digits) and ranks[0] + ranks[1] == whole  # each augmented copy once
    assert sum(ranks[0].values()) == sum(ranks[1].values()) == len(digits) // 2
    indices = [r for r, _ in SeededSampler(len(digits), shuffle=True, seed=1, repeats=2)]
    assert all(indices.count(r) == 2 for r in indices)


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", "test").select(range(24))


def _epoch(loader):
    return [(b["pixel_values"], b["labels"]) for b in loader]


def test_augmented_images_do_not_depend_on_the_number_of_workers(digits):
    tf = augment_transform(pretrain_transform(16), (2, 15), 0.25)

    def make(workers):
        return make_dataloader(digits, tf, 8, shuffle=True, num_workers=workers, seed=0, repeats=2)

    reference = _epoch(make(0))
    for workers in (1, 2):
        batches = _epoch(make(workers))
        assert len(batches) == len(reference)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(reference, batches)), workers
    plain = _epoch(make_dataloader(digits, pretrain_transform(16), 8, shuffle=True, seed=0, repeats=2))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(reference, plain))  # the augmentation is on
