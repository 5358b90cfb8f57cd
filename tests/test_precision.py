"""`hf_vit_repro.precision`: the policy on CPUs with and without AMX (the CPU's capabilities are
replaced, so both branches run on any x86 CPU), forced precisions, the bf16-vs-fp32 check and its
fallback, and what evaluation and training make of `auto`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_vit_repro import cli, precision, runs
from hf_vit_repro.data import load_task
from hf_vit_repro.evaluation import evaluate_model

from .evaluation_fixtures import save_classifier

#: The real probe (conftest.py replaces it in every test, so that `auto` means fp32 there).
REAL_CPU_CAPABILITIES = precision.cpu_capabilities
SAPPHIRE_RAPIDS = {"avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True, "amx_int8": True}
COOPER_LAKE = {"avx512_f": True, "avx512_bf16": True, "amx_tile": False, "amx_bf16": False}  # AVX512-BF16, no AMX
SKYLAKE_X = {"avx512_f": True, "avx512_bf16": False, "amx_tile": False, "amx_bf16": False}  # AVX-512 without bf16
EPYC_ZEN3 = {"avx2": True, "fma3": True}


@pytest.fixture
def cpu_is(monkeypatch):
    """cpu_is(flags): from now on this test runs on a CPU with these capabilities."""
    def play(flags):
        monkeypatch.setattr(precision, "cpu_capabilities", lambda: dict(flags))
        monkeypatch.delenv(precision.PRECISION_ENV, raising=False)  # conftest's fp32 choice for the other tests
    return play


def test_the_environment_decides_what_auto_means_on_the_cpu(cpu_is, monkeypatch):
    cpu_is(SAPPHIRE_RAPIDS)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(precision.PRECISION_ENV, "fp32")
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # a forced precision still wins
    cpu_is(EPYC_ZEN3)
    monkeypatch.setenv(precision.PRECISION_ENV, "BF16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(precision.PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="HF_VIT_REPRO_CPU_PRECISION must be bf16 or fp32"):
        precision.resolve_precision("auto", "cpu")


@pytest.fixture(scope="module")
def digits_test():
    return load_task("digits", "test").select(range(48))


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, "bf16"), (COOPER_LAKE, "bf16"), (SKYLAKE_X, "fp32"),
                                             (EPYC_ZEN3, "fp32"), ({}, "fp32")])
def test_auto_follows_the_cpu(cpu_is, flags, expected):
    cpu_is(flags)
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("auto", "cpu", training=True) == expected
    assert precision.resolve_precision() == expected  # the CPU is the default device


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, EPYC_ZEN3])
def test_a_forced_precision_is_kept(cpu_is, flags):
    cpu_is(flags)
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"
    assert precision.resolve_precision("bf16", "cuda") == "bf16"


def test_cuda_keeps_its_behaviour(cpu_is, monkeypatch):
    cpu_is(SAPPHIRE_RAPIDS)  # the host CPU does not decide for a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_precision("auto", "cuda") == "fp32"  # inference: fp32, as before
    assert precision.resolve_precision("auto", "cuda:0", training=True) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve_precision("auto", "cuda", training=True) == "fp32"
    assert precision.resolve_precision("auto", "meta") == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="one of auto, bf16, fp32, got 'fp16'"):
        precision.resolve_precision("fp16", "cpu")


def test_capabilities_come_from_torch_or_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(precision, "cpu_capabilities", REAL_CPU_CAPABILITIES)
    caps = precision.cpu_capabilities()
    assert caps == dict(torch.cpu.get_capabilities())
    # this machine's answer agrees with the kernel's flags
    flags = open("/proc/cpuinfo").read()
    assert precision.cpu_has_amx_bf16() == (" amx_bf16" in flags and " amx_tile" in flags)
    assert precision.cpu_has_fast_bf16() == (" amx_bf16" in flags and " amx_tile" in flags or " avx512_bf16" in flags)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    from_proc = precision.cpu_capabilities()
    assert from_proc.get("amx_bf16", False) == (" amx_bf16" in flags)
    assert from_proc  # an x86 Linux kernel lists flags


def test_compare_outputs_tolerance():
    torch.manual_seed(0)
    logits = torch.randn(50, 10) * 3
    assert precision.compare_outputs(logits, logits.clone(), classes=True)["ok"]
    zeros = torch.zeros(8, 10)  # a zero-initialised head: no 0/0
    assert precision.compare_outputs(zeros, zeros, classes=True) | {} == {
        "rms_difference": 0.0, "rms_reference": 0.0, "limit": 1e-3, "changed_top1": 0.0, "counted_changed_top1": 0.0,
        "ok": True}
    noisy = logits + 0.2 * logits.pow(2).mean().sqrt() * torch.randn_like(logits)  # 20% RMS noise > 5%
    result = precision.compare_outputs(logits, noisy, classes=True)
    assert not result["ok"] and result["rms_difference"] > result["limit"]
    # one clear flip in 50 images is 2%: allowed; two are not. Clear: fp32 prefers its class by 50.
    confident = 50.0 * torch.nn.functional.one_hot(torch.arange(50) % 10, 10).float()
    flipped = confident.clone()
    flipped[:2] = confident[:2].roll(1, dims=1)
    flipped_one = confident.clone()
    flipped_one[0] = flipped[0]
    # a bound on the RMS difference loose enough that only the top-1 rule decides
    loose = precision.Tolerance(rtol=0.5)
    one = precision.compare_outputs(confident, flipped_one, classes=True, tolerance=loose)
    assert one["counted_changed_top1"] == pytest.approx(0.02) and one["ok"]
    two = precision.compare_outputs(confident, flipped, classes=True, tolerance=loose)
    assert two["rms_difference"] <= two["limit"]
    assert two["counted_changed_top1"] == pytest.approx(0.04) and not two["ok"]
    # a near-tie that flips does not count
    tie = torch.tensor([[1.0, 0.9995, 0.0]] * 10)
    swapped = tie[:, [1, 0, 2]]
    near = precision.compare_outputs(tie, swapped, classes=True)
    assert near["changed_top1"] == 1.0 and near["counted_changed_top1"] == 0.0 and near["ok"]
    # features (no classes): only the RMS bound
    assert "changed_top1" not in precision.compare_outputs(logits, logits, classes=False)


def _forward_recording_autocast(model, x, seen):
    def forward():
        seen.append(torch.is_autocast_enabled("cpu"))
        return model(x)
    return forward


def test_precision_run_checks_bf16_once_and_runs_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 10))
    x = torch.randn(64, 16)
    run = precision.PrecisionRun("bf16", "cpu")
    seen = []
    with torch.no_grad():
        first = run(_forward_recording_autocast(model, x, seen))
        second = run(_forward_recording_autocast(model, x, seen))
    assert seen == [False, True, True]  # fp32 reference, bf16 candidate, then bf16 only
    assert first.dtype == second.dtype == torch.bfloat16
    record = run.record()
    assert record["precision"] == "bf16" and record["requested"] == "bf16"
    assert record["bf16_check"]["ok"] and record["bf16_check"]["tolerance"] == {
        "rtol": 0.05, "atol": 1e-3, "max_changed_top1": 0.02}
    # bf16 is close, not equal (the check compared two different computations)
    assert 0 < record["bf16_check"]["rms_difference"] < record["bf16_check"]["limit"]


def test_precision_run_falls_back_when_the_check_fails(capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 10)
    x = torch.randn(8, 16)
    run = precision.PrecisionRun("bf16", "cpu", tolerance=precision.Tolerance(rtol=0.0, atol=0.0), what="test")
    seen = []
    with torch.no_grad():
        first = run(_forward_recording_autocast(model, x, seen))
        run(_forward_recording_autocast(model, x, seen))
    assert seen == [False, True, False]  # after the failed check: fp32
    assert first.dtype == torch.float32 and torch.equal(first, model(x).detach())
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "test: bf16 disagrees with fp32 on the first batch (RMS difference" in err
    assert "running in fp32" in err
    assert run.record()["precision"] == "fp32" and run.record()["bf16_check"]["fell_back"]


def test_precision_run_needs_every_process_to_agree():
    model = torch.nn.Linear(4, 3)
    run = precision.PrecisionRun("bf16", "cpu", agree=lambda ok: False)
    with torch.no_grad():
        run(lambda: model(torch.ones(2, 4)))
    assert run.precision == "fp32" and run.record()["bf16_check"]["ok"]  # this process passed, another did not


def test_fp32_never_checks_nor_casts(cpu_is):
    cpu_is(EPYC_ZEN3)
    run = precision.PrecisionRun("auto", "cpu")
    seen = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast is switched off
        out = run(_forward_recording_autocast(torch.nn.Linear(4, 2), torch.ones(1, 4), seen))
    assert seen == [False] and out.dtype == torch.float32
    assert run.record() == {"precision": "fp32", "requested": "auto"}


@pytest.fixture(scope="module")
def random_classifier():
    """A randomised tiny ViT with a 10-way head: well conditioned, so bf16 passes the check (the
    digits classifier's least-squares head, 100 x a bias feature folded into its bias, does not:
    its logits are differences of large numbers, and evaluation rightly falls back to fp32)."""
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    from .conftest import randomize_, tiny_kwargs

    return randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10))), std=0.2).eval()


def test_evaluation_auto_on_both_cpus(cpu_is, random_classifier, digits_test):
    classifier = random_classifier
    cpu_is(EPYC_ZEN3)
    fp32 = evaluate_model(classifier, digits_test, batch_size=16, progress=False)
    assert fp32["precision"] == {"precision": "fp32", "requested": "auto"}
    forced = evaluate_model(classifier, digits_test, batch_size=16, progress=False, precision="fp32")
    assert forced["metrics"] == fp32["metrics"]
    cpu_is(SAPPHIRE_RAPIDS)
    bf16 = evaluate_model(classifier, digits_test, batch_size=16, progress=False)
    assert bf16["precision"]["precision"] == "bf16" and bf16["precision"]["bf16_check"]["ok"]
    # the same images scored in bf16: accuracy within one image of fp32's
    assert abs(bf16["metrics"]["accuracy"] - fp32["metrics"]["accuracy"]) <= 1 / len(digits_test) + 1e-9
    assert bf16["precision"]["bf16_check"]["rms_difference"] > 0  # bf16 did run: not the fp32 numbers


def test_evaluation_falls_back_to_fp32(cpu_is, random_classifier, digits_test, monkeypatch, capsys):
    classifier = random_classifier  # passes the real check: the failure below is forced
    cpu_is(SAPPHIRE_RAPIDS)
    fp32 = evaluate_model(classifier, digits_test, batch_size=16, progress=False, precision="fp32")
    monkeypatch.setattr(precision, "BF16_TOLERANCE", precision.Tolerance(rtol=0.0, atol=0.0))
    result = evaluate_model(classifier, digits_test, batch_size=16, progress=False)
    assert result["precision"]["precision"] == "fp32" and result["precision"]["bf16_check"]["fell_back"]
    assert result["metrics"] == fp32["metrics"]  # every batch, the first included, in fp32
    assert "evaluation: bf16 disagrees with fp32 on the first batch" in capsys.readouterr().err


def test_metrics_json_and_cli_record_the_precision(cpu_is, random_classifier, tmp_path, capsys):
    cpu_is(SAPPHIRE_RAPIDS)
    run = save_classifier(random_classifier, tmp_path / "final").parent
    assert cli.main(["evaluate", str(run), "digits", "--max-images", "20", "--batch-size", "10", "--no-progress"]) == 0
    record = json.loads(runs.metrics_path(run, "digits", "test").read_text())
    assert record["precision"] == "bf16" and record["evaluation"]["precision"]["bf16_check"]["ok"]
    assert record["evaluation"]["precision"]["bf16_weights"] is True  # ran on bf16 copies of the weights
    assert "in bf16" in capsys.readouterr().out
    out = tmp_path / "fp32.json"
    assert cli.main(["evaluate", str(run), "digits", "--max-images", "20", "--no-progress", "--precision", "fp32",
                     "--output-dir", str(out)]) == 0
    assert json.loads(out.read_text())["precision"] == "fp32"
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(run), "digits", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, "bf16"), (EPYC_ZEN3, "no")])
def test_training_auto_follows_the_cpu(cpu_is, monkeypatch, flags, expected):
    from hf_vit_repro.training.distributed import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cpu_is(flags)
    assert resolve_mixed_precision("auto") == expected
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("bf16") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # the launcher's choice wins over the policy
    assert resolve_mixed_precision("auto") == "fp16"


def test_digits_test_is_not_tiny(digits_test):
    assert len(np.unique(digits_test["label"])) == 10  # the evaluation above sees every class


def test_fewshot_features_in_bf16_are_checked_and_keyed(cpu_is, random_classifier, tmp_path):
    from hf_vit_repro.evaluation import extract_features, fewshot_evaluate

    train = load_task("digits", "train").select(range(200))
    test = load_task("digits", "test").select(range(40))
    cpu_is(SAPPHIRE_RAPIDS)
    results = fewshot_evaluate(random_classifier, train, test, shots=[2], seeds=[0], cache_dir=tmp_path, progress=False)
    assert results["2"]["precision"] == "bf16"
    cpu_is(EPYC_ZEN3)
    fp32 = fewshot_evaluate(random_classifier, train, test, shots=[2], seeds=[0], cache_dir=tmp_path, progress=False)
    assert fp32["2"]["precision"] == "fp32"
    # the precision is part of the cache key: two precisions, two files per role (train, test)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    x32, _ = extract_features(random_classifier, test, range(8), progress=False, precision="fp32")
    run = precision.PrecisionRun("bf16", "cpu", classes=False)
    x16, _ = extract_features(random_classifier, test, range(8), progress=False, precision=run)
    assert run.check["ok"] and not np.array_equal(x16, x32)
    assert np.sqrt(np.mean((x16 - x32) ** 2)) <= 0.05 * np.sqrt(np.mean(x32**2)) + 1e-3


def test_analysis_in_bf16_counts_one_pass(cpu_is, random_classifier, tmp_path):
    from hf_vit_repro import analysis

    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu_is(EPYC_ZEN3)
    fp32 = analysis.attention_statistics(random_classifier, pixels.split(3), rollout_images=4)
    cpu_is(SAPPHIRE_RAPIDS)
    bf16 = analysis.attention_statistics(random_classifier, pixels.split(3), rollout_images=4)
    assert fp32.precision == {"precision": "fp32", "requested": "auto"} and bf16.precision["precision"] == "bf16"
    assert bf16.num_images == 6 and bf16.rollout_maps.shape[0] == 4  # the checked batch is counted once
    np.testing.assert_allclose(bf16.mean_distance, fp32.mean_distance, rtol=0.02)
    torch.testing.assert_close(bf16.rollout_maps, fp32.rollout_maps, rtol=0.05, atol=1e-3)
    # a failed check keeps the fp32 pass: the same numbers as an fp32 run
    strict = precision.Tolerance(rtol=0.0, atol=0.0)
    import unittest.mock as mock

    with mock.patch.object(precision, "BF16_TOLERANCE", strict):
        fallen = analysis.attention_statistics(random_classifier, pixels.split(3), rollout_images=4)
    assert fallen.precision["precision"] == "fp32"
    np.testing.assert_allclose(fallen.mean_distance, fp32.mean_distance, rtol=1e-6)
    result = analysis.analyze_model(random_classifier, pixels, tmp_path, batch_size=3, rollout_images=1,
                                    num_filters=4, progress=False, precision="fp32")
    assert json.loads((tmp_path / runs.ANALYSIS_JSON).read_text())["precision"] == result["precision"] == {
        "precision": "fp32", "requested": "fp32"}


def test_vtab_precision_is_the_recipes_mixed_precision(monkeypatch, tmp_path):
    from hf_vit_repro.vtab import runner as vtab
    from hf_vit_repro.training.recipe import load_recipe

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_vtab(checkpoint, tasks, **kwargs):
        seen["overrides"] = kwargs["overrides"]
        raise Stop

    monkeypatch.setattr(vtab, "run_vtab", fake_run_vtab)
    for flag, expected in (("fp32", "no"), ("bf16", "bf16"), ("auto", "auto")):
        with pytest.raises(Stop):
            cli.main(["vtab", str(tmp_path), "--tasks", "dtd", "--precision", flag])
        assert load_recipe(str(Path(__file__).resolve().parents[1] / "recipes" / "finetune_vtab.yaml"), seen["overrides"]).run.mixed_precision == expected
    with pytest.raises(Stop):
        cli.main(["vtab", str(tmp_path), "--tasks", "dtd"])
    assert not any("mixed_precision" in o for o in seen["overrides"])  # default: the recipe's own


def test_card_shows_the_precision_of_each_evaluation():
    from hf_vit_repro.hub.card import _evaluation_table

    record = dict(task="digits", dataset="digits (local)", split="test", resolution=32, num_images=300,
                  metrics={"accuracy": 0.99})
    table = _evaluation_table([{**record, "precision": "bf16"}, record], None, None, None)
    assert table["header"][:6] == ["task", "dataset", "split", "resolution", "images", "precision"]
    assert [row[5] for row in table["rows"]] == ["bf16", ""]
    assert "precision" not in _evaluation_table([record], None, None, None)["header"]  # older files: no column


def _bf16_dtypes_seen(model, x, seen):
    def forward():
        seen.append({p.dtype for p in model.parameters()})
        return model(x)
    return forward


def test_bf16_runs_on_bf16_copies_of_the_weights_and_restores_them_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 10))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    objects = [p for p in model.parameters()]
    x = torch.randn(64, 16)
    run = precision.PrecisionRun("bf16", "cpu", model=model)
    seen = []
    with torch.no_grad():
        first = run(_bf16_dtypes_seen(model, x, seen))
        second = run(_bf16_dtypes_seen(model, x, seen))
        reference = model(x)
    assert seen == [{torch.float32}, {torch.bfloat16}, {torch.bfloat16}]  # fp32 reference, then bf16 copies
    # restored: the same parameter objects with their fp32 values, not a bf16 round trip
    assert list(model.parameters()) == objects
    assert all(torch.equal(p, before[name]) and p.dtype == torch.float32 for name, p in model.named_parameters())
    assert run.record()["bf16_weights"] is True and run.check["ok"]
    assert first.dtype == torch.bfloat16 and torch.equal(first, second)
    rms = (first.float() - reference).pow(2).mean().sqrt()
    assert 0 < rms <= 0.05 * reference.pow(2).mean().sqrt()


def test_bf16_weight_copies_are_reused_and_remade_when_a_weight_changes():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    weights = precision.Bf16Weights(model)
    with weights.swapped():
        first = model.weight.data_ptr()
    with weights.swapped():
        assert model.weight.data_ptr() == first  # unchanged weights: the copy is reused
    with torch.no_grad():
        model.weight.add_(1.0)  # as an optimizer step between two evaluations
    with weights.swapped():
        assert model.weight.data_ptr() != first
        remade = model.weight.detach().float()
    torch.testing.assert_close(remade, model.weight.detach(), rtol=2**-8, atol=0)  # the new values, in bf16


def test_bf16_weights_are_restored_when_the_forward_raises():
    model = torch.nn.Linear(8, 4)
    weights = precision.Bf16Weights(model)
    with pytest.raises(RuntimeError, match="boom"), weights.swapped():
        assert model.weight.dtype == torch.bfloat16
        raise RuntimeError("boom")
    assert model.weight.dtype == torch.float32 and model.bias.dtype == torch.float32


def test_bf16_weights_only_where_they_are_used():
    model = torch.nn.Linear(8, 4)
    assert precision.PrecisionRun("fp32", "cpu", model=model).weights is None  # fp32 never casts
    assert precision.PrecisionRun("bf16", "cpu").weights is None  # no model given: autocast alone
    assert precision.PrecisionRun("bf16", "cpu", model=model.to(torch.bfloat16)).weights is None  # already bf16


def test_a_failed_check_drops_the_bf16_copies(capsys):
    model = torch.nn.Linear(16, 10)
    run = precision.PrecisionRun("bf16", "cpu", tolerance=precision.Tolerance(rtol=0.0, atol=0.0), model=model)
    with torch.no_grad():
        run(lambda: model(torch.randn(4, 16)))
    assert run.precision == "fp32" and run.weights is None and "bf16_weights" not in run.record()
    assert "running in fp32" in capsys.readouterr().err


def test_a_torch_quantised_model_runs_in_fp32_under_auto_and_refuses_bf16(cpu_is, random_classifier, digits_test):
    """Dynamically quantised Linear layers compute in int8 on float32 inputs; bf16 autocast feeds
    them bf16 and torch fails deep inside. `auto` runs such a model in fp32 and says so; a forced
    bf16 is one clear error."""
    import copy

    quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(random_classifier), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    assert precision.quantized_modules(quantised) and not precision.quantized_modules(random_classifier)
    cpu_is(SAPPHIRE_RAPIDS)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), pytest.raises(RuntimeError):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            quantised(x)  # what bf16 would do: torch's own error
    result = evaluate_model(quantised, digits_test, batch_size=16, progress=False)
    fp32 = evaluate_model(quantised, digits_test, batch_size=16, progress=False, precision="fp32")
    assert result["precision"] == {"precision": "fp32", "requested": "auto",
                                   "note": "torch-quantised modules: auto runs them in fp32"}
    assert result["metrics"] == fp32["metrics"]
    with pytest.raises(ValueError, match=r"^evaluation: --precision bf16 cannot run a model with torch-quantised "
                                         r"modules \(vit\.layers\.0\.attention\.qkv"):
        precision.PrecisionRun("bf16", "cpu", model=quantised, what="evaluation")
    assert precision.PrecisionRun("bf16", "cpu", model=random_classifier).precision == "bf16"
