"""BiT's per-task VTAB resolution (`vtab.bit_resolution`, `vit-repro vtab --protocol bit-hyperrule
--resolution-rule bit-hyperrule`) against google-research/big_transfer `bit_hyperrule.py` (`get_resolution`:
area below 96 x 96 -> (160, 128), else (512, 480); its `known_dataset_sizes` give the dataset sizes
checked first), and how a BiT VTAB run gets it; the paper's 384 px stays the default."""

import json
from types import SimpleNamespace

import pytest

from hf_vit_repro import runs
from hf_vit_repro.data import VTAB_TASKS, task_transforms
from hf_vit_repro.vtab import base_recipe, protocol_of, run_vtab, task_recipe
from hf_vit_repro.vtab.bit_resolution import bit_hyperrule_resolution, task_resolution
from hf_vit_repro.vtab.runner import check_resolution

from .conftest import randomize_, tiny_kwargs
from .evaluation_fixtures import save_classifier

# bit_hyperrule.py's own table of dataset sizes, and what its get_resolution returns for them
BIT_KNOWN_SIZES = {"cifar10": (32, 32), "cifar100": (32, 32), "oxford_iiit_pet": (224, 224),
                   "oxford_flowers102": (224, 224), "imagenet2012": (224, 224)}
SMALL_VTAB = {"vtab/cifar100", "vtab/svhn", "vtab/eurosat", "vtab/dsprites_location", "vtab/dsprites_orientation"}


@pytest.mark.parametrize("dataset, size", BIT_KNOWN_SIZES.items())
def test_rule_on_bits_own_dataset_sizes(dataset, size):
    expected = (160, 128) if dataset.startswith("cifar") else (512, 480)
    assert bit_hyperrule_resolution(*size) == expected


def test_rule_threshold_is_the_area_below_96_by_96():
    assert bit_hyperrule_resolution(64, 64) == (160, 128)
    assert bit_hyperrule_resolution(95, 96) == (160, 128)  # 9120 < 9216
    assert bit_hyperrule_resolution(96, 96) == (512, 480)  # not below: Patch Camelyon, SmallNORB
    assert bit_hyperrule_resolution(20, 400) == (160, 128)  # the area decides, not a side
    with pytest.raises(ValueError, match="two positive numbers"):
        bit_hyperrule_resolution(0, 32)


def test_vtab_tasks_get_128_or_480():
    chosen = {task: task_resolution(task) for task in VTAB_TASKS}
    assert len(chosen) == 19
    assert {t for t, (_, crop) in chosen.items() if crop == 128} == SMALL_VTAB
    assert all(chosen[t] == (512, 480) for t in set(VTAB_TASKS) - SMALL_VTAB)
    assert task_resolution("eurosat") == (160, 128)
    with pytest.raises(KeyError, match="not a VTAB-1k task"):
        task_resolution("digits")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())))
    return save_classifier(model, tmp_path_factory.mktemp("pretrained") / "final")


def test_bit_vtab_recipe_gets_the_rule(checkpoint, tmp_path):
    base = base_recipe(protocol="bit-hyperrule")  # recipes/finetune_bit_vtab.yaml
    assert base.model.image_size == 384 and base.data.resize_size is None  # the paper's 384 px by default
    paper = task_recipe(base, checkpoint, "vtab/eurosat", tmp_path, None)
    assert (paper.model.image_size, paper.data.resize_size) == (384, None)
    for task, (size, precrop) in {"vtab/eurosat": (128, 160), "vtab/dtd": (480, 512), "vtab/clevr_count": (480, 512)}.items():
        recipe = task_recipe(base, checkpoint, task, tmp_path, None, "bit-hyperrule")
        assert (recipe.model.image_size, recipe.data.resize_size) == (size, precrop)
        # the transform the training loop builds for it (training.build_data: augmentation "finetune")
        train, _ = task_transforms(task, recipe.model.image_size, resize_size=recipe.data.resize_size)
        assert train.image_size == (size, size)
        if train.random_crop:
            assert train.resize_size == (precrop, precrop)
        else:  # CLEVR count: no crop (the registry's rule), resized straight to the resolution
            assert task == "vtab/clevr_count"
    record = protocol_of(base, checkpoint, "bit-hyperrule", "bit-hyperrule")
    assert record["resolution"]["rule"] == "bit-hyperrule" and "512" in record["resolution"]["description"]
    assert "resolution" not in protocol_of(base, checkpoint, "bit-hyperrule")


def test_rule_is_refused_outside_the_bit_protocol():
    check_resolution("bit-hyperrule", "bit-hyperrule")
    check_resolution("paper", "paper")
    with pytest.raises(ValueError, match="goes with --protocol bit-hyperrule"):
        check_resolution("paper", "bit-hyperrule")
    with pytest.raises(ValueError, match="unknown resolution rule"):
        check_resolution("bit-hyperrule", "bit")


def test_vtab_run_records_the_rule(checkpoint, tmp_path):
    seen = {}

    def finetune(recipe):  # records what each task would train with, without training
        seen[recipe.data.task] = (recipe.model.image_size, recipe.data.resize_size)
        return SimpleNamespace(eval_accuracy=0.5, steps=recipe.train.steps)

    out = tmp_path / "results"
    run_vtab(checkpoint, ["vtab/svhn", "vtab/resisc45"], protocol="bit-hyperrule", resolution="bit-hyperrule",
             output_dir=out, overrides=["run.trackers=[]"], finetune_fn=finetune, log=lambda _: None)
    assert seen == {"vtab/svhn": (128, 160), "vtab/resisc45": (480, 512)}
    record = json.loads((out / runs.VTAB).read_text())
    assert record["protocol"]["resolution"]["rule"] == "bit-hyperrule"
    assert record["tasks"]["vtab/svhn"]["hyperparameters"]["resolution"] == 128
    assert record["tasks"]["vtab/svhn"]["hyperparameters"]["resize_size"] == 160
    assert "Resolution per task, in place of the 384 px above: BiT's released code" in (out / "vtab.md").read_text()
    with pytest.raises(ValueError, match="goes with --protocol bit-hyperrule"):
        run_vtab(checkpoint, ["vtab/svhn"], resolution="bit-hyperrule", output_dir=tmp_path / "other",
                 finetune_fn=finetune, log=lambda _: None)
