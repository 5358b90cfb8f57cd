"""ViTReproBackbone (AutoBackbone) and `forward_intermediates`: feature maps against the classifier's
own hidden states and against timm's `forward_intermediates`, transformers' backbone conventions,
loading from classifier checkpoints (also as remote code, without this package)."""

import importlib.util
import os
import sys
import unittest
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoBackbone, BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from hf_vit_repro import ViTReproBackbone, ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro.convert import convert_timm_state_dict, load_converted

from .conftest import assert_logits_close, randomize_, run_without_package, tiny_kwargs
from .test_hybrid import our_hybrid, timm_hybrid
from .test_parity import timm_vit

# Tolerance against timm (another implementation: its own attention and resampling kernels), as in
# test_parity.py and test_hybrid.py.
TIMM_ATOL = {"vit": 1e-5, "hybrid": 1e-4}


def tokens_to_map(tokens, grid):
    """(B, 1 + N, D) with the class token first -> (B, D, rows, cols): the reshape written out once more here."""
    batch, _, dim = tokens.shape
    return tokens[:, 1:].reshape(batch, grid[0], grid[1], dim).permute(0, 3, 1, 2)


def shared_backbone(classifier, **config_overrides):
    """A backbone sharing the classifier's parameter tensors (so the same kernels read the same buffers)."""
    fields = classifier.config.to_dict()
    if {"out_features", "out_indices"} & set(config_overrides):  # the other one follows from the one given
        fields.update(out_features=None, out_indices=None)
    config = ViTReproConfig.from_dict({**fields, **config_overrides})
    backbone = ViTReproBackbone(config).eval()
    state = {k.removeprefix("vit."): v for k, v in classifier.state_dict().items() if k.startswith("vit.")}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False, assign=True)
    assert not unexpected and all(key.startswith("feature_pyramid.") for key in missing), (missing, unexpected)
    return backbone


# ----------------------------------------------------------------------------- feature maps vs hidden states


@pytest.mark.parametrize("size", [(32, 32), (48, 64)], ids=["training-size", "48x64"])
def test_vit_feature_maps_are_the_classifiers_hidden_states(size):
    """Every stage's map is the classifier's hidden state, class token dropped, on the token grid: bit for
    bit where the backbone shares the classifier's weights; the final-norm map is `last_hidden_state`."""
    classifier = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())), std=0.1).eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    grid = (size[0] // 8, size[1] // 8)
    interpolate = size != (32, 32)
    with torch.no_grad():
        reference = classifier.vit(x, output_hidden_states=True, interpolate_pos_encoding=interpolate)
        raw = shared_backbone(classifier, out_indices=[0, 1, 2], apply_layernorm=False)(x)
        normed = shared_backbone(classifier, out_features=["stage2"])(x)
    assert isinstance(raw, BackboneOutput) and raw.hidden_states is None and raw.attentions is None
    assert len(raw.feature_maps) == 3
    for feature_map, hidden_state in zip(raw.feature_maps, reference.hidden_states, strict=True):
        assert feature_map.shape == (2, 32, *grid)
        assert torch.equal(feature_map, tokens_to_map(hidden_state, grid))
    assert torch.equal(normed.feature_maps[0], tokens_to_map(reference.last_hidden_state, grid))


@pytest.mark.parametrize("size", [(64, 64), (96, 128)], ids=["training-size", "96x128"])
def test_hybrid_feature_maps_are_the_classifiers_resnet_stages_and_hidden_states(size):
    classifier = randomize_(ViTReproForImageClassification(our_hybrid("r50-like")), std=0.1).eval()
    stages = classifier.config.stage_names
    assert stages == ["resnet_stem", "resnet_stage1", "resnet_stage2", "resnet_stage3", "stem", "stage1", "stage2"]
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    grid = (size[0] // 16, size[1] // 16)
    with torch.no_grad():
        reference = classifier.vit(x, output_hidden_states=True, interpolate_pos_encoding=size != (64, 64))
        cnn = classifier.vit.embeddings.patch_embeddings.cnn_feature_maps(x)  # what the classifier's ViT reads
        backbone = shared_backbone(classifier, out_features=stages, apply_layernorm=False)
        out = backbone(x, output_hidden_states=True)
    assert backbone.channels == [16, 32, 64, 128, 32, 32, 32]
    strides = [4, 4, 8, 16]
    for feature_map, expected, stride in zip(out.feature_maps[:4], cnn, strides, strict=True):
        assert feature_map.shape[-2:] == (size[0] // stride, size[1] // stride)
        assert torch.equal(feature_map, expected)
    for feature_map, hidden_state in zip(out.feature_maps[4:], reference.hidden_states, strict=True):
        assert torch.equal(feature_map, tokens_to_map(hidden_state, grid))
    # hidden_states: one per stage, the raw tokens for the ViT stages
    assert len(out.hidden_states) == len(stages)
    assert torch.equal(out.hidden_states[-1], reference.hidden_states[-1])


# ----------------------------------------------------------------------------- against timm


@pytest.mark.parametrize("size", [(32, 32), (48, 32)], ids=["training-size", "48x32"])
def test_forward_intermediates_match_timm(size):
    """Our `forward_intermediates` against timm's (its own implementation) on the same weights, all
    three output forms, at the training size and at another one (both resample bicubic + antialias)."""
    shape = {k: v for k, v in tiny_kwargs(num_hidden_layers=3).items() if k != "num_labels"}
    reference = timm_vit(shape)
    config = ViTReproConfig(**shape, num_labels=5, position_embedding_interpolation="bicubic_antialias")
    ours = load_converted(config, convert_timm_state_dict(reference.state_dict()))
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    atol = TIMM_ATOL["vit"]
    with torch.no_grad():
        for kwargs in (
            dict(indices=2, norm=True),
            dict(indices=[0, -1], output_fmt="NLC"),
            dict(indices=[1], return_prefix_tokens=True),
        ):
            final, theirs = reference.forward_intermediates(x, **kwargs)
            our_final, mine = ours.forward_intermediates(x, **kwargs)
            torch.testing.assert_close(our_final, final, atol=atol, rtol=0)
            assert len(mine) == len(theirs)
            for a, b in zip(mine, theirs, strict=True):
                for a_part, b_part in zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]:
                    torch.testing.assert_close(a_part, b_part, atol=atol, rtol=0)


def test_hybrid_backbone_matches_timms_resnet_stages_and_blocks():
    reference = timm_hybrid("r50-like")
    config = our_hybrid("r50-like", position_embedding_interpolation="bicubic_antialias")
    classifier = load_converted(config, convert_timm_state_dict(reference.state_dict())).eval()
    backbone = shared_backbone(classifier, out_features=["resnet_stage1", "resnet_stage2", "resnet_stage3", "stage2"])
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(3))
    atol = TIMM_ATOL["hybrid"]
    with torch.no_grad():
        maps = backbone(x).feature_maps
        cnn = reference.patch_embed.backbone.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
        blocks = reference.forward_intermediates(x, indices=[1], norm=True, intermediates_only=True)
    for ours, theirs in zip(maps, [*cnn, *blocks], strict=True):
        torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)


# ----------------------------------------------------------------------------- forward_intermediates contract


def count_block_calls(model):
    calls = []
    for index, layer in enumerate(model.base_model.layers):
        layer.register_forward_hook(lambda module, args, output, index=index: calls.append(index))
    return calls


def test_forward_intermediates_indices_stop_early_and_chosen_attention():
    config = ViTReproConfig(**tiny_kwargs(num_hidden_layers=4))
    model = randomize_(ViTReproModel(config), std=0.1).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    calls = count_block_calls(model)
    with torch.no_grad():
        everything = model(x, output_hidden_states=True)
        attentions = model(x, output_attentions=True).attentions  # eager kernel for every block
        calls.clear()
        # intermediates_only stops after the last block asked for: blocks 0 and 1 run, not 2 and 3
        first_two = model.forward_intermediates(x, indices=[1, 0], intermediates_only=True)
        assert calls == [0, 1] and len(first_two) == 2
        for got, index in zip(first_two, [0, 1], strict=True):
            assert torch.equal(got, tokens_to_map(everything.hidden_states[index + 1], (4, 4)))
        calls.clear()
        final, last_two = model.forward_intermediates(x, indices=2, norm=True, output_fmt="NLC")
        assert calls == [0, 1, 2, 3]
        assert torch.equal(final, everything.last_hidden_state)
        assert torch.equal(last_two[-1], everything.last_hidden_state[:, 1:])
        # attention weights of the chosen blocks only: the others keep the fused kernels (no weights)
        weights = []
        hooks = [
            layer.attention.register_forward_hook(lambda m, a, out, i=i: weights.append((i, out[1] is not None)))
            for i, layer in enumerate(model.layers)
        ]
        result = model.forward_intermediates(
            x, indices=[0], attention_indices=[1, -1], output_dict=True, intermediates_only=True
        )
        for hook in hooks:
            hook.remove()
    assert [index for index, materialised in weights if materialised] == [1, 3]
    assert set(result) == {"image_intermediates", "attentions"}
    # (the blocks before them ran the fused kernels here, the eager one there: rounding apart)
    for got, index in zip(result["attentions"], [1, 3], strict=True):
        assert_logits_close(got, attentions[index])


def test_forward_intermediates_from_the_classifier_and_gap():
    """Every class runs its base model's blocks; without a class token nothing is dropped."""
    config = ViTReproConfig(**tiny_kwargs(pooling="gap"))
    classifier = randomize_(ViTReproForImageClassification(config), std=0.1).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hidden = classifier.vit(x, output_hidden_states=True).hidden_states
        (pair,) = classifier.forward_intermediates(x, indices=[0], return_prefix_tokens=True, intermediates_only=True)
    feature_map, prefix = pair
    assert prefix.shape == (1, 0, 32)
    assert torch.equal(feature_map, hidden[1].reshape(1, 4, 4, 32).permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(indices=3), "last 3 blocks; the model has 2"),
        (dict(indices=[2]), "not a block index of this 2-block model"),
        (dict(indices=[]), "is empty"),
        (dict(output_fmt="NHWC"), "'NCHW'"),
        (dict(attention_indices=[0]), "output_dict=True"),
    ],
)
def test_forward_intermediates_bad_arguments_say_what_to_pass(kwargs, match):
    model = ViTReproModel(ViTReproConfig(**tiny_kwargs()))
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(torch.zeros(1, 3, 32, 32), **kwargs)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model.forward_intermediates(torch.zeros(1, 3, 36, 32))


# ----------------------------------------------------------------------------- transformers' conventions


def test_backbone_config_follows_transformers_conventions(tmp_path):
    config = ViTReproConfig(**tiny_kwargs(num_hidden_layers=3))
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert (config.out_features, config.out_indices) == (["stage3"], [3])  # the last stage by default
    # the default follows the depth, also through the fields of another config (training's build does that)
    config.num_hidden_layers = 5
    assert config.out_features == ["stage5"] and config.to_dict()["out_features"] is None
    assert ViTReproConfig(**{**config.to_dict(), "num_hidden_layers": 2}).out_features == ["stage2"]
    config = ViTReproConfig(**tiny_kwargs(num_hidden_layers=3, out_indices=[-2, -1]))
    assert config.out_features == ["stage2", "stage3"]
    config.out_features = ["stem", "stage1"]  # the setter re-aligns the indices
    assert config.out_indices == [0, 1]
    with pytest.raises(ValueError, match="subset of stage_names"):
        ViTReproConfig(**tiny_kwargs(out_features=["stage9"]))
    with pytest.raises(ValueError, match="same stages"):
        ViTReproConfig(**tiny_kwargs(out_features=["stage1"], out_indices=[2]))
    with pytest.raises(ValueError, match="follows from num_hidden_layers"):
        config.stage_names = ["stem"]
    config.save_pretrained(tmp_path)
    reloaded = ViTReproConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict() and reloaded.out_indices == [0, 1]


def test_backbone_attributes_outputs_and_auto_class():
    config = ViTReproConfig(**tiny_kwargs(out_indices=[-2, -1]))
    backbone = AutoBackbone.from_config(config).eval()
    assert type(backbone) is ViTReproBackbone and isinstance(backbone, BackboneMixin)
    assert backbone.stage_names == ["stem", "stage1", "stage2"] and backbone.num_features == [32, 32, 32]
    assert backbone.out_features == ["stage1", "stage2"] and backbone.channels == [32, 32]
    assert backbone.out_feature_channels == {"stem": 32, "stage1": 32, "stage2": 32}
    x = torch.randn(2, 3, 40, 24)
    with torch.no_grad():
        out = backbone(x, output_hidden_states=True)
        attentions = backbone(x, output_attentions=True).attentions
        as_tuple = backbone(x, return_dict=False)
    assert [tuple(m.shape) for m in out.feature_maps] == [(2, 32, 5, 3)] * 2
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 16, 32)
    assert out.attentions is None and len(attentions) == 2 and attentions[0].shape == (2, 4, 16, 16)
    assert torch.equal(as_tuple[0][1], out.feature_maps[1])
    # the class token stays in the token sequences (DPT's neck reads it)
    backbone.config.reshape_hidden_states = False
    with torch.no_grad():
        tokens = backbone(x).feature_maps
    assert tokens[1].shape == (2, 16, 32)
    torch.testing.assert_close(tokens_to_map(tokens[1], (5, 3)), out.feature_maps[1], atol=0, rtol=0)


def test_feature_pyramid_levels_channels_and_misuse():
    """ViTDet's pyramid from the last map: scale 1 is the map itself, 0.5 its 2x2 max pool, 2 and 4
    transposed convolutions; `channels` lists the levels' widths (what UperNet sizes itself by)."""
    classifier = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())), std=0.1).eval()
    backbone = shared_backbone(classifier, feature_pyramid_scales=[4, 2, 1, 0.5])
    plain = shared_backbone(classifier)
    assert backbone.channels == [8, 16, 32, 32] and plain.channels == [32]
    x = torch.randn(1, 3, 64, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        maps = backbone(x).feature_maps
        (single,) = plain(x).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, 8, 32, 16), (1, 16, 16, 8), (1, 32, 8, 4), (1, 32, 4, 2)]
    assert torch.equal(maps[2], single)
    assert torch.equal(maps[3], torch.nn.functional.max_pool2d(single, 2))
    with pytest.raises(ValueError, match="built from one ViT map"):
        ViTReproBackbone(ViTReproConfig(**tiny_kwargs(feature_pyramid_scales=[2, 1], out_indices=[1, 2])))
    with pytest.raises(StrictDataclassError, match="finest first"):
        ViTReproConfig(**tiny_kwargs(feature_pyramid_scales=[1, 2]))


# ----------------------------------------------------------------------------- checkpoints and remote code


def save_classifier(path, **overrides):
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    classifier = randomize_(ViTReproForImageClassification(config), std=0.1).eval()
    classifier.save_pretrained(path)
    return classifier


def test_backbone_loads_a_classifier_checkpoint_and_drops_the_head(tmp_path):
    classifier = save_classifier(tmp_path / "clf", representation_size=16)
    backbone, info = ViTReproBackbone.from_pretrained(tmp_path / "clf", out_indices=[1, 2], output_loading_info=True)
    assert backbone.out_features == ["stage1", "stage2"]
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias", "vit.pooler.dense.weight", "vit.pooler.dense.bias"}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        maps = backbone.eval()(x).feature_maps
        reference = classifier.vit(x, output_hidden_states=True)
    # weights read back from the file: separately computed passes, the suite's float32 tolerance
    assert_logits_close(maps[1], tokens_to_map(reference.last_hidden_state, (4, 4)))
    assert_logits_close(maps[0], tokens_to_map(classifier.vit.layernorm(reference.hidden_states[1]), (4, 4)))
    # and back: a saved backbone is a checkpoint the classifier reads (its head starts anew)
    backbone.save_pretrained(tmp_path / "backbone")
    again, info = ViTReproForImageClassification.from_pretrained(tmp_path / "backbone", output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias", "vit.pooler.dense.weight", "vit.pooler.dense.bias"}
    assert torch.equal(again.vit.layers[1].mlp.fc2.weight, classifier.vit.layers[1].mlp.fc2.weight)


def test_backbone_loads_a_masked_patch_prediction_checkpoint(tmp_path):
    from hf_vit_repro import ViTReproForMaskedPatchPrediction

    pretrained = randomize_(ViTReproForMaskedPatchPrediction(ViTReproConfig(**tiny_kwargs())), std=0.1).eval()
    pretrained.save_pretrained(tmp_path)
    backbone, info = ViTReproBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert set(info["unexpected_keys"]) == {"vit.embeddings.mask_token", "mpp_head.weight", "mpp_head.bias"}
    assert torch.equal(backbone.layers[0].attention.qkv.weight, pretrained.vit.layers[0].attention.qkv.weight)


def test_backbone_loads_as_remote_code_without_the_package(tmp_path):
    """A classifier checkpoint's own code builds the backbone in a process that cannot import this
    package. (transformers 5.24's `AutoBackbone.from_pretrained` asks the Hub whether the name is a repo
    before anything else, so it refuses local folders: the class is taken from the folder's code here,
    and `AutoBackbone` is tested against a Hub in test_dense_prediction.py.)"""
    classifier = save_classifier(tmp_path / "clf")
    x = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(8))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import json, torch
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        path = {str(tmp_path / "clf")!r}
        backbone_class = get_class_from_dynamic_module("modeling_vit_repro.ViTReproBackbone", path)
        backbone = backbone_class.from_pretrained(path, out_features=["stage2"]).eval()
        with torch.no_grad():
            (feature_map,) = backbone(torch.load({str(tmp_path / "x.pt")!r})).feature_maps
            intermediates = backbone.forward_intermediates(torch.load({str(tmp_path / "x.pt")!r}), indices=1,
                                                           norm=True, intermediates_only=True)
        print(json.dumps({{"module": type(backbone).__module__, "map": feature_map.tolist(),
                           "intermediate": intermediates[0].tolist(), "channels": backbone.channels}}))
        """,
        tmp_path,
    )
    assert out["module"].startswith("transformers_modules.") and out["channels"] == [32]
    with torch.no_grad():
        expected = tokens_to_map(classifier.vit(x, interpolate_pos_encoding=True).last_hidden_state, (6, 5))
    assert_logits_close(torch.tensor(out["map"]), expected)
    assert_logits_close(torch.tensor(out["intermediate"]), expected)


# ----------------------------------------------------------------------------- transformers' own backbone tests
#
# transformers' BackboneTesterMixin lives in its repository's tests/test_backbone_common.py, which the
# pip package does not ship; its source distribution does, and `make install` extracts it into
# .venv/transformers-tests/ (the Makefile's transformers-tests target). TRANSFORMERS_TESTS_DIR may name
# another copy (a transformers checkout's tests/). It needs nothing from the network.
TRANSFORMERS_TESTS = os.environ.get("TRANSFORMERS_TESTS_DIR") or str(Path(sys.prefix) / "transformers-tests")


def _transformers_backbone_tester_mixin():
    path = Path(TRANSFORMERS_TESTS, "test_backbone_common.py")
    if not path.is_file():
        return None
    import transformers.backbone_utils
    import transformers.utils.backbone_utils

    # Older copies of the file import BackboneType from its former home (utils.backbone_utils).
    if not hasattr(transformers.utils.backbone_utils, "BackboneType"):
        transformers.utils.backbone_utils.BackboneType = transformers.backbone_utils.BackboneType
    spec = importlib.util.spec_from_file_location("transformers_test_backbone_common", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.BackboneTesterMixin


class _TinyBackboneTester:
    """What BackboneTesterMixin asks of a model tester: a tiny config choosing two stages, and inputs."""

    def prepare_config_and_inputs_for_common(self):
        config = ViTReproConfig(**tiny_kwargs(num_hidden_layers=3, out_features=["stage1", "stage3"]))
        return config, {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))}


BackboneTesterMixin = _transformers_backbone_tester_mixin()

if BackboneTesterMixin is not None:

    class TestTransformersBackboneTesterMixin(BackboneTesterMixin, unittest.TestCase):
        all_model_classes = (ViTReproBackbone,)
        config_class = ViTReproConfig
        has_attentions = True

        def setUp(self):
            self.model_tester = _TinyBackboneTester()

else:

    def test_transformers_backbone_tester_mixin():
        message = (f"transformers' test_backbone_common.py is not in {TRANSFORMERS_TESTS}: run `make transformers-tests` "
                   "(or set TRANSFORMERS_TESTS_DIR to a transformers checkout's tests/)")
        if os.environ.get("CI"):  # `make test` provides it: in CI its absence is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
