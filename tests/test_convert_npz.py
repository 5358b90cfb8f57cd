"""Converting the original JAX `.npz` checkpoints (google-research/vision_transformer, AugReg,
big_vision). Each test writes a checkpoint in the published layout with random arrays of the
right shapes (the layout is spelled out here, independently of the converter), loads it with
timm's own original-checkpoint loader (`_load_weights`) into a matching timm model and with ours,
and compares logits; the representation layer and the resampling to another resolution are
checked against hand computations (numpy, scipy.ndimage.zoom as the original code resamples)."""

import json

import numpy as np
import pytest
import scipy.ndimage
import torch
from timm.models.vision_transformer import _load_weights
from torch import nn
from transformers import AutoModelForImageClassification

from hf_vit_repro.cli import main
from hf_vit_repro.convert import (
    ConversionError,
    config_from_npz,
    convert,
    convert_npz_state_dict,
    load_npz_checkpoint,
    variant_from_npz_name,
)

from .test_auto_remote import run_without_package
from .test_convert_timm import serve_from_hub_cache
from .test_hybrid import BACKBONES, timm_hybrid
from .test_parity import timm_vit

ATOL = 1e-4
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
ORIGINAL_BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
BIG_VISION_BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


def jax_vit_arrays(
    *, dim=32, depth=2, heads=4, mlp=64, patch=8, grid=4, classes=5, cls=True, representation=None,
    layout="original", stacked=False, backbone=None, seed=0,
):
    """Random arrays named and shaped as a JAX ViT checkpoint.

    layout "original": google-research/vision_transformer (models_vit.py, models_resnet.py) and the
    AugReg files; "big_vision": big_vision's vit.py under a "params/" prefix, position embeddings for
    the patches only, blocks optionally `stacked` along a leading layer axis (nn.scan).
    """
    rng = np.random.default_rng(seed)

    def rand(*shape, center=0.0):
        return (center + 0.2 * rng.standard_normal(shape)).astype(np.float32)

    arrays = {}
    in_channels = 3
    if backbone is not None:  # BiT ResNet: conv_root/gn_root, then block{s}/unit{u}
        stem = backbone["embedding_size"]
        arrays["conv_root/kernel"] = rand(7, 7, 3, stem)
        arrays["gn_root/scale"], arrays["gn_root/bias"] = rand(stem, center=1.0), rand(stem)
        width_in = stem
        for s, (units, width) in enumerate(zip(backbone["depths"], backbone["hidden_sizes"]), start=1):
            for u in range(1, units + 1):
                mid, unit = width // 4, f"block{s}/unit{u}/"
                for r, (cin, cout, k) in enumerate([(width_in, mid, 1), (mid, mid, 3), (mid, width, 1)], start=1):
                    arrays[f"{unit}conv{r}/kernel"] = rand(k, k, cin, cout)
                    arrays[f"{unit}gn{r}/scale"], arrays[f"{unit}gn{r}/bias"] = rand(cout, center=1.0), rand(cout)
                if u == 1:
                    arrays[f"{unit}conv_proj/kernel"] = rand(1, 1, width_in, width)
                    arrays[f"{unit}gn_proj/scale"], arrays[f"{unit}gn_proj/bias"] = rand(width, center=1.0), rand(width)
                width_in = width
        in_channels, patch = width_in, 1
    arrays["embedding/kernel"], arrays["embedding/bias"] = rand(patch, patch, in_channels, dim), rand(dim)
    if cls:
        arrays["cls"] = rand(1, 1, dim)
    if layout == "original":
        arrays["Transformer/posembed_input/pos_embedding"] = rand(1, grid * grid + cls, dim)
    else:
        arrays["pos_embedding"] = rand(1, grid * grid, dim)
    ln1, attention, ln2, mlp_block = ORIGINAL_BLOCK if layout == "original" else BIG_VISION_BLOCK
    block_shapes = {
        f"{ln1}/scale": (dim,), f"{ln1}/bias": (dim,),
        **{f"{attention}/{n}/kernel": (dim, heads, dim // heads) for n in ("query", "key", "value")},
        **{f"{attention}/{n}/bias": (heads, dim // heads) for n in ("query", "key", "value")},
        f"{attention}/out/kernel": (heads, dim // heads, dim), f"{attention}/out/bias": (dim,),
        f"{ln2}/scale": (dim,), f"{ln2}/bias": (dim,),
        f"{mlp_block}/Dense_0/kernel": (dim, mlp), f"{mlp_block}/Dense_0/bias": (mlp,),
        f"{mlp_block}/Dense_1/kernel": (mlp, dim), f"{mlp_block}/Dense_1/bias": (dim,),
    }
    for name, shape in block_shapes.items():
        center = 1.0 if name.endswith("scale") else 0.0
        if stacked:
            arrays[f"Transformer/encoderblock/{name}"] = rand(depth, *shape, center=center)
        else:
            for i in range(depth):
                arrays[f"Transformer/encoderblock_{i}/{name}"] = rand(*shape, center=center)
    arrays["Transformer/encoder_norm/scale"], arrays["Transformer/encoder_norm/bias"] = rand(dim, center=1.0), rand(dim)
    if representation:
        arrays["pre_logits/kernel"], arrays["pre_logits/bias"] = rand(dim, representation), rand(representation)
    arrays["head/kernel"], arrays["head/bias"] = rand(representation or dim, classes), rand(classes)
    prefix = "params/" if layout == "big_vision" else ""
    return {prefix + key: value for key, value in arrays.items()}


def with_tanh_gelu(model):
    """flax's `nn.gelu` is the tanh approximation; give timm's blocks the same activation."""
    for block in model.blocks:
        block.mlp.act = nn.GELU(approximate="tanh")
    return model


# case -> (arrays, timm reference before loading, our config overrides)
CASES = {
    "original": (lambda: jax_vit_arrays(), lambda: with_tanh_gelu(timm_vit(TINY)), {}),
    "original-hybrid": (
        lambda: jax_vit_arrays(backbone=BACKBONES["r50-like"], grid=4),
        lambda: with_tanh_gelu(timm_hybrid("r50-like")),
        {"backbone_config": {"num_groups": BACKBONES["r50-like"]["num_groups"]}},  # published hybrids: 32
    ),
    "big_vision-stacked-gap": (
        lambda: jax_vit_arrays(layout="big_vision", stacked=True, cls=False),
        lambda: with_tanh_gelu(timm_vit(TINY, class_token=False, global_pool="avg", fc_norm=False)),
        {},
    ),
    # big_vision adds position embeddings before prepending the class token: timm's no_embed_class
    "big_vision-token": (
        lambda: jax_vit_arrays(layout="big_vision"),
        lambda: with_tanh_gelu(timm_vit(TINY, no_embed_class=True)),
        {},
    ),
}


@pytest.fixture(scope="module")
def npz_cases(tmp_path_factory):
    """case -> (npz path, arrays, timm reference loaded by timm's loader, converted folder, inputs)."""
    out = {}
    for i, (case, (make_arrays, make_reference, overrides)) in enumerate(CASES.items()):
        root = tmp_path_factory.mktemp(f"npz{i}")
        arrays = make_arrays()
        path = root / f"{case}.npz"
        np.savez(path, **arrays)
        reference = make_reference()
        with torch.no_grad():
            _load_weights(reference, str(path))
        folder = convert(path, root / "converted", **overrides)
        size = reference.patch_embed.img_size[0]
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(i))
        out[case] = (path, arrays, reference.eval(), folder, x)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_npz_logits_match_timms_original_checkpoint_loader(npz_cases, case):
    _, _, reference, folder, x = npz_cases[case]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.hidden_act == "gelu_pytorch_tanh" and model.config.num_attention_heads == 4
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5] * 3 and processor["image_std"] == [0.5] * 3
    assert processor["size"] == {"height": x.shape[-1], "width": x.shape[-1]} and processor["resample"] == 2
    expected = "bilinear_antialias" if case.startswith("big_vision") else "bilinear"
    assert model.config.position_embedding_interpolation == expected


def test_converted_npz_folders_load_without_the_package(npz_cases, tmp_path):
    paths, expected = {}, {}
    for i, (case, (_, _, reference, folder, x)) in enumerate(npz_cases.items()):
        torch.save(x, tmp_path / f"{i}.pt")
        paths[case] = (str(folder), str(tmp_path / f"{i}.pt"))
        with torch.no_grad():
            expected[case] = reference(x)
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForImageClassification
        result = {{}}
        for case, (folder, inputs) in {paths!r}.items():
            model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
            with torch.no_grad():
                result[case] = model(torch.load(inputs)).logits.tolist()
        print(json.dumps(result))
        """,
        tmp_path,
    )
    for case, logits in expected.items():
        torch.testing.assert_close(torch.tensor(out[case]), logits, atol=ATOL, rtol=0)


def test_representation_layer_becomes_the_pooler(tmp_path):
    """In21k checkpoints (e.g. ViT-B_16.npz) carry a pre-logits layer: logits = head(tanh(pre_logits(y))).
    timm's loader skips it, so timm gives y and the rest is computed here from the arrays."""
    arrays = jax_vit_arrays(representation=24, classes=7)
    np.savez(tmp_path / "in21k.npz", **arrays)
    reference = with_tanh_gelu(timm_vit(TINY, num_classes=0))
    with torch.no_grad():
        _load_weights(reference, str(tmp_path / "in21k.npz"))
    model = load_npz_checkpoint(tmp_path / "in21k.npz")
    assert model.config.representation_size == 24 and model.config.num_labels == 7
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = reference.eval()(x).numpy()  # class token after the final norm
        pre = np.tanh(y @ arrays["pre_logits/kernel"] + arrays["pre_logits/bias"])
        expected = torch.from_numpy(pre @ arrays["head/kernel"] + arrays["head/bias"])
        torch.testing.assert_close(model(x).logits, expected, atol=ATOL, rtol=0)
    # the paper's fine-tuning step drops it with the head
    folder = convert(tmp_path / "in21k.npz", tmp_path / "finetune", num_labels=3)
    config = json.loads((folder / "config.json").read_text())
    assert config["representation_size"] is None and len(config["id2label"]) == 3


def test_checkpoint_trained_at_another_resolution(npz_cases, tmp_path):
    """Position embeddings resampled as the original code does (scipy.ndimage.zoom, order 1)."""
    path, arrays, _, _, _ = npz_cases["original"]
    assert main(["convert", str(path), str(tmp_path / "at48"), "--image-size", "48"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "at48").eval()
    posemb = arrays["Transformer/posembed_input/pos_embedding"]
    grid = posemb[0, 1:].reshape(4, 4, -1)
    zoomed = scipy.ndimage.zoom(grid, (6 / 4, 6 / 4, 1), order=1).reshape(1, 36, -1)
    expected_posemb = np.concatenate([posemb[:, :1], zoomed], axis=1)
    torch.testing.assert_close(
        model.vit.embeddings.position_embeddings.detach(), torch.from_numpy(expected_posemb), atol=1e-5, rtol=0
    )
    # and the whole model equals timm at 48 loading a checkpoint resampled by scipy
    resampled = {**arrays, "Transformer/posembed_input/pos_embedding": expected_posemb}
    np.savez(tmp_path / "resampled.npz", **resampled)
    reference = with_tanh_gelu(timm_vit({**TINY, "image_size": 48}))
    with torch.no_grad():
        _load_weights(reference, str(tmp_path / "resampled.npz"))
        x = torch.randn(2, 3, 48, 48)
        torch.testing.assert_close(model(x).logits, reference.eval()(x), atol=ATOL, rtol=0)
    assert json.loads((tmp_path / "at48" / "preprocessor_config.json").read_text())["size"] == {"height": 48, "width": 48}


def test_missing_and_unknown_arrays_are_named(tmp_path, capsys):
    arrays = jax_vit_arrays()
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ConversionError, match=r"lacks .*Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"):
        load_npz_checkpoint(tmp_path / "missing.npz")
    assert main(["convert", str(tmp_path / "missing.npz"), str(tmp_path / "out")]) == 2
    assert "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    extra = {**jax_vit_arrays(), "Transformer/encoderblock_0/LayerScale_0/scale": np.ones(32, np.float32)}
    with pytest.raises(ConversionError, match="no place .*LayerScale_0/scale"):
        convert_npz_state_dict(extra)
    with pytest.raises(ConversionError, match="MAPHead_0"):
        convert_npz_state_dict({**jax_vit_arrays(layout="big_vision"), "params/MAPHead_0/probe": np.zeros((1, 1, 32))})


def test_pickled_npz_needs_an_opt_in(tmp_path):
    arrays = {**jax_vit_arrays(), "meta": np.array([{"note": "object arrays are pickled"}], dtype=object)}
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ConversionError, match="pickle.*allow_pickle=True"):
        load_npz_checkpoint(tmp_path / "pickled.npz")
    # opted in, the extra array is then reported by name, not dropped
    with pytest.raises(ConversionError, match="no place .*meta"):
        load_npz_checkpoint(tmp_path / "pickled.npz", allow_pickle=True)


def test_architecture_is_read_off_the_shapes_and_checked_against_the_file_name(tmp_path):
    arrays = jax_vit_arrays(dim=48, heads=3, mlp=96, patch=16, grid=2, layout="big_vision", stacked=True)
    config = config_from_npz(arrays)
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (48, 3, 96)
    assert (config.patch_size, config.image_size, config.num_hidden_layers, config.pooling) == (16, 32, 2, "token")
    hybrid = config_from_npz(jax_vit_arrays(backbone=BACKBONES["r26-like"], grid=2), backbone_config={"num_groups": 8})
    assert list(hybrid.backbone_config.depths) == [1, 1, 1, 1] and hybrid.backbone_stride == 32
    assert hybrid.image_size == 64 and hybrid.backbone_config.embedding_size == 16
    np.savez(tmp_path / "ViT-B_16.npz", **jax_vit_arrays())
    with pytest.raises(ConversionError, match=r"named as ViT-B/16.*hidden size: arrays 32, name 768"):
        load_npz_checkpoint(tmp_path / "ViT-B_16.npz")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ViT-B_16.npz", (None, "B", 16)),
        ("R50+ViT-B_16.npz", ("R50", "B", 16)),
        ("imagenet21k+imagenet2012_ViT-L_16-224.npz", (None, "L", 16)),
        ("imagenet21k_R50+ViT-B_16.npz", ("R50", "B", 16)),
        ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz", (None, "S", 16)),
        ("R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0.npz", ("R26", "S", 32)),
        ("my_finetune.npz", None),
    ],
)
def test_variant_from_npz_name(name, expected):
    assert variant_from_npz_name(name) == expected


def test_npz_file_in_a_hub_repo(npz_cases, tmp_path, monkeypatch):
    """'org/repo/file.npz' reads the file through `hf_hub_download`, like a local path."""
    path, _, reference, _, x = npz_cases["original"]
    serve_from_hub_cache(tmp_path, monkeypatch, "google/vit-tiny-test", {"checkpoints/tiny.npz": path})
    model = AutoModelForImageClassification.from_pretrained(
        convert("google/vit-tiny-test/checkpoints/tiny.npz", tmp_path / "out")
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
