"""The model families (`hf_vit_repro.models`): each one, built tiny from a variant name, answers for
itself (classifier class, new head, resolution, pre-logits features, FLOPs), and names no one
knows are refused with the families listed. Tiny models (DESIGN.md: image 32, width 32, 2 layers)."""

import pytest
import torch
from transformers import BitForImageClassification, ViTConfig

from hf_vit_repro import models
from hf_vit_repro.configuration_vit_repro import ViTReproConfig
from hf_vit_repro.flops import forward_flops
from hf_vit_repro.modeling_vit_repro import ViTReproForImageClassification
from hf_vit_repro.training import Recipe

from .conftest import randomize_

#: family -> (a variant name, the overrides that shrink it, the classifier class transformers / this package define)
CASES = {
    "vit": (models.VIT, "ViT-B/16", dict(models.SMOKE_MODEL, image_size=32), ViTReproForImageClassification),
    "hybrid": (models.HYBRID, "R50+ViT-B/16",
               dict(models.SMOKE_MODEL, patch_size=2, backbone_config=dict(models.SMOKE_BACKBONE), image_size=32),
               ViTReproForImageClassification),
    "bit": (models.BIT, "BiT-R50x1", dict(models.SMOKE_BIT, image_size=32), BitForImageClassification),
}


def tiny_model(key: str):
    family, name, overrides, _ = CASES[key]
    torch.manual_seed(0)
    config = family.config_from_variant(name, num_labels=3, **overrides)
    return randomize_(family.classifier_class()(config).eval(), std=0.2)


@pytest.mark.parametrize("key", list(CASES))
def test_each_family_builds_its_variants_and_knows_its_models(key):
    family, name, overrides, classifier = CASES[key]
    assert models.family_for_variant(name) is family
    assert name in family.variant_names()
    config = models.config_from_variant(name, num_labels=3, **overrides)
    assert models.family_of(config) is family and models.family_of(config.to_dict()) is family
    assert family.classifier_class() is classifier
    model = tiny_model(key)
    assert isinstance(model, classifier) and models.family_of(model) is family


@pytest.mark.parametrize("key", list(CASES))
def test_reset_head_changes_the_number_of_labels(key):
    family = CASES[key][0]
    model = tiny_model(key)
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)
    family.reset_head(model, 5, id2label={i: f"c{i}" for i in range(5)})
    logits = model(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 5) and model.config.num_labels == 5 and model.config.id2label[4] == "c4"
    assert logits.abs().sum() == 0  # the paper's zero-initialised head (Sec. 3.2)


@pytest.mark.parametrize("key", list(CASES))
def test_set_image_size_runs_the_model_at_the_new_size(key):
    family = CASES[key][0]
    model = tiny_model(key)
    assert family.image_size(model) == 32
    family.set_image_size(model, 48)
    assert family.image_size(model) == 48 and family.image_hw(model.config) == (48, 48)
    assert model(torch.randn(1, 3, 48, 48)).logits.shape == (1, 3)
    assert family.check_resolution(model, 48) == 48


def test_resolutions_a_vit_cannot_take_are_refused_and_a_resnet_takes_any():
    with pytest.raises(ValueError, match="not a multiple of the model's patch size"):
        models.VIT.check_resolution(tiny_model("vit"), 36)
    with pytest.raises(ValueError, match="patch size times its CNN's stride"):
        models.HYBRID.check_resolution(tiny_model("hybrid"), 36)
    assert models.BIT.check_resolution(tiny_model("bit"), 37) == 37


@pytest.mark.parametrize("key", list(CASES))
def test_pre_logits_are_what_the_classifier_reads(key):
    family = CASES[key][0]
    model = tiny_model(key)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = family.pre_logits(model, x)
        logits = model(pixel_values=x).logits
        from_features = model.classifier(features)
    assert features.shape == (2, family.pre_logits_dim(model.config))
    torch.testing.assert_close(from_features, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", list(CASES))
def test_flops_are_positive_grow_with_resolution_and_match_the_formula_module(key):
    family = CASES[key][0]
    config = tiny_model(key).config
    small, large = family.flops(config, 32), family.flops(config, 64)
    assert 0 < small < large
    assert small == forward_flops(config, 32)
    assert family.flops(config, 32, head=False) == small - 2 * family.pre_logits_dim(config) * 3  # a 3-way dense head


def test_unknown_names_and_models_are_refused_with_the_families_listed():
    with pytest.raises(ValueError, match=r"(?s)Unknown ViT variant 'ResNeXt-101'.*BiT ResNet: BiT-R50x1.*"
                                         r"hybrid.*R50\+ViT-B/16.*ViT: ViT-<size>/<patch>"):
        models.family_for_variant("ResNeXt-101")
    with pytest.raises(ValueError, match="Unknown BiT variant.*The model families"):
        models.family_for_variant("BiT-R50x5")
    with pytest.raises(ValueError, match="model_type 'vit'.*none of this package's model families.*BiT ResNet"):
        models.family_of(ViTConfig())
    assert models.find_family(ViTConfig()) is None


def test_a_config_decides_between_vit_and_hybrid():
    assert models.family_for_variant(None) is models.VIT
    assert models.family_for_variant(None, {"backbone_config": {"depths": [1]}}) is models.HYBRID
    assert models.family_for_variant("ViT-B/16", {"backbone_config": {"depths": [1]}}) is models.HYBRID
    assert models.family_of(ViTReproConfig(backbone_config=dict(models.SMOKE_BACKBONE))) is models.HYBRID


def test_what_a_recipe_may_ask_of_each_family():
    recipe = Recipe.from_dict({"name": "x", "model": {"variant": "ViT-B/16", "dropout": 0.1}}, validate=False)
    assert models.VIT.recipe_problem(recipe.model) is None
    problem = models.BIT.recipe_problem(recipe.model, "`model.init_from` 'run'")
    assert problem.startswith("`model.init_from` 'run' is a BiT ResNet") and "model.dropout=0.1" in problem
    assert models.VIT.masked_patch_prediction_problem("ViT-B/16") is None
    assert "hybrid's CNN" in models.HYBRID.masked_patch_prediction_problem("R50+ViT-B/16")
    assert "no patch tokens" in models.BIT.masked_patch_prediction_problem("BiT-R50x1")
    assert models.BIT.smoke_config({"num_labels": 2}) == {"num_labels": 2, **models.SMOKE_BIT}
    assert models.HYBRID.smoke_config({})["backbone_config"] == models.SMOKE_BACKBONE
    assert [f.paper_label for f in (models.VIT, models.HYBRID, models.BIT)] == ["ViT", "Hybrid", "ResNet (BiT)"]
