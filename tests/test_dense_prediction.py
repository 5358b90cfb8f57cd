"""The backbone plugged into transformers' dense-prediction heads (transformers 5.24):
UperNetForSemanticSegmentation (ViT with the ViTDet pyramid; hybrid with its ResNet stages) and
DPTForDepthEstimation (four blocks' token sequences): forward and backward, save and reload,
a short training run whose loss falls, loading without this package, AutoBackbone from a Hub."""

import secrets

import numpy as np
import pytest
import torch
from transformers import DPTConfig, DPTForDepthEstimation, UperNetConfig, UperNetForSemanticSegmentation

from hf_vit_repro import ViTReproBackbone, ViTReproConfig, ViTReproForImageClassification

from .conftest import assert_logits_close, randomize_, run_without_package, tiny_kwargs
from .test_hybrid import BACKBONES, VIT

NUM_LABELS = 11  # background + the ten digits


def vit_backbone_config(**overrides) -> ViTReproConfig:
    kwargs = {k: v for k, v in tiny_kwargs().items() if k != "num_labels"}
    return ViTReproConfig(**{**kwargs, **overrides})


def upernet(backbone_config, **overrides) -> UperNetForSemanticSegmentation:
    config = UperNetConfig(
        backbone_config=backbone_config, hidden_size=32, auxiliary_channels=16, num_labels=NUM_LABELS, **overrides
    )
    return UperNetForSemanticSegmentation(config)


def digit_canvases(count: int, size: int = 32, seed: int = 0):
    """A tiny segmentation set: one of sklearn's 8x8 digits, upscaled to 16x16, pasted at a random place
    of a black `size` x `size` canvas (grey, as 3 channels in [-1, 1]); the label of a pixel is the
    digit + 1 where the digit's ink is (> 0.3 of full), else 0 (background)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 3, size, size), np.float32)
    labels = np.zeros((count, size, size), np.int64)
    for i in range(count):
        k = rng.integers(len(digits.images))
        ink = np.kron(digits.images[k] / 16.0, np.ones((2, 2)))
        row, col = rng.integers(0, size - 16, 2)
        images[i, :, row : row + 16, col : col + 16] = ink
        labels[i, row : row + 16, col : col + 16] = np.where(ink > 0.3, digits.target[k] + 1, 0)
    return torch.from_numpy(images * 2 - 1), torch.from_numpy(labels)


# ----------------------------------------------------------------------------- UperNet


def test_upernet_on_the_vit_with_a_simple_feature_pyramid_trains_saves_and_reloads(tmp_path):
    """UperNet needs several scales: the ViTDet pyramid makes four (strides 2, 4, 8, 16 for P = 8) from
    the last block. 25 AdamW steps on the digit canvases; the mean loss of the last 5 steps must be
    under half that of the first 5 (measured: 2.27 -> 0.92 on this seed, 29 s of CPU time)."""
    torch.manual_seed(0)
    pyramid = vit_backbone_config(out_features=["stage2"], feature_pyramid_scales=[4, 2, 1, 0.5])
    model = upernet(pyramid, use_auxiliary_head=False)
    assert isinstance(model.backbone, ViTReproBackbone) and model.backbone.channels == [8, 16, 32, 32]
    images, labels = digit_canvases(128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        batch = torch.randint(0, len(images), (8,), generator=generator)
        loss = model(pixel_values=images[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        if not losses:  # the first backward reaches every backbone parameter
            assert all(p.grad is not None for p in model.backbone.parameters())
        optimizer.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, losses

    model.eval().save_pretrained(tmp_path / "upernet")
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path / "upernet").eval()
    assert isinstance(reloaded.backbone, ViTReproBackbone)
    assert reloaded.config.backbone_config.feature_pyramid_scales == [4, 2, 1, 0.5]
    x = images[:2]
    with torch.no_grad():
        logits = model(x).logits
        assert logits.shape == (2, NUM_LABELS, 32, 32)
        assert_logits_close(reloaded(x).logits, logits)
        # another input size: position embeddings are resampled, the head follows
        assert model(torch.randn(1, 3, 48, 64)).logits.shape == (1, NUM_LABELS, 48, 64)


def test_upernet_on_the_hybrid_uses_its_resnet_stages_as_the_pyramid():
    """A hybrid has its own pyramid: ResNet stages 1 and 2 (strides 4, 8) and the last block (16)."""
    backbone = ViTReproConfig(
        image_size=64, backbone_config=BACKBONES["r50-like"], **VIT,
        out_features=["resnet_stage1", "resnet_stage2", "stage2"],
    )  # fmt: skip
    model = upernet(backbone)  # with UperNet's auxiliary FCN head on the third map
    assert model.backbone.channels == [32, 64, 32]
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, NUM_LABELS, (2, 64, 64))
    out = model(pixel_values=x, labels=labels, output_hidden_states=True)
    out.loss.backward()
    assert out.logits.shape == (2, NUM_LABELS, 64, 64) and len(out.hidden_states) == 7
    cnn_weight = model.backbone.embeddings.patch_embeddings.backbone.bit.embedder.convolution.weight
    assert cnn_weight.grad is not None and cnn_weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- DPT


def test_dpt_depth_estimation_on_the_vit_backbone(tmp_path):
    """DPT's neck reads token sequences with the class token first (its readout projection): the
    backbone gives them with `reshape_hidden_states=False`, from four blocks, unnormalised or not.
    transformers' DPT computes no loss ("Training is not implemented yet"), so an L1 loss on
    `predicted_depth` drives one backward pass here."""
    backbone = vit_backbone_config(
        num_hidden_layers=4, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, image_size=64, patch_size=16
    )
    config = DPTConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DPTForDepthEstimation(config)
    assert isinstance(model.backbone, ViTReproBackbone)
    x = torch.randn(2, 3, 64, 64)
    depth = model(pixel_values=x).predicted_depth
    # the neck takes the stride-16 grid to stride 2 (reassembly 4x, fusion 2x), the head 2x more
    assert depth.shape == (2, 64, 64)
    torch.nn.functional.l1_loss(depth, torch.rand(2, 64, 64)).backward()
    assert model.backbone.layers[0].attention.qkv.weight.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path)
    reloaded = DPTForDepthEstimation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_logits_close(reloaded(pixel_values=x).predicted_depth, model(pixel_values=x).predicted_depth)


# ----------------------------------------------------------------------------- without this package


def test_upernet_checkpoint_loads_without_the_package(tmp_path):
    """A UperNet folder holds no code for its backbone: a process without this package takes the config
    and backbone classes from a ViT checkpoint's shipped code, registers them with transformers'
    Auto classes (what importing hf_vit_repro does), then loads the head as usual."""
    classifier = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())), std=0.1)
    classifier.save_pretrained(tmp_path / "vit")
    torch.manual_seed(0)
    model = upernet(vit_backbone_config(out_features=["stage2"], feature_pyramid_scales=[4, 2, 1, 0.5])).eval()
    model.save_pretrained(tmp_path / "upernet")
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoBackbone, AutoConfig, UperNetForSemanticSegmentation
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        code = {str(tmp_path / "vit")!r}
        config_class = get_class_from_dynamic_module("configuration_vit_repro.ViTReproConfig", code)
        backbone_class = get_class_from_dynamic_module("modeling_vit_repro.ViTReproBackbone", code)
        AutoConfig.register("vit_repro", config_class)
        AutoBackbone.register(config_class, backbone_class)
        model = UperNetForSemanticSegmentation.from_pretrained({str(tmp_path / "upernet")!r}).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "x.pt")!r})).logits
        print(json.dumps({{"module": type(model.backbone).__module__, "logits": logits.tolist()}}))
        """,
        tmp_path,
    )
    assert out["module"].startswith("transformers_modules.")
    with torch.no_grad():
        assert_logits_close(torch.tensor(out["logits"]), model(x).logits)


def test_auto_backbone_from_a_hub_repo_with_remote_code(tmp_path, monkeypatch):
    """`AutoBackbone.from_pretrained` of a Hub repo holding a classifier checkpoint, with the checkpoint's
    own code, against the local stand-in for the Hub (tests/hub_server.py). (transformers 5.24's
    AutoBackbone asks the Hub whether a name is a repo first, so local folders fail there; see
    test_backbone.py.)"""
    from huggingface_hub import HfApi

    from .hub_server import LocalHub

    token = "hf_" + secrets.token_hex(17)
    classifier = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())), std=0.1).eval()
    classifier.save_pretrained(tmp_path / "vit")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with LocalHub(token) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        api.create_repo("test-user/tiny-vit")
        api.upload_folder(repo_id="test-user/tiny-vit", folder_path=tmp_path / "vit")
        out = run_without_package(
            f"""
            import os
            os.environ.update(HF_ENDPOINT={hub.url!r}, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_TOKEN={token!r},
                              HF_HOME={str(tmp_path / "hf_home")!r})
            import json, torch
            from transformers import AutoBackbone
            backbone = AutoBackbone.from_pretrained("test-user/tiny-vit", trust_remote_code=True,
                                                    out_indices=[-1]).eval()
            with torch.no_grad():
                (feature_map,) = backbone(torch.load({str(tmp_path / "x.pt")!r})).feature_maps
            print(json.dumps({{"class": type(backbone).__name__, "module": type(backbone).__module__,
                               "map": feature_map.tolist()}}))
            """,
            tmp_path,
        )
    assert out["class"] == "ViTReproBackbone" and out["module"].startswith("transformers_modules.")
    with torch.no_grad():
        tokens = classifier.vit(x).last_hidden_state[:, 1:]
    assert_logits_close(torch.tensor(out["map"]), tokens.reshape(1, 4, 4, 32).permute(0, 3, 1, 2))


@pytest.mark.parametrize("field", ["out_features", "out_indices"])
def test_head_configs_carry_the_backbone_choice(field):
    """What a head saves in config.json names the stages; it comes back the same."""
    backbone = vit_backbone_config(out_indices=[1, 2])
    config = UperNetConfig.from_dict(UperNetConfig(backbone_config=backbone).to_dict())
    assert getattr(config.backbone_config, field) == {"out_features": ["stage1", "stage2"], "out_indices": [1, 2]}[field]
