import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vit_repro import (
    ViTReproConfig,
    ViTReproForImageClassification,
    ViTReproModel,
    resample_position_embeddings,
    resize_position_embeddings_in_state_dict,
)

from .conftest import assert_logits_close, randomize_, tiny_kwargs


def make(model_cls=ViTReproForImageClassification, seed=0, attn="sdpa", **overrides):
    torch.manual_seed(seed)
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    config._attn_implementation = attn
    return randomize_(model_cls(config), seed=seed).eval()


def pixels(batch=2, channels=3, height=32, width=32, seed=1):
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("pooling, seq", [("token", 17), ("gap", 16)])
def test_output_shapes_follow_transformers_conventions(pooling, seq):
    model = make(ViTReproModel, pooling=pooling)
    out = model(pixels(), output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, seq, 32)
    assert out.pooler_output.shape == (2, 32)
    assert len(out.hidden_states) == 2 + 1 and all(h.shape == (2, seq, 32) for h in out.hidden_states)
    assert len(out.attentions) == 2 and all(a.shape == (2, 4, seq, seq) for a in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, seq))
    # hidden_states[-1] is the last block's output before the final LayerNorm.
    torch.testing.assert_close(model.layernorm(out.hidden_states[-1]), out.last_hidden_state)
    plain = model(pixels())
    assert plain.hidden_states is None and plain.attentions is None


def test_pooling_definitions():
    token = make(ViTReproModel)
    out = token(pixels())
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])
    gap = make(ViTReproModel, pooling="gap")
    out = gap(pixels())
    assert gap.embeddings.cls_token is None
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(1))


def test_representation_layer_is_dense_tanh_on_pooled_token():
    model = make(ViTReproForImageClassification, representation_size=20)
    out = model(pixels(), output_hidden_states=True)
    normed = model.vit.layernorm(out.hidden_states[-1])[:, 0]
    pre_logits = torch.tanh(model.vit.pooler.dense(normed))
    torch.testing.assert_close(out.logits, model.classifier(pre_logits))
    assert model.classifier.in_features == 20


def test_return_dict_false_gives_tuple():
    model = make()
    out = model(pixels(), labels=torch.tensor([0, 2]), return_dict=False)
    assert isinstance(out, tuple) and out[0].ndim == 0 and out[1].shape == (2, 3)


def _accepted_keywords(forward) -> set[str]:
    """What generic tooling reads off a forward signature: the named parameters, plus the keys of
    the TypedDict a `**kwargs: Unpack[...]` annotation declares (as transformers' auto_docstring
    and generation utilities do); an unannotated `**kwargs` declares nothing."""
    import inspect
    import typing

    names = set()
    for name, param in inspect.signature(forward).parameters.items():
        if param.kind is not inspect.Parameter.VAR_KEYWORD:
            names.add(name)
        elif typing.get_origin(param.annotation) is typing.Unpack:
            declared = typing.get_args(param.annotation)[0]  # a TypedDict
            names |= set(declared.__required_keys__) | set(declared.__optional_keys__)
    return names


def test_forward_signatures_declare_transformers_kwargs():
    """`**kwargs: Unpack[TransformersKwargs]` as transformers' ViT: tooling that inspects the
    signature sees output_attentions / output_hidden_states, and the model honours them through
    `can_return_tuple` (issue 14, item 5)."""
    from transformers import ViTForImageClassification, ViTModel
    from transformers.utils import TransformersKwargs

    for ours, theirs in ((ViTReproForImageClassification, ViTForImageClassification), (ViTReproModel, ViTModel)):
        accepted = _accepted_keywords(ours.forward)
        assert {"output_attentions", "output_hidden_states"} <= accepted
        assert set(TransformersKwargs.__optional_keys__) <= accepted
        # everything transformers' ViT declares, except its mask inputs (a ViT of the paper has none)
        assert _accepted_keywords(theirs.forward) - {"bool_masked_pos", "attention_mask"} <= accepted
    model = make()
    logits, attentions = model(pixels(), output_attentions=True, return_dict=False)
    assert logits.shape == (2, 3) and len(attentions) == 2 and attentions[0].shape == (2, 4, 17, 17)


def test_one_channel_and_non_square_inputs():
    model = make(num_channels=1, image_size=(32, 48))
    assert model(pixels(channels=1, height=32, width=48)).logits.shape == (2, 3)


# ----------------------------------------------------------------------------- attention modes


def test_eager_and_sdpa_agree():
    eager, sdpa = make(attn="eager"), make(attn="sdpa")
    x = pixels()
    a = eager(x, output_hidden_states=True)
    b = sdpa(x, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    for h_a, h_b in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(h_a, h_b, atol=1e-5, rtol=0)


def test_sdpa_is_default_and_switchable():
    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs()))
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"


def test_attentions_requested_under_sdpa_come_from_eager():
    """Fused kernels never materialise attention weights; asking for them runs eager."""
    x = pixels()
    sdpa_out = make(attn="sdpa")(x, output_attentions=True)
    eager_out = make(attn="eager")(x, output_attentions=True)
    assert len(sdpa_out.attentions) == 2
    for a, b in zip(sdpa_out.attentions, eager_out.attentions):
        torch.testing.assert_close(a, b)


def spy_on_sdpa(monkeypatch) -> list:
    """Registers a function in place of transformers' "sdpa" attention that counts its calls (the
    returned list) and then runs the original."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []
    original = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", spy)
    return calls


def test_sdpa_dispatch_calls_the_registered_function(monkeypatch):
    calls = spy_on_sdpa(monkeypatch)
    model = make(attn="sdpa")
    model(pixels())
    assert len(calls) == 2  # one per layer
    with torch.inference_mode():  # the CPU inference fast paths step aside too
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype)(pixels().to(dtype))
    assert len(calls) == 6


# ----------------------------------------------------------------------------- training behaviour


def test_gradient_checkpointing_gives_same_gradients():
    x, labels = pixels(), torch.tensor([0, 2])
    grads = []
    for checkpointing in (False, True):
        model = make(hidden_dropout_prob=0.0)
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.vit.layers[0].gradient_checkpointing
        model.train()
        model(x, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_dropout_active_only_in_training():
    model = make(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    x = pixels()
    torch.testing.assert_close(model(x).logits, model(x).logits)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)


@pytest.mark.parametrize(
    "problem_type, num_labels, labels, reference",
    [
        ("single_label_classification", 3, torch.tensor([0, 2]), lambda lg, lb: F.cross_entropy(lg, lb)),
        (
            "multi_label_classification",
            3,
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
            lambda lg, lb: F.binary_cross_entropy_with_logits(lg, lb),
        ),
        ("regression", 1, torch.tensor([0.5, -1.0]), lambda lg, lb: F.mse_loss(lg.squeeze(-1), lb)),
    ],
)
def test_loss_by_problem_type(problem_type, num_labels, labels, reference):
    model = make(num_labels=num_labels, problem_type=problem_type)
    out = model(pixels(), labels=labels)
    torch.testing.assert_close(out.loss, reference(out.logits, labels))


def test_training_step_reduces_loss():
    model = make()
    model.train()
    x, labels = pixels(batch=4), torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model(x, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]


def test_bfloat16_forward():
    model = make().to(torch.bfloat16)
    out = model(pixels())  # float32 inputs are cast to the weights' dtype
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()


# ----------------------------------------------------------------------------- initialisation


def test_original_code_initialisation():
    config = ViTReproConfig(**tiny_kwargs(hidden_size=64, representation_size=48))
    model = ViTReproForImageClassification(config)
    layer = model.vit.layers[0]
    assert torch.count_nonzero(model.classifier.weight) == 0  # zero-initialised head
    assert torch.count_nonzero(model.vit.embeddings.cls_token) == 0
    bound = (6 / (64 + 64)) ** 0.5  # Xavier bound of each D x D block of the fused qkv
    assert layer.attention.qkv.weight.abs().max() <= bound and layer.attention.qkv.weight.abs().max() > 0.9 * bound
    assert layer.mlp.fc1.bias.abs().max() < 1e-4 and layer.mlp.fc1.bias.abs().max() > 0
    assert torch.count_nonzero(layer.attention.qkv.bias) == 0
    assert abs(model.vit.embeddings.position_embeddings.std().item() - 0.02) < 0.004
    lecun_std = (1 / (3 * 8 * 8)) ** 0.5
    assert abs(model.vit.embeddings.patch_embeddings.projection.weight.std().item() - lecun_std) < 0.1 * lecun_std
    normal = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(hidden_size=64, classifier_init="normal")))
    assert 0.01 < normal.classifier.weight.std().item() < 0.03


def test_save_load_round_trip_is_exact_and_not_reinitialised(tmp_path):
    model = make(representation_size=16)
    model.save_pretrained(tmp_path)
    loaded = ViTReproForImageClassification.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.count_nonzero(loaded.classifier.weight) > 0  # loaded, not zero-initialised
    x = pixels()
    # The weights are bit-identical (above), but the loaded ones are other buffers, so other
    # kernels may run: the logits agree to float32 rounding (issue 14).
    assert_logits_close(loaded(x).logits, model(x).logits)
    base = ViTReproModel.from_pretrained(tmp_path)
    torch.testing.assert_close(base(x).pooler_output, model.vit(x).pooler_output)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "make_input, error, message",
    [
        (lambda: pixels(channels=1), ValueError, "has 1 channels but the model was configured with num_channels=3"),
        (lambda: pixels(height=48), ValueError, "interpolate_pos_encoding=True"),
        (lambda: pixels().to(torch.uint8), TypeError, "floating-point"),
        (lambda: pixels()[0], ValueError, r"\(batch, channels, height, width\)"),
        (lambda: None, ValueError, "pixel_values` is required"),
        (lambda: np.zeros((2, 3, 32, 32), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_give_clear_errors(make_input, error, message):
    with pytest.raises(error, match=message):
        make()(make_input())


def test_interpolation_needs_multiples_of_patch_size():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        make()(pixels(height=36), interpolate_pos_encoding=True)


# ----------------------------------------------------------------------------- position embeddings


def test_default_resampling_matches_original_code_scipy_zoom():
    """The original code resizes with scipy.ndimage.zoom(grid, zoom, order=1)."""
    from scipy import ndimage

    generator = torch.Generator().manual_seed(0)
    posemb = torch.randn(1, 1 + 4 * 4, 8, generator=generator)
    new = resample_position_embeddings(posemb, new_grid=(7, 5), num_prefix_tokens=1, interpolation="bilinear")
    grid = posemb[0, 1:].reshape(4, 4, 8).numpy()
    expected = ndimage.zoom(grid, (7 / 4, 5 / 4, 1), order=1)
    assert expected.shape == (7, 5, 8)
    np.testing.assert_allclose(new[0, 1:].reshape(7, 5, 8).numpy(), expected, atol=1e-5)
    assert torch.equal(new[:, :1], posemb[:, :1])  # class token kept as is


def test_resampling_same_grid_is_identity_and_inputs_untouched():
    posemb = torch.randn(1, 17, 8)
    before = posemb.clone()
    assert resample_position_embeddings(posemb, (4, 4)) is posemb
    resample_position_embeddings(posemb, (6, 6))
    assert torch.equal(posemb, before)
    with pytest.raises(ValueError, match="old_grid"):
        resample_position_embeddings(torch.randn(1, 1 + 12, 8), (4, 4))


@pytest.mark.parametrize("interpolation", ["bilinear", "bilinear_antialias", "bicubic", "bicubic_antialias"])
def test_interpolate_at_forward_equals_permanent_resize(interpolation):
    model = make(position_embedding_interpolation=interpolation)
    x = pixels(height=48, width=40)
    on_the_fly = model(x, interpolate_pos_encoding=True).logits
    state, config = resize_position_embeddings_in_state_dict(model.state_dict(), model.config, (48, 40))
    assert config.image_hw == (48, 40) and model.config.image_hw == (32, 32)
    assert state["vit.embeddings.position_embeddings"].shape == (1, 1 + 6 * 5, 32)
    resized = ViTReproForImageClassification(config).eval()
    resized.load_state_dict(state)
    torch.testing.assert_close(resized(x).logits, on_the_fly)
    model.resize_position_embeddings((48, 40))
    assert model.config.image_hw == (48, 40)
    torch.testing.assert_close(model(x).logits, on_the_fly)


def test_interpolation_at_training_resolution_changes_nothing():
    model = make()
    x = pixels()
    # Bit for bit: at the training grid the same position-embedding tensor is used, so the same
    # kernels run on the same buffers.
    assert torch.equal(model(x).logits, model(x, interpolate_pos_encoding=True).logits)


def test_gap_model_resamples_without_prefix():
    model = make(pooling="gap")
    assert model(pixels(height=64, width=64), interpolate_pos_encoding=True).logits.shape == (2, 3)


# ----------------------------------------------------------------------------- fine-tuning helpers


def test_no_weight_decay_names_exactly_embeddings_tokens_norms_biases():
    model = make(representation_size=16)
    skip = model.no_weight_decay()
    for name, param in model.named_parameters():
        expected = name.endswith(("bias", "position_embeddings", "cls_token")) or "layernorm" in name
        assert (name in skip) == expected, name
    assert "vit.embeddings.patch_embeddings.projection.weight" not in skip


def test_reset_classifier_is_the_papers_fine_tuning_head():
    model = make(representation_size=16)
    model.reset_classifier(5, id2label={i: str(i) for i in range(5)})
    assert model.config.num_labels == 5 and model.config.representation_size is None
    assert model.vit.pooler.dense is None and model.classifier.in_features == 32
    assert torch.count_nonzero(model.classifier.weight) == 0
    assert torch.count_nonzero(model(pixels()).logits) == 0
    with pytest.raises(ValueError, match="id2label"):
        model.reset_classifier(2, id2label={0: "a"})


def test_transformers_model_conventions():
    model = make()
    assert model.main_input_name == "pixel_values"
    assert model.base_model is model.vit
    assert model.get_input_embeddings() is model.vit.embeddings.patch_embeddings
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.supports_gradient_checkpointing and model._supports_sdpa
    assert set(model._no_split_modules) == {"ViTReproEmbeddings", "ViTReproLayer"}


@pytest.mark.parametrize("act, fused", [("gelu", True), ("gelu_pytorch_tanh", True), ("relu", False)])
def test_memory_saving_mlp_matches_autograd(act, fused):
    """Training without dropout runs act + fc2 as one autograd function that recomputes the
    activation in backward; values and gradients must equal the plain composition."""
    from hf_vit_repro.modeling_vit_repro import ViTReproMLP

    torch.manual_seed(0)
    mlp = ViTReproMLP(ViTReproConfig(**tiny_kwargs(hidden_act=act))).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64, requires_grad=True)
    assert "_GeluLinear" not in mlp(x).grad_fn.name()  # off by default: autograd's own MLP
    mlp.recompute_activation = True
    torch.autograd.gradcheck(lambda inp: mlp(inp), (x,))
    out = mlp(x)
    assert out.grad_fn.name().endswith("_GeluLinearBackward") == fused
    reference = mlp.fc2(mlp.activation(mlp.fc1(x)))
    torch.testing.assert_close(out, reference)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *mlp.parameters()], grad)
    theirs = torch.autograd.grad(reference, [x, *mlp.parameters()], grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_memory_saving_mlp_saves_less_for_backward():
    model = make().train()
    model.set_mlp_activation_recompute()
    mlp = model.vit.layers[0].mlp
    assert all(layer.mlp.recompute_activation for layer in model.vit.layers)
    x = torch.randn(4, 17, 32, requires_grad=True)

    def saved_bytes(fn):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(storages.values())

    fused = saved_bytes(lambda: mlp(x))
    plain = saved_bytes(lambda: mlp.fc2(mlp.activation(mlp.fc1(x))))
    assert fused == plain - 4 * 17 * 64 * 4  # one (B, S, intermediate) float32 tensor fewer


def test_fast_paths_under_bf16_autocast_stay_close_to_float32_eager():
    """The fast paths (sdpa, class-token-only last block, the MLP function) under bf16 autocast
    against the float32 eager reference with every token computed. Tolerance: bf16 keeps 8
    significant bits (relative rounding 2^-9 ~ 0.2%) and the two tiny blocks compound it, so
    we allow 2% of the largest logit; a wrong path is off by far more."""
    fast, reference = make().train(), make(attn="eager").train()
    x = pixels(batch=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fast(x).logits.float()
    with torch.no_grad():
        exact = reference(x, output_hidden_states=True).logits
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    torch.testing.assert_close(low.detach(), exact, atol=0.02 * exact.abs().max().item(), rtol=0)


def test_training_step_under_bf16_autocast():
    model = make()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixels(), labels=torch.tensor([0, 2])).loss
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_torch_compile_sees_no_graph_breaks(training):
    model = make()
    model.train(training)
    x, labels = pixels(), torch.tensor([0, 2])
    explanation = torch._dynamo.explain(lambda inp: model(inp, labels=labels).loss)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()


def test_cpu_inference_fast_path_matches_eager(monkeypatch):
    calls = []
    native = torch._transformer_encoder_layer_fwd

    def spy(*args):
        calls.append(1)
        return native(*args)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    model, reference = make(ViTReproModel, attn="sdpa"), make(ViTReproModel, attn="eager")
    x = pixels()
    with torch.inference_mode():
        fast = model(x).last_hidden_state
    assert len(calls) == 2  # one per layer
    torch.testing.assert_close(fast, reference(x).last_hidden_state, atol=1e-5, rtol=0)
    calls.clear()
    model(x)  # autograd on: the composed path
    model(x, output_attentions=True)
    with torch.no_grad():
        make(ViTReproModel, attn="sdpa", hidden_act="gelu_pytorch_tanh")(x)
    assert calls == []


def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _packed_block_calls(monkeypatch) -> list:
    """Counts `_packed_bf16_forward`'s calls, with the packed blocks switched on whatever the CPU (they are
    on by default only with AMX) where oneDNN computes in bf16 (x86 CPUs with AVX-512)."""
    from hf_vit_repro import modeling_vit_repro
    from hf_vit_repro.modeling_vit_repro import ViTReproLayer

    monkeypatch.setattr(modeling_vit_repro, "_PACKED_BF16", _onednn_bf16())
    calls, packed = [], ViTReproLayer._packed_bf16_forward
    monkeypatch.setattr(ViTReproLayer, "_packed_bf16_forward", lambda self, h: calls.append(h.shape) or packed(self, h))
    return calls


def _relative(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("amx", [True, False], ids=["amx", "no-amx"])
def test_packed_blocks_are_on_with_amx_only(monkeypatch, amx):
    """Measured faster than the native kernel on a Xeon with AMX, not yet on a CPU without it: the default
    follows the CPU's flags (oneDNN's bf16 operators present)."""
    from hf_vit_repro import modeling_vit_repro

    flags = {"amx_bf16": amx, "amx_tile": amx, "avx512_bf16": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    monkeypatch.setattr(modeling_vit_repro, "_PACKED_BF16", None)
    assert modeling_vit_repro._packed_bf16_blocks_enabled() is (amx and _onednn_bf16())


def test_bf16_cpu_inference_runs_packed_onednn_blocks_within_bf16_rounding(monkeypatch):
    """A bf16 model's CPU inference runs each block on oneDNN's fused linears with packed weights
    (`_packed_bf16_forward`); its output stays as close to the fp32 model's as the native kernel's bf16 output
    does (bf16 rounding, about 1% here), and within bf16 rounding of that output."""
    calls = _packed_block_calls(monkeypatch)
    if not _onednn_bf16():  # a CPU without AVX-512: no packed blocks, the native kernel runs
        with torch.inference_mode():
            make(ViTReproModel).to(torch.bfloat16)(pixels().bfloat16())
        assert calls == []
        return
    x = pixels(batch=4)
    with torch.inference_mode():
        reference = make(ViTReproModel)(x).last_hidden_state
    model = make(ViTReproModel).to(torch.bfloat16)
    with torch.inference_mode():
        packed = model(x.bfloat16()).last_hidden_state
        assert len(calls) == 2 and packed.dtype == torch.bfloat16
        for layer in model.layers:
            layer._packed_bf16_inference = False
        native = model(x.bfloat16()).last_hidden_state
        # weights cast under inference_mode have no version counter to repack by: the native kernel runs (no
        # packed call is counted), its output within bf16 rounding of the other model's native pass
        inference_cast = make(ViTReproModel).to(torch.bfloat16)
        assert _relative(inference_cast(x.bfloat16()).last_hidden_state, native) < 0.01
    assert len(calls) == 2
    assert _relative(native, reference) < 0.03
    assert _relative(packed, reference) < 1.5 * _relative(native, reference) + 1e-3
    assert _relative(packed, native) < 0.03


def test_traced_and_exported_programs_keep_no_packed_copies(monkeypatch):
    """A trace or an export of a bf16 model would hold the packed weights as constants, blind to later
    changes of the model's weights: both record the native or composed block instead."""
    calls = _packed_block_calls(monkeypatch)
    model = make(ViTReproModel).to(torch.bfloat16).requires_grad_(False)
    x = pixels().bfloat16()
    with torch.no_grad():
        torch.jit.trace(model, x, check_trace=False, strict=False)
        torch.export.export(model, (x,))
        assert calls == []
        model(x)
    assert len(calls) == (2 if _onednn_bf16() else 0)


def test_packed_weights_follow_every_change_of_the_weights(monkeypatch):
    """Packed once per weight, and packed again when it changes: an in-place update of a bf16 model, and
    the fp32 model trained between two bf16 evaluations on its bf16 copies (`precision.PrecisionRun`)."""
    from hf_vit_repro.modeling_vit_repro import _PACKED_WEIGHTS
    from hf_vit_repro.precision import PrecisionRun

    calls = _packed_block_calls(monkeypatch)
    if not _onednn_bf16():
        pytest.skip("oneDNN computes no bf16 on this CPU (no AVX-512): the packed blocks are off, as the test before checks")
    model = make()
    x = pixels(batch=4)
    run = PrecisionRun("bf16", "cpu", model=model)
    with torch.no_grad():
        run(lambda: model(x).logits)  # the first call checks against fp32
        before = run(lambda: model(x).logits)
        packed = {id(w): id(entry[1]) for w, entry in _PACKED_WEIGHTS.items()}
        assert calls and len(packed) >= 4
        run(lambda: model(x).logits)
        assert {id(w): id(entry[1]) for w, entry in _PACKED_WEIGHTS.items()} == packed  # reused, not remade
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(x, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after, trained = run(lambda: model(x).logits), model(x).logits
        bf16_model = make()
        bf16_model.load_state_dict(model.state_dict())
        assert _relative(bf16_model.to(torch.bfloat16)(x.bfloat16()).logits, trained) < 0.03
        bf16_model.vit.layers[0].mlp.fc1.weight.mul_(0)  # in place, after it was packed
        emptied = bf16_model(x.bfloat16()).logits
        bf16_model.vit.layers[0].mlp.fc1.weight.copy_(model.vit.layers[0].mlp.fc1.weight)
        restored = bf16_model(x.bfloat16()).logits
    assert _relative(after, trained) < 0.03
    assert _relative(after, before) > 0.1  # the step moved the logits, and the packed weights followed
    assert _relative(emptied, trained) > 0.05 and _relative(restored, trained) < 0.03
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------- class-token-only last block


def _last_block_mlp_inputs(model):
    shapes = []
    model.vit.layers[-1].mlp.fc1.register_forward_hook(lambda mod, args, out: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_classifier_runs_the_last_block_on_the_class_token_only(attn):
    """With token pooling the logits depend on the class token's final state alone, so the
    classifier's last block computes only that token; logits, loss and every gradient equal
    the full computation's (obtained by asking for hidden states, which needs all tokens)."""
    model = make(attn=attn).train()
    shapes = _last_block_mlp_inputs(model)
    x, labels = pixels(), torch.tensor([0, 2])
    fast = model(x, labels=labels)
    assert shapes == [(2, 1, 32)]
    fast_grads = torch.autograd.grad(fast.loss, list(model.parameters()))
    full = model(x, labels=labels, output_hidden_states=True)
    assert shapes[1] == (2, 17, 32) and full.hidden_states[-1].shape == (2, 17, 32)
    full_grads = torch.autograd.grad(full.loss, list(model.parameters()))
    torch.testing.assert_close(fast.logits, full.logits, atol=1e-5, rtol=0)
    for (name, _), a, b in zip(model.named_parameters(), fast_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    with torch.no_grad():  # the base model still returns every token, and its pooled output agrees
        base = model.vit(x)
    assert base.last_hidden_state.shape == (2, 17, 32)
    torch.testing.assert_close(model.classifier(base.pooler_output), fast.logits, atol=1e-5, rtol=0)


def test_class_token_only_block_is_skipped_when_all_tokens_are_needed():
    gap = make(pooling="gap").train()  # (eval under no_grad would take the native fused kernel)
    shapes = _last_block_mlp_inputs(gap)
    with torch.no_grad():
        gap(pixels())
    assert shapes == [(2, 16, 32)]
    model = make()
    shapes = _last_block_mlp_inputs(model)
    with torch.no_grad():
        out = model(pixels(), output_attentions=True)
        model(pixels(), interpolate_pos_encoding=True)
    assert out.attentions[-1].shape == (2, 4, 17, 17)
    assert shapes == [(2, 17, 32), (2, 1, 32)]


# ----------------------------------------------------------------------------- bf16 attention for CPU training


def _attention_inputs(queries=9, tokens=9, heads=2, head_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, heads, queries, head_dim, generator=g)
    k, v = (torch.randn(3, heads, tokens, head_dim, generator=g) for _ in range(2))
    return q, k, v, torch.randn(3, heads, queries, head_dim, generator=g)


@pytest.mark.parametrize("queries", [9, 1])  # all tokens, and the class token only (the last block)
def test_bf16_cpu_training_attention_is_sdpa_within_bf16_rounding(queries):
    from hf_vit_repro.modeling_vit_repro import _Bf16CpuAttention

    q, k, v, grad = _attention_inputs(queries=queries)
    scale = q.shape[-1] ** -0.5

    def run(fn, dtype):
        inputs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*inputs)
        out.backward(grad.to(dtype))
        return [out.float()] + [t.grad.float() for t in inputs]

    reference = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), torch.float32)
    ours = run(lambda a, b, c: _Bf16CpuAttention.apply(a, b, c, scale), torch.bfloat16)
    flash = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), torch.bfloat16)
    for name, r, o, f in zip(("output", "dq", "dk", "dv"), reference, ours, flash):
        error, flash_error = float((o - r).norm() / r.norm()), float((f - r).norm() / r.norm())
        assert error < 0.01, (name, error)  # bf16 keeps 8 bits: 0.4% per rounding
        assert error < 4 * flash_error + 1e-3, (name, error, flash_error)


def _count_bf16_attention(monkeypatch):
    from hf_vit_repro import modeling_vit_repro

    calls = []
    real = modeling_vit_repro._Bf16CpuAttention

    class Counting:
        @staticmethod
        def apply(*args):
            calls.append(1)
            return real.apply(*args)

    monkeypatch.setattr(modeling_vit_repro, "_Bf16CpuAttention", Counting)
    return calls


def test_bf16_cpu_training_attention_runs_only_where_it_applies(monkeypatch):
    calls = _count_bf16_attention(monkeypatch)
    model, x = make().train(), pixels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).logits.sum().backward()
        assert len(calls) == 2  # bf16 training: every block
        with torch.no_grad():
            model(x)  # inference: the flash kernel
        model.eval()
        with torch.no_grad():
            model(x)
    model.train()
    model(x).logits.sum().backward()  # fp32
    assert len(calls) == 2
    dropout = make(attention_probs_dropout_prob=0.1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dropout(x).logits.sum().backward()
    assert len(calls) == 2  # attention dropout: sdpa applies it
    # a function registered in sdpa's place is called, not bypassed
    seen = spy_on_sdpa(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).logits.sum().backward()
    assert len(seen) == 2 and len(calls) == 2


def test_bf16_cpu_training_step_matches_the_flash_kernel_s(monkeypatch):
    """A whole bf16 training step: the loss and every gradient with `_Bf16CpuAttention` agree with
    the same step through torch's sdpa kernel within bf16 rounding."""
    from hf_vit_repro import modeling_vit_repro

    x, labels = pixels(batch=4), torch.tensor([0, 1, 2, 0])

    def step(fast: bool):
        monkeypatch.setattr(modeling_vit_repro, "_use_bf16_cpu_training_attention",
                            (lambda *a: False) if not fast else real)
        model = make().train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).logits.float(), labels)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    real = modeling_vit_repro._use_bf16_cpu_training_attention
    calls = _count_bf16_attention(monkeypatch)
    loss_fast, grads_fast = step(True)
    assert len(calls) == 2
    loss_sdpa, grads_sdpa = step(False)
    assert len(calls) == 2  # the second step did not take it
    torch.testing.assert_close(loss_fast, loss_sdpa, rtol=0.02, atol=1e-3)
    assert grads_fast.keys() == grads_sdpa.keys()
    for name in grads_sdpa:
        a, b = grads_fast[name].float(), grads_sdpa[name].float()
        assert float((a - b).norm()) <= 0.03 * float(b.norm()) + 1e-6, name
