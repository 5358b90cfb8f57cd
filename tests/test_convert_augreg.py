"""AugReg file names (`hf_vit_repro.convert_augreg`): read into the converted config and the model card.

The names below are real AugReg file names as published (google-research/vision_transformer's README
table and `vit_jax/configs/augreg.py` docstring, its `vit_jax_augreg.ipynb`, and timm's `pretrained_cfg`
URLs into gs://vit_models/augreg), as strings: the files themselves are not downloaded. The round trips
write tiny arrays in the original layout (`test_convert_npz.jax_vit_arrays`) with a ViT-Ti/16's widths
and depth, so the converter's check of the name against the arrays passes.
"""

import json

import numpy as np
import pytest

from hf_vit_repro.cli import main
from hf_vit_repro.convert import convert, load_npz_checkpoint
from hf_vit_repro.convert_augreg import AugRegFinetune, AugRegName, config_settings, parse_augreg_name
from hf_vit_repro.hub import model_card

from .test_convert_npz import jax_vit_arrays

README_L16_FT = "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384"
README_R50_L32 = "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"
README_R_TI16 = "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
COLAB_R26_PETS = "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--oxford_iiit_pet-steps_0k-lr_0.003-res_384"
TIMM_B16_I1K = "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"
TIMM_TI16_I1K = "Ti_16-i1k-300ep-lr_0.001-aug_light0-wd_0.1-do_0.0-sd_0.0"
TIMM_TI16_FT = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"
TI = dict(dim=192, depth=12, heads=3, mlp=768, patch=16, classes=5)


@pytest.mark.parametrize(
    "name, expected",
    [
        (README_R50_L32, AugRegName(README_R50_L32, "R50+ViT-L/32", "i21k", 300, 0.001, "medium1", 0.1, 0.1, 0.1)),
        (README_R_TI16 + ".npz", AugRegName(README_R_TI16, "R+ViT-Ti/16", "i21k", 300, 0.001, "none", 0.03, 0.0, 0.0)),
        (TIMM_TI16_I1K, AugRegName(TIMM_TI16_I1K, "ViT-Ti/16", "i1k", 300, 0.001, "light0", 0.1, 0.0, 0.0)),
        (f"gs://vit_models/augreg/{README_L16_FT}.npz", AugRegName(
            README_L16_FT, "ViT-L/16", "i21k", 300, 0.001, "strong1", 0.1, 0.0, 0.0,
            AugRegFinetune("imagenet2012", 20000, "20k", 0.01, 384))),
        (COLAB_R26_PETS, AugRegName(
            COLAB_R26_PETS, "R26+ViT-S/32", "i21k", 300, 0.001, "light1", 0.1, 0.0, 0.0,
            AugRegFinetune("oxford_iiit_pet", None, "0k", 0.003, 384))),  # Pets' 500 steps round to "0k"
        (f"weights/augreg_{TIMM_B16_I1K}.npz", AugRegName(  # a renamed copy keeps the name after a prefix
            TIMM_B16_I1K, "ViT-B/16", "i1k", 300, 0.001, "strong2", 0.1, 0.1, 0.1,
            AugRegFinetune("imagenet2012", 20000, "20k", 0.01, 224))),
    ],
)
def test_real_names_are_read_field_by_field(name, expected):
    assert parse_augreg_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "ViT-B_16.npz",  # the original paper's files: no training settings in the name
        "imagenet21k+imagenet2012_R50+ViT-B_16.npz",
        "my_finetune.npz",
        "S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0.npz",  # cut short
        "S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012.npz",  # fine-tuning part cut short
        "S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_1.5-sd_0.0.npz",  # dropout is no probability
        "S_16-jft-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0.npz",  # not one of the index's datasets
        "XS_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0.npz",  # not one of the sizes
        "S_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0-extra.npz",
        "",
    ],
)
def test_other_names_claim_nothing(name):
    assert parse_augreg_name(name) is None


def test_config_settings_follow_pretraining_and_fine_tuning():
    # pretrained: the file's own dropout and stochastic depth
    assert config_settings(parse_augreg_name(README_R50_L32)) == {"hidden_dropout_prob": 0.1, "drop_path_rate": 0.1}
    # fine-tuned: vit_jax/configs/augreg.py fine-tunes with dropout 0 ("No AugReg during fine-tuning")
    assert config_settings(parse_augreg_name(TIMM_B16_I1K)) == {"hidden_dropout_prob": 0.0, "drop_path_rate": 0.0}
    name = parse_augreg_name(TIMM_B16_I1K)
    assert AugRegName.from_dict(json.loads(json.dumps(name.to_dict()))) == name


def _convert(tmp_path, name, grid=2, **overrides):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **jax_vit_arrays(**TI, grid=grid))
    folder = convert(path, tmp_path / "out", **overrides)
    return folder, json.loads((folder / "config.json").read_text())


def _card(folder, name):
    return model_card(folder, "someone/augreg-ti", converted_from=f"gs://vit_models/augreg/{name}.npz",
                      license="apache-2.0").text


def test_pretrained_name_round_trip_into_config_and_card(tmp_path):
    folder, config = _convert(tmp_path, TIMM_TI16_I1K)
    assert config["augreg"]["augmentation"] == "light0" and config["augreg"]["finetune"] is None
    assert (config["hidden_dropout_prob"], config["drop_path_rate"]) == (0.0, 0.0)
    text = _card(folder, TIMM_TI16_I1K)
    assert "How the source was trained (its AugReg file name)" in text
    assert f"| AugReg file | `{TIMM_TI16_I1K}` |" in text
    assert "| Pretraining data | ImageNet-1k (ILSVRC-2012) (`i1k`), 300 epochs |" in text
    assert "| Augmentation level | `light0`" in text
    assert "| Weight decay | 0.1 |" in text and "| Pretraining learning rate | 0.001 |" in text
    assert "Fine-tuned on" not in text


def test_regularisation_in_the_name_reaches_the_config(tmp_path):
    # A name of the index's form with dropout and stochastic depth 0.1 (the AugReg grid's regularised
    # setting, as README_R50_L32 has it) on a Ti/16-shaped file: the published Ti files cited here have 0.
    name = "Ti_16-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.1-sd_0.1"
    folder, config = _convert(tmp_path, name)
    assert (config["hidden_dropout_prob"], config["drop_path_rate"]) == (0.1, 0.1)
    assert config["attention_probs_dropout_prob"] == 0.0  # AugReg's `do` is not attention dropout
    model = load_npz_checkpoint(tmp_path / f"{name}.npz")
    assert model.config.drop_path_rates[-1] == pytest.approx(0.1) and model.config.drop_path_rates[0] == 0.0
    text = _card(folder, name)
    assert "| Dropout | 0.1 |" in text and "| Stochastic depth | 0.1 |" in text
    # an explicit override wins over the name
    (tmp_path / "override").mkdir()
    _, overridden = _convert(tmp_path / "override", name, drop_path_rate=0.0)
    assert (overridden["hidden_dropout_prob"], overridden["drop_path_rate"]) == (0.1, 0.0)


def test_cli_says_what_the_name_told_it(tmp_path, capsys):
    path = tmp_path / f"{TIMM_TI16_I1K}.npz"
    np.savez(path, **jax_vit_arrays(**TI, grid=2))
    assert main(["convert", str(path), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Read from the AugReg file name" in out and "augmentation level: light0" in out
    assert "pretraining data: ImageNet-1k (ILSVRC-2012) (i1k), 300 epochs" in out


def test_fine_tuned_name_round_trip(tmp_path):
    folder, config = _convert(tmp_path, TIMM_TI16_FT, grid=14)  # 224 px / 16
    assert config["augreg"]["finetune"] == {"dataset": "imagenet2012", "steps": 20000, "steps_text": "20k",
                                            "lr": 0.03, "resolution": 224}
    assert (config["hidden_dropout_prob"], config["drop_path_rate"], config["image_size"]) == (0.0, 0.0, 224)
    text = _card(folder, TIMM_TI16_FT)
    assert "| Fine-tuned on | `imagenet2012` (TFDS name) |" in text
    assert "| Fine-tuning steps | 20,000 |" in text and "| Fine-tuning learning rate | 0.03 |" in text
    assert "| Fine-tuning resolution | 224 x 224 |" in text
    assert "| Pretraining data | ImageNet-21k (`i21k`), 300 epochs |" in text and "| Weight decay | 0.03 |" in text


def test_malformed_name_converts_and_claims_nothing(tmp_path):
    name = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03"  # cut short: the architecture check still applies
    folder, config = _convert(tmp_path, name)
    assert "augreg" not in config and (config["hidden_dropout_prob"], config["drop_path_rate"]) == (0.0, 0.0)
    text = _card(folder, name)
    assert "AugReg file" not in text and "Augmentation level" not in text
    # a config.json entry that cannot be read is left out of the card, not an error
    config["augreg"] = {"model": "ViT-Ti/16"}
    (folder / "config.json").write_text(json.dumps(config))
    assert "AugReg file" not in _card(folder, name)
