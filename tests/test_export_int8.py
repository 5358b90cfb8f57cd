"""Static (calibrated) int8 export (hf_vit_repro.quantization through hf_vit_repro.export): a tiny
classifier trained here on scikit-learn's digits, calibrated on digits images from a local folder
and from the registry task; the graph's QDQ nodes and per-channel weight scales read from the ONNX
file; its logits against the PyTorch model loaded independently (transformers' Auto class) on
held-out digits images; the report; `verify`; the CLI's errors."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForImageClassification, ViTImageProcessor

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, quantization
from hf_vit_repro.cli import main
from hf_vit_repro.data import load_task
from hf_vit_repro.export import ExportError, export, verify

from .conftest import tiny_kwargs

# The int8 graph against PyTorch on held-out real images: the largest logit difference within this
# share of the largest |logit| (the exporter's default bound), and at least this share of the
# top-1 classes the same.
RELATIVE_BOUND = 0.1
MIN_TOP1_AGREEMENT = 0.9
CALIBRATION_IMAGES = 48


def digits_images(split: str, count: int | None = None):
    images = load_task("digits", split)["image"]
    return [image.convert("RGB") for image in images[:count]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A save_pretrained folder of the tiny ViT (10 classes) after 40 AdamW steps on digits/train,
    with its image processor; and a folder of 80 digits/train PNGs to calibrate on."""
    root = tmp_path_factory.mktemp("int8")
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    dataset = load_task("digits", "train")
    pixels = processor([image.convert("RGB") for image in dataset["image"]], return_tensors="pt")["pixel_values"]
    labels = torch.tensor(dataset["label"])
    torch.manual_seed(0)
    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        rows = torch.randint(0, len(labels), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels[rows]).logits, labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    images = root / "images"
    images.mkdir()
    for i, image in enumerate(digits_images("train", 80)):
        image.save(images / f"{i:03d}.png")
    return {"checkpoint": root / "model", "images": images, "root": root}


@pytest.fixture(scope="module")
def static_export(trained):
    """The trained model exported as int8-static, calibrated on the local image folder."""
    out = trained["root"] / "static"
    calibration = quantization.Calibration(str(trained["images"]), images=CALIBRATION_IMAGES)
    report = export(trained["checkpoint"], out, quantize="int8-static", calibration=calibration, progress=False)
    return out, report


def test_static_graph_has_qdq_nodes_and_per_channel_weight_scales(static_export):
    out, _ = static_export
    graph = onnx.load(str(out / "onnx/model_quantized.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert "MatMulInteger" not in ops and "DynamicQuantizeLinear" not in ops  # not the dynamic graph
    assert {"LayerNormalization", "Softmax"} <= set(ops)  # left in float
    initializers = {t.name: t for t in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    per_channel = 0
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = producers.get(node.input[1])
        if weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in initializers:
            continue  # the attention products multiply two activations
        values, scale = initializers[weight.input[0]], initializers[weight.input[1]]
        axis = {a.name: a.i for a in weight.attribute}.get("axis")
        assert values.data_type == onnx.TensorProto.INT8 and len(values.dims) == 2
        # one scale per output column of the (in, out) weight, and the axis says so
        assert axis == 1 and list(scale.dims) == [values.dims[1]], (weight.input[0], axis, scale.dims)
        per_channel += 1
    assert per_channel >= 2 * 4  # 2 layers: qkv, attention output, two MLP matrices each
    assert set(quantization.weight_axes(out / "onnx/model_quantized.onnx").values()) <= {0, 1}


def test_static_int8_agrees_with_pytorch_on_held_out_images(trained, static_export):
    """Logits of the int8 graph (run by ONNX Runtime directly) against the PyTorch model loaded by
    transformers, on 100 digits/test images (never calibrated on): within RELATIVE_BOUND of the
    largest |logit|, top-1 agreement >= MIN_TOP1_AGREEMENT; the float32 graph within 1e-4."""
    out, _ = static_export
    processor = ViTImageProcessor.from_pretrained(out)
    x = processor(digits_images("test", 100), return_tensors="pt")["pixel_values"]
    model = AutoModelForImageClassification.from_pretrained(trained["checkpoint"]).eval()
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    session = ort.InferenceSession(str(out / "onnx/model_quantized.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"pixel_values": x.numpy()})[0])
    assert 0 < (got - expected).abs().max() <= RELATIVE_BOUND * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= MIN_TOP1_AGREEMENT
    float32 = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    torch.testing.assert_close(torch.from_numpy(float32.run(["logits"], {"pixel_values": x.numpy()})[0]), expected,
                               atol=1e-4, rtol=0)


def test_report_records_the_calibration_and_the_check(trained, static_export):
    out, report = static_export
    assert json.loads((out / "export_report.json").read_text()) == json.loads(json.dumps(report))
    q = report["quantization"]
    assert q["quantize"] == "int8-static" and q["per_channel"] and q["activation_type"] == "QUInt8"
    assert q["op_types"] == ["MatMul", "Gemm", "Conv"] and q["calibration_method"] == "minmax"
    calibration = q["calibration"]
    assert calibration["source"] == str(trained["images"]) and calibration["images"] == CALIBRATION_IMAGES
    assert calibration["split"] == "train" and calibration["num_source_images"] == 80
    assert calibration["check_images"] == quantization.CHECK_IMAGES
    # the check ran on the held-out images the folder keeps, in full batches of 3, and passed
    kept = np.load(out / quantization.CHECK_INPUTS)
    assert kept.shape == (quantization.CHECK_IMAGES, 3, 32, 32) and q["check_inputs"]["file"] == quantization.CHECK_INPUTS
    parity = report["parity"]
    assert parity["passed"] and parity["relative"] and sum(parity["batch_sizes"]) == 15
    assert parity["max_abs_diff"]["logits"] <= RELATIVE_BOUND * parity["max_abs_reference"]["logits"] + 1e-4
    assert parity["top1_agreement"] >= MIN_TOP1_AGREEMENT
    # the check batch of random pixels is recorded, not required (see hf_vit_repro.quantization)
    assert "top1_agreement" in q["random_input_parity"] and q["random_input_parity"]["batch_sizes"] == [1, 3]
    assert q["float32_parity"]["passed"] and max(q["float32_parity"]["max_abs_diff"].values()) <= 1e-4


def test_verify_repeats_the_check_on_the_kept_images(trained, static_export, tmp_path, capsys):
    import shutil

    out, report = static_export
    assert verify(out)["top1_agreement"] >= MIN_TOP1_AGREEMENT
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(["verify-export", str(copy)]) == 0
    assert "OK" in capsys.readouterr().out
    kept = np.load(copy / quantization.CHECK_INPUTS)
    np.save(copy / quantization.CHECK_INPUTS, kept * 0)  # other images: refused, not silently checked on
    with pytest.raises(ExportError, match="not the file the int8 graph was checked on"):
        verify(copy)


def test_cli_static_int8_from_a_registry_task_with_another_method_and_a_static_batch(trained, tmp_path, capsys):
    out = tmp_path / "static"
    assert main(["export", str(trained["checkpoint"]), str(out), "--quantize", "int8-static", "--calibration-data", "digits",
                 "--calibration-images", "32", "--calibration-method", "percentile", "--static-batch", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "(int8, static)" in printed and "Calibrated on 32 images of digits (train, percentile)" in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["quantization"]["calibration"]["num_source_images"] == 1497
    assert report["quantization"]["calibration_method"] == "percentile" and report["parity"]["passed"]
    # a graph of fixed batch size 2 is calibrated and checked in batches of 2
    assert report["inputs"][0]["shape"][0] == 2 and report["parity"]["batch_sizes"] == [2] * 8


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vit-repro export: error:"), err
    return err


def test_cli_errors_without_or_with_wrong_calibration_data(trained, tmp_path, capsys):
    checkpoint = str(trained["checkpoint"])
    out = tmp_path / "out"
    assert main(["export", checkpoint, str(out), "--quantize", "int8-static", "--no-progress"]) == 2
    assert "--calibration-data FOLDER | DATASET | TASK" in one_line_error(capsys)
    assert main(["export", checkpoint, str(out), "--quantize", "int8-dynamic", "--calibration-data", "digits"]) == 2
    assert "applies to --quantize int8-static only" in one_line_error(capsys)
    missing = str(tmp_path / "no-such-folder")
    assert main(["export", checkpoint, str(out), "--quantize", "int8-static", "--calibration-data", missing,
                 "--no-progress"]) == 2
    assert f"--calibration-data {missing!r}" in one_line_error(capsys)
    assert main(["export", checkpoint, str(out), "--quantize", "int8-static", "--calibration-data", "digits",
                 "--calibration-images", "0", "--no-progress"]) == 2
    assert "--calibration-images must be a positive integer" in one_line_error(capsys)
    assert not out.exists()


def test_int8_is_the_alias_of_the_default():
    assert quantization.canonical("int8") == quantization.DEFAULT_INT8 in quantization.QUANTIZATIONS
    assert quantization.canonical("int8-static") == "int8-static" and quantization.canonical(None) is None
    with pytest.raises(ValueError, match="unknown quantization 'int4'"):
        quantization.canonical("int4")
