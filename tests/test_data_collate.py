"""hf_vit_repro.data.collate: batches, corrupt images (skipped and counted across workers, or
strict), and determinism of make_dataloader across runs and num_workers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_repro.data import (
    CorruptImageError,
    ImageClassificationCollator,
    eval_transform,
    finetune_transform,
    load_task,
    make_dataloader,
    pretrain_transform,
)


def _png(value: int, size=(6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = _png(51)
TRUNCATED = GOOD[: len(GOOD) // 2]
NOT_AN_IMAGE = b"this is not an image"


def _dataset(images: list, labels: list[int]):
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature

    rows = [{"bytes": data, "path": f"img_{i}.png"} for i, data in enumerate(images)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=3)})
    return Dataset.from_dict({"image": rows, "label": labels}, features=features)


def test_collator_batches_pil_images_bytes_and_dicts():
    collate = ImageClassificationCollator(eval_transform(8))
    rows = [
        {"image": Image.new("L", (4, 4), 51), "label": 2},
        {"image": GOOD, "label": 0},
        {"image": {"bytes": GOOD, "path": None}, "label": 1},
    ]
    batch = collate(rows)
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [2, 0, 1] and batch["labels"].dtype == torch.long
    torch.testing.assert_close(batch["pixel_values"], torch.full((3, 3, 8, 8), -0.6))


def test_corrupt_images_are_skipped_and_counted():
    collate = ImageClassificationCollator(eval_transform(8))
    rows = [{"image": GOOD, "label": 0}, {"image": TRUNCATED, "label": 1}, {"image": NOT_AN_IMAGE, "label": 2},
            {"image": None, "label": 0}, {"image": GOOD, "label": 1}]
    batch = collate(rows)
    assert batch["labels"].tolist() == [0, 1]
    assert collate.num_skipped == 3
    assert collate.pop_skipped() == 3 and collate.num_skipped == 0
    empty = collate([{"image": NOT_AN_IMAGE, "label": 0}])
    assert empty["pixel_values"].shape == (0, 3, 8, 8) and empty["labels"].shape == (0,)


def test_strict_mode_names_the_row_and_its_source():
    loader = make_dataloader(_dataset([GOOD, GOOD, TRUNCATED, GOOD], [0, 1, 2, 0]), eval_transform(8), 2,
                             shuffle=False, strict=True)
    with pytest.raises(CorruptImageError, match=r"row 2 \(path=img_2.png\).*strict"):
        list(loader)


def test_skip_count_is_shared_by_worker_processes():
    images = [GOOD] * 10
    images[3], images[7] = NOT_AN_IMAGE, TRUNCATED
    loader = make_dataloader(_dataset(images, [i % 3 for i in range(10)]), eval_transform(8), 4, shuffle=True, num_workers=2)
    seen = sum(len(batch["labels"]) for batch in loader)
    assert seen == 8
    assert loader.collate_fn.pop_skipped() == 2  # counted in the workers, read in the main process
    strict = make_dataloader(_dataset(images, [0] * 10), eval_transform(8), 5, shuffle=False, num_workers=2, strict=True)
    with pytest.raises(CorruptImageError, match="row 3"):
        list(strict)


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b["pixel_values"], b["labels"]) for b in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", "test").select(range(40))


def test_dataloader_is_deterministic_and_independent_of_num_workers(digits):
    def make(seed, workers):
        return make_dataloader(digits, pretrain_transform(16), 8, shuffle=True, num_workers=workers, seed=seed)

    reference = make(0, 0)
    first, second = _epoch(reference), _epoch(reference)
    assert not _same(first, second)  # the next epoch reshuffles and re-augments
    assert _same(first, _epoch(make(0, 0)))  # a new loader with the same seed repeats epoch 0
    assert _same(first, _epoch(make(0, 2)))  # ... whatever the number of workers
    assert not _same(first, _epoch(make(1, 0)))
    reference.sampler.set_epoch(1)
    assert _same(second, _epoch(reference))  # set_epoch reproduces an epoch (resume)
    labels = torch.cat([b[1] for b in first])
    assert sorted(labels.tolist()) == sorted(digits["label"])  # every row once


def test_accelerate_prepare_keeps_batches_and_the_skip_count(digits):
    """What the training loop does with the loader: Accelerate re-wraps it (one CPU process)."""
    from accelerate.data_loader import prepare_data_loader

    images = [GOOD] * 6
    images[4] = NOT_AN_IMAGE
    loader = make_dataloader(_dataset(images, [0, 1, 2, 0, 1, 2]), finetune_transform(8), 2, shuffle=True, seed=3)
    expected = _epoch(make_dataloader(_dataset(images, [0, 1, 2, 0, 1, 2]), finetune_transform(8), 2, shuffle=True, seed=3))
    prepared = prepare_data_loader(loader, device=torch.device("cpu"), num_processes=1, process_index=0, put_on_device=False)
    assert _same(_epoch(prepared), expected)
    assert prepared.collate_fn.pop_skipped() == 1


def test_unshuffled_loader_keeps_order_and_drop_last(digits):
    loader = make_dataloader(digits, eval_transform(8), 16, shuffle=False, drop_last=True)
    batches = list(loader)
    assert [len(b["labels"]) for b in batches] == [16, 16]
    assert torch.cat([b["labels"] for b in batches]).tolist() == list(digits["label"])[:32]


def test_streaming_dataset_and_empty_dataset(digits):
    stream = digits.to_iterable_dataset(num_shards=2)
    loader = make_dataloader(stream, finetune_transform(8), 10, shuffle=True, seed=0)
    assert sum(len(b["labels"]) for b in loader) == 40
    with pytest.raises(ValueError, match="empty"):
        make_dataloader(digits.select([]), eval_transform(8), 4, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloader(digits, eval_transform(8), 0, shuffle=False)


def test_dataloader_feeds_the_model(digits):
    """The batches go straight into the model (keys and dtypes as it expects)."""
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    from .conftest import tiny_kwargs

    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10, image_size=16, patch_size=8)))
    batch = next(iter(make_dataloader(digits, finetune_transform(16), 4, shuffle=True)))
    out = model(**batch)
    assert out.logits.shape == (4, 10) and torch.isfinite(out.loss)
    assert np.isfinite(out.loss.item())


def test_nested_subsets_are_nested_seeded_and_machine_independent():
    from hf_vit_repro.data import nested_subset, subset_size
    from hf_vit_repro.data.collate import mix64

    n = 1000
    tenth, third, whole = (nested_subset(n, size, seed=3) for size in (0.1, 0.3, 1.0))
    assert (len(tenth), len(third)) == (100, 300) and whole.tolist() == list(range(n))
    assert set(tenth.tolist()) < set(third.tolist())  # the 10% subset lies inside the 30% one
    counted = nested_subset(n, 250, seed=3)  # a number of rows instead of a fraction
    assert len(counted) == 250 and set(tenth.tolist()) < set(counted.tolist()) < set(third.tolist())
    assert np.array_equal(nested_subset(n, 0.1, seed=3), tenth)  # the same seed gives the same rows
    assert len(set(nested_subset(n, 0.1, seed=4).tolist()) ^ set(tenth.tolist())) > 100  # another seed, others
    # The rows are the ones ranked first by the scalar SplitMix64 hash of (seed, row): no NumPy
    # random generator is involved, so every machine draws the same subset.
    expected = sorted(sorted(range(n), key=lambda row: mix64(3, row))[:100])
    assert tenth.tolist() == expected
    assert subset_size(7, 0.01) == 1  # a fraction never rounds to an empty subset
    with pytest.raises(ValueError, match="whole"):
        nested_subset(n, 2.5)
    with pytest.raises(ValueError, match="only 1000 rows"):
        nested_subset(n, 2000)
    with pytest.raises(ValueError, match="> 0"):
        subset_size(n, 0)


def _rotated_photo_jpeg(path) -> bytes:
    """A real photo stored 32 wide x 16 high with EXIF orientation 6 ("rotate 90 clockwise to
    view"), as phones write portrait shots: upright it is 16 wide x 32 high."""
    from sklearn.datasets import load_sample_images

    stored = Image.fromarray(load_sample_images().images[0][100:116, 200:232])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    stored.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    return path.read_bytes()


def test_exif_orientation_is_applied_as_datasets_and_pipeline_apply_it(tmp_path):
    """Issue 24 item 2: the model's input for a rotated phone photo equals what transformers'
    `pipeline` feeds it (load_image, then the checkpoint's processor), in the collator (training
    and evaluation) and in `decode_image`; and the decoded pixels equal `datasets`' own decoding."""
    from datasets import Image as ImageFeature
    from transformers import ViTImageProcessor
    from transformers.image_utils import load_image

    from hf_vit_repro.data import decode_image

    path = tmp_path / "portrait.jpg"
    data = _rotated_photo_jpeg(path)
    ours = decode_image(data)
    reference = ImageFeature().decode_example({"bytes": data, "path": None})
    assert ours.size == reference.size == load_image(str(path)).size == (16, 32)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    assert decode_image(str(path)).size == (16, 32)

    # Model size (height 32, width 16): the upright image needs no resize, a sideways one would.
    processor = ViTImageProcessor(size={"height": 32, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    expected = processor(load_image(str(path)), return_tensors="pt")["pixel_values"]
    batch = ImageClassificationCollator(eval_transform((32, 16)))(
        [{"image": data, "label": 0}, {"image": {"bytes": None, "path": str(path)}, "label": 1}]
    )
    torch.testing.assert_close(batch["pixel_values"], expected.expand(2, -1, -1, -1), atol=1e-5, rtol=0)
