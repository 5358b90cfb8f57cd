"""BiT ResNets as first-class models: the variant table against BiT's published parameter counts
and timm's ResNetV2, the family helpers (`hf_vit_repro.models`), and a tiny BiT through the
package's doors: recipes, training from scratch and from a checkpoint, evaluation, few-shot,
VTAB's recipe choice, the model card and a push dry run. Tiny models on scikit-learn's digits."""

import json
import math
from functools import partial

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, BitConfig, BitForImageClassification

from hf_vit_repro import hub, models, runs, training
from hf_vit_repro.cli import main
from hf_vit_repro.configuration_vit_repro import ViTReproConfig
from hf_vit_repro.training import Recipe, RecipeError, train
from hf_vit_repro.variants import (
    BIT_PUBLISHED_PARAMETERS,
    BIT_VARIANTS,
    bit_config,
    canonical_name,
)

from .conftest import randomize_

TINY_BIT = dict(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16, num_groups=8)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("spelling", ["BiT-R50x1", "bit-r50x1", "BiT-M-R50x1", "R50x1", "bit_r50x1"])
def test_bit_names_are_recognised(spelling):
    assert models.family_for_variant(spelling) is models.BIT and canonical_name(spelling) == "BiT-R50x1"
    assert models.family_for_variant("R50+ViT-B/16") is models.HYBRID and models.family_for_variant("ViT-B/16") is models.VIT


def test_unknown_bit_variant_and_wrong_family_are_explained():
    with pytest.raises(ValueError, match="Unknown BiT variant.*Did you mean BiT-R50x"):
        canonical_name("BiT-R50x5")
    with pytest.raises(ValueError, match="is a BiT ResNet, not a ViT.*bit_config"):
        ViTReproConfig.from_variant("BiT-R152x2")
    assert isinstance(models.config_from_variant("BiT-R152x2"), BitConfig)
    assert isinstance(models.config_from_variant("ViT-B/16"), ViTReproConfig)


@pytest.mark.parametrize("name", list(BIT_PUBLISHED_PARAMETERS))
def test_parameter_counts_equal_the_published_ones(name):
    """BiT's released weights, as timm's model cards count them (0.1M resolution), with the head
    those weights have (1000 or 21843 classes)."""
    millions, classes, _ = BIT_PUBLISHED_PARAMETERS[name]
    with torch.device("meta"):
        model = BitForImageClassification(bit_config(name, num_labels=classes))
    assert round(count(model) / 1e6, 1) == millions


#: The paper's Table 6 ResNets (+ BiT's released R50x3, R101x3): name -> timm ResNetV2 (layers, width).
@pytest.mark.parametrize("name", list(BIT_VARIANTS))
def test_parameter_counts_equal_timms_resnetv2(name):
    """Independent reference: timm's ResNetV2 built as its `resnetv2_*_bit` models are (stem
    "fixed", weight-standardised convs), with BiT's blocks per stage and width factor."""
    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    from hf_vit_repro.variants import BIT_DEPTHS

    depth, width = BIT_VARIANTS[name]
    with torch.device("meta"):
        reference = ResNetV2(layers=list(BIT_DEPTHS[depth]), width_factor=width, num_classes=1000, stem_type="fixed",
                             conv_layer=partial(StdConv2d, eps=1e-8))
        ours = BitForImageClassification(bit_config(name, num_labels=1000))
    assert count(ours) == count(reference)


def test_bit_config_refuses_what_bit_does_not_have():
    with pytest.raises(ValueError, match="no pre-logits layer"):
        bit_config("BiT-R50x1", representation_size=768)
    with pytest.raises(ValueError, match="no dropout"):
        bit_config("BiT-R50x1", hidden_dropout_prob=0.1)
    with pytest.raises(ValueError, match="width_factor.*must be 1"):
        bit_config("BiT-R50x1", width_factor=2)
    with pytest.raises(ValueError, match="num_groups.*must divide"):
        bit_config("BiT-R50x1", **{**TINY_BIT, "num_groups": 32})
    config = bit_config("BiT-R50x1", representation_size=None, hidden_dropout_prob=0.0, image_size=96, **TINY_BIT)
    assert config.image_size == 96 and config.layer_type == "preactivation" and config.global_padding is None


def test_variants_command_lists_the_bit_resnets(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "BiT-R152x4" in out and "BiT-R200x3" in out and "3, 24, 36, 3" in out
    with torch.device("meta"):
        r50 = count(BitForImageClassification(bit_config("BiT-R50x1", num_labels=0)))
    assert f"{r50 / 1e6:.1f}M" in out.split("BiT-R50x1")[1].splitlines()[0]


# --------------------------------------------------------------------------- family helpers


@pytest.fixture
def tiny_bit():
    torch.manual_seed(0)
    model = BitForImageClassification(bit_config("BiT-R50x1", num_labels=3, image_size=32, **TINY_BIT)).eval()
    return randomize_(model, std=0.3)


def test_reset_classifier_attaches_a_zero_head(tiny_bit):
    models.BIT.reset_head(tiny_bit, 7, id2label={i: f"c{i}" for i in range(7)})
    head = tiny_bit.classifier[1]
    assert head.out_features == 7 and head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    assert tiny_bit.config.num_labels == 7 and tiny_bit.config.label2id["c3"] == 3
    logits = tiny_bit(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 7) and logits.abs().sum() == 0


def test_pre_logits_are_the_pooled_final_features(tiny_bit):
    """BiT's representation: the final GroupNorm + ReLU, averaged over space (B, C)."""
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        features = models.family_of(tiny_bit).pre_logits(tiny_bit, x)
        bit = tiny_bit.bit
        expected = bit.norm(bit.encoder(bit.embedder(x)).last_hidden_state).mean(dim=(2, 3))
        logits = tiny_bit(x).logits
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=1e-5)
    assert features.shape == (2, 64) and (features >= 0).all()  # after the ReLU
    torch.testing.assert_close(tiny_bit.classifier[1](features), logits, atol=1e-6, rtol=1e-5)


def test_weight_decay_skips_the_one_dimensional_parameters(tiny_bit):
    decay, no_decay = training.parameter_groups(tiny_bit, 0.1)
    shapes = dict(tiny_bit.named_parameters())
    assert no_decay["names"] and all(shapes[n].ndim == 1 for n in no_decay["names"])
    assert all(shapes[n].ndim > 1 for n in decay["names"])
    assert "classifier.1.weight" in decay["names"] and "classifier.1.bias" in no_decay["names"]
    assert "bit.encoder.stages.0.layers.0.norm1.weight" in no_decay["names"]


def test_image_size_is_recorded_not_resampled(tiny_bit):
    family = models.family_of(tiny_bit)
    assert family.image_size(tiny_bit) == 32
    family.set_image_size(tiny_bit, 48)
    assert tiny_bit.config.image_size == 48 and family.image_size(tiny_bit) == 48
    assert family.image_size(BitConfig()) is None  # a checkpoint from elsewhere records none


# --------------------------------------------------------------------------- recipes and training


def tiny_bit_recipe(tmp_path, name="bit", **changes) -> Recipe:
    recipe = Recipe.from_dict({
        "name": name,
        "mode": "pretrain",
        "model": {"variant": "BiT-R50x1", "image_size": 32, "config": dict(TINY_BIT)},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 32, "max_eval_examples": 16},
        "optim": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1},
        "train": {"steps": 3, "global_batch_size": 8, "micro_batch_size": 8},
        "run": {"output_dir": str(tmp_path / name), "checkpoint_every": 2, "progress_bar": False, "trackers": []},
    })
    return recipe.replace(**changes) if changes else recipe


@pytest.fixture(scope="module")
def bit_run(tmp_path_factory):
    """A tiny BiT pretrained 3 steps on digits: the run folder."""
    root = tmp_path_factory.mktemp("bitrun")
    result = train(tiny_bit_recipe(root))
    assert result.completed
    return result.run_dir


def test_a_bit_recipe_refuses_vit_only_settings(tmp_path):
    for key, value in (("model.dropout", 0.1), ("model.drop_path_rate", 0.1), ("model.representation_size", 64),
                       ("model.gradient_checkpointing", True)):
        with pytest.raises(RecipeError, match=f"BiT ResNet.*{key}"):
            tiny_bit_recipe(tmp_path, **{key: value})


def test_smoke_switch_shrinks_a_bit_recipe_to_a_tiny_bit(tmp_path):
    recipe = training.load_recipe("recipes/pretrain_bit_r152x2_imagenet21k.yaml", ["smoke=true"])
    assert recipe.model.variant == "BiT-R152x2" and recipe.model.config == training.SMOKE_BIT
    model = training.build_model(recipe, num_classes=10)
    assert isinstance(model, BitForImageClassification) and list(model.config.depths) == [1, 1]
    assert model.config.image_size == 32 and count(model) < 20_000


def test_pretraining_writes_a_native_transformers_checkpoint(bit_run):
    final = bit_run / runs.FINAL_DIR
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "bit" and "auto_map" not in config and config["image_size"] == 32
    assert not list(final.glob("*.py"))  # no remote code: transformers has the class
    model = AutoModelForImageClassification.from_pretrained(final)
    assert isinstance(model, BitForImageClassification) and model.config.num_labels == 10
    summary = runs.read_json(bit_run / runs.TRAIN_SUMMARY)
    assert summary["steps"] == 3 and summary["num_parameters"] == count(model)


def test_finetuning_a_bit_checkpoint_attaches_a_zero_head(bit_run, tmp_path):
    recipe = tiny_bit_recipe(tmp_path, "ft", **{"mode": "finetune", "model.init_from": str(bit_run),
                                                "model.image_size": 48, "optim.optimizer": "sgd",
                                                "optim.schedule": "step", "optim.warmup_steps": 0})
    model = training.build_model(recipe, num_classes=4)
    pretrained = AutoModelForImageClassification.from_pretrained(bit_run / runs.FINAL_DIR)
    assert model.classifier[1].out_features == 4 and model.classifier[1].weight.abs().sum() == 0
    assert model.config.image_size == 48
    torch.testing.assert_close(model.bit.embedder.convolution.weight, pretrained.bit.embedder.convolution.weight)
    result = train(recipe)
    # a zero head gives uniform predictions: the first loss is ln(10) on the digits' 10 classes
    assert result.losses[0][1] == pytest.approx(math.log(10), abs=1e-5)


def test_checkpoints_of_another_architecture_are_refused(bit_run, tmp_path):
    vit = tiny_bit_recipe(tmp_path, "to-vit", **{"mode": "finetune", "model.init_from": str(bit_run),
                                                 "model.variant": "ViT-B/16", "model.config": {}})
    with pytest.raises(RecipeError, match="different architecture.*BiT ResNet, blocks per stage \\[1, 1\\].*width 768"):
        train(vit)
    full = tiny_bit_recipe(tmp_path, "to-r50", **{"mode": "finetune", "model.init_from": str(bit_run), "model.config": {}})
    with pytest.raises(RecipeError, match="different architecture.*\\[1, 1\\].*\\[3, 4, 6, 3\\]"):
        train(full)
    wider = tiny_bit_recipe(tmp_path, "wide", **{"model.config": {**TINY_BIT, "hidden_sizes": [32, 128]},
                                                 "run.resume": str(training.latest_checkpoint(bit_run))})
    with pytest.raises(RecipeError, match="another architecture.*\\[32, 64\\].*\\[32, 128\\]"):
        train(wider)
    dropout = tiny_bit_recipe(tmp_path, "ft", **{"mode": "finetune", "model.init_from": str(bit_run),
                                                 "model.variant": None, "model.config": {}})
    with pytest.raises(RecipeError, match="BiT ResNet, which has no dropout"):
        training.build_model(dropout.replace(**{"model.dropout": 0.1}), num_classes=10)
    with pytest.raises(RecipeError, match="init_from.*BiT ResNet.*remove model.gradient_checkpointing=True"):
        training.build_model(dropout.replace(**{"model.gradient_checkpointing": True}), num_classes=10)


# --------------------------------------------------------------------------- evaluation


def _hand_logits(model, dataset, size):
    """Logits of the evaluation preprocessing (resize to `size`, [-1, 1]) computed by hand."""
    images = [np.asarray(image.convert("RGB").resize((size, size), resample=2), dtype=np.float32) for image in dataset["image"]]
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        return model(x).logits


def test_evaluate_a_bit_run(bit_run, capsys):
    from hf_vit_repro.data import load_task

    assert main(["evaluate", str(bit_run), "digits", "--split", "test", "--max-images", "40", "--no-progress"]) == 0
    record = runs.read_json(runs.metrics_path(bit_run, "digits", "test"))
    assert record["resolution"] == 32 and record["num_images"] == 40
    model = AutoModelForImageClassification.from_pretrained(bit_run / runs.FINAL_DIR).eval()
    test = load_task("digits", "test").select(range(40))
    predicted = _hand_logits(model, test, 32).argmax(-1).numpy()
    assert record["metrics"]["accuracy"] == pytest.approx(float((predicted == np.asarray(test["label"])).mean()), abs=0.03)
    # at another resolution: a ResNet runs at any size, the record says which
    out = bit_run / "eval48.json"
    assert main(["evaluate", str(bit_run), "digits", "--split", "test", "--max-images", "8", "--resolution", "48",
                 "--output-dir", str(out), "--no-progress"]) == 0
    assert runs.read_json(out)["resolution"] == 48


def test_fewshot_of_a_bit_run_uses_its_pooled_features(bit_run, tmp_path):
    from hf_vit_repro.data import load_task
    from hf_vit_repro.evaluation.fewshot import extract_features

    model = AutoModelForImageClassification.from_pretrained(bit_run / runs.FINAL_DIR).eval()
    test = load_task("digits", "test")
    features, labels = extract_features(model, test, range(6), preprocessing="resize", progress=False)
    images = [np.asarray(image.convert("RGB").resize((32, 32), resample=2), dtype=np.float32) for image in test.select(range(6))["image"]]
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        expected = models.family_of(model).pre_logits(model, x).numpy()
    assert features.shape == (6, 64) and list(labels) == list(test.select(range(6))["label"])
    np.testing.assert_allclose(features, expected, atol=2e-2)  # PIL vs the loader's resize: small differences
    assert main(["fewshot", str(bit_run), "digits", "--shots", "1", "5", "--seeds", "1", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    result = runs.read_json(bit_run / runs.FEWSHOT)["results"]["digits"]
    assert set(result) == {"1", "5"} and 0.0 <= result["5"]["mean"] <= 1.0


def test_vtab_protocols_for_a_bit_checkpoint(bit_run):
    """The paper's protocol runs a ResNet too (its recipe's dropout switched off: a ResNet has
    none); `bit-hyperrule` is BiT's own one setting, from recipes/finetune_bit_vtab.yaml."""
    from hf_vit_repro.vtab import base_recipe, default_recipe_path

    final = str(bit_run / runs.FINAL_DIR)
    assert default_recipe_path("bit-hyperrule").name == "finetune_bit_vtab.yaml"
    assert default_recipe_path().name == "finetune_vtab.yaml"
    bit = base_recipe(None, [], final, protocol="bit-hyperrule")
    assert (bit.optim.lr, bit.optim.lr_sweep, bit.optim.schedule, bit.train.steps) == (0.003, [], "step", 500)
    assert bit.model.dropout == 0.0 and bit.model.init_from == final
    paper = base_recipe(None, [], final)
    assert (paper.optim.lr, paper.train.steps, paper.model.image_size, paper.optim.schedule) == (0.01, 2500, 384, "cosine")
    assert paper.model.dropout == 0.0  # finetune_vtab.yaml says 0.1 for its ViT
    model = training.build_model(paper.replace(**{"model.variant": None, "model.config": {}}), num_classes=5)
    assert isinstance(model, BitForImageClassification) and model.classifier[1].out_features == 5


def test_analysis_refuses_a_bit_model(tiny_bit):
    from hf_vit_repro.analysis import analyze_model

    with pytest.raises(ValueError, match="BiT ResNet.*exist only for Vision Transformers"):
        analyze_model(tiny_bit, [np.zeros((32, 32, 3), dtype=np.uint8)], "unused")


# --------------------------------------------------------------------------- card and push


def test_card_and_push_dry_run_of_a_bit_run(bit_run, tmp_path, capsys):
    out = tmp_path / "staged"
    assert main(["push", str(bit_run), "someone/tiny-bit", "--dry-run", "--output-dir", str(out)]) == 0
    assert "passed validation" in capsys.readouterr().out
    staged = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "recipe.yaml"} <= staged
    assert not any(name.endswith(".py") for name in staged)  # no remote code to ship
    text = (out / "README.md").read_text()
    metadata = text.split("---")[1]
    assert "- bit" in metadata and "- resnet" in metadata and "vision-transformer" not in metadata
    body = text.split("\n---\n", 1)[1]
    params = count(AutoModelForImageClassification.from_pretrained(out))
    assert "A **custom BiT** ResNet" in body and f"{params:,}" in body
    assert "| Blocks per stage | 1, 1 |" in body and "| Stage widths | 32, 64 (stem 16) |" in body
    assert "| Resolution | 32 x 32 |" in body and "| Pre-logits features | 64" in body
    assert "trust_remote_code" not in body and "Patch size" not in body and "Tokens" not in body
    assert "@inproceedings{kolesnikov2020big" in body and "@inproceedings{dosovitskiy2021an" in body


def test_card_names_a_paper_bit_variant_with_its_published_count(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "r152x4"
    bit_config("BiT-R152x4", num_labels=10, image_size=480).save_pretrained(folder)
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")  # cards read only the header
    runs.write_json(runs.metrics_path(folder, "imagenet1k", "test"), runs.metrics_record(
        checkpoint="c", task="imagenet1k", dataset="timm/imagenet-1k-wds", split="test", resolution=480,
        num_images=10, metrics={"accuracy": 0.5}))
    body = hub.model_card(folder, "someone/r152x4").text
    assert "| Architecture | BiT-R152x4: ResNet-v2" in body and "| Depth / width factor | 152 / 4 |" in body
    assert "936.5M parameters with a 1000-class head" in body
