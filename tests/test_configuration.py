import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro.variants import PAPER_PARAMETER_COUNTS, canonical_name, variant_kwargs, variant_names, variant_of

from .conftest import tiny_kwargs


def test_defaults_are_vit_b16_with_original_layer_norm_eps():
    config = ViTReproConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.intermediate_size == 3072 and config.patch_size == 16 and config.image_size == 224
    assert config.layer_norm_eps == 1e-6
    assert config.pooling == "token" and config.classifier_init == "zeros"
    assert config.model_type == "vit_repro"


def test_non_square_image_and_derived_values():
    config = ViTReproConfig(**tiny_kwargs(image_size=(32, 48)))
    assert config.image_hw == (32, 48)
    assert config.grid_size == (4, 6)
    assert config.num_prefix_tokens == 1
    assert ViTReproConfig(**tiny_kwargs(pooling="gap")).num_prefix_tokens == 0
    assert ViTReproConfig(**tiny_kwargs(representation_size=20)).pooled_size == 20


@pytest.mark.parametrize(
    "overrides, field, rule",
    [
        ({"pooling": "mean"}, "pooling", "must be one of"),
        ({"classifier_init": "xavier"}, "classifier_init", "must be one of"),
        ({"position_embedding_interpolation": "lanczos"}, "position_embedding_interpolation", "must be one of"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob", "probability"),
        ({"drop_path_rate": 1.0}, "drop_path_rate", "[0, 1)"),
        ({"drop_path_rate": -0.1}, "drop_path_rate", "[0, 1)"),
        ({"num_hidden_layers": 0}, "num_hidden_layers", "positive"),
        ({"representation_size": -1}, "representation_size", "positive"),
        ({"hidden_act": "swishy"}, "hidden_act", "known activation"),
        ({"mpp_corruption_rate": 1.5}, "mpp_corruption_rate", "(0, 1]"),
        ({"mpp_corruption_split": (0.8, 0.1)}, "mpp_corruption_split", "summing to 1"),
        ({"mpp_corruption_split": (0.9, 0.2, -0.1)}, "mpp_corruption_split", "non-negative"),
        ({"mpp_target": "mean_color_8bit"}, "mpp_target", "must be one of"),
        ({"mpp_image_mean": [0.5, 0.5]}, "mpp_image_mean", "one value per input channel"),
        ({"mpp_image_std": [0.5, 0.0, 0.5]}, "mpp_image_std", "positive"),
        ({"encoder_stride": -8}, "encoder_stride", "positive integer"),
    ],
)
def test_invalid_configs_raise_naming_field_value_and_rule(overrides, field, rule):
    with pytest.raises(StrictDataclassError) as info:
        ViTReproConfig(**tiny_kwargs(**overrides))
    message = str(info.value)
    assert field in message and rule in message
    value = overrides[field] if field in overrides else next(iter(overrides.values()))
    assert str(value if not isinstance(value, tuple) else value[0]) in message


@pytest.mark.parametrize(
    "overrides, field, rule",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size", "divisible by `num_attention_heads`"),
        ({"hidden_size": 37, "num_attention_heads": 12}, "hidden_size", "divisible by `num_attention_heads`"),
        ({"image_size": 30}, "image_size", "divisible by `patch_size`"),
        ({"image_size": (32, 36)}, "image_size", "divisible by `patch_size`"),
    ],
)
def test_sizes_relating_fields_are_checked_when_the_model_is_built(overrides, field, rule):
    """As transformers' ViTConfig: `ViTConfig(hidden_size=37)` is a valid config; the model says
    what is wrong when it is built (issue 14, item 4)."""
    from transformers import ViTConfig

    ViTConfig(**{k: v for k, v in overrides.items() if k != "image_size" or isinstance(v, int)})  # accepted there
    config = ViTReproConfig(**tiny_kwargs(**overrides))  # accepted here
    for model_cls in (ViTReproModel, ViTReproForImageClassification):
        with pytest.raises(ValueError) as info:
            model_cls(config)
        message = str(info.value)
        assert field in message and rule in message and str(overrides[field]) in message
    # Generic tooling changes fields one at a time: an odd intermediate state is fine.
    config = ViTReproConfig(**tiny_kwargs(hidden_size=30))
    config.hidden_size = 32
    assert ViTReproModel(config).config.hidden_size == 32


def test_self_supervision_fields_defaults_round_trip_and_variants(tmp_path):
    """Paper Sec. 4.6 defaults; the fields survive JSON and `from_variant` overrides."""
    config = ViTReproConfig()
    assert config.mpp_corruption_rate == 0.5 and tuple(config.mpp_corruption_split) == (0.8, 0.1, 0.1)
    assert config.mpp_target == "mean_color_3bit" and config.encoder_stride is None
    assert config.mpp_normalization == ((0.5,) * 3, (0.5,) * 3)
    grey = ViTReproConfig(**tiny_kwargs(num_channels=1, mpp_image_mean=[0.45], mpp_image_std=[0.2]))
    assert grey.mpp_normalization == ((0.45,), (0.2,))
    config = ViTReproConfig.from_variant(
        "ViT-B/16", mpp_corruption_rate=0.15, mpp_corruption_split=[1, 0, 0], mpp_target="l2_patch", encoder_stride=16
    )
    assert config.hidden_size == 768 and config.mpp_corruption_rate == 0.15 and config.mpp_target == "l2_patch"
    config.save_pretrained(tmp_path)
    loaded = ViTReproConfig.from_pretrained(tmp_path)
    assert list(loaded.mpp_corruption_split) == [1, 0, 0] and loaded.encoder_stride == 16
    assert loaded.to_dict() == config.to_dict()


def test_wrong_types_are_rejected():
    with pytest.raises(StrictDataclassError, match="num_hidden_layers"):
        ViTReproConfig(**tiny_kwargs(num_hidden_layers="2"))


def test_json_round_trip(tmp_path):
    config = ViTReproConfig(**tiny_kwargs(image_size=(32, 48), pooling="gap", representation_size=16))
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "vit_repro" and saved["pooling"] == "gap"
    loaded = ViTReproConfig.from_pretrained(tmp_path)
    assert loaded.image_hw == (32, 48) and loaded.representation_size == 16
    assert loaded.to_dict() == config.to_dict()


@pytest.mark.parametrize("name", ["vit_b_16", "B/16", "ViT-B_16", "vit-b/16"])
def test_variant_name_spellings(name):
    assert canonical_name(name) == "ViT-B/16"


def test_unknown_variant_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean ViT-B/16"):
        canonical_name("ViT-B/61")
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        ViTReproConfig.from_variant("ViT-XL/16")


def test_from_variant_with_overrides():
    config = ViTReproConfig.from_variant("ViT-L/16", image_size=384, num_labels=10)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        1024,
        24,
        16,
        4096,
    )
    assert config.patch_size == 16 and config.image_size == 384 and config.num_labels == 10
    assert len(variant_names()) == 20 + 6  # 5 sizes x 4 patch sizes, and the 6 named hybrids


def test_cli_lists_the_hybrids(capsys):
    from hf_vit_repro.cli import main

    assert main(["variants", "--patch", "32"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows[1:] if "+" in row] == ["R50+ViT-B/32", "R50+ViT-L/32", "R26+ViT-S/32", "R26+ViT-B/32"]


def test_variant_of_names_a_config_by_its_architecture(tmp_path):
    """Every named variant is recognised from its config (also after a save / load round trip, and
    at another resolution or head); an architecture outside the table is None."""
    for name in variant_names():
        assert variant_of(ViTReproConfig.from_variant(name, image_size=448, num_labels=7)) == name  # 448: every patch divides it
    ViTReproConfig.from_variant("R50+ViT-L/32").save_pretrained(tmp_path)
    assert variant_of(ViTReproConfig.from_pretrained(tmp_path)) == "R50+ViT-L/32"
    assert variant_of(ViTReproConfig(**tiny_kwargs())) is None
    assert variant_of(ViTReproConfig.from_variant("ViT-B/16", num_hidden_layers=6)) is None


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["ViT-Ti/16", "ViT-S/16", "ViT-B/16", "ViT-B/32", "ViT-L/16", "ViT-H/14"])
def test_parameter_counts_equal_timm(name):
    """Independent reference: timm builds the same architecture and counts the same parameters."""
    import timm

    kwargs = variant_kwargs(name)
    timm_name = {
        "ViT-Ti/16": "vit_tiny_patch16_224",
        "ViT-S/16": "vit_small_patch16_224",
        "ViT-B/16": "vit_base_patch16_224",
        "ViT-B/32": "vit_base_patch32_224",
        "ViT-L/16": "vit_large_patch16_224",
        "ViT-H/14": "vit_huge_patch14_224",
    }[name]
    with torch.device("meta"):
        reference = timm.create_model(timm_name, pretrained=False, num_classes=1000)
        ours = ViTReproForImageClassification(ViTReproConfig(**kwargs, num_labels=1000))
    assert _count(ours) == _count(reference)


def test_parameter_counts_match_paper_table_1():
    """Paper, Table 1: B/16 86M, L/16 307M, H/14 632M.

    Count definition: all parameters of the model fine-tuned on ImageNet at 224, i.e. with the
    1000-class head and no representation layer. B/16 gives 86.6M and H/14 632.0M. L/16 gives
    304.3M (the same count timm and transformers give for this architecture); the paper's 307M is
    0.9% above it, so the check is the nearest million within 1%.
    """
    for name, paper_millions in PAPER_PARAMETER_COUNTS.items():
        with torch.device("meta"):
            model = ViTReproForImageClassification(ViTReproConfig.from_variant(name, num_labels=1000))
        millions = _count(model) / 1e6
        assert abs(millions - paper_millions) / paper_millions < 0.01, (name, millions)
    with torch.device("meta"):
        base = ViTReproModel(ViTReproConfig.from_variant("ViT-B/16"))
    assert round(_count(base) / 1e6) == 86  # without any head B/16 is 85.8M


def test_normalisation_fields_take_one_number_for_every_channel(tmp_path):
    """`mpp_image_mean` / `mpp_image_std` accept a float as the image processors' fields do: transformers'
    own model tests (`_config_zero_init`) set every `*_std` key to 1e-10 (issue 24 item 6)."""
    from hf_vit_repro import ViTReproForMaskedPatchPrediction

    config = ViTReproConfig(**tiny_kwargs(mpp_image_mean=0.25, mpp_image_std=1e-10))
    assert config.mpp_normalization == ((0.25,) * 3, (1e-10,) * 3)
    ViTReproForMaskedPatchPrediction(config).save_pretrained(tmp_path)
    loaded = ViTReproConfig.from_pretrained(tmp_path)
    assert loaded.mpp_image_std == 1e-10 and loaded.mpp_normalization == config.mpp_normalization
    with pytest.raises(StrictDataclassError, match="`mpp_image_std` must be positive, got 0.0"):
        ViTReproConfig(**tiny_kwargs(mpp_image_std=0.0))
    with pytest.raises(StrictDataclassError, match="one value per input channel"):
        ViTReproConfig(**tiny_kwargs(mpp_image_std=[0.5, 0.5]))
