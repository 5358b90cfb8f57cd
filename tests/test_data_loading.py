"""hf_vit_repro.data: the task registry, load_task on local copies of every Hub repo, VTAB-1k
splits, few-shot subsets, digits, and the errors bad input gets. Offline: every source is a
tiny local copy in the Hub repo's own layout (tests/data_fixtures.py)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from hf_vit_repro.data import (
    LABEL_TRANSFORMS,
    TASKS,
    VTAB_TASKS,
    DataError,
    digits_split_indices,
    export_vtab1k_indices,
    fewshot_subset,
    load_task,
    stable_permutation,
    vtab1k_indices,
)
from hf_vit_repro.data.collate import mix64
from hf_vit_repro.data.registry import (
    clevr_count,
    clevr_distance,
    kitti_vehicle_distance,
    registry_markdown,
)

from .data_fixtures import HUB_LAYOUTS, decode_row, write_layout
from .vtab_protocol import VTAB_PROTOCOL

PAPER_VTAB = {
    "natural": {"caltech101", "cifar100", "dtd", "flowers102", "pets", "svhn", "sun397"},
    "specialized": {"patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"},
    "structured": {"clevr_count", "clevr_distance", "dmlab", "kitti_distance", "dsprites_location",
                   "dsprites_orientation", "smallnorb_azimuth", "smallnorb_elevation"},
}


# ------------------------------------------------------------------------------------------
# The registry itself.
# ------------------------------------------------------------------------------------------


def test_registry_has_the_19_vtab_tasks_in_their_groups_and_the_paper_sets():
    groups = collections.defaultdict(set)
    for name in VTAB_TASKS:
        groups[TASKS[name].vtab_group].add(name.removeprefix("vtab/"))
    assert dict(groups) == PAPER_VTAB
    assert len(VTAB_TASKS) == 19
    for name in ("imagenet1k", "imagenet21k", "cifar10", "cifar100", "pets", "flowers102", "digits"):
        assert name in TASKS and TASKS[name].vtab_group is None
    # Classes as task_adaptation defines them (clevr.py, kitti.py, dsprites.py, smallnorb.py, ...).
    expected = {"vtab/clevr_count": 8, "vtab/clevr_distance": 6, "vtab/kitti_distance": 4, "vtab/dsprites_location": 16,
                "vtab/dsprites_orientation": 16, "vtab/smallnorb_azimuth": 18, "vtab/smallnorb_elevation": 9,
                "vtab/dmlab": 6, "vtab/caltech101": 102, "vtab/sun397": 397, "imagenet21k": 21841}
    assert {name: TASKS[name].num_classes for name in expected} == expected
    table = registry_markdown()
    assert all(f"`{name}`" in table for name in TASKS) and all(spec.why for spec in TASKS.values())


@pytest.mark.parametrize("task", sorted(VTAB_PROTOCOL))
def test_vtab_task_crop_flip_and_rows_match_the_paper_and_task_adaptation(task):
    crop, flip, val200, published = VTAB_PROTOCOL[task]
    spec = TASKS[task]
    assert (spec.crop, spec.flip) == (crop, flip)
    assert spec.vtab_val200 == val200
    assert (spec.vtab_val_rows is not None) == published
    if published:  # the official rows: task_adaptation's slice of the split the repo publishes
        split, first = spec.vtab_val_rows
        assert val200 == f"{split}[{first}:{first + 200}]".replace("[0:", "[:")
    rows = spec.vtab_rows
    assert rows.startswith("train800 = train[:800], official") and ("official" in rows.split(";")[1]) == published


def test_every_vtab_task_is_in_the_protocol_table_and_other_tasks_crop_and_flip():
    assert set(VTAB_PROTOCOL) == set(VTAB_TASKS)
    others = [spec for name, spec in TASKS.items() if not spec.is_vtab]
    assert all(spec.crop and spec.flip and spec.vtab_val_rows is None for spec in others)


def test_vtab_label_rules_match_task_adaptation_by_hand():
    # CLEVR count: objects - 3.
    assert [clevr_count(n) for n in (3, 4, 10)] == [0, 1, 7]
    with pytest.raises(ValueError):
        clevr_count(2)
    # CLEVR distance: thresholds 0, 8, 8.5, 9, 9.5, 10, 100 on the closest depth.
    assert [clevr_distance([d, 50.0]) for d in (7.9, 8.0, 8.2, 8.7, 9.2, 9.7, 12.0)] == [0, 0, 1, 2, 3, 4, 5]
    # KITTI: closest car/van/truck (types 0, 1, 2); a pedestrian (type 3) nearer does not count.
    assert kitti_vehicle_distance([3, 0], [2.0, 30.0]) == 2
    assert kitti_vehicle_distance([1], [5.0]) == 0
    assert kitti_vehicle_distance([2, 0], [19.0, 40.0]) == 1
    assert kitti_vehicle_distance([3, 4], [2.0, 3.0]) == 3  # no vehicle
    # dSprites: 32 positions -> 16, 40 orientations -> 16 (integer forms of floor(v / factor)).
    position, orientation = LABEL_TRANSFORMS["dsprites_bin16_position"], LABEL_TRANSFORMS["dsprites_bin16_orientation"]
    assert [position(v) for v in range(32)] == [v * 16 // 32 for v in range(32)]
    assert [orientation(v) for v in range(40)] == [v * 16 // 40 for v in range(40)]
    assert collections.Counter(orientation(v) for v in range(40)).most_common()[-1][1] == 2  # 2 or 3 per bin


# ------------------------------------------------------------------------------------------
# Every registry line loads from a local copy in its Hub repo's layout.
# ------------------------------------------------------------------------------------------


def test_every_hub_source_has_a_fixture_layout():
    sources = {spec.hub_id for spec in TASKS.values() if spec.hub_id}
    assert sources == set(HUB_LAYOUTS)


@pytest.mark.parametrize("name", [n for n in TASKS if TASKS[n].hub_id])
def test_registry_line_loads_from_a_copy_in_the_hub_layout(name, tmp_path):
    spec = TASKS[name]
    layout = HUB_LAYOUTS[spec.hub_id]
    rows = {split: 6 for split in layout.splits}
    write_layout(layout, tmp_path / "repo", rows)
    # The transform each line must apply, computed independently of the registry.
    independent = {
        "vtab/dsprites_location": lambda v: v * 16 // 32,
        "vtab/dsprites_orientation": lambda v: v * 16 // 40,
    }.get(name, lambda v: v)
    for ours, theirs in spec.splits.items():
        dataset = load_task(name, ours, data_dir=tmp_path / "repo")
        assert dataset.column_names == ["image", "label"]
        assert dataset.features["label"].num_classes == spec.num_classes
        assert len(dataset) == rows[theirs]
        raw = _raw_labels(layout, tmp_path / "repo", theirs)
        assert [int(x) for x in dataset["label"]] == [independent(v) for v in raw]
        first = dataset[0]["image"]
        assert first.size == (4, 4)
    # The top of the raw range made it through (the K-1 class exists after the transform).
    train = load_task(name, "train" if "train" in spec.splits else "test", data_dir=tmp_path / "repo")
    assert max(train["label"]) == spec.num_classes - 1


def _raw_labels(layout, root, split):
    import datasets

    if layout.kind == "clip_wds":
        files = {split: f"{split}/*.tar"}
    elif layout.kind == "timm_wds":
        files = {split: f"{layout.prefix}-{split}-*.tar"}
    else:
        files = {split: f"data/{split}-*.parquet"}
    raw = datasets.load_dataset(str(root), data_files=files, split=split)
    return [int(v) for v in raw[layout.label_column]]


def test_single_shard_clip_repo_is_not_mistaken_for_text(tmp_path):
    """One .tar beside nshards.txt makes `datasets` infer the text builder; load_task names the
    shards, so it still reads images."""
    import datasets

    repo = write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-dtd"], tmp_path / "dtd", {"train": 5, "test": 3}, shards=1)
    inferred = datasets.load_dataset(str(repo), split="train")
    assert inferred.column_names == ["text"]  # what a plain load_dataset(repo) returns
    assert load_task("vtab/dtd", "train", data_dir=repo).column_names == ["image", "label"]


def test_local_path_in_place_of_the_id_and_user_columns(tmp_path):
    repo = write_layout(HUB_LAYOUTS["uoft-cs/cifar100"], tmp_path / "c100", {"train": 4, "test": 2})
    # A user dataset by path, columns named explicitly (coarse_label: the 20-way task).
    coarse = load_task(str(repo), "train", image_column="img", label_column="coarse_label")
    assert coarse.features["label"].num_classes == 20
    assert [decode_row(im) for im in coarse["image"]] == [0, 1, 2, 3]
    # Column names guessed from the feature types when not given.
    guessed = load_task(str(repo), "test")
    assert guessed.column_names == ["image", "label"] and guessed.features["label"].num_classes == 100


def test_streaming_reads_the_same_rows(tmp_path):
    repo = write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-svhn"], tmp_path / "svhn", {"train": 5, "test": 3}, shards=2)
    streamed = list(load_task("vtab/svhn", "train", data_dir=repo, streaming=True))
    eager = load_task("vtab/svhn", "train", data_dir=repo)
    assert [r["label"] for r in streamed] == list(eager["label"])
    assert [decode_row(r["image"]) for r in streamed] == [decode_row(im) for im in eager["image"]]
    # The dSprites binning applies to streamed rows too.
    repo = write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-dsprites_label_orientation"], tmp_path / "dsp", {"train": 6, "test": 2})
    streamed = load_task("vtab/dsprites_orientation", "train", data_dir=repo, streaming=True)
    assert streamed.features["label"].num_classes == 16
    assert [r["label"] for r in streamed] == [v * 16 // 40 for v in _raw_labels(HUB_LAYOUTS["clip-benchmark/wds_vtab-dsprites_label_orientation"], repo, "train")]


# ------------------------------------------------------------------------------------------
# VTAB-1k splits.
# ------------------------------------------------------------------------------------------


def test_stable_permutation_is_integer_exact():
    """The vectorised ranking equals sorting by the scalar Python-int SplitMix64 hash, so it
    involves no floating point or library RNG and is the same on every machine."""
    for n, seed in ((1, 0), (17, 3), (2000, 0), (2000, 12345)):
        expected = sorted(range(n), key=lambda i: (mix64(seed, i), i))
        assert stable_permutation(n, seed).tolist() == expected
    assert stable_permutation(2000, 0).tolist() != stable_permutation(2000, 1).tolist()


def test_vtab1k_indices_sizes_disjoint_and_deterministic():
    # No official rows (a non-VTAB task): 800 + 200 drawn from one ranking, disjoint.
    chosen = vtab1k_indices(5000, seed=0)
    assert (len(chosen["train800"]), len(chosen["val200"])) == (800, 200)
    assert not set(chosen["train800"]) & set(chosen["val200"])
    order = stable_permutation(5000, 0).tolist()
    assert chosen == {"train800": sorted(order[:800]), "val200": sorted(order[800:1000])}
    assert chosen == vtab1k_indices(5000, seed=0)
    assert chosen != vtab1k_indices(5000, seed=1)
    # A VTAB task: task_adaptation's train[:800]; val200 the first 200 of the ranking past row 799.
    official = vtab1k_indices(5000, seed=0, official_train=True)
    assert official["train800"] == list(range(800))
    assert official["val200"] == sorted([r for r in order if r >= 800][:200])
    # Official val200 rows: validation[:200] of a separate split, or train[N:N+200].
    assert vtab1k_indices(900, 0, 300, official_train=True, val_offset=0)["val200"] == list(range(200))
    assert vtab1k_indices(5000, 0, official_train=True, val_offset=4500)["val200"] == list(range(4500, 4700))
    separate = vtab1k_indices(900, seed=0, num_val_source=300)
    assert max(separate["val200"]) < 300 and len(set(separate["val200"])) == 200
    with pytest.raises(DataError, match="needs 800 train and 200 validation rows"):
        vtab1k_indices(999)
    with pytest.raises(DataError, match="do not fit"):
        vtab1k_indices(5000, 0, official_train=True, val_offset=700)  # would overlap train800


@pytest.fixture(scope="module")
def big_cifar100_copy(tmp_path_factory):
    """1100 training rows in 12 shards: `datasets` reads them in text order (0, 1, 10, 11, 2, ...),
    so without sorting by key rows from shards 10 and 11 would land among the first 800."""
    root = tmp_path_factory.mktemp("vtab") / "wds_vtab-cifar100"
    return write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-cifar100"], root, {"train": 1100, "test": 10}, shards=12)


def _rows(dataset) -> list[int]:
    return [decode_row(image) for image in dataset["image"]]


def test_vtab1k_splits_from_a_multi_shard_webdataset_copy(big_cifar100_copy, tmp_path):
    import datasets

    # The fixture exercises the shard order: read plainly, the keys are not in export order.
    plain = datasets.load_dataset(str(big_cifar100_copy), data_files={"train": "train/*.tar"}, split="train")
    assert plain["__key__"] != sorted(plain["__key__"])
    splits = {s: load_task("vtab/cifar100", s, data_dir=big_cifar100_copy) for s in ("train800", "val200", "train800val200")}
    rows = {s: _rows(d) for s, d in splits.items()}
    assert {s: len(r) for s, r in rows.items()} == {"train800": 800, "val200": 200, "train800val200": 1000}
    # task_adaptation's train[:800]: the first 800 rows exported (the fixture numbers rows s0000000, ...).
    assert rows["train800"] == list(range(800))
    # val200 is not published (task_adaptation: train[45000:45200]): a seeded draw from rows 800...
    assert not set(rows["train800"]) & set(rows["val200"]) and min(rows["val200"]) >= 800
    assert rows["val200"] == sorted([r for r in stable_permutation(1100, 0).tolist() if r >= 800][:200])
    assert rows["train800val200"] == rows["train800"] + rows["val200"]
    # The whole train split is in export order too, and labels travel with their images.
    train = load_task("vtab/cifar100", "train", data_dir=big_cifar100_copy)
    assert _rows(train) == list(range(1100))
    assert list(splits["val200"]["label"]) == [train[i]["label"] for i in rows["val200"]]
    # Identical across runs and across num_proc.
    again = load_task("vtab/cifar100", "train800", data_dir=big_cifar100_copy, num_proc=2)
    assert _rows(again) == rows["train800"]
    # Export, re-import.
    path = export_vtab1k_indices("vtab/cifar100", tmp_path / "idx.json", data_dir=big_cifar100_copy)
    record = json.loads(path.read_text())
    assert record["indices"] == {"train800": rows["train800"], "val200": rows["val200"]}
    assert record["source_rows"] == {"train": 1100} and "train[45000:45200]" in record["rows"]
    assert record["keys"]["train800"][:2] == ["s0000000", "s0000001"]
    assert record["keys"]["val200"] == [f"s{i:07d}" for i in rows["val200"]]
    reimported = load_task("vtab/cifar100", "val200", data_dir=big_cifar100_copy, indices=path)
    assert _rows(reimported) == rows["val200"]
    # A file drawn from another version of the data is refused.
    record["source_rows"]["train"] = 1200
    (tmp_path / "other.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="different version"):
        load_task("vtab/cifar100", "train800", data_dir=big_cifar100_copy, indices=tmp_path / "other.json")


def test_vtab1k_indices_of_another_task_are_refused(big_cifar100_copy, tmp_path, capsys):
    """A cifar100 indices file was accepted for eurosat (issue 24): rows drawn for one dataset say
    nothing about another, even where the split sizes happen to agree."""
    from hf_vit_repro.cli import main

    path = export_vtab1k_indices("vtab/cifar100", tmp_path / "idx.json", data_dir=big_cifar100_copy)
    eurosat = write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-eurosat"], tmp_path / "eurosat", {"train": 1100, "test": 10})
    with pytest.raises(DataError, match=r"written for 'vtab/cifar100', not 'vtab/eurosat'; export vtab/eurosat's own"):
        load_task("vtab/eurosat", "train800", data_dir=eurosat, indices=path)
    assert main(["data", "export-vtab", "vtab/eurosat", str(tmp_path / "e.json"), "--data-dir", str(eurosat)]) == 0
    assert _rows(load_task("vtab/eurosat", "train800", data_dir=eurosat, indices=tmp_path / "e.json")) == list(range(800))


def test_vtab1k_official_val200_from_the_published_validation_split(tmp_path):
    """SUN397: task_adaptation's val200 is validation[:200], which the repo publishes."""
    repo = write_layout(HUB_LAYOUTS["dpdl-benchmark/sun397"], tmp_path / "sun", {"train": 820, "validation": 210, "test": 3})
    t800 = _rows(load_task("vtab/sun397", "train800", data_dir=repo))
    v200 = _rows(load_task("vtab/sun397", "val200", data_dir=repo))
    both = _rows(load_task("vtab/sun397", "train800val200", data_dir=repo))
    assert t800 == list(range(800))  # train[:800]
    assert v200 == list(range(820, 1020))  # validation[:200]: validation rows are numbered after the 820 train rows
    assert both == t800 + v200


# ------------------------------------------------------------------------------------------
# Digits and few-shot subsets.
# ------------------------------------------------------------------------------------------


def test_digits_partition_is_fixed_stratified_and_loads():
    from sklearn.datasets import load_digits

    parts = digits_split_indices()
    assert (len(parts["train"]), len(parts["test"])) == (1497, 300)
    assert sorted(parts["train"] + parts["test"]) == list(range(1797))
    target = load_digits().target
    per_class = collections.Counter(target[parts["test"]].tolist())
    totals = collections.Counter(target.tolist())
    for cls, total in totals.items():
        assert abs(per_class[cls] - 300 * total / 1797) < 1  # largest-remainder quota
    assert parts == digits_split_indices()
    test = load_task("digits", "test")
    assert len(test) == 300 and test.features["label"].num_classes == 10
    assert list(test["label"]) == target[parts["test"]].tolist()
    image = test[0]["image"]
    assert image.size == (8, 8)
    original = load_digits().images[parts["test"][0]]
    assert np.array_equal(np.asarray(image), np.rint(original * 255 / 16).astype(np.uint8))


@pytest.mark.parametrize("k", [1, 5, 10, 25])
def test_fewshot_subset_has_exactly_k_per_class(k):
    train = load_task("digits", "train")
    subset = fewshot_subset(train, k, seed=0)
    counts = collections.Counter(subset["label"])
    assert counts == {cls: k for cls in range(10)}
    assert list(fewshot_subset(train, k, seed=0)["label"]) == list(subset["label"])
    if k >= 5:
        other = fewshot_subset(train, k, seed=1)
        assert [decode_digit(im) for im in other["image"]] != [decode_digit(im) for im in subset["image"]]


def decode_digit(image) -> bytes:
    return np.asarray(image).tobytes()


def test_fewshot_needs_k_of_every_class():
    test = load_task("digits", "test")
    with pytest.raises(DataError, match="a 100-shot subset needs 100"):
        fewshot_subset(test, 100, seed=0)


# ------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------


def test_unknown_task_suggests_close_names():
    with pytest.raises(KeyError, match="vtab/cifar100") as err:
        load_task("vtab/cifar10", "train")
    assert "Did you mean" in str(err.value)
    with pytest.raises(KeyError, match="imagenet1k"):
        load_task("imagenet1", "train")
    with pytest.raises(DataError, match="no folder './no/such/folder'"):
        load_task("./no/such/folder", "train")


def test_missing_columns_name_the_ones_found(tmp_path):
    repo = write_layout(HUB_LAYOUTS["uoft-cs/cifar10"], tmp_path / "c10", {"train": 2, "test": 2})
    with pytest.raises(DataError, match=r"no image column 'picture'.*\['img', 'label'\]"):
        load_task("cifar10", "train", data_dir=repo, image_column="picture")
    # A copy whose columns differ from the Hub repo's: the registry's names are not there.
    with pytest.raises(DataError, match=r"no label column 'fine_label'.*\['img', 'label'\]"):
        load_task("cifar100", "train", data_dir=repo)


def test_split_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="has no split 'validation'; choose one of train, test"):
        load_task("cifar10", "validation")
    repo = write_layout(HUB_LAYOUTS["uoft-cs/cifar10"], tmp_path / "c10", {"train": 2, "test": 2})
    with pytest.raises(DataError, match="no split 'valid'"):
        load_task(str(repo), "valid")
    with pytest.raises(DataError, match="streaming=False"):
        load_task("digits", "train800", streaming=True)


def test_empty_dataset_is_an_error(tmp_path):
    repo = write_layout(HUB_LAYOUTS["uoft-cs/cifar10"], tmp_path / "c10", {"train": 0, "test": 2})
    with pytest.raises(DataError, match="split 'train' is empty"):
        load_task("cifar10", "train", data_dir=repo)


def test_labels_out_of_range_and_offline_hub_are_clear(tmp_path):
    repo = write_layout(HUB_LAYOUTS["clip-benchmark/wds_vtab-pcam"], tmp_path / "pcam", {"train": 3, "test": 2},
                        labels=lambda split, n: [0, 1, 5][:n])
    with pytest.raises(DataError, match=r"outside \[0, 2\)"):
        load_task("vtab/patch_camelyon", "train", data_dir=repo)
    with pytest.raises(DataError, match="data_dir="):  # HF_HUB_OFFLINE=1 and nothing cached
        load_task("vtab/patch_camelyon", "test")
    with pytest.raises(DataError, match="not a folder"):
        load_task("vtab/patch_camelyon", "test", data_dir=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------
# The `vit-repro data` command.
# ------------------------------------------------------------------------------------------


def test_cli_tasks_show_and_export(tmp_path, capsys):
    from hf_vit_repro.cli import main

    assert main(["data", "tasks"]) == 0
    assert "vtab/smallnorb_azimuth" in capsys.readouterr().out
    assert main(["data", "show", "digits", "--split", "val200", "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "200 images, 10 classes" in out and "row 0: label" in out
    assert main(["data", "export-vtab", "digits", str(tmp_path / "digits.json")]) == 0
    record = json.loads((tmp_path / "digits.json").read_text())
    assert record["indices"] == vtab1k_indices(1497, 0) and record["source_rows"] == {"train": 1497}
    assert main(["data", "show", "vtab/cifar10"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'vtab/cifar10'. Did you mean 'vtab/cifar100'" in err


def test_docs_carry_the_current_registry_table():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    assert registry_markdown() in page, "docs/data.md's registry table is stale: paste registry_markdown() into it"
