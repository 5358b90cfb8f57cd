"""Converting published BiT ResNet weights into transformers' `BitForImageClassification`.

timm is the reference: a ResNetV2 built as timm's `resnetv2_*_bit` models are, with random
weights, written (1) as a timm hub repo (config.json + model.safetensors in timm's names) and (2)
as a google-research/big_transfer `.npz` (the layout spelled out here, independently of the
converter), which timm's own BiT loader (`timm.models.resnetv2._load_weights`) reads into a
fresh timm model. Each is converted with `vit-repro convert` and the logits compared."""

import json
from functools import partial

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2, _load_weights
from transformers import AutoImageProcessor, AutoModelForImageClassification, BitForImageClassification

from hf_vit_repro.cli import main
from hf_vit_repro.convert import ConversionError, convert, load_checkpoint
from hf_vit_repro.convert_bit import bit_config_from_npz, bit_config_from_timm

from .conftest import randomize_

ATOL = 1e-4
TINY = dict(depths=[1, 2], hidden_sizes=[32, 64], embedding_size=16, num_groups=8)  # what a tiny timm model is


def timm_tiny(num_classes=5, seed=0):
    """A two-stage ResNetV2 built like timm's BiT models (fixed stem, StdConv2d eps 1e-8), 8 groups."""
    torch.manual_seed(seed)
    model = ResNetV2(layers=[1, 2], channels=(32, 64), stem_chs=16, stem_type="fixed", num_classes=num_classes,
                     conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    return randomize_(model, std=0.3, seed=seed).eval()


def write_timm_repo(path, model, architecture="resnetv2_50x1_bit", size=64, labels=None):
    """A timm hub repo's files, as timm's BiT repos hold them (their config.json has no model_args)."""
    path.mkdir(parents=True)
    save_file(model.state_dict(), path / "model.safetensors")
    num_classes = model.num_classes
    pretrained = {"tag": "goog_in21k", "custom_load": True, "input_size": [3, size, size], "interpolation": "bilinear",
                  "crop_pct": 0.875, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": num_classes,
                  "first_conv": "stem.conv", "classifier": "head.fc"}
    config = {"architecture": architecture, "num_classes": num_classes, "num_features": model.num_features,
              "pretrained_cfg": pretrained}
    if labels:
        config["label_names"] = labels
    (path / "config.json").write_text(json.dumps(config))
    return path


def bit_npz_arrays(model) -> dict[str, np.ndarray]:
    """A timm ResNetV2's weights named and laid out as google-research/big_transfer's .npz files:
    kernels HWIO, the head a 1x1 convolution (1, 1, C, K), units counted from 01."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def hwio(name):
        return state[name].transpose(2, 3, 1, 0)

    arrays = {"resnet/root_block/standardized_conv2d/kernel": hwio("stem.conv.weight")}
    for s, stage in enumerate(model.stages):
        for u in range(len(stage.blocks)):
            src, dst = f"stages.{s}.blocks.{u}.", f"resnet/block{s + 1}/unit{u + 1:02d}/"
            for i, part in enumerate("abc", start=1):
                arrays[f"{dst}{part}/standardized_conv2d/kernel"] = hwio(f"{src}conv{i}.weight")
                arrays[f"{dst}{part}/group_norm/gamma"] = state[f"{src}norm{i}.weight"]
                arrays[f"{dst}{part}/group_norm/beta"] = state[f"{src}norm{i}.bias"]
            if f"{src}downsample.conv.weight" in state:
                arrays[f"{dst}a/proj/standardized_conv2d/kernel"] = hwio(f"{src}downsample.conv.weight")
    arrays["resnet/group_norm/gamma"], arrays["resnet/group_norm/beta"] = state["norm.weight"], state["norm.bias"]
    arrays["resnet/head/conv2d/kernel"] = hwio("head.fc.weight")
    arrays["resnet/head/conv2d/bias"] = state["head.fc.bias"]
    return arrays


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


# --------------------------------------------------------------------------- timm repos


def test_timm_repo_of_the_full_r50x1_matches_timm(tmp_path):
    """The real architecture, named only by its timm name: resnetv2_50x1_bit with random weights."""
    reference = randomize_(timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=5), std=0.05).eval()
    folder = write_timm_repo(tmp_path / "timm", reference, labels=["a", "b", "c", "d", "e"])
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, BitForImageClassification) and model.config.id2label[4] == "e"
    assert model.config.image_size == 64 and not list((tmp_path / "out").glob("*.py"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours, theirs = logits(model, x), logits(reference, x)
    assert theirs.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert list(processor.image_mean) == [0.5] * 3 and processor.crop_size == {"height": 64, "width": 64}
    assert processor.size == {"shortest_edge": 73}  # timm's eval transform: floor(64 / crop_pct 0.875), then crop
    assert processor.resample == 2  # timm config: "bilinear"


def test_tiny_timm_repo_with_overrides_at_another_resolution(tmp_path):
    """What timm's config cannot say (a tiny test model's stages) comes as overrides, as for the
    hybrids; `--image-size` only records the new size (a ResNet runs at any size)."""
    reference = timm_tiny()
    folder = write_timm_repo(tmp_path / "timm", reference)
    out = convert(folder, tmp_path / "out", image_size=96, **TINY)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.image_size == 96
    x = torch.randn(3, 3, 96, 80, generator=torch.Generator().manual_seed(1))  # odd shapes: padding matters
    torch.testing.assert_close(logits(model, x), logits(reference, x), atol=ATOL, rtol=0)
    relabelled = convert(folder, tmp_path / "relabelled", num_labels=7, **TINY)
    head = AutoModelForImageClassification.from_pretrained(relabelled).classifier[1]
    assert head.out_features == 7 and head.weight.abs().sum() == 0


def test_timm_bit_config_reads_name_model_args_and_input_size():
    config = bit_config_from_timm({"architecture": "resnetv2_152x4_bit.goog_in21k_ft_in1k", "num_classes": 1000,
                                   "pretrained_cfg": {"input_size": [3, 480, 480]}})
    assert (config.depths, config.hidden_sizes, config.embedding_size) == ([3, 8, 36, 3], [1024, 2048, 4096, 8192], 256)
    assert config.image_size == 480 and config.num_labels == 1000
    args = bit_config_from_timm({"architecture": "resnetv2_50x1_bit", "model_args": {
        "layers": [1, 2], "channels": [32, 64], "stem_chs": 16, "width_factor": 2, "num_classes": 3}}, num_groups=8)
    assert (args.depths, args.hidden_sizes, args.embedding_size, args.num_labels) == ([1, 2], [64, 128], 32, 3)
    with pytest.raises(ConversionError, match="no counterpart in BiT: avg_down"):
        bit_config_from_timm({"architecture": "resnetv2_50x1_bit", "model_args": {"avg_down": True}})
    with pytest.raises(ConversionError, match="ResNet-34"):
        bit_config_from_timm({"architecture": "resnetv2_34x1_bit"})


def test_timm_weights_that_do_not_fit_are_named(tmp_path, capsys):
    reference = timm_tiny()
    folder = write_timm_repo(tmp_path / "timm", reference)
    # the name's full R50x1 does not fit the tiny weights: the shapes say so
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "vit-repro convert: error:" in err and "do not fit the BiT ResNet" in err and "Missing:" in err
    state = dict(reference.state_dict(), **{"stem.extra.weight": torch.zeros(1)})
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ConversionError, match="no counterpart in BitForImageClassification: stem.extra.weight"):
        load_checkpoint(folder, **TINY)


# --------------------------------------------------------------------------- big_transfer .npz


@pytest.mark.parametrize("num_classes", [5, 0])
def test_npz_matches_timms_own_bit_loader(tmp_path, num_classes):
    source = timm_tiny(num_classes=max(num_classes, 5))
    arrays = bit_npz_arrays(source)
    if num_classes == 0:  # a feature extractor without its head
        arrays = {k: v for k, v in arrays.items() if not k.startswith("resnet/head/")}
    path = tmp_path / "BiT-M-tiny.npz"
    np.savez(path, **arrays)
    out = convert(path, tmp_path / "out", num_groups=8)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.image_size == 224 and model.config.num_labels == num_classes
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    if num_classes:
        reference = timm_tiny(num_classes=num_classes, seed=9)  # other weights, replaced by timm's loader
        _load_weights(reference, str(path))
        torch.testing.assert_close(logits(model, x), logits(reference, x), atol=ATOL, rtol=0)
        torch.testing.assert_close(logits(reference, x), logits(source, x), atol=1e-6, rtol=0)
    else:
        with torch.no_grad():
            torch.testing.assert_close(model.bit(x).pooler_output.flatten(1), source.forward_head(source.forward_features(x), pre_logits=True), atol=ATOL, rtol=0)
    processor = AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3


def test_npz_architecture_is_read_off_the_shapes_and_checked_against_the_name(tmp_path, capsys):
    arrays = bit_npz_arrays(timm_tiny())
    config = bit_config_from_npz(arrays, num_groups=8)
    assert (config.depths, config.hidden_sizes, config.embedding_size, config.num_labels) == ([1, 2], [32, 64], 16, 5)
    path = tmp_path / "BiT-M-R50x1.npz"
    np.savez(path, **arrays)
    assert main(["convert", str(path), str(tmp_path / "out"), "--image-size", "128"]) == 2
    err = capsys.readouterr().err
    assert "named as BiT-R50x1, but its arrays say otherwise" in err and "[1, 2]" in err and "[3, 4, 6, 3]" in err


def test_npz_with_missing_or_unknown_arrays_is_refused(tmp_path):
    arrays = bit_npz_arrays(timm_tiny())
    missing = {k: v for k, v in arrays.items() if k != "resnet/block2/unit02/b/group_norm/beta"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ConversionError, match="lacks arrays.*block2/unit02/b/group_norm/beta"):
        load_checkpoint(tmp_path / "missing.npz", num_groups=8)
    np.savez(tmp_path / "extra.npz", **arrays, **{"resnet/block1/unit01/d/standardized_conv2d/kernel": np.zeros(3)})
    with pytest.raises(ConversionError, match="no place in BitForImageClassification.*unit01/d"):
        load_checkpoint(tmp_path / "extra.npz", num_groups=8)


def test_a_transformers_bit_checkpoint_needs_no_conversion(tmp_path, capsys):
    from hf_vit_repro.variants import bit_config

    BitForImageClassification(bit_config("BiT-R50x1", num_labels=3, **TINY)).save_pretrained(tmp_path / "bit")
    assert main(["convert", str(tmp_path / "bit"), str(tmp_path / "out")]) == 2
    assert "already a transformers BiT checkpoint" in capsys.readouterr().err


def test_bare_1000_class_timm_bit_file_reads_its_class_count(tmp_path):
    """A bare timm BiT weights file (resnetv2_50x1_bit with its 1000-class head, as timm builds it)
    converts from its architecture name alone: the class count comes from the weights (issue 24)."""
    reference = randomize_(timm.create_model("resnetv2_50x1_bit", pretrained=False), std=0.05).eval()
    assert reference.num_classes == 1000
    save_file(reference.state_dict(), tmp_path / "bit.safetensors")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "bit.safetensors"), str(out), "--timm-architecture", "resnetv2_50x1_bit"]) == 0
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert isinstance(model, BitForImageClassification) and model.config.num_labels == 1000
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours, theirs = logits(model, x), logits(reference, x)
    assert theirs.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    # an explicit class count that the weights do not have is still named
    with pytest.raises(ConversionError, match=r"classifier\.1\.bias: checkpoint \(1000,\) vs model \(2,\)"):
        load_checkpoint(tmp_path / "bit.safetensors", architecture="resnetv2_50x1_bit", num_labels=2)
    # a tiny headless file: no classes
    headless = timm_tiny(num_classes=0)
    save_file(headless.state_dict(), tmp_path / "tiny.safetensors")
    model, _ = load_checkpoint(tmp_path / "tiny.safetensors", architecture="resnetv2_50x1_bit", **TINY)
    assert model.config.num_labels == 0
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logits(model.eval(), x), logits(headless, x), atol=ATOL, rtol=0)
