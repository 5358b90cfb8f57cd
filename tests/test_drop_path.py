"""Stochastic depth (`ViTReproConfig.drop_path_rate`, `modeling_vit_repro.drop_path`).

Statistics are measured over many samples and checked within 5 binomial standard deviations,
sqrt(p (1 - p) / n), of the rate asked for (a fixed seed makes each check deterministic; the
tolerance says how far a correct implementation may land from p).
"""

import math

import pytest
import torch

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro.modeling_vit_repro import drop_path

from .conftest import assert_logits_close, randomize_, tiny_kwargs


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    return randomize_(ViTReproForImageClassification(config), seed=seed).eval()


def pixels(batch=4, seed=1):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------------------- the rule and the cost when off


@pytest.mark.parametrize("depth", [1, 2, 12, 24])
def test_per_block_rates_are_timms_linear_rule(depth):
    from timm.layers import calculate_drop_path_rates  # the reference: timm's stochastic depth decay rule

    config = ViTReproConfig(**tiny_kwargs(num_hidden_layers=depth, drop_path_rate=0.3))
    assert config.drop_path_rates[0] == 0.0 and config.drop_path_rates[-1] == (0.3 if depth > 1 else 0.0)
    torch.testing.assert_close(
        torch.tensor(config.drop_path_rates), torch.tensor(calculate_drop_path_rates(0.3, depth)), atol=1e-7, rtol=0
    )
    if depth <= 2:
        model = ViTReproModel(config)
        assert [layer.drop_path_rate for layer in model.layers] == config.drop_path_rates


def test_off_by_default_and_adds_no_module_parameter_or_buffer():
    assert ViTReproConfig().drop_path_rate == 0.0
    plain, dropping = make(), make(drop_path_rate=0.5)
    assert [name for name, _ in plain.named_modules()] == [name for name, _ in dropping.named_modules()]
    assert plain.state_dict().keys() == dropping.state_dict().keys()  # FSDP shards exactly the same tensors
    assert list(dropping.named_buffers()) == []


def test_rate_zero_draws_no_random_numbers_in_training():
    model = make(hidden_dropout_prob=0.0).train()
    state = torch.get_rng_state()
    model(pixels(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------- the function


@pytest.mark.parametrize("rate", [0.5, 0.75, 0.3])
def test_drop_path_drops_whole_samples_and_scales_the_kept_ones(rate):
    n = 20000
    branch = torch.randn(n, 3, 4)
    torch.manual_seed(0)
    out = drop_path(branch, rate)
    dropped = (out == 0).flatten(1).all(1)
    kept = ~dropped
    assert torch.equal(out[kept] != 0, branch[kept] != 0)  # a sample is dropped or kept as a whole
    assert within_binomial(int(dropped.sum()), n, rate)
    scale = 1 / (1 - rate)
    if rate in (0.5, 0.75):  # 1/(1-p) is a power of two: the scaling is exact in float32
        assert torch.equal(out[kept], branch[kept] * scale)
    else:  # one float32 rounding of 1/(1-p) and one of the product
        torch.testing.assert_close(out[kept], branch[kept] * scale, rtol=2.5e-7, atol=0)
    assert out.dtype == branch.dtype


# ----------------------------------------------------------------------------- the blocks


def _outcomes(layer, hidden_states, keep_scale):
    """Each sample's output of `layer` for the four outcomes (attention branch kept/dropped) x (MLP branch
    kept/dropped), computed from the block's modules in evaluation: `(4, B, S, D)` in the order
    (kept, kept), (kept, dropped), (dropped, kept), (dropped, dropped)."""
    attention = layer.attention(layer.layernorm_before(hidden_states))[0]
    candidates = []
    for after_attention in (hidden_states + attention * keep_scale, hidden_states):
        adapter = layer.adapter(after_attention) if layer.adapter is not None else 0
        mlp = layer.mlp(layer.layernorm_after(after_attention))
        candidates += [after_attention + mlp * keep_scale + adapter, after_attention + adapter]
    return torch.stack(candidates)


@pytest.mark.parametrize("adapter_bottleneck", [0, 8], ids=["plain", "adaptformer"])
def test_each_block_drops_its_branches_at_its_rate(adapter_bottleneck):
    """Per block, every sample's output is exactly one of the four kept/dropped outcomes (kept branches
    scaled by 1/(1-p), an AdaptFormer adapter never dropped), and the measured drop rate of each branch
    is the block's rate (0, 0.2, 0.4 for drop_path_rate=0.4 over 3 blocks); the two branches are drawn
    independently (both dropped at p^2)."""
    model = make(num_hidden_layers=3, drop_path_rate=0.4, adapter_bottleneck=adapter_bottleneck)
    n = 3000
    hidden_states = torch.randn(n, 5, 32, generator=torch.Generator().manual_seed(2))
    for layer, rate in zip(model.vit.layers, (0.0, 0.2, 0.4)):
        assert layer.drop_path_rate == pytest.approx(rate)
        with torch.no_grad():
            layer.train()
            torch.manual_seed(3)
            out = layer(hidden_states)
            layer.eval()
            candidates = _outcomes(layer, hidden_states, 1 / (1 - rate))
        matches = ((candidates - out).abs().flatten(2).amax(2) <= 1e-5)  # (4, n)
        assert torch.equal(matches.sum(0), torch.ones(n, dtype=torch.long)), "a sample matches no single outcome"
        outcome = matches.float().argmax(0)
        attention_dropped, mlp_dropped = outcome >= 2, outcome % 2 == 1
        if rate == 0.0:
            assert not attention_dropped.any() and not mlp_dropped.any()
            continue
        assert within_binomial(int(attention_dropped.sum()), n, rate)
        assert within_binomial(int(mlp_dropped.sum()), n, rate)
        assert within_binomial(int((attention_dropped & mlp_dropped).sum()), n, rate**2)


def test_identity_in_evaluation_equals_rate_zero():
    """Two models built apart hold their weights in different buffers, and a CPU's kernels may round
    differently by alignment: compared at the suite's float32 tolerance (a single dropped sample at
    p = 0.5 would move the logits by far more), and no random number is drawn at all."""
    plain, dropping = make(), make(drop_path_rate=0.5)
    x = pixels()
    state = torch.get_rng_state()
    with torch.no_grad():  # the native fused kernel (CPU inference)
        assert_logits_close(dropping(x).logits, plain(x).logits)
    # autograd on: the composed path, and the class-token-only last block of the classifier
    assert_logits_close(dropping(x).logits, plain(x).logits)
    assert_logits_close(dropping.vit(x).last_hidden_state, plain.vit(x).last_hidden_state)
    assert torch.equal(torch.get_rng_state(), state)  # nothing was drawn


def test_active_in_training():
    model, x = make(drop_path_rate=0.5).train(), pixels(batch=8)
    torch.manual_seed(0)
    first = model(x).logits
    torch.manual_seed(1)
    assert not torch.allclose(first, model(x).logits)


def test_class_token_only_last_block_drops_the_same_samples():
    """The classifier's last block runs on the class token alone; under the same seed it draws the same
    per-sample masks as the full block, so logits and gradients equal the full computation's."""
    model, x, labels = make(drop_path_rate=0.5).train(), pixels(batch=8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(5)
    fast = model(x, labels=labels)
    fast_grads = torch.autograd.grad(fast.loss, list(model.parameters()))
    torch.manual_seed(5)
    full = model(x, labels=labels, output_hidden_states=True)  # hidden states need every token
    full_grads = torch.autograd.grad(full.loss, list(model.parameters()))
    torch.testing.assert_close(fast.logits, full.logits, atol=1e-5, rtol=0)
    for (name, _), a, b in zip(model.named_parameters(), fast_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    torch.manual_seed(5)
    with torch.no_grad():
        evaluation = make(drop_path_rate=0.5)(x).logits
    assert not torch.allclose(fast.logits, evaluation)  # samples were dropped


# ----------------------------------------------------------------------------- training machinery


def test_gradient_checkpointing_recomputes_with_the_same_masks():
    """torch.utils.checkpoint saves the RNG state before the forward and restores it for the recomputation,
    so the checkpointed blocks drop the same samples: the same gradients as without checkpointing."""
    x, labels = pixels(batch=8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    results = []
    for checkpointing in (False, True):
        model = make(drop_path_rate=0.5, num_hidden_layers=3)
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.vit.layers[0].gradient_checkpointing
        model.train()
        torch.manual_seed(7)
        loss = model(x, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    assert_logits_close(checkpointed_loss, loss)  # two models built apart: float32 tolerance, not bits
    for name in grads:
        torch.testing.assert_close(checkpointed_grads[name], grads[name], atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        assert not torch.allclose(loss, make(num_hidden_layers=3).train()(x, labels=labels).loss)


def test_torch_compile_fullgraph_in_training():
    model, x, labels = make(drop_path_rate=0.5).train(), pixels(batch=8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    explanation = torch._dynamo.explain(lambda inp: model(inp, labels=labels).loss)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(lambda inp: model(inp, labels=labels).loss, fullgraph=True, backend="aot_eager")
    torch.manual_seed(11)
    loss = compiled(x)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.manual_seed(11)
    torch.testing.assert_close(loss, model(x, labels=labels).loss)  # aot_eager draws as eager does
    torch._dynamo.reset()


def test_export_in_evaluation_has_no_random_op():
    model = make(drop_path_rate=0.5)
    x = pixels()
    program = torch.export.export(model, (x,))
    assert "bernoulli" not in str(program.graph)
    torch.testing.assert_close(program.module()(x).logits, make()(x).logits, atol=1e-6, rtol=0)


def test_save_load_round_trip_keeps_the_rate(tmp_path):
    model = make(num_hidden_layers=3, drop_path_rate=0.2)
    model.save_pretrained(tmp_path)
    loaded = ViTReproForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.drop_path_rate == 0.2
    assert [layer.drop_path_rate for layer in loaded.vit.layers] == [0.0, 0.1, 0.2]
    # a checkpoint saved before the field existed loads with stochastic depth off
    config = ViTReproConfig.from_dict({k: v for k, v in model.config.to_dict().items() if k != "drop_path_rate"})
    assert config.drop_path_rate == 0.0
