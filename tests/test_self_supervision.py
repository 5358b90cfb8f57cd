"""The self-supervised heads of modeling_vit_repro.py: masked patch prediction (paper Sec. 4.6,
Appendix B.1.2) and transformers' masked-image-modeling interface (SimMIM). Parity of the latter
with transformers' own class: test_parity.py; remote code: test_auto_remote.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedImageModeling, AutoModelForPreTraining

from hf_vit_repro import (
    PatchCorruption,
    ViTReproConfig,
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
    ViTReproModel,
    masked_patch_prediction_targets,
    sample_patch_corruption,
)

from .conftest import randomize_, tiny_kwargs

SELF_SUPERVISED = [ViTReproForMaskedPatchPrediction, ViTReproForMaskedImageModeling]
NONE, MASK, RANDOM, KEEP = (int(k) for k in PatchCorruption)


def make(model_cls=ViTReproForMaskedPatchPrediction, seed=0, attn="sdpa", **overrides):
    torch.manual_seed(seed)
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    config._attn_implementation = attn
    return randomize_(model_cls(config), seed=seed).eval()


def pixels(batch=2, height=32, width=32, seed=1):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def fixed_corruption(batch, num_patches, seed=3):
    """A drawn corruption for `batch` images, as a data pipeline would pass it."""
    generator = torch.Generator().manual_seed(seed)
    drawn = [sample_patch_corruption(num_patches, generator=generator) for _ in range(batch)]
    return torch.stack([c for c, _ in drawn]), torch.stack([r for _, r in drawn])


def inputs_for(model_cls, batch=2, num_patches=16):
    """Keyword arguments that fix each class's corruption (so two models see the same)."""
    corruption, replacement_index = fixed_corruption(batch, num_patches)
    if model_cls is ViTReproForMaskedPatchPrediction:
        return {"corruption": corruption, "replacement_index": replacement_index}
    return {"bool_masked_pos": corruption != NONE}


def prediction(out):
    return out.logits if hasattr(out, "logits") else out.reconstruction


# ----------------------------------------------------------------------------- corruption sampling


@pytest.mark.parametrize("num_patches, rate", [(16, 0.5), (15, 0.5), (196, 0.5), (24, 0.15)])
def test_corruption_statistics_over_many_draws(num_patches, rate):
    """Exactly floor(rate * N + 0.5) patches per image; of those, 80/10/10 mask/random/keep. With
    about 25,000+ corrupted patches the standard error of a fraction is <= 0.0025, so 0.015 is
    6 standard errors; a "random other patch" is never the patch itself and each other patch is
    about equally likely."""
    generator = torch.Generator().manual_seed(0)
    images = max(3000, 30000 // num_patches)
    kinds, partners_of_first = [], []
    expected = math.floor(rate * num_patches + 0.5)
    for _ in range(images):
        corruption, replacement = sample_patch_corruption(num_patches, rate=rate, generator=generator)
        assert corruption.shape == replacement.shape == (num_patches,)
        assert int((corruption != NONE).sum()) == expected
        positions = torch.arange(num_patches)
        random = corruption == RANDOM
        assert torch.equal(replacement[~random], positions[~random])  # identity where not replaced
        assert not (replacement[random] == positions[random]).any()  # never the patch itself
        assert ((replacement >= 0) & (replacement < num_patches)).all()
        kinds.append(corruption[corruption != NONE])
        partners_of_first += replacement[random].tolist()
    kinds = torch.cat(kinds)
    fractions = [float((kinds == k).float().mean()) for k in (MASK, RANDOM, KEEP)]
    for got, want in zip(fractions, (0.8, 0.1, 0.1)):
        assert abs(got - want) < 0.015, fractions
    # which patch replaces: every index is a partner at about the same rate
    counts = torch.bincount(torch.tensor(partners_of_first), minlength=num_patches).float()
    assert (counts > 0).all()
    mean = counts.mean()
    assert ((counts - mean).abs() < 6 * mean.sqrt() + 1).all()


def test_corruption_split_and_rate_are_honoured():
    generator = torch.Generator().manual_seed(1)
    codes = torch.cat(
        [sample_patch_corruption(20, rate=1.0, split=(0.0, 0.0, 1.0), generator=generator)[0] for _ in range(50)]
    )
    assert (codes == KEEP).all()
    codes = torch.cat(
        [sample_patch_corruption(20, rate=0.25, split=(1, 0, 0), generator=generator)[0] for _ in range(50)]
    )
    assert int((codes == MASK).sum()) == 50 * 5 and int((codes == NONE).sum()) == 50 * 15


def test_corruption_is_a_function_of_the_generator_state():
    a = sample_patch_corruption(49, generator=torch.Generator().manual_seed(7))
    b = sample_patch_corruption(49, generator=torch.Generator().manual_seed(7))
    c = sample_patch_corruption(49, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_forward_draws_per_image_from_its_generator():
    """Without tensors, forward draws image after image from `generator`: the same as calling
    sample_patch_corruption per image with that generator, and the same again for the same seed."""
    model = make()
    x = pixels(batch=3)
    out = model(x, generator=torch.Generator().manual_seed(5))
    corruption, replacement = fixed_corruption(3, 16, seed=5)
    assert torch.equal(out.corruption, corruption) and torch.equal(out.replacement_index, replacement)
    again = model(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(again.loss, out.loss, atol=0, rtol=0)
    given = model(x, corruption=corruption, replacement_index=replacement)
    torch.testing.assert_close(given.logits, out.logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_patches": 0}, "num_patches"),
        ({"num_patches": 16, "rate": 0.0}, "rate"),
        ({"num_patches": 16, "split": (0.5, 0.5, 0.5)}, "split"),
        ({"num_patches": 1}, "at least 2 patches"),
    ],
)
def test_corruption_arguments_are_checked(kwargs, message):
    num_patches = kwargs.pop("num_patches")
    with pytest.raises(ValueError, match=message):
        sample_patch_corruption(num_patches, **kwargs)


# ----------------------------------------------------------------------------- targets


def normalise(image01, mean, std):
    return (image01 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_mean_color_target_against_hand_computed_bins():
    """A 16 x 24 image of six 8 x 8 patches (a 2 x 3 grid, not square), each with a colour whose
    3-bit class is worked out by hand: channel bin = floor(8 x) (x = 1 in bin 7), class = 64 r + 8 g + b.
    The image is normalised with ImageNet's mean/std and the target de-normalises with the same."""
    image = torch.zeros(3, 16, 24)
    image[:, 0:8, 0:8] = torch.tensor([0.30, 0.60, 0.99]).view(3, 1, 1)  # bins 2, 4, 7 -> 128 + 32 + 7
    image[:, 0:8, 8:16] = 1.0  # all bins 7 -> 511
    # left half 0, right half 1: mean 0.5 -> bin 4 in every channel -> 256 + 32 + 4
    image[:, 0:8, 20:24] = 1.0
    image[:, 8:16, 0:8] = torch.tensor([0.124, 0.126, 0.0]).view(3, 1, 1)  # bins 0, 1, 0 -> 8
    # one red pixel in 64: mean red 1/64 -> bin 0; the rest 0.9 green (bin 7): 0 + 56 + 0
    image[1, 8:16, 8:16] = 0.9
    image[0, 8, 8] = 1.0
    image[:, 8:16, 16:24] = torch.tensor([0.875, 0.874, 0.5]).view(3, 1, 1)  # bins 7, 6, 4 -> 448 + 48 + 4
    expected = torch.tensor([[167, 511, 292, 8, 56, 500]])
    x = normalise(image, *IMAGENET).unsqueeze(0)
    targets = masked_patch_prediction_targets(x, (8, 8), "mean_color_3bit", *IMAGENET)
    assert targets.dtype == torch.int64
    assert torch.equal(targets, expected)
    # inputs outside [0, 1] after de-normalisation are clipped (x = 1.5 -> bin 7, -0.2 -> bin 0)
    clipped = masked_patch_prediction_targets(torch.full((1, 3, 8, 8), 2.0), (8, 8), "mean_color_3bit")
    assert clipped.tolist() == [[511]]  # 2.0 * 0.5 + 0.5 = 1.5
    # the model computes the same targets with the config's mean/std, on its non-square grid
    model = make(image_size=(16, 24), mpp_image_mean=list(IMAGENET[0]), mpp_image_std=list(IMAGENET[1]))
    assert torch.equal(model(x).targets, expected)


def test_downsized_4x4_target_against_hand_computed_cells():
    """An 8 x 8 patch downsized to 4 x 4 averages 2 x 2 pixel cells; each cell gets a 3-bit colour."""
    generator = torch.Generator().manual_seed(0)
    cells = torch.rand(3, 4, 4, generator=generator)
    image = cells.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (3, 8, 8): each cell 2 x 2 pixels
    image[:, 0, 0] = cells[:, 0, 0] + 0.01  # not flat inside a cell: the mean still decides
    image[:, 1, 1] = cells[:, 0, 0] - 0.01
    bins = (cells * 8).floor().long()
    expected = (bins[0] * 64 + bins[1] * 8 + bins[2]).flatten()  # row-major cells
    x = normalise(image, (0.5,) * 3, (0.5,) * 3).unsqueeze(0)
    targets = masked_patch_prediction_targets(x, (8, 8), "downsized_4x4_3bit")
    assert targets.shape == (1, 1, 16) and torch.equal(targets[0, 0], expected)


def test_l2_target_is_the_normalised_patch_and_the_loss_its_mse_on_corrupted_patches():
    model = make(mpp_target="l2_patch")
    assert model.mpp_head.out_features == 3 * 8 * 8
    x = pixels()
    corruption, replacement = fixed_corruption(2, 16)
    out = model(x, corruption=corruption, replacement_index=replacement)
    # the patch in row 1, column 2 of image 0 is token 1 * 4 + 2 = 6, flattened (C, ph, pw)
    torch.testing.assert_close(out.targets[0, 6], x[0, :, 8:16, 16:24].flatten(), atol=0, rtol=0)
    chosen = corruption != NONE
    expected = ((out.logits - out.targets) ** 2).mean(-1)[chosen].mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("target", ["mean_color_3bit", "downsized_4x4_3bit", "l2_patch"])
def test_uncorrupted_patches_carry_no_loss(target):
    """The gradient of the loss reaches only the logits of corrupted patches (mask, random and kept
    alike), and the loss is the mean over them of the per-patch loss, computed here by hand."""
    model = make(mpp_target=target).train()
    corruption, replacement = fixed_corruption(2, 16)
    corruption[0, :4] = torch.tensor([MASK, RANDOM, KEEP, NONE])
    replacement[0, 1] = 9
    out = model(pixels(), corruption=corruption, replacement_index=replacement)
    out.logits.retain_grad()
    out.loss.backward()
    grad = out.logits.grad.flatten(2).abs().sum(-1)  # (B, N)
    chosen = corruption != NONE
    assert (grad[~chosen] == 0).all()
    assert (grad[chosen] > 0).all()
    if target == "l2_patch":
        per_patch = ((out.logits - out.targets) ** 2).mean(-1)
    else:
        logits = out.logits.reshape(2, 16, -1, 512)
        per_patch = F.cross_entropy(logits.permute(0, 3, 1, 2), out.targets.reshape(2, 16, -1), reduction="none").mean(-1)
    torch.testing.assert_close(out.loss, per_patch[chosen].mean(), atol=1e-5, rtol=1e-5)


def test_corruption_reaches_the_patch_embeddings():
    """hidden_states[0] (the embeddings): MASK positions hold the [mask] embedding, RANDOM positions
    the other patch's embedding, NONE and KEEP their own; position embeddings stay in place."""
    model = make()
    with torch.no_grad():
        model.vit.embeddings.mask_token.normal_()
    x = pixels()
    corruption = torch.full((2, 16), NONE)
    corruption[0, :4] = torch.tensor([MASK, RANDOM, KEEP, NONE])
    replacement = torch.arange(16).repeat(2, 1)
    replacement[0, 1] = 11
    replacement[0, 3] = 5  # read only at RANDOM positions: ignored here
    with torch.no_grad():
        out = model(x, corruption=corruption, replacement_index=replacement, output_hidden_states=True)
        patches = model.vit.embeddings.patch_embeddings(x)  # (B, N, D)
    embedded = out.hidden_states[0][:, 1:]  # class token dropped
    position = model.vit.embeddings.position_embeddings[0, 1:]
    torch.testing.assert_close(embedded[0, 0], model.vit.embeddings.mask_token[0, 0] + position[0])
    torch.testing.assert_close(embedded[0, 1], patches[0, 11] + position[1])
    torch.testing.assert_close(embedded[0, 2:], patches[0, 2:] + position[2:])
    torch.testing.assert_close(embedded[1], patches[1] + position)
    assert torch.equal(out.replacement_index[0, :4], torch.tensor([0, 11, 2, 3]))


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_non_square_grid_and_other_resolutions(pooling):
    model = make(image_size=(32, 48), pooling=pooling)
    out = model(pixels(height=32, width=48), generator=torch.Generator().manual_seed(0))
    assert out.logits.shape == (2, 24, 512) and out.targets.shape == (2, 24) and out.corruption.shape == (2, 24)
    assert int((out.corruption[0] != NONE).sum()) == 12
    bigger = model(pixels(height=48, width=40), interpolate_pos_encoding=True)
    assert bigger.logits.shape == (2, 30, 512) and torch.isfinite(bigger.loss)
    mim = make(ViTReproForMaskedImageModeling, image_size=(32, 48), pooling=pooling)
    out = mim(pixels(height=32, width=48), bool_masked_pos=torch.rand(2, 24) < 0.5)
    assert out.reconstruction.shape == (2, 3, 32, 48) and torch.isfinite(out.loss)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"corruption": torch.zeros(2, 15, dtype=torch.long)}, r"\(batch, num_patches\) = \(2, 16\)"),
        ({"corruption": torch.full((2, 16), 7)}, "codes outside"),
        ({"corruption": torch.full((2, 16), RANDOM)}, "pass `replacement_index`"),
        ({"replacement_index": torch.zeros(2, 16, dtype=torch.long)}, "without `corruption`"),
        (
            {"corruption": torch.full((2, 16), RANDOM), "replacement_index": torch.full((2, 16), 16)},
            r"in \[0, 16\)",
        ),
    ],
)
def test_bad_corruption_inputs_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make()(pixels(), **kwargs)


@pytest.mark.parametrize("model_cls", SELF_SUPERVISED)
def test_hybrid_and_pre_logits_are_refused(model_cls):
    hybrid = ViTReproConfig(
        **tiny_kwargs(patch_size=1, backbone_config={"depths": [1, 1], "hidden_sizes": [32, 64], "num_groups": 8})
    )
    with pytest.raises(ValueError, match="plain ViTs only"):
        model_cls(hybrid)
    with pytest.raises(ValueError, match="representation_size=None"):
        model_cls(ViTReproConfig(**tiny_kwargs(representation_size=16)))


def test_plain_model_without_mask_token_refuses_bool_masked_pos():
    with pytest.raises(ValueError, match="use_mask_token=True"):
        make(ViTReproModel)(pixels(), bool_masked_pos=torch.zeros(2, 16, dtype=torch.bool))
    model = make(ViTReproModel)  # a replacement index alone needs no mask token
    assert model(pixels(), replacement_index=torch.arange(16).repeat(2, 1)).last_hidden_state.shape == (2, 17, 32)


# ----------------------------------------------------------------------------- masked image modeling


def test_masked_image_modeling_loss_and_reconstruction_by_hand():
    """transformers' semantics: class token dropped, tokens laid out on the grid, 1x1 conv then
    PixelShuffle; the L1 loss summed over masked pixels, divided by their count (+1e-5) and by C."""
    model = make(ViTReproForMaskedImageModeling, image_size=(32, 48))
    assert model.encoder_stride == 8 and model.decoder[0].out_channels == 8 * 8 * 3
    x = pixels(height=32, width=48)
    mask = torch.rand(2, 24, generator=torch.Generator().manual_seed(0)) < 0.4
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask)
        tokens = model.vit(x, bool_masked_pos=mask).last_hidden_state[:, 1:]  # (2, 24, 32)
    grid = tokens.reshape(2, 4, 6, 32).permute(0, 3, 1, 2)
    conv = F.conv2d(grid, model.decoder[0].weight, model.decoder[0].bias)  # (2, 3 * 64, 4, 6)
    expected = conv.reshape(2, 3, 8, 8, 4, 6).permute(0, 1, 4, 2, 5, 3).reshape(2, 3, 32, 48)
    torch.testing.assert_close(out.reconstruction, expected, atol=1e-5, rtol=0)
    pixel_mask = torch.zeros(2, 1, 32, 48)
    for b, n in mask.nonzero().tolist():
        row, col = divmod(n, 6)
        pixel_mask[b, 0, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 1
    loss = ((x - expected).abs() * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / 3
    torch.testing.assert_close(out.loss, loss, atol=1e-6, rtol=1e-5)
    assert model(x).loss is None  # no mask, no loss


def test_masked_image_modeling_stride_must_match_the_patch_to_compute_a_loss():
    model = make(ViTReproForMaskedImageModeling, encoder_stride=4)
    assert model(pixels()).reconstruction.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="must equal the patch size"):
        model(pixels(), bool_masked_pos=torch.zeros(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="set `encoder_stride` explicitly"):
        ViTReproForMaskedImageModeling(ViTReproConfig(**tiny_kwargs(patch_size=(8, 4))))


# ----------------------------------------------------------------------------- the classifier's checks


@pytest.mark.parametrize("model_cls", SELF_SUPERVISED)
def test_eager_and_sdpa_agree(model_cls):
    kwargs = inputs_for(model_cls)
    x = pixels()
    eager = make(model_cls, attn="eager")(x, output_hidden_states=True, **kwargs)
    sdpa = make(model_cls, attn="sdpa")(x, output_hidden_states=True, **kwargs)
    torch.testing.assert_close(prediction(eager), prediction(sdpa), atol=1e-5, rtol=0)
    torch.testing.assert_close(eager.loss, sdpa.loss, atol=1e-5, rtol=0)
    for a, b in zip(eager.hidden_states, sdpa.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_cls", SELF_SUPERVISED)
def test_gradient_checkpointing_gives_same_gradients(model_cls):
    kwargs = inputs_for(model_cls)
    grads = []
    for checkpointing in (False, True):
        model = make(model_cls)
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.vit.layers[0].gradient_checkpointing
        model.train()
        model(pixels(), **kwargs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0]["vit.embeddings.mask_token"].abs().sum() > 0  # the mask token is trained
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("model_cls", SELF_SUPERVISED)
def test_save_load_round_trip(model_cls, tmp_path):
    model = make(model_cls, mpp_target="downsized_4x4_3bit", mpp_image_mean=[0.4, 0.5, 0.6])
    model.save_pretrained(tmp_path)
    loaded = model_cls.from_pretrained(tmp_path).eval()
    assert loaded.config.mpp_target == "downsized_4x4_3bit" and list(loaded.config.mpp_image_mean) == [0.4, 0.5, 0.6]
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.vit.embeddings.mask_token.abs().sum() > 0  # loaded, not zero-initialised
    kwargs, x = inputs_for(model_cls), pixels()
    with torch.no_grad():
        a, b = model(x, **kwargs), loaded(x, **kwargs)
    # same weights and kernels: equal up to the last bits
    torch.testing.assert_close(prediction(a), prediction(b), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=0)


def test_auto_classes_resolve_the_self_supervised_classes(tmp_path):
    config = ViTReproConfig(**tiny_kwargs())
    assert type(AutoModelForMaskedImageModeling.from_config(config)) is ViTReproForMaskedImageModeling
    assert type(AutoModelForPreTraining.from_config(config)) is ViTReproForMaskedPatchPrediction
    make(ViTReproForMaskedImageModeling).save_pretrained(tmp_path / "mim")
    make().save_pretrained(tmp_path / "mpp")
    assert type(AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "mim")) is ViTReproForMaskedImageModeling
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "mpp")) is ViTReproForMaskedPatchPrediction


@pytest.mark.parametrize("model_cls", SELF_SUPERVISED)
def test_classifier_from_a_self_supervised_checkpoint_loads_the_encoder(model_cls, tmp_path):
    """`init_from` of an MPP / MIM checkpoint: the classifier takes the encoder, reports the
    prediction head and the mask token as unused and its own head as new."""
    pretrained = make(model_cls)
    pretrained.save_pretrained(tmp_path)
    model, info = ViTReproForImageClassification.from_pretrained(tmp_path, num_labels=5, output_loading_info=True)
    head = {"mpp_head.weight", "mpp_head.bias"} if model_cls is ViTReproForMaskedPatchPrediction else {
        "decoder.0.weight", "decoder.0.bias"
    }
    assert set(info["unexpected_keys"]) == head | {"vit.embeddings.mask_token"}
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    encoder = pretrained.vit.state_dict()
    for name, value in model.vit.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    assert model.classifier.out_features == 5 and torch.count_nonzero(model.classifier.weight) == 0
    # and the other way: pretraining initialised from a classifier starts with a new head
    model.save_pretrained(tmp_path / "clf")
    again, info = model_cls.from_pretrained(tmp_path / "clf", output_loading_info=True)
    assert set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias"}
    assert set(info["missing_keys"]) == head | {"vit.embeddings.mask_token"}
    assert torch.count_nonzero(again.vit.embeddings.mask_token) == 0


def test_training_steps_reduce_the_masked_patch_prediction_loss():
    model = make().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = pixels(batch=4)
    corruption, replacement = fixed_corruption(4, 16)
    losses = []
    for _ in range(8):
        loss = model(x, corruption=corruption, replacement_index=replacement).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.8 * losses[0], losses


def test_mask_token_skips_weight_decay():
    model = make()
    assert "vit.embeddings.mask_token" in model.no_weight_decay()
    assert "mpp_head.weight" not in model.no_weight_decay()
