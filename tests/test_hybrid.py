"""The hybrid (BiT ResNet + ViT): parity with timm's hybrid, the paper's named variants, and the
core model's guarantees (attention modes, outputs, interpolation, checkpointing, remote code)."""

from functools import partial

import pytest
import timm
import torch
from huggingface_hub.errors import StrictDataclassError
from timm.layers import GroupNormAct, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer_hybrid import _create_vision_transformer_hybrid

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro.convert import convert_timm_state_dict, load_converted

from .conftest import assert_logits_close, randomize_, run_without_package

# Tiny stand-ins with the paper's structure: an "R50-like" CNN keeps 3 stages (stride 16) and an
# "R26-like" one 4 stages (stride 32); narrow channels keep the test fast.
BACKBONES = {
    "r50-like": dict(depths=[2, 1, 2], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=8),
    "r26-like": dict(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 64, 128], embedding_size=16, num_groups=8),
}
VIT = dict(patch_size=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def our_hybrid(backbone, image_size=64, **overrides) -> ViTReproConfig:
    return ViTReproConfig(image_size=image_size, num_labels=5, backbone_config=BACKBONES[backbone], **VIT, **overrides)


def timm_hybrid(backbone, image_size=64):
    spec = BACKBONES[backbone]
    cnn = ResNetV2(
        layers=spec["depths"],
        channels=spec["hidden_sizes"],
        stem_chs=spec["embedding_size"],
        num_classes=0,
        global_pool="",
        preact=False,
        stem_type="same",
        conv_layer=partial(StdConv2dSame, eps=1e-8),
        norm_layer=partial(GroupNormAct, num_groups=spec["num_groups"]),
    )
    model = _create_vision_transformer_hybrid(
        "vit_base_r50_s16_224", backbone=cnn, img_size=image_size, embed_dim=32, depth=2, num_heads=4,
        mlp_ratio=2, num_classes=5, dynamic_img_size=True,
    )
    return randomize_(model).eval()


@pytest.mark.parametrize("backbone, stride", [("r50-like", 16), ("r26-like", 32)])
def test_timm_hybrid_parity(backbone, stride):
    reference = timm_hybrid(backbone)
    config = our_hybrid(backbone, position_embedding_interpolation="bicubic_antialias")
    assert config.backbone_stride == stride and config.grid_size == (64 // stride, 64 // stride)
    ours = load_converted(config, convert_timm_state_dict(reference.state_dict()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, reference(x), atol=1e-4, rtol=0)
        bigger = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            ours(bigger, interpolate_pos_encoding=True).logits, reference(bigger), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize(
    "name, timm_name",
    [("R50+ViT-B/16", "vit_base_r50_s16_224"), ("R26+ViT-S/32", "vit_small_r26_s32_224"), ("R26+ViT-B/32", "vit_base_r26_s32_224")],
)
def test_named_hybrids_have_timms_parameter_count(name, timm_name):
    with torch.device("meta"):
        ours = ViTReproForImageClassification(ViTReproConfig.from_variant(name, num_labels=1000))
        reference = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_stage4_hybrids_of_the_scaling_study():
    """R50+ViT-B/32 and R50+ViT-L/32 (Table 6): the plain four-stage ResNet-50 (3, 4, 6, 3 blocks,
    stride 32, vit_jax `get_r50_l32_config`) under 1 x 1 patches. Parameter counts against timm:
    its `vit_large_r50_s32_224` for L/32, and for B/32 (no timm name) timm's own hybrid builder with
    the same ResNet-V2 (3, 4, 6, 3) under ViT-B."""
    from timm.models.vision_transformer_hybrid import _resnetv2

    for name, reference in (
        ("R50+ViT-L/32", lambda: timm.create_model("vit_large_r50_s32_224", pretrained=False, num_classes=1000)),
        ("R50+ViT-B/32", lambda: _create_vision_transformer_hybrid(
            "vit_base_r50_s16_224", backbone=_resnetv2((3, 4, 6, 3)), pretrained=False, num_classes=1000,
            embed_dim=768, depth=12, num_heads=12)),
    ):
        config = ViTReproConfig.from_variant(name, num_labels=1000)
        assert list(config.backbone_config.depths) == [3, 4, 6, 3] and config.backbone_stride == 32
        assert config.grid_size == (7, 7) and config.token_stride_hw == (32, 32)
        with torch.device("meta"):
            ours = ViTReproForImageClassification(config)
            theirs = reference()
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()), name
        assert [len(stage.blocks) for stage in theirs.patch_embed.backbone.stages] == [3, 4, 6, 3]


def test_r50_vit_l16_is_the_r50_backbone_under_vit_l():
    config = ViTReproConfig.from_variant("R50+ViT-L/16")
    assert list(config.backbone_config.depths) == [3, 4, 9] and config.hidden_size == 1024
    assert config.backbone_stride == 16 and config.grid_size == (14, 14)


def test_hybrid_unit_last_norms_start_at_zero():
    model = ViTReproModel(our_hybrid("r50-like"))
    norms = [m for n, m in model.named_modules() if n.endswith("norm3")]
    assert len(norms) == 5 and all(torch.count_nonzero(m.weight) == 0 for m in norms)


def test_hybrid_config_errors():
    config = our_hybrid("r50-like", image_size=72)  # accepted as a config; the model cannot be built
    with pytest.raises(ValueError, match="backbone's stride 16"):
        ViTReproModel(config)
    with pytest.raises(StrictDataclassError, match="num_groups"):
        ViTReproConfig(image_size=64, backbone_config={**BACKBONES["r50-like"], "num_groups": 7}, **VIT)
    with pytest.raises(StrictDataclassError, match="BitConfig"):
        ViTReproConfig(image_size=64, backbone_config=ViTReproConfig(), **VIT)


def test_hybrid_outputs_attention_modes_and_checkpointing():
    config = our_hybrid("r50-like")
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(config), std=0.1).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 1 + 16, 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 17, 17)
    sdpa_logits = model(x).logits
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    torch.testing.assert_close(model(x).logits, sdpa_logits, atol=1e-5, rtol=0)
    model.set_attn_implementation("sdpa")  # the CNN has no attention: only the ViT's kernel changes
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(model(x).logits, sdpa_logits, atol=1e-5, rtol=0)
    model.set_attn_implementation("eager")
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        model(x, labels=torch.tensor([0, 1])).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_hybrid_save_load_and_remote_code(tmp_path):
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(our_hybrid("r26-like")), std=0.1).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ViTReproForImageClassification.from_pretrained(tmp_path / "ckpt").eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # Same weights, but the loaded ones sit at other buffer offsets (memory-mapped file): other
    # oneDNN kernels may run, so the logits agree to float32 rounding, not bit for bit.
    assert_logits_close(loaded(x).logits, model(x).logits)
    for implementation in ("eager", "sdpa"):
        chosen = ViTReproForImageClassification.from_pretrained(tmp_path / "ckpt", attn_implementation=implementation)
        assert chosen.config._attn_implementation == implementation
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "x.pt")!r})).logits
        print(json.dumps({{"logits": logits.tolist(), "hybrid": model.config.backbone_config is not None}}))
        """,
        tmp_path,
    )
    assert out["hybrid"]
    torch.testing.assert_close(torch.tensor(out["logits"]), model(x).logits, atol=1e-6, rtol=0)


def test_hybrid_backbone_runs_channels_last_with_unchanged_outputs():
    """The CNN runs in NHWC (faster convolutions on CPU); its output must match the same CNN
    in the default NCHW layout to float32 rounding."""
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(our_hybrid("r50-like"))).eval()
    embeddings = model.vit.embeddings.patch_embeddings
    layouts = []
    embeddings.backbone.register_forward_pre_hook(
        lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = embeddings(x)
        embeddings.channels_last = False
        nchw = embeddings(x)
    assert layouts == [True, False]
    assert ours.is_contiguous()  # the projection's NHWC output makes (B, N, D) a free view
    torch.testing.assert_close(ours, nchw, atol=1e-5 * nchw.abs().max().item(), rtol=0)


def test_num_channels_set_later_reaches_the_cnn(tmp_path):
    """`config.num_channels` is the one source: set after construction, it reaches the BiT
    backbone's config, and a greyscale hybrid runs, saves and reloads (issue 14, item 6)."""
    config = our_hybrid("r50-like")
    config.num_channels = 1
    assert config.backbone_config.num_channels == 1
    model = randomize_(ViTReproForImageClassification(config), std=0.1).eval()
    assert model.vit.embeddings.patch_embeddings.backbone.bit.embedder.convolution.in_channels == 1
    grey = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    logits = model(grey).logits
    assert logits.shape == (2, 5)
    model.save_pretrained(tmp_path)
    loaded = ViTReproForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.num_channels == loaded.config.backbone_config.num_channels == 1
    assert_logits_close(loaded(grey).logits, logits)
    # The ViT config wins over a stale backbone copy when the model is built.
    config = our_hybrid("r50-like", num_channels=1)
    config.backbone_config.num_channels = 3
    assert ViTReproModel(config).embeddings.patch_embeddings.backbone.bit.embedder.convolution.in_channels == 1
