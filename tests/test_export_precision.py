"""`vit-repro export --precision {auto,fp32,bf16}` (hf_vit_repro.export_precision): `auto` exports
fp32; a bf16 ExportedProgram holds bf16 weights, takes and returns float32, and matches the
checkpoint loaded independently (transformers' Auto classes) and run eagerly in bf16; the report
records the precision and `verify` repeats the check in it; bf16 ONNX is refused in one line
(ONNX Runtime's CPU provider cannot load a bf16 MatMul, shown here on a one-node graph); bad
values are refused by argparse."""

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from transformers import AutoModelForImageClassification, AutoModelForMaskedImageModeling

from hf_vit_repro import ViTReproConfig, ViTReproForMaskedImageModeling
from hf_vit_repro.cli import main
from hf_vit_repro.export import ExportError, export, load_exported, verify
from hf_vit_repro.export_precision import BF16_EXPORT_TOLERANCE

from .conftest import randomize_, tiny_kwargs
from .run_fixtures import make_run


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    make_run(root / "run", evaluated=False, figures=False)
    mim = randomize_(ViTReproForMaskedImageModeling(ViTReproConfig(**tiny_kwargs())), seed=3).eval()
    mim.save_pretrained(root / "mim")
    return {"classifier": (root / "run", root / "run" / "final", AutoModelForImageClassification),
            "mim": (root / "mim", root / "mim", AutoModelForMaskedImageModeling)}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vit-repro export: error:") and "\n" not in err, err
    return err


def test_onnx_runtime_cannot_load_a_bf16_matmul():
    """The fact behind the refusal, on the installed ONNX Runtime: a one-node bf16 MatMul graph."""
    spec = [helper.make_tensor_value_info(name, TensorProto.BFLOAT16, [2, 2]) for name in "aby"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    with pytest.raises(Exception, match="MatMul"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_bf16_onnx_is_refused_in_one_line_and_writes_nothing(checkpoints, tmp_path, capsys):
    run = str(checkpoints["classifier"][0])
    assert main(["export", run, str(tmp_path / "out"), "--precision", "bf16", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "bf16 MatMul" in err and "--format exported-program" in err and "--quantize int8" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no bf16 MatMul kernel"):
        export(run, tmp_path / "out", format="onnx", precision="bf16", progress=False)


@pytest.mark.parametrize("value", ["fp16", "BF16", "int8"])
def test_bad_precision_is_refused_by_argparse(checkpoints, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoints["classifier"][0]), str(tmp_path / "out"), "--precision", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--precision" in err and "invalid choice" in err and "auto" in err, err
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        export(checkpoints["classifier"][0], tmp_path / "out", format="exported-program", precision=value)


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_auto_exports_fp32_and_the_report_says_so(checkpoints, tmp_path, fmt):
    report = export(checkpoints["classifier"][0], tmp_path / "out", format=fmt, progress=False)
    assert (report["precision"], report["requested_precision"]) == ("fp32", "auto")
    assert json.loads((tmp_path / "out" / "export_report.json").read_text())["precision"] == "fp32"
    assert report["parity"]["tolerance"] == 1e-4 and not report["parity"].get("relative")
    if fmt == "exported-program":
        weights = torch.export.load(str(tmp_path / "out" / "model.pt2")).state_dict.values()
        assert {t.dtype for t in weights if t.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("kind", ["classifier", "mim"])
def test_bf16_exported_program_loads_matches_pytorch_in_bf16_and_verifies(checkpoints, tmp_path, capsys, kind):
    checkpoint, weights, auto_class = checkpoints[kind]
    out = tmp_path / "bf16"
    assert main(["export", str(checkpoint), str(out), "--format", "exported-program", "--precision", "bf16",
                 "--no-progress"]) == 0
    assert ", bf16)" in capsys.readouterr().out
    report = json.loads((out / "export_report.json").read_text())
    assert (report["precision"], report["requested_precision"]) == ("bf16", "bf16")
    assert report["parity"]["passed"] and report["parity"]["relative"]
    assert report["parity"]["tolerance"] == BF16_EXPORT_TOLERANCE
    assert report["inputs"][0] == {"name": "pixel_values", "shape": ["batch", 3, 32, 32], "dtype": "float32"}

    # the program's weights are bf16; it takes float32 pixels (bool masks untouched) and returns float32
    program = torch.export.load(str(out / "model.pt2"))
    assert {t.dtype for t in program.state_dict.values() if t.is_floating_point()} == {torch.bfloat16}
    generator = torch.Generator().manual_seed(7)
    pixels = torch.randn(3, 3, 32, 32, generator=generator)
    inputs = {"pixel_values": pixels}
    if kind == "mim":
        inputs["bool_masked_pos"] = torch.rand(3, 16, generator=generator) < 0.3
    with torch.no_grad():
        got = program.module()(*inputs.values())
    assert all(t.dtype == torch.float32 for t in got)

    # against the checkpoint loaded by transformers, cast to bf16 and run eagerly
    reference = auto_class.from_pretrained(weights).eval().to(torch.bfloat16)
    with torch.no_grad():
        expected = reference(**{**inputs, "pixel_values": pixels.to(torch.bfloat16)})
    field = "logits" if kind == "classifier" else "reconstruction"
    want = expected[field].float()
    diff = float((got[0] - want).abs().max())
    assert diff <= BF16_EXPORT_TOLERANCE * float(want.abs().max()) + 1e-4, diff
    # and it is bf16, not fp32 in disguise: the fp32 model's outputs differ from it
    with torch.no_grad():
        fp32 = auto_class.from_pretrained(weights).eval()(**inputs)[field]
    assert float((got[0] - fp32).abs().max()) > 0
    # the package's loader runs it too
    assert load_exported(out)(pixels, **{k: v for k, v in inputs.items() if k != "pixel_values"})[field].dtype == torch.float32

    parity = verify(out)
    assert parity["passed"] and parity["relative"] and parity["tolerance"] == BF16_EXPORT_TOLERANCE
    assert main(["verify-export", str(out)]) == 0


def test_verify_checks_in_the_recorded_precision(checkpoints, tmp_path):
    """A bf16 program checked as if it were fp32 (its report edited, the bound made fp32's) fails:
    verify follows the report's precision, and the check can fail."""
    out = tmp_path / "bf16"
    export(checkpoints["classifier"][0], out, format="exported-program", precision="bf16", progress=False)
    verify(out)
    path = out / "export_report.json"
    report = json.loads(path.read_text())
    report["precision"] = "fp32"
    report["parity"].update(tolerance=1e-4, relative=False)
    path.write_text(json.dumps(report))
    with pytest.raises(ExportError, match="does not match"):
        verify(out)
