"""The benchmark harness: its GPU peak table and its ablation switches (the FLOPs formula it uses,
`hf_vit_repro.flops`, is tested in test_flops.py)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

from .conftest import randomize_, tiny_kwargs

spec = importlib.util.spec_from_file_location(
    "bench_models", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_models"] = bench  # dataclasses look their module up while the file runs
spec.loader.exec_module(bench)


def test_gpu_peak_lookup():
    assert bench.gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.gpu_peak_flops("Some CPU") is None


def test_ablation_switches_turn_each_fast_path_off():
    """ablate_models.py's "off" variants really leave their path: the classifier's last block
    sees every token, the hybrid's CNN gets NCHW input, inference skips torch's fused kernel."""
    spec = importlib.util.spec_from_file_location(
        "ablate_models", Path(__file__).resolve().parents[1] / "benchmarks" / "ablate_models.py"
    )
    ablate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablate)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)

    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())).train()
    seen = []
    model.vit.layers[-1].mlp.fc1.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    ablate._logits(model)(x), ablate._full_path_logits(model)(x)
    assert seen == [1, 17]

    calls = []
    model.eval()
    native = torch._transformer_encoder_layer_fwd
    try:
        torch._transformer_encoder_layer_fwd = lambda *args: calls.append(1) or native(*args)
        with torch.inference_mode():
            ablate._logits(model)(x)
            on = len(calls)
            ablate._without_native_kernel(model)(x)
    finally:
        torch._transformer_encoder_layer_fwd = native
    assert on == 1 and len(calls) == on  # the class-token last block never takes the fused kernel

    hybrid = ViTReproForImageClassification(ViTReproConfig(
        image_size=32, patch_size=1, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        backbone_config={"depths": [1], "hidden_sizes": [32], "embedding_size": 16, "num_groups": 8},
    ))
    layouts = []
    hybrid.vit.embeddings.patch_embeddings.backbone.register_forward_pre_hook(
        lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        ablate._logits(hybrid)(x), ablate._nchw(hybrid)(x)
    assert layouts == [True, False]


def test_onnxruntime_rows_serve_our_export_and_only_infer():
    """The harness's ONNX Runtime implementation runs our model's export (same logits within
    1e-4), is measured in inference only, and the table shows "-" where it was not measured."""
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs()))).eval()
    ort_impl = bench.onnxruntime_impl(model, threads=1)
    assert ort_impl.model is None and not ort_impl.trains
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ort_impl.logits(x), model(x).logits, atol=1e-4, rtol=0)
    ours = bench.Impl("hf_vit_repro", model, lambda t: model(t).logits)
    ours.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    labels = torch.zeros(3, dtype=torch.long)
    assert set(bench.interleaved_samples([ours, ort_impl], x, labels, "infer", 1, 1)) == {"hf_vit_repro", "onnxruntime"}
    assert set(bench.interleaved_samples([ours, ort_impl], x, labels, "train", 1, 1)) == {"hf_vit_repro"}
    result = {"row": "tiny", "batch_size": 3, "impls": {
        "hf_vit_repro": {"infer_img_s": 10.0, "infer_x_onnxruntime": 0.5},
        "onnxruntime": {"infer_img_s": 20.0},
    }}
    lines = bench.table([result]).splitlines()
    assert lines[2].split()[:5] == ["tiny", "fp32", "3", "onnxruntime", "20.0"]
    assert lines[2].split()[5:8] == ["-", "-", "0.50x"]


def test_default_output_never_overwrites_committed_results(tmp_path, monkeypatch):
    """`bench_models.py` and `ablate_models.py` without --out write a new timestamped file next to
    the committed results, which stay untouched (issue 14, item 18)."""
    import json
    import os
    import platform

    spec = importlib.util.spec_from_file_location(
        "ablate_models", Path(__file__).resolve().parents[1] / "benchmarks" / "ablate_models.py"
    )
    ablate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablate)
    machine = f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    committed = {tmp_path / f"{machine}.json": "models", tmp_path / f"ablation_{machine}.json": "ablation"}
    for path, content in committed.items():
        path.write_text(content)
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench, "run_row", lambda row, *args: {"row": row, "precision": args[4] or "fp32", "impls": {}})
    monkeypatch.setattr(bench, "table", lambda results: "")
    monkeypatch.setattr(ablate, "run_path", lambda path, *args: {"path": path})
    monkeypatch.setattr(ablate, "table", lambda results: "")
    for _ in range(2):
        assert bench.main(["--rows", "vit_s16", "--device", "cpu"]) == 0
        assert ablate.main(["--paths", "fused_adamw"]) == 0
    assert {path: path.read_text() for path in committed} == committed
    new = sorted(p.name for p in tmp_path.glob("*.json") if p not in committed)
    assert len(new) == 4, new  # two runs of each, two files each
    assert sum(name.startswith(f"{machine}-") for name in new) == 2
    assert sum(name.startswith(f"ablation_{machine}-") for name in new) == 2
    rows = [json.loads((tmp_path / name).read_text())["rows"] for name in new]
    assert any(r[0].get("row") == "vit_s16" and r[0]["impls"] == {} for r in rows)


def benchmark_module(name: str):
    """A script of benchmarks/ imported as a module (its folder on sys.path while it loads)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def digits_classifier(folder: Path, preprocess):
    """`(model, digits/test, its pixels)`: the tiny checkpoint saved in `folder` with a 10-way
    least-squares head on digits/test as `preprocess(images)` makes its pixels."""
    from hf_vit_repro.data import load_task

    from .run_fixtures import save_tiny_checkpoint

    model = save_tiny_checkpoint(folder)
    test = load_task("digits", split="test")
    pixels = preprocess(test["image"])
    fit_least_squares_head(model, pixels, test["label"])
    model.save_pretrained(folder)
    return model, test, pixels


def fit_least_squares_head(model, pixels: torch.Tensor, labels) -> None:
    """A random encoder's predictions are nearly constant: a least-squares linear head on its features
    (digits' 10 classes) gives a classifier whose predictions vary, so a comparison means something."""
    model.reset_classifier(10)
    with torch.no_grad():
        features = torch.cat([model.vit(pixel_values=pixels).pooler_output, torch.ones(len(pixels), 1)], dim=1)
        targets = torch.nn.functional.one_hot(torch.tensor(list(labels)), 10).float()
        solution = torch.linalg.lstsq(features, targets).solution
        model.classifier.weight.copy_(solution[:-1].T)
        model.classifier.bias.copy_(solution[-1])


def test_quantization_script_scores_both_graphs_on_real_images(tmp_path):
    """benchmarks/quantize_onnx.py's accuracy mode: the float32 ONNX graph predicts what the
    PyTorch model predicts on digits/test (same pre-processing), and the int8 graph is scored on
    the same 300 images."""
    from transformers import AutoImageProcessor

    quantize_onnx = benchmark_module("quantize_onnx")

    def preprocess(images):
        processor = AutoImageProcessor.from_pretrained(tmp_path / "ckpt")
        return processor([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]

    model, test, pixels = digits_classifier(tmp_path / "ckpt", preprocess)
    result = quantize_onnx.accuracy(str(tmp_path / "ckpt"), "digits", "test", threads=1)
    with torch.no_grad():
        predicted = model(pixel_values=pixels).logits.argmax(-1)
    assert len(predicted.unique()) >= 3  # a model whose predictions vary: the comparison means something
    correct = int((predicted == torch.tensor(test["label"])).sum())
    assert result["num_images"] == 300 and round(result["fp32"] * 300) == correct
    assert 0.0 <= result["int8"] <= 1.0 and 0 <= result["changed_predictions"] <= 300


def test_int8_accuracy_script_scores_float32_dynamic_and_static_graphs(tmp_path):
    """benchmarks/int8_accuracy.py's accuracy rows on a tiny classifier: the PyTorch row is the
    accuracy computed here (transformers' Auto class, digits/test preprocessed as `vit-repro
    evaluate` does), the float32 graph predicts exactly what PyTorch predicts, and every int8 graph
    is scored on the same 300 images against it."""
    from transformers import AutoModelForImageClassification

    from hf_vit_repro.data import eval_transform

    int8_accuracy = benchmark_module("int8_accuracy")
    transform = eval_transform(32, (0.5,) * 3, (0.5,) * 3)
    _, test, pixels = digits_classifier(tmp_path / "ckpt", lambda images: torch.stack([transform(i) for i in images]))
    rows = int8_accuracy.accuracy(str(tmp_path / "ckpt"), "digits", "test", "train", 32, ["minmax"], threads=1, batch=64,
                                  repeats=1)
    assert [row["graph"] for row in rows] == ["pytorch", "fp32", "int8-dynamic", "int8-static-minmax"]
    reference = AutoModelForImageClassification.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        predicted = reference(pixel_values=pixels).logits.argmax(-1)
    assert len(predicted.unique()) >= 3
    assert round(rows[0]["accuracy"] * 300) == int((predicted == torch.tensor(test["label"])).sum())
    assert rows[1]["changed_vs_fp32"] == 0 and rows[1]["top1_agreement_with_pytorch"] == 1.0
    assert rows[1]["accuracy"] == rows[0]["accuracy"]
    for row in rows[2:]:
        assert row["points_vs_fp32"] == round(100 * (row["accuracy"] - rows[1]["accuracy"]), 3)
        assert 0 <= row["changed_vs_fp32"] <= 300 and row["img_s"] > 0 and row["mb"] < rows[1]["mb"]


def test_peft_benchmark_runs_one_row_per_method(tmp_path):
    """benchmarks/bench_peft.py on the tiny model: a row per method, trainable counts as the
    methods define them (linear: the head alone), full first."""
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_peft", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_peft.py"
    )
    peft_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peft_bench)
    out = tmp_path / "peft.json"
    assert peft_bench.main(["--tiny", "--image-size", "32", "--batch-size", "2", "--repeats", "1", "--steps", "1",
                            "--methods", "linear,lora", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["full", "linear", "lora"]
    assert rows[0]["trainable_fraction"] == 1.0
    assert rows[1]["trainable_parameters"] == 32 * peft_bench.NUM_CLASSES + peft_bench.NUM_CLASSES
    assert all(r["train_img_s"] > 0 and r["train_mb"] > 0 for r in rows)


def test_cpu_peaks_and_description_are_recorded(tmp_path, monkeypatch):
    """On a CPU the run measures its own fp32 and bf16 matrix-product peaks, records the CPU's model
    and flags, measures every row in each precision and divides by that precision's peak."""
    import json

    assert bench.matmul_peak(torch.float32, sizes=(64,), repeats=1) > 0
    described = bench.cpu_description()
    assert described["model"] and "avx2" in described["flags"] and described["auto_precision"] == "fp32"
    measured = iter([3e11, 1.2e12, 3e11, 2.4e12])  # a busy moment before the rows lowers the first bf16 peak
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, **kw: next(measured))
    calls = []

    def fake_row(row, batch, repeats, steps, device, amp, compile, optimizer, modes, onnxruntime, cpu_peak, bf16_weights):
        calls.append((amp, onnxruntime, cpu_peak, bf16_weights))
        return {"row": row, "batch_size": batch, "precision": amp or "fp32", "forward_gflops_per_image": 4.6,
                "ours_forward_gflops_per_image": 4.0, "impls": {"hf_vit_repro": {"infer_img_s": 100.0}, "timm": {}}}

    monkeypatch.setattr(bench, "run_row", fake_row)
    out = tmp_path / "r.json"
    assert bench.main(["--rows", "vit_s16", "--device", "cpu", "--no-onnxruntime", "--out", str(out)]) == 0
    assert calls == [(None, False, 3e11, False), ("bf16", False, 1.2e12, False)]
    record = json.loads(out.read_text())
    assert record["matmul_peak_gflops"] == {"fp32": 300.0, "bf16": 1200.0} and record["cpu"]["flags"]
    assert record["matmul_peak_gflops_after"] == {"fp32": 300.0, "bf16": 2400.0}
    assert record["matmul_peak_gflops_used"] == {"fp32": 300.0, "bf16": 2400.0}
    bf16_row = record["rows"][1]
    assert bf16_row["peak_flops"] == 2.4e12 and bf16_row["impls"]["hf_vit_repro"]["infer_mfu"] == pytest.approx(100 * 4e9 / 2.4e12)
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, **kw: {torch.float32: 3e11, torch.bfloat16: 2.4e12}[dtype])
    calls.clear()
    assert bench.main(["--rows", "vit_s16", "--device", "cpu", "--precisions", "fp32", "--out", str(out)]) == 0
    assert [c[0] for c in calls] == [None]
    calls.clear()
    assert bench.main(["--rows", "vit_s16", "--device", "cpu", "--bf16-weights", "--out", str(out)]) == 0
    assert [c[3] for c in calls] == [True, True]  # passed on; run_row uses it for bf16 inference only


def test_peft_digits_table_transfers_a_checkpoint_pretrained_on_the_spot_with_every_method(tmp_path):
    """benchmarks/peft_digits.py --smoke: the tiny ViT pretrained on the spot, then one fine-tune per
    method; the table's trainable counts are the methods' definitions counted here on the smoke model
    (width 32, 2 layers, 10 digits), its accuracies those the runs' metrics files hold."""
    import json

    from hf_vit_repro.training.peft_methods import METHODS

    spec = importlib.util.spec_from_file_location(
        "peft_digits", Path(__file__).resolve().parents[1] / "benchmarks" / "peft_digits.py"
    )
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    assert table.main(["--smoke", "--no-progress", "--output-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "peft_digits.json").read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert list(rows) == list(METHODS) and record["checkpoint"] == str(tmp_path / "pretrain")
    head = 32 * 10 + 10
    full = ViTReproForImageClassification.from_pretrained(tmp_path / "full" / "final")
    biases = sum(p.numel() for n, p in full.named_parameters() if n.endswith(".bias") and not n.startswith("classifier."))
    assert rows["full"]["trainable_fraction"] == 1.0
    assert rows["full"]["trainable_parameters"] == sum(p.numel() for p in full.parameters())
    assert rows["linear"]["trainable_parameters"] == head
    assert rows["bitfit"]["trainable_parameters"] == head + biases
    assert rows["vpt-shallow"]["trainable_parameters"] == head + 10 * 32  # 10 prompts of width 32
    assert rows["vpt-deep"]["trainable_parameters"] == head + 2 * 10 * 32  # ... at each of the 2 blocks
    assert rows["lora"]["trainable_parameters"] == head + 2 * 8 * ((32 + 96) + (32 + 32) + (32 + 64) + (64 + 32))
    assert rows["adapter"]["trainable_parameters"] == head + 2 * (32 * 64 + 64 + 64 * 32 + 32)  # bottleneck 64
    for method, row in rows.items():
        metrics = json.loads((tmp_path / method / "metrics" / "digits_test.json").read_text())
        assert row["accuracy"] == metrics["metrics"]["accuracy"] and 0 < row["trainable_fraction"] <= 1
    lines = (tmp_path / "peft_digits.md").read_text().splitlines()
    assert len(lines) == 2 + len(METHODS) and lines[3].startswith("| linear | 330 | ")


def test_inference_script_images_are_real_and_its_exactness_catches_a_wrong_path():
    """benchmarks/bench_inference.py: the evaluation and calibration images are distinct real
    images (photo crops and upscaled digits in [-1, 1]); a bf16 path passes the precision policy's
    check against fp32 and a path with permuted logits fails it."""
    inference = benchmark_module("bench_inference")
    images = inference.real_images(6, size=32)
    calibration = inference.real_images(6, offset=10_000, size=32)
    assert images.shape == (6, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.1 and not torch.equal(images, calibration)
    assert not torch.allclose(images[0], images[2])  # two crops, not one image twice
    digit = images[1]
    assert torch.equal(digit[0], digit[1])  # a grey digit replicated to RGB
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10)))).eval()

    def eager(x):
        return model(pixel_values=x).logits

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(pixel_values=x).logits.float()

    with torch.no_grad():
        result = inference.exactness({"eager-fp32": eager, "eager-bf16": bf16,
                                      "broken": lambda x: eager(x).roll(1, dims=1)}, images, batch=4)
    assert result["eager-fp32"]["max_abs_logit_diff"] == 0 and result["eager-fp32"]["policy_check_ok"]
    assert 0 < result["eager-bf16"]["max_abs_logit_diff"] and result["eager-bf16"]["policy_check_ok"]
    assert not result["broken"]["policy_check_ok"] and result["broken"]["top1_agreement"] < 1


def test_inference_script_compiles_once_for_a_padded_tail_batch():
    """The compiled path (inductor, freezing) equals eager on a tiny ViT, and `padded` serves a
    smaller last batch from the same graph: one compilation, the tail's rows unchanged."""
    import time

    import torch._dynamo.utils as dynamo_utils

    inference = benchmark_module("bench_inference")
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs()))).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    try:
        before = dynamo_utils.counters["stats"]["unique_graphs"]
        compiled = inference.compile_model(model)
        call = inference.padded(lambda v: compiled(v).logits, 4)
        with torch.no_grad():
            expected = model(pixel_values=x).logits
            start = time.perf_counter()
            full = call(x)
            compile_s = time.perf_counter() - start
            tail = call(x[:3])
        assert dynamo_utils.counters["stats"]["unique_graphs"] - before == 1
    finally:
        torch._dynamo.reset()
        import torch._inductor.config as inductor_config

        inductor_config.freezing = False
    assert tail.shape == (3, 3)
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tail, expected[:3], rtol=1e-4, atol=1e-5)
    assert compile_s < 120  # a tiny model compiles in seconds; minutes would mean a broken toolchain


def test_inference_script_kernel_bound_adds_up_the_model_s_own_shapes():
    """`kernel_bound` times a block's bf16 products and attention alone at the model's shapes and
    adds them up as our forward runs them (last block: keys and values only)."""
    inference = benchmark_module("bench_inference")
    config = ViTReproConfig(**tiny_kwargs())
    bound = inference.kernel_bound(config, batch=2, resolution=32)
    ms = bound["ms"]
    assert set(ms) == {"qkv", "o_proj", "fc1", "fc2", "attention", "patch_embedding"} and min(ms.values()) > 0
    block = ms["qkv"] + ms["o_proj"] + ms["fc1"] + ms["fc2"] + ms["attention"]
    expected = (config.num_hidden_layers - 1) * block + ms["qkv"] * 2 / 3 + ms["patch_embedding"]
    assert bound["batch_ms"] == pytest.approx(expected, abs=0.01)


def test_inference_script_runs_the_package_s_bf16_path():
    """`eager-bf16-copies` is PrecisionRun with the model: bf16 copies of the weights under
    autocast, close to fp32 (the policy's check) and not equal to it; the model keeps fp32 weights."""
    inference = benchmark_module("bench_inference")
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10)))).eval()
    images = inference.real_images(8, size=32)
    with torch.no_grad():
        calls = inference.build_paths(model, ["eager-fp32", "eager-bf16-copies", "eager-bf16-copies-native"], images, 1)
        result = inference.exactness(calls, images, batch=4)
    for path in ("eager-bf16-copies", "eager-bf16-copies-native"):
        assert result[path]["policy_check_ok"] and result[path]["max_abs_logit_diff"] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_inference_script_s_native_path_switches_off_the_packed_blocks_of_its_own_copy():
    """`eager-bf16-copies-native` runs a copy of the model with the packed bf16 blocks off; the model itself keeps them."""
    inference = benchmark_module("bench_inference")
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10)))).eval()
    calls = inference.build_paths(model, ["eager-bf16-copies-native"], inference.real_images(4, size=32), 1)
    native_model = calls["eager-bf16-copies-native"].__defaults__[1]
    assert native_model is not model and all(not layer._packed_bf16_inference for layer in native_model.vit.layers)
    assert all(layer._packed_bf16_inference for layer in model.vit.layers)


def test_inference_script_s_openvino_path_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(SystemExit, match="pip install openvino"):
        benchmark_module("bench_inference").openvino_bf16(Path("model.onnx"), 1)


def test_precision_train_script_measures_fp32_and_bf16_in_turn():
    """benchmarks/bench_precision_train.py: two copies of one model train in turn, fp32 then bf16
    autocast (the bf16 copy's forward runs under autocast, the fp32 one's not); the model handed in
    is not trained; the ratio is the medians' and each pair's."""
    script = benchmark_module("bench_precision_train")
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10))))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    impls = script.precision_pair(model)
    x = torch.randn(2, 3, 32, 32)
    assert [i.name for i in impls] == ["fp32", "bf16"]
    assert impls[0].logits(x).dtype == torch.float32
    seen = []
    handle = impls[1].model.classifier.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    impls[1].logits(x)
    handle.remove()
    assert seen == [torch.bfloat16]
    result = script.measure_pair(model, batch=2, resolution=32, repeats=2, steps=1)
    assert len(result["samples"]["fp32"]) == len(result["samples"]["bf16"]) == 2 == len(result["pair_ratios"])
    assert result["ratio"] == pytest.approx(result["bf16"] / result["fp32"]) and min(result["samples"]["bf16"]) > 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_demo_precision_script_trains_each_seed_in_both_precisions_and_reads_finished_runs_back(tmp_path, monkeypatch):
    """benchmarks/demo_precision.py: per seed, the demo ViT's two stages in fp32 then bf16 (the recipe's
    `run.mixed_precision`, so the bf16 run also evaluates in bf16); the summary is those runs' numbers; a
    second call reads finished runs back instead of training again."""
    script = benchmark_module("demo_precision")
    tiny = ["train.epochs=null", "train.steps=2", "optim.warmup_steps=1", "data.max_train_examples=64",
            "data.max_eval_examples=16", "run.torch_threads=1"]
    argv = ["--seeds", "0", "1", "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--out", str(tmp_path / "r.json")]
    assert script.main(argv + [a for item in tiny for a in ("--override", item)]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["seed"], r["precision"]): r for r in result["rows"]}
    assert sorted(rows) == [(0, "bf16"), (0, "no"), (1, "bf16"), (1, "no")]
    assert {r["eval_precision"] for (_, p), r in rows.items() if p == "bf16"} == {"bf16"}
    assert {r["eval_precision"] for (_, p), r in rows.items() if p == "no"} == {"fp32"}
    for seed in (0, 1):
        recipe = yaml.safe_load((tmp_path / "runs" / f"s{seed}_bf16" / "finetune" / "recipe.yaml").read_text())
        assert recipe["train"]["seed"] == seed and recipe["model"]["init_from"].endswith(f"s{seed}_bf16/pretrain")
    summary = result["summary"]
    assert summary["no"]["accuracy"] == [rows[(s, "no")]["accuracy"] for s in (0, 1)]
    assert summary["bf16_minus_fp32"] == pytest.approx(summary["bf16"]["mean"] - summary["no"]["mean"])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("hf_vit_repro.training.train", no_training)
    assert script.main(argv) == 0
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == result["rows"]


def test_attention_kernels_script_times_every_way_at_the_given_shapes(tmp_path):
    """benchmarks/attention_kernels.py: flash, math, the bmm-softmax-bmm composition and its parts, and the
    qkv projection for scale; each with its time, and GFLOP/s from the FLOPs of the shapes."""
    import json

    script = benchmark_module("attention_kernels")
    ways = script.time_attention(batch=2, heads=2, tokens=5, head_dim=8, repeats=1)
    assert set(ways) == {"flash", "math", "bmm_softmax_bmm", "q_kT", "softmax", "p_v", "qkv_projection"}
    assert all(w["ms"] > 0 for w in ways.values()) and ways["softmax"]["gflops"] is None
    attention_flops = 4 * 2 * 2 * 5**2 * 8
    assert ways["flash"]["gflops"] == pytest.approx(attention_flops / (ways["flash"]["ms"] / 1e3) / 1e9, rel=0.05, abs=0.1)
    out = tmp_path / "a.json"
    assert script.main(["--rows", "vit_s16", "--batch-size", "1", "--repeats", "1", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert (row["row"], row["heads"], row["tokens"]) == ("vit_s16", 6, 197) and set(row["ways"]) == set(ways)
