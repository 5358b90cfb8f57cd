"""`vit-repro convert --to transformers | timm` (hf_vit_repro.convert_native): this package's
checkpoints written as transformers' own ViT classes and as timm folders, loaded by transformers
(in a process that cannot import this package, without trust_remote_code) and by timm
(`local-dir:`), with the same outputs; every model that does not map is refused with one line
naming what does not map, and nothing is written."""

import json

import pytest
import timm
import torch
from transformers import ViTImageProcessor

from hf_vit_repro import (
    ViTReproConfig,
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
)
from hf_vit_repro.cli import main
from hf_vit_repro.convert_native import TIMM_PLAIN_ENTRY_POINTS

from .conftest import randomize_, run_without_package, tiny_kwargs

#: Two forward passes of the same weights by two implementations (fused vs split qkv, sdpa vs our
#: kernels) agree to float32 rounding: measured below 3e-7 on these tiny models.
ATOL = 1e-5
LABELS = {0: "cat", 1: "dog", 2: "bird"}


def save_ours(path, model_class=ViTReproForImageClassification, **overrides):
    """A checkpoint folder of this package (weights, config, code, image processor), random weights."""
    kwargs = tiny_kwargs(**overrides)
    if kwargs.get("num_labels"):
        kwargs.update(id2label=dict(list(LABELS.items())[: kwargs["num_labels"]]))
    config = ViTReproConfig(**kwargs)
    model = randomize_(model_class(config)).eval()
    model.save_pretrained(path)
    height, width = config.image_hw
    ViTImageProcessor(size={"height": height, "width": width}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                      resample=3).save_pretrained(path)
    return model


# model class, config overrides, the transformers class written
TRANSFORMERS_CASES = {
    "classifier": (ViTReproForImageClassification, {}, "ViTForImageClassification"),
    "no-qkv-bias, tanh GELU, eps 1e-12": (
        ViTReproForImageClassification,
        {"qkv_bias": False, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-12},
        "ViTForImageClassification",
    ),
    "features (no head)": (ViTReproForImageClassification, {"num_labels": 0}, "ViTForImageClassification"),
    "pre-logits, no head": (ViTReproForImageClassification, {"num_labels": 0, "representation_size": 16}, "ViTModel"),
    "non-square image": (ViTReproForImageClassification, {"image_size": [32, 48]}, "ViTForImageClassification"),
}


@pytest.fixture(scope="module")
def native_folders(tmp_path_factory):
    """case -> (our model, our folder, transformers folder written by the CLI)."""
    out = {}
    for i, (case, (model_class, overrides, _)) in enumerate(TRANSFORMERS_CASES.items()):
        root = tmp_path_factory.mktemp(f"native{i}")
        model = save_ours(root / "ours", model_class, **overrides)
        assert main(["convert", str(root / "ours"), str(root / "native"), "--to", "transformers"]) == 0
        out[case] = (model, root / "ours", root / "native")
    return out


def _our_outputs(model, x):
    with torch.no_grad():
        logits = model(x).logits
        return logits, model.vit(x).pooler_output


def test_native_transformers_folders_load_without_the_package(native_folders, tmp_path):
    """No auto_map, no code files, model_type "vit"; `from_pretrained` without trust_remote_code in
    a process where `import hf_vit_repro` fails gives our logits (and, for ViTModel, our pooled output)."""
    jobs, expected = {}, {}
    for i, (case, (model, _, native)) in enumerate(native_folders.items()):
        config = json.loads((native / "config.json").read_text())
        assert config["model_type"] == "vit" and "auto_map" not in config, case
        assert config["architectures"] == [TRANSFORMERS_CASES[case][2]], case
        assert not list(native.glob("*.py")), case
        height, width = model.config.image_hw
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(i))
        torch.save(x, tmp_path / f"{i}.pt")
        jobs[case] = (str(native), str(tmp_path / f"{i}.pt"))
        expected[case] = _our_outputs(model, x)
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
        result = {{}}
        for case, (path, inputs) in {jobs!r}.items():
            x = torch.load(inputs)
            classifier = AutoModelForImageClassification.from_pretrained(path).eval()
            base = AutoModel.from_pretrained(path).eval()
            with torch.no_grad():
                result[case] = {{
                    "classes": [type(classifier).__name__, type(base).__name__],
                    "logits": classifier(x).logits.tolist(),
                    "pooled": base(x).pooler_output.tolist(),
                    "labels": classifier.config.id2label,
                    "processor": type(AutoImageProcessor.from_pretrained(path)).__name__,
                }}
        print(json.dumps(result))
        """,
        tmp_path,
    )
    for case, (logits, pooled) in expected.items():
        got = out[case]
        assert got["classes"] == ["ViTForImageClassification", "ViTModel"], case
        assert got["processor"] == "ViTImageProcessor"
        if TRANSFORMERS_CASES[case][2] == "ViTModel":
            # the pooler is our pre-logits layer: ViTModel's pooled output is our model's
            torch.testing.assert_close(torch.tensor(got["pooled"]), pooled, atol=ATOL, rtol=0)
            torch.testing.assert_close(torch.tensor(got["pooled"]), logits, atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(torch.tensor(got["logits"]), logits, atol=ATOL, rtol=0)
            assert logits.abs().max() > 0.1  # not two near-zero outputs
        if logits.shape[-1] == 3:
            assert got["labels"] == {str(k): v for k, v in LABELS.items()}


def test_native_folder_converts_back_to_the_same_model(native_folders, tmp_path):
    """transformers' folder -> this package again (the existing transformers source): same logits."""
    from transformers import AutoModelForImageClassification

    model, _, native = native_folders["classifier"]
    assert main(["convert", str(native), str(tmp_path / "back")]) == 0
    back = AutoModelForImageClassification.from_pretrained(tmp_path / "back").eval()
    assert type(back) is ViTReproForImageClassification
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, model(x).logits, atol=ATOL, rtol=0)


def test_masked_image_modeling_becomes_transformers_own(tmp_path):
    from transformers import AutoModelForMaskedImageModeling, ViTForMaskedImageModeling

    model = save_ours(tmp_path / "ours", ViTReproForMaskedImageModeling, num_labels=0)
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "native"), "--to", "transformers"]) == 0
    native = AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "native").eval()
    assert type(native) is ViTForMaskedImageModeling
    x, mask = torch.randn(2, 3, 32, 32), torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        ours, theirs = model(x, bool_masked_pos=mask), native(x, bool_masked_pos=mask)
    torch.testing.assert_close(theirs.reconstruction, ours.reconstruction, atol=ATOL, rtol=0)
    torch.testing.assert_close(theirs.loss, ours.loss, atol=ATOL, rtol=0)


def test_a_timm_checkpoint_converts_straight_to_transformers(tmp_path):
    """timm folder -> transformers' own ViT in one step, with timm's evaluation crop kept."""
    from timm.models import save_for_hf
    from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTForImageClassification

    reference = randomize_(timm.create_model(
        "vit_small_patch32_224", pretrained=False, img_size=64, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
        num_classes=5)).eval()
    save_for_hf(reference, tmp_path / "timm", safe_serialization=True)
    assert main(["convert", str(tmp_path / "timm"), str(tmp_path / "native"), "--to", "transformers"]) == 0
    native = AutoModelForImageClassification.from_pretrained(tmp_path / "native").eval()
    assert type(native) is ViTForImageClassification
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(native(x).logits, reference(x), atol=ATOL, rtol=0)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "native")
    assert processor.crop_size == {"height": 64, "width": 64} and processor.size == {"shortest_edge": 71}  # / 0.9


# ============================================================================ timm

R26_HYBRID = dict(
    image_size=64, patch_size=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    num_labels=3, backbone_config={"depths": [2, 2, 2, 2], "hidden_sizes": [256, 512, 1024, 2048]},
)
# case -> (config overrides, timm architecture written)
TIMM_CASES = {
    "token": ({}, "vit_base_patch16_224"),
    "gap, no qkv bias, tanh GELU": ({"pooling": "gap", "qkv_bias": False, "hidden_act": "gelu_pytorch_tanh"},
                                    "vit_base_patch16_224"),
    # the hybrid of timm's vit_small_r26_s32: timm builds the full R26 (2, 2, 2, 2 blocks, 256..2048 wide)
    "R26 hybrid": (R26_HYBRID, "vit_small_r26_s32_224"),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_folder_loads_in_timm_with_the_same_logits(case, tmp_path):
    overrides, architecture = TIMM_CASES[case]
    model = save_ours(tmp_path / "ours", **overrides)
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "timm"), "--to", "timm"]) == 0
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["architecture"] == architecture and {p.name for p in (tmp_path / "timm").iterdir()} == {
        "config.json", "model.safetensors"}
    reference = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    height, width = model.config.image_hw
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).logits
        torch.testing.assert_close(reference(x), expected, atol=ATOL, rtol=0)
    assert expected.abs().max() > 0.1
    # the ViTImageProcessor's straight resize is timm's "squash" at crop_pct 1, bicubic as saved
    data = timm.data.resolve_data_config({}, model=reference)
    assert (data["crop_mode"], data["crop_pct"], data["interpolation"]) == ("squash", 1.0, "bicubic")
    assert data["input_size"] == (3, height, width) and tuple(data["mean"]) == (0.5, 0.5, 0.5)
    if case == "token":
        # timm's other loading route: the entry point, model_args, and pretrained_cfg with the weights file
        # (its num_classes matters: timm drops a head whose size differs from the pretrained_cfg's)
        overlay = {**config["pretrained_cfg"], "file": str(tmp_path / "timm" / "model.safetensors")}
        other = timm.create_model(architecture, pretrained=True, **config["model_args"], pretrained_cfg_overlay=overlay)
        other.eval()
        with torch.no_grad():
            torch.testing.assert_close(other(x), expected, atol=ATOL, rtol=0)
        # and back to this package through the existing timm source
        assert main(["convert", str(tmp_path / "timm"), str(tmp_path / "back")]) == 0
        back = ViTReproForImageClassification.from_pretrained(tmp_path / "back").eval()
        with torch.no_grad():
            torch.testing.assert_close(back(x).logits, expected, atol=ATOL, rtol=0)
        assert back.config.id2label == LABELS


def test_named_timm_entry_points_exist_and_name_the_paper_variants():
    """A paper variant is written under timm's own entry point for it (model_args give every size
    anyway, so a custom model takes the ViT-B/16 one)."""
    from hf_vit_repro.convert_common import image_processor
    from hf_vit_repro.convert_native import timm_config

    assert all(timm.is_model(name) for name in TIMM_PLAIN_ENTRY_POINTS)
    for variant, size, expected in (("ViT-S/32", 384, "vit_small_patch32_384"), ("ViT-L/16", 512, "vit_large_patch16_224"),
                                    ("ViT-H/14", 224, "vit_huge_patch14_224"), ("ViT-Ti/32", 224, "vit_base_patch16_224")):
        config = ViTReproConfig.from_variant(variant, image_size=size, num_labels=10)
        with torch.device("meta"):
            model = ViTReproForImageClassification(config)
        written = timm_config(model, image_processor(config, [0.5] * 3, [0.5] * 3))
        assert written["architecture"] == expected, variant
        assert written["model_args"]["img_size"] == size and written["model_args"]["embed_dim"] == config.hidden_size


# ============================================================================ refusals

REFUSALS = {
    # target, our model class, config overrides, what the one line names
    "gap to transformers": ("transformers", ViTReproForImageClassification, {"pooling": "gap"}, "pooling='gap'"),
    "hybrid to transformers": (
        "transformers", ViTReproForImageClassification,
        {"image_size": 64, "patch_size": 1, "backbone_config": {"depths": [1, 1], "hidden_sizes": [32, 64],
                                                                "embedding_size": 16, "num_groups": 8}},
        "hybrid's ResNet stem",
    ),
    "pre-logits under a head to transformers": (
        "transformers", ViTReproForImageClassification, {"representation_size": 16}, "pre-logits layer"),
    "masked patch prediction to transformers": (
        "transformers", ViTReproForMaskedPatchPrediction, {"num_labels": 0}, "masked patch prediction"),
    "non-square masked image modeling to transformers": (
        "transformers", ViTReproForMaskedImageModeling, {"num_labels": 0, "image_size": [32, 48]}, "square grid"),
    "pre-logits to timm": ("timm", ViTReproForImageClassification, {"num_labels": 0, "representation_size": 16},
                           "pre-logits layer"),
    "eps 1e-12 to timm": ("timm", ViTReproForImageClassification, {"layer_norm_eps": 1e-12}, "layer_norm_eps=1e-12"),
    "other hybrid CNN to timm": (
        "timm", ViTReproForImageClassification,
        {"image_size": 64, "patch_size": 1, "backbone_config": {"depths": [1, 1], "hidden_sizes": [32, 64],
                                                                "embedding_size": 16, "num_groups": 8}},
        "timm builds its hybrids' ResNets from fixed tables",
    ),
    "masked image modeling to timm": ("timm", ViTReproForMaskedImageModeling, {"num_labels": 0}, "head"),
    "unknown target": ("onnx", ViTReproForImageClassification, {}, "Unknown conversion target 'onnx'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_models_without_a_native_counterpart_are_refused_in_one_line(case, tmp_path, capsys):
    target, model_class, overrides, named = REFUSALS[case]
    save_ours(tmp_path / "ours", model_class, **overrides)
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "out"), "--to", target]) == 2
    err = capsys.readouterr().err
    message = err.splitlines()[-1]  # after the loading progress bar, the one line, no traceback
    assert message.startswith("vit-repro convert: error: ") and named in message and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_bit_resnet_is_transformers_own_and_not_a_timm_vit(tmp_path):
    """A BiT source converts to transformers' BitForImageClassification for --to transformers as for
    the default; --to timm refuses it (it is no ViT) and writes nothing."""
    from transformers import AutoModelForImageClassification, BitForImageClassification

    from hf_vit_repro.convert import ConversionError, convert

    from .test_convert_bit import TINY, timm_tiny, write_timm_repo

    reference = timm_tiny()
    folder = write_timm_repo(tmp_path / "timm", reference)
    convert(folder, tmp_path / "native", to="transformers", **TINY)
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "native").eval()
    assert type(model) is BitForImageClassification and not list((tmp_path / "native").glob("*.py"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
    with pytest.raises(ConversionError, match="BiT ResNet: --to timm writes ViTs"):
        convert(folder, tmp_path / "timm_out", to="timm", **TINY)
    assert not (tmp_path / "timm_out").exists()
