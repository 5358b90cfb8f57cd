"""Parameter-efficient transfer (`train.method`, hf_vit_repro.training.peft_methods; VPT and
AdaptFormer in the model): for every method exactly the intended parameters get gradients and
change while the others stay bit-identical to the pretrained checkpoint; VPT's and the adapter's
forward against a reference composed here from the equations; LoRA against peft's merged model;
checkpoints and peft adapter folders reload to the same logits; the recipe's refusals.

Tolerances: `assert_logits_close` (1e-5 of the logits' scale, tests/conftest.py) wherever two
separately computed forward passes are compared; `torch.equal` for weights that must not move.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel, runs
from hf_vit_repro.training import Recipe, RecipeError, build_model, build_optimizer, run_recipe
from hf_vit_repro.training import peft_methods

from .conftest import assert_logits_close, randomize_, run_without_package, tiny_kwargs
from .evaluation_fixtures import save_classifier

peft = pytest.importorskip("peft", reason="peft is part of the test extra (pip install -e '.[test]')")

METHODS = ["full", "linear", "bitfit", "lora", "vpt-shallow", "vpt-deep", "adapter"]
NUM_CLASSES = 10  # scikit-learn's digits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 'pretrained' tiny classifier (random weights, every one non-zero) with a 3-way head."""
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())), seed=5)
    return save_classifier(model, tmp_path_factory.mktemp("pretrained") / "final")


def recipe_for(tmp_path, checkpoint, method, **train):
    return Recipe.from_dict({
        "name": f"peft-{method}",
        "mode": "finetune",
        "model": {"variant": None, "init_from": str(checkpoint), "image_size": 32},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 16, "max_eval_examples": 16},
        "optim": {"optimizer": "sgd", "lr": 0.1, "warmup_steps": 0, "schedule": "constant"},
        "train": {"steps": 2, "global_batch_size": 8, "micro_batch_size": 8, "method": method, **train},
        "run": {"output_dir": str(tmp_path / method), "checkpoint_every": 0, "progress_bar": False, "trackers": []},
    })


def expected_trainable(method, names):
    """What each method trains, written from the methods' definitions (not from peft_methods)."""
    head = {n for n in names if n.startswith("classifier.")}
    if method == "full":
        return set(names)
    if method == "linear":
        return head
    if method == "bitfit":
        return head | {n for n in names if n.endswith(".bias")}
    if method.startswith("vpt"):
        return head | {"vit.embeddings.prompt_embeddings"}
    if method == "adapter":
        return head | {n for n in names if ".adapter.down_proj." in n or ".adapter.up_proj." in n}
    # peft's names: the LoRA matrices and the trained copy of the classifier
    return {n for n in names if ".lora_A." in n or ".lora_B." in n or ".modules_to_save." in n}


def pretrained_name(name):
    """A parameter's name in the pretrained checkpoint (peft adds a prefix and `base_layer`)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


@pytest.mark.parametrize("method", METHODS)
def test_exactly_the_methods_parameters_train_and_the_rest_stay_bit_identical(method, checkpoint, tmp_path):
    recipe = recipe_for(tmp_path, checkpoint, method)
    model = build_model(recipe, NUM_CLASSES).train()
    names = [n for n, _ in model.named_parameters()]
    wanted = expected_trainable(method, names)
    assert wanted and {n for n, p in model.named_parameters() if p.requires_grad} == wanted
    if method == "lora":  # every block's four dense layers, A and B each
        assert sum(".lora_" in n for n in names) == 2 * 4 * 2  # layers x targets x (A, B), weights only
    trainable, total = peft_methods.trainable_parameters(model)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in wanted)
    assert total == sum(p.numel() for p in model.parameters())

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, recipe.optim)
    generator = torch.Generator().manual_seed(0)
    got_gradient = set()
    for _ in range(4):  # the head starts at zero: the encoder's gradients flow from the second step on
        x = torch.randn(8, 3, 32, 32, generator=generator)
        y = torch.randint(0, NUM_CLASSES, (8,), generator=generator)
        F.cross_entropy(model(pixel_values=x).logits, y).backward()
        got_gradient |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert got_gradient == wanted
    after = dict(model.named_parameters())
    changed = {n for n in names if not torch.equal(before[n], after[n])}
    # AdaptFormer's up-projection starts at zero, so the down-projection's gradient is ~1e-9 in these
    # few steps (received, checked above) and its update ~1e-10 on weights ~0.2: below float32's
    # resolution for most entries, whether any entry moves depends on the CPU's rounding.
    too_small_to_move = {n for n in wanted if ".adapter.down_proj." in n}
    assert changed <= wanted and wanted - changed <= too_small_to_move, (wanted - changed, changed - wanted)
    # Frozen weights are the pretrained checkpoint's, bit for bit (the 3-way head was replaced).
    saved = load_file(str(checkpoint / "model.safetensors"))
    frozen = [n for n in names if n not in wanted and not n.startswith(("classifier.", "base_model.model.classifier."))]
    assert frozen or method == "full"
    for name in frozen:
        assert torch.equal(after[name], saved[pretrained_name(name)]), name


def test_the_adapter_starts_as_the_pretrained_model(checkpoint, tmp_path):
    """AdaptFormer's up-projection starts at zero: before training the adapted model computes what
    the pretrained one does (checked on the encoder's output; the new head is zero)."""
    full = build_model(recipe_for(tmp_path, checkpoint, "full"), NUM_CLASSES).eval()
    adapted = build_model(recipe_for(tmp_path, checkpoint, "adapter"), NUM_CLASSES).eval()
    assert adapted.config.adapter_bottleneck == 64 and adapted.vit.layers[0].adapter.up_proj.weight.abs().sum() == 0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert_logits_close(adapted.vit(pixel_values=x).pooler_output, full.vit(pixel_values=x).pooler_output)


# ------------------------------------------------------------------ the model options against a reference


def _reference_encoder(model: ViTReproModel, x: torch.Tensor) -> torch.Tensor:
    """The sequence after the final norm, composed from the equations with plain tensor operations
    on the model's weights: Eq. 1 with VPT's prompts inserted after the class token (no position
    embedding), replaced at every block's input for VPT-deep; Eqs. 2-3 written out (softmax
    attention, exact GELU) with AdaptFormer's `s * up(relu(down(x')))` added beside the MLP."""
    config, emb = model.config, model.embeddings
    batch = x.shape[0]
    tokens = F.conv2d(x, emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias,
                      stride=config.patch_hw).flatten(2).transpose(1, 2)
    if emb.cls_token is not None:
        tokens = torch.cat([emb.cls_token.expand(batch, -1, -1), tokens], 1)
    tokens = tokens + emb.position_embeddings
    k, p = config.num_prefix_tokens, config.prompt_tokens
    heads, dim = config.num_attention_heads, config.hidden_size
    for index, layer in enumerate(model.layers):
        if p and (index == 0 or config.prompt_deep):
            prompts = emb.prompt_embeddings[index if config.prompt_deep else 0].expand(batch, -1, -1)
            rest = tokens[:, k:] if index == 0 else tokens[:, k + p:]
            tokens = torch.cat([tokens[:, :k], prompts, rest], 1)
        a = layer.attention
        h = F.layer_norm(tokens, (dim,), layer.layernorm_before.weight, layer.layernorm_before.bias, config.layer_norm_eps)
        q, kk, v = (h @ a.qkv.weight.T + a.qkv.bias).split(dim, -1)
        q, kk, v = (t.reshape(batch, -1, heads, dim // heads).transpose(1, 2) for t in (q, kk, v))
        weights = torch.softmax(q @ kk.transpose(-1, -2) / (dim // heads) ** 0.5, -1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, -1, dim)
        tokens = tokens + attended @ a.o_proj.weight.T + a.o_proj.bias
        h = F.layer_norm(tokens, (dim,), layer.layernorm_after.weight, layer.layernorm_after.bias, config.layer_norm_eps)
        m = layer.mlp
        out = tokens + F.gelu(h @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
        if config.adapter_bottleneck:
            ad = layer.adapter
            out = out + config.adapter_scale * (torch.relu(tokens @ ad.down_proj.weight.T + ad.down_proj.bias)
                                                @ ad.up_proj.weight.T + ad.up_proj.bias)
        tokens = out
    return F.layer_norm(tokens, (dim,), model.layernorm.weight, model.layernorm.bias, config.layer_norm_eps)


OPTIONS = {
    "vpt-shallow": dict(prompt_tokens=3),
    "vpt-deep": dict(prompt_tokens=3, prompt_deep=True),
    "vpt-deep-gap": dict(prompt_tokens=3, prompt_deep=True, pooling="gap"),
    "adapter": dict(adapter_bottleneck=8),
    "adapter+vpt": dict(adapter_bottleneck=8, prompt_tokens=2),
}


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_prompts_and_adapters_against_a_reference(option, grad):
    """Inference runs the fused native block kernel (prompts) or the composed path (adapter), both
    with the class-token-only last block; training mode the composed path. Both against the
    reference; pooling reads the class token, or for "gap" the mean of the patch tokens only."""
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(**OPTIONS[option]))), seed=2)
    model.train(grad)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sequence = _reference_encoder(model.vit, x)
        n = model.config.grid_size[0] * model.config.grid_size[1]
        assert sequence.shape[1] == model.config.num_prefix_tokens + model.config.prompt_tokens + n
        pooled = sequence[:, 0] if model.config.pooling == "token" else sequence[:, -n:].mean(1)
        expected = pooled @ model.classifier.weight.T + model.classifier.bias
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context:
        logits = model(pixel_values=x).logits
        hidden = model.vit(pixel_values=x).last_hidden_state
    assert_logits_close(logits, expected)
    assert_logits_close(hidden, sequence)


def test_prompts_keep_the_native_kernel_and_adapters_leave_it(monkeypatch):
    calls = []
    native = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a, **k: calls.append(1) or native(*a, **k))
    x = torch.randn(2, 3, 32, 32)
    for kwargs, expected in ((dict(prompt_tokens=3, prompt_deep=True), 2), (dict(adapter_bottleneck=8), 0)):
        calls.clear()
        with torch.inference_mode():
            ViTReproModel(ViTReproConfig(**tiny_kwargs(**kwargs))).eval()(pixel_values=x)
        assert len(calls) == expected, kwargs


def test_off_by_default_no_parameters_and_bad_values_refused():
    names = {n for n, _ in ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())).named_parameters()}
    assert not any("prompt" in n or "adapter" in n for n in names)
    with pytest.raises(StrictDataclassError, match=r"`prompt_deep=True` needs `prompt_tokens` > 0"):
        ViTReproConfig(prompt_deep=True)
    with pytest.raises(StrictDataclassError, match="`adapter_bottleneck` must be >= 0"):
        ViTReproConfig(adapter_bottleneck=-1)
    from hf_vit_repro import ViTReproForMaskedPatchPrediction

    with pytest.raises(ValueError, match="VPT prompts"):
        ViTReproForMaskedPatchPrediction(ViTReproConfig(**tiny_kwargs(prompt_tokens=2)))


@pytest.mark.parametrize("option", ["vpt-deep", "adapter"])
def test_prompts_and_adapters_are_saved_and_reloaded(option, tmp_path):
    """`from_pretrained` with the package, and through remote code without it (the shipped files)."""
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(**OPTIONS[option]))), seed=3).eval()
    model.save_pretrained(tmp_path / "ckpt")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(pixel_values=x).logits
        reloaded = ViTReproForImageClassification.from_pretrained(tmp_path / "ckpt").eval()(pixel_values=x).logits
    assert_logits_close(reloaded, expected)
    torch.save(x, tmp_path / "x.pt")
    remote = run_without_package(f"""
        import json, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        with torch.inference_mode():
            logits = model(pixel_values=torch.load({str(tmp_path / "x.pt")!r})).logits
        print(json.dumps(logits.tolist()))
    """, tmp_path)
    assert_logits_close(torch.tensor(remote), expected)


# ------------------------------------------------------------------ LoRA through peft


def test_lora_equals_its_merged_model_in_training_and_inference(checkpoint, tmp_path):
    recipe = recipe_for(tmp_path, checkpoint, "lora")
    model = build_model(recipe, NUM_CLASSES)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # LoRA's B and the head start at zero: move them so they matter
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    merged = peft_methods.merged_copy(model)
    assert type(merged) is ViTReproForImageClassification
    assert not any("lora" in n for n, _ in merged.named_parameters())
    x = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.inference_mode():
        base = build_model(recipe.replace(**{"train.method": "linear"}), NUM_CLASSES).eval()
        base.classifier.load_state_dict(merged.classifier.state_dict())
        assert (base(pixel_values=x).logits - merged.eval()(pixel_values=x).logits).abs().max() > 1e-2
        assert_logits_close(model.eval()(pixel_values=x).logits, merged.eval()(pixel_values=x).logits)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    actual, expected = model.train()(pixel_values=x1).logits, merged.train()(pixel_values=x2).logits
    assert_logits_close(actual, expected)
    actual.square().sum().backward()
    expected.square().sum().backward()
    assert_logits_close(x1.grad, x2.grad)


def test_a_lora_run_saves_a_merged_checkpoint_and_a_peft_adapter(checkpoint, tmp_path):
    recipe = recipe_for(tmp_path, checkpoint, "lora", method_options={"r": 2})
    result = run_recipe(recipe)
    final = result.run_dir / runs.FINAL_DIR
    adapter = final / peft_methods.ADAPTER_DIR
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == sorted(peft_methods.LORA_TARGET_MODULES)
    assert config["modules_to_save"] == ["classifier"] and config["base_model_name_or_path"] == str(checkpoint)
    summary = json.loads((result.run_dir / runs.TRAIN_SUMMARY).read_text())
    # r=2 on 2 blocks: qkv (32->96), o_proj (32->32), fc1 (32->64), fc2 (64->32), plus the 10-way head
    lora = 2 * 2 * ((32 + 96) + (32 + 32) + (32 + 64) + (64 + 32))
    assert summary["method"] == "lora" and summary["trainable_parameters"] == lora + 32 * 10 + 10
    assert result.trainable_parameters == summary["trainable_parameters"]

    # The adapter on the base it was trained from (the checkpoint with the new zero head) = the merged model.
    base = build_model(recipe.replace(**{"train.method": "full", "train.method_options": {}}), NUM_CLASSES).eval()
    adapted = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    merged = ViTReproForImageClassification.from_pretrained(final).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = merged(pixel_values=x).logits
        assert expected.abs().max() > 1e-3  # trained: the head is no longer zero
        assert_logits_close(adapted(pixel_values=x).logits, expected)


def test_vpt_and_adapter_runs_save_checkpoints_with_their_weights(checkpoint, tmp_path):
    for method, option in (("vpt-deep", {"tokens": 4}), ("adapter", {"bottleneck": 8})):
        result = run_recipe(recipe_for(tmp_path, checkpoint, method, method_options=option))
        final = result.run_dir / runs.FINAL_DIR
        config = json.loads((final / "config.json").read_text())
        weights, pretrained = load_file(str(final / "model.safetensors")), load_file(str(checkpoint / "model.safetensors"))
        if method == "vpt-deep":
            assert (config["prompt_tokens"], config["prompt_deep"]) == (4, True)
            assert weights["vit.embeddings.prompt_embeddings"].shape == (2, 4, 32)
        else:
            assert config["adapter_bottleneck"] == 8 and weights["vit.layers.1.adapter.up_proj.weight"].abs().sum() > 0
        for name, value in pretrained.items():  # the encoder is the pretrained one, bit for bit
            if not name.startswith("classifier."):
                assert torch.equal(weights[name], value), (method, name)
        model = ViTReproForImageClassification.from_pretrained(final)
        assert peft_methods.trainable_parameters(model)[1] == json.loads(
            (result.run_dir / runs.TRAIN_SUMMARY).read_text())["num_parameters"]


# ------------------------------------------------------------------ the recipe


@pytest.mark.parametrize("changes, message", [
    ({"train.method": "prefix"}, "`train.method` must be one of 'full', 'linear'.*got 'prefix'"),
    ({"train.method": "lora", "train.method_options": {"rank": 4}},
     r"`train.method_options.rank` is not an option of method 'lora'; its options: r, alpha, dropout"),
    ({"train.method": "vpt-deep", "train.method_options": {"tokens": 0}}, "`train.method_options.tokens` must be a positive"),
    ({"train.method": "linear", "train.method_options": {"r": 4}}, "its options: none"),
])
def test_bad_methods_are_one_line_recipe_errors(changes, message, checkpoint, tmp_path):
    with pytest.raises(RecipeError, match=message):
        recipe_for(tmp_path, checkpoint, "full").replace(**changes)


def test_methods_need_a_classifier_and_a_vit(tmp_path):
    with pytest.raises(RecipeError, match="`train.method: linear` trains a classifier head"):
        Recipe.from_dict({"mode": "pretrain", "model": {"variant": "ViT-B/16"},
                          "train": {"steps": 1, "objective": "masked_patch_prediction", "method": "linear"},
                          "optim": {"warmup_steps": 0}})
    with pytest.raises(RecipeError, match="`train.method: lora` adapts a ViT's blocks; BiT-R50x1 is a BiT ResNet"):
        Recipe.from_dict({"model": {"variant": "BiT-R50x1"}, "train": {"steps": 1, "method": "lora"},
                          "optim": {"warmup_steps": 0}})
    # `method=lora` works as a bare override (vit-repro train RECIPE method=lora)
    from hf_vit_repro.training import apply_overrides, parse_overrides

    recipe = apply_overrides(Recipe(), parse_overrides(["method=lora", "method_options={r: 4}"]))
    assert recipe.train.method == "lora" and recipe.train.method_options == {"r": 4}


def test_an_interrupted_lora_run_resumes_to_the_same_adapter(checkpoint, tmp_path):
    """run.stop_after=1 then resume=auto ends with the adapter of an uninterrupted run, bit for bit
    (the checkpoint holds the peft model's state under peft's names)."""
    options = {"method_options": {"r": 2}}
    whole = run_recipe(recipe_for(tmp_path / "whole", checkpoint, "lora", **options))
    parts = recipe_for(tmp_path / "parts", checkpoint, "lora", **options).replace(**{"run.checkpoint_every": 1})
    first = run_recipe(parts.replace(**{"run.stop_after": 1}))
    assert not first.completed and first.steps == 1
    second = run_recipe(parts)
    assert second.completed and second.steps == 2
    a = load_file(str(whole.run_dir / runs.FINAL_DIR / peft_methods.ADAPTER_DIR / "adapter_model.safetensors"))
    b = load_file(str(second.run_dir / runs.FINAL_DIR / peft_methods.ADAPTER_DIR / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lora_without_peft_installed_says_which_extra(tmp_path, checkpoint, monkeypatch):
    """peft is an extra (`[peft]`): without it, `method: lora` is refused before training with the
    install command, and the library call names it too, instead of a ModuleNotFoundError."""
    import builtins
    import importlib.util

    real_find_spec, real_import = importlib.util.find_spec, builtins.__import__
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real_find_spec(name, *a))
    with pytest.raises(RecipeError, match=r"peft, which is not installed: pip install 'hf-vit-repro\[peft\]'"):
        recipe_for(tmp_path, checkpoint, "lora")

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs()))
    with pytest.raises(ImportError, match=r"pip install 'hf-vit-repro\[peft\]'"):
        peft_methods.apply_method(model, "lora")


#: Method options that give V-PETL Bench's published parameter budgets on ViT-B/16 (`params_m`, the
#: trainable parameters without the head, in millions as printed). VPT's rows average per-task prompt
#: lengths, so they have no single setting to check.
PUBLISHED_BUDGETS = {
    "linear": {},
    "bitfit": {},
    "lora": {"r": 8, "targets": ["qkv"]},
    "adapter": {"bottleneck": 8},
}


@pytest.mark.parametrize("method", sorted(PUBLISHED_BUDGETS))
def test_options_reproduce_the_published_parameter_budgets_on_vit_b16(method):
    """The trainable-parameter column of the published rows, recomputed on our ViT-B/16 with the
    method's options (built on the meta device: shapes only)."""
    from hf_vit_repro.paper_results import peft_vtab

    options = PUBLISHED_BUDGETS[method]
    with torch.device("meta"):
        config = ViTReproConfig.from_variant("ViT-B/16", num_labels=10, **peft_methods.config_updates(method, options))
        model = peft_methods.apply_method(ViTReproForImageClassification(config), method, options)
    trained = sum(p.numel() for name, p in model.named_parameters()
                  if p.requires_grad and f"{peft_methods.HEAD}." not in name)
    published = peft_vtab.reference_row(method).params_m
    assert round(trained / 1e6, 2) == pytest.approx(published, abs=0.01), (trained, published)


def test_lora_targets_choose_the_layers_and_bad_targets_are_refused():
    config = peft_methods.lora_config({"targets": ["qkv", "fc2"]})
    assert sorted(config.target_modules) == ["fc2", "qkv"]
    assert "targets" in peft_methods.options_problem("lora", {"targets": ["q_proj"]})
    assert "targets" in peft_methods.options_problem("lora", {"targets": []})
    assert peft_methods.options_problem("lora", {"targets": ["qkv"]}) is None
