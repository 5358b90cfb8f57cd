"""Numerical parity with the independent references: transformers' ViT and timm's ViT.

Both references are built with random weights; their weights are mapped into ours by the
converters in `hf_vit_repro.convert`; outputs must agree to 1e-5 (fp32)."""

import pytest
import timm
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTForMaskedImageModeling, ViTModel

from hf_vit_repro import ViTReproConfig
from hf_vit_repro.convert import (
    ConversionError,
    convert_timm_state_dict,
    convert_transformers_state_dict,
    from_transformers_model,
    load_converted,
)

from .conftest import randomize_

ATOL = 1e-5

# "at 224": the paper's resolution and patch size with a narrow, shallow encoder to stay fast.
SHAPES = [
    dict(image_size=224, patch_size=16, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96),
    dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
]


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def hf_vit(shape, cls=ViTForImageClassification, **extra):
    config = ViTConfig(**shape, num_labels=5, layer_norm_eps=1e-6, attn_implementation="eager", **extra)
    return randomize_(cls(config)).eval()


@pytest.mark.parametrize("shape", SHAPES, ids=["224-p16", "32-p8"])
def test_transformers_vit_logits_hidden_states_attentions(shape):
    reference = hf_vit(shape)
    ours = from_transformers_model(reference)
    size = shape["image_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = reference(x, output_hidden_states=True, output_attentions=True)
        b = ours(x, output_hidden_states=True, output_attentions=True)
        close(a.logits, b.logits)
        assert len(a.hidden_states) == len(b.hidden_states) == shape["num_hidden_layers"] + 1
        for h_a, h_b in zip(a.hidden_states, b.hidden_states):
            close(h_a, h_b)
        assert len(a.attentions) == len(b.attentions) == shape["num_hidden_layers"]
        for att_a, att_b in zip(a.attentions, b.attentions):
            close(att_a, att_b)
        # and our default (sdpa) path gives the same logits
        ours.set_attn_implementation("sdpa")
        close(ours(x).logits, a.logits)


@pytest.mark.parametrize("new_size", [(384, 384), (160, 288)], ids=["384", "160x288"])
def test_transformers_vit_interpolated_resolution(new_size):
    reference = hf_vit(SHAPES[0])
    ours = from_transformers_model(reference)
    x = torch.randn(2, 3, *new_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = reference(x, interpolate_pos_encoding=True, output_hidden_states=True)
        b = ours(x, interpolate_pos_encoding=True, output_hidden_states=True)
    close(a.logits, b.logits)
    for h_a, h_b in zip(a.hidden_states, b.hidden_states):
        close(h_a, h_b)


def test_transformers_vit_model_pooler_becomes_representation_layer():
    reference = hf_vit(SHAPES[1], cls=ViTModel)
    ours = from_transformers_model(reference)
    assert ours.config.representation_size == 32 and ours.config.num_labels == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        close(reference(x).pooler_output, ours.vit(x).pooler_output)


@pytest.mark.parametrize("shape", SHAPES, ids=["224-p16", "32-p8"])
def test_transformers_masked_image_modeling_loss_and_reconstruction(shape):
    """transformers' ViTForMaskedImageModeling with random weights (mask token and decoder
    included), converted: same loss and reconstruction, with and without a mask, eager and sdpa."""
    from hf_vit_repro import ViTReproForMaskedImageModeling

    reference = hf_vit(shape, cls=ViTForMaskedImageModeling, encoder_stride=shape["patch_size"])
    assert reference.vit.embeddings.mask_token.abs().sum() > 0  # randomised, so a wrong placement shows
    ours = from_transformers_model(reference)
    assert type(ours) is ViTReproForMaskedImageModeling and ours.config.encoder_stride == shape["patch_size"]
    size, grid = shape["image_size"], shape["image_size"] // shape["patch_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(2, grid * grid, generator=torch.Generator().manual_seed(1)) < 0.6
    with torch.no_grad():
        a, b = reference(x, bool_masked_pos=mask), ours(x, bool_masked_pos=mask)
        close(a.reconstruction, b.reconstruction)
        close(a.loss, b.loss)
        close(reference(x).reconstruction, ours(x).reconstruction)
        ours.set_attn_implementation("sdpa")
        close(ours(x, bool_masked_pos=mask).loss, a.loss)


def test_transformers_v4_key_names_convert():
    """Hub checkpoints such as google/vit-base-patch16-224 still carry the v4 names."""
    reference = hf_vit(SHAPES[1])
    v5 = reference.state_dict()
    v4 = {}
    for key, value in v5.items():
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for new, old in [
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:
            key = key.replace(new, old)
        v4[key] = value
    assert convert_transformers_state_dict(v4).keys() == convert_transformers_state_dict(v5).keys()
    for key, value in convert_transformers_state_dict(v4).items():
        assert torch.equal(value, convert_transformers_state_dict(v5)[key])


def timm_vit(shape, name="vit_base_patch16_224", num_classes=5, **extra):
    """A random timm ViT of architecture `name` resized to `shape` (our field names)."""
    model = timm.create_model(
        name,
        pretrained=False,
        img_size=shape["image_size"],
        patch_size=shape["patch_size"],
        embed_dim=shape["hidden_size"],
        depth=shape["num_hidden_layers"],
        num_heads=shape["num_attention_heads"],
        mlp_ratio=shape["intermediate_size"] / shape["hidden_size"],
        num_classes=num_classes,
        dynamic_img_size=True,
        **extra,
    )
    return randomize_(model).eval()


TIMM_CASES = {
    "token": ({}, {}),
    "no-qkv-bias": ({"qkv_bias": False}, {"qkv_bias": False}),
    # The original code's "gap": no class token, final norm, then the mean (timm: fc_norm off).
    "gap": ({"class_token": False, "global_pool": "avg", "fc_norm": False}, {"pooling": "gap"}),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=["224-p16", "32-p8"])
def test_timm_vit_logits(shape, case):
    timm_extra, our_extra = TIMM_CASES[case]
    reference = timm_vit(shape, **timm_extra)
    config = ViTReproConfig(
        **shape, num_labels=5, position_embedding_interpolation="bicubic_antialias", **our_extra
    )
    ours = load_converted(config, convert_timm_state_dict(reference.state_dict()))
    size = shape["image_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        close(reference(x), ours(x).logits)
        # timm resamples position embeddings bicubically with antialiasing (dynamic_img_size)
        bigger = torch.randn(2, 3, size + 2 * shape["patch_size"], size, generator=torch.Generator().manual_seed(3))
        close(reference(bigger), ours(bigger, interpolate_pos_encoding=True).logits)


def test_timm_keys_without_counterpart_are_named():
    reference = timm_vit(SHAPES[1], reg_tokens=2)
    with pytest.raises(ConversionError, match="reg_token"):
        convert_timm_state_dict(reference.state_dict())


def test_load_converted_reports_missing_keys_by_name():
    reference = timm_vit(SHAPES[1])
    state = convert_timm_state_dict(reference.state_dict())
    del state["vit.layers.1.mlp.fc2.bias"]
    config = ViTReproConfig(**SHAPES[1], num_labels=5)
    with pytest.raises(ConversionError, match=r"vit\.layers\.1\.mlp\.fc2\.bias"):
        load_converted(config, state)
