"""Deployment export (hf_vit_repro.export): every class to ONNX and to a torch.export program,
checked against the PyTorch model loaded independently (transformers' Auto classes), at batch
sizes other than the traced one; baking a resolution; refusing failed, damaged, tampered and
mismatched exports; the CLI's bad inputs."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTImageProcessor

import hf_vit_repro.export as export_module
from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro.cli import main
from hf_vit_repro.export import EXPORT_OUTPUTS, ExportError, export, verify

from .conftest import randomize_, run_without_package, tiny_kwargs
from .run_fixtures import make_run, save_tiny_checkpoint

# fp32 exports against PyTorch: the stated tolerance on the largest absolute difference.
ATOL = 1e-4
# A small hybrid: a BiT stem and one stage (stride 4) under the tiny ViT, 1x1 patches.
TINY_HYBRID = dict(image_size=32, patch_size=1, backbone_config=dict(depths=[1], hidden_sizes=[32], embedding_size=16, num_groups=8))
FORMATS = ("onnx", "exported-program")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Three save_pretrained folders (weights, config, image processor): the classifier (as a run
    folder), the hybrid classifier and the bare encoder."""
    root = tmp_path_factory.mktemp("checkpoints")
    make_run(root / "run", evaluated=False, figures=False)
    torch.manual_seed(1)
    hybrid = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(**TINY_HYBRID))), seed=1).eval()
    hybrid.save_pretrained(root / "hybrid")
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4] * 3, image_std=[0.3] * 3)
    processor.save_pretrained(root / "hybrid")
    encoder = randomize_(ViTReproModel(ViTReproConfig(**tiny_kwargs())), seed=2).eval()
    encoder.save_pretrained(root / "encoder")
    processor.save_pretrained(root / "encoder")
    return {"classifier": root / "run", "hybrid": root / "hybrid", "encoder": root / "encoder"}


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each checkpoint exported to each format with the defaults (dynamic batch, traced at 2)."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for kind, checkpoint in checkpoints.items():
        for fmt in FORMATS:
            folder = root / f"{kind}-{fmt}"
            out[kind, fmt] = (folder, export(checkpoint, folder, format=fmt, progress=False))
    return out


def reference_model(checkpoint):
    """The checkpoint loaded through transformers' Auto classes (not the exporter's loader)."""
    path = Path(checkpoint)
    path = path / "final" if (path / "final").is_dir() else path
    architecture = AutoConfig.from_pretrained(path).architectures[0]
    if architecture.endswith("ForImageClassification"):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(path).eval()
    return AutoModel.from_pretrained(path).eval()


def artefact_runner(folder: Path, fmt: str):
    """The artefact run directly by its runtime (an ONNX Runtime session, or torch.export.load),
    not through the exporter's own loader: `x -> list of arrays`."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"pixel_values": x.numpy()})
    module = torch.export.load(str(folder / "model.pt2")).module()

    def run(x):
        with torch.no_grad():
            return [t.numpy() for t in module(x)]

    return run


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["classifier", "hybrid", "encoder"])
def test_export_matches_pytorch_at_other_batch_sizes(kind, fmt, checkpoints, exports):
    folder, report = exports[kind, fmt]
    model = reference_model(checkpoints[kind])
    names = EXPORT_OUTPUTS[type(model).__name__]
    assert [o["name"] for o in report["outputs"]] == list(names)
    assert report["parity"]["passed"] and report["parity"]["batch_sizes"] == [1, 3]
    assert all(d <= ATOL for d in report["parity"]["max_abs_diff"].values())
    assert (model.config.backbone_config is not None) == (kind == "hybrid")
    generator = torch.Generator().manual_seed(7)
    run = artefact_runner(folder, fmt)
    for batch in (1, 3, 5):  # traced at 2
        x = torch.randn(batch, 3, 32, 32, generator=generator)
        with torch.no_grad():
            outputs = model(x)
        got = run(x)
        assert len(got) == len(names)
        for name, array in zip(names, got):
            torch.testing.assert_close(torch.from_numpy(array), outputs[name], atol=ATOL, rtol=0)
            assert array.shape[0] == batch


@pytest.mark.parametrize("kind", ["classifier", "encoder"])
def test_onnx_graph_declares_a_dynamic_batch_axis(kind, exports):
    folder, report = exports[kind, "onnx"]
    graph = onnx.load(str(folder / "model.onnx")).graph
    onnx.checker.check_model(str(folder / "model.onnx"))
    assert [i.name for i in graph.input] == ["pixel_values"]
    assert [o.name for o in graph.output] == [o["name"] for o in report["outputs"]]
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
        assert all(d.dim_value > 0 for d in dims[1:])  # everything else fixed
        assert report["dynamic_axes"][value.name] == {"0": dims[0].dim_param}
    assert report["opset"] == next(o.version for o in onnx.load(str(folder / "model.onnx")).opset_import if o.domain == "")


def test_folder_describes_itself(checkpoints, exports, tmp_path):
    folder, report = exports["hybrid", "onnx"]
    assert {"model.onnx", "config.json", "preprocessor_config.json", "export_report.json"} <= {p.name for p in folder.iterdir()}
    config = AutoConfig.from_pretrained(folder)
    source = AutoConfig.from_pretrained(checkpoints["hybrid"])
    for field in ("depths", "hidden_sizes", "embedding_size", "num_groups"):
        assert getattr(config.backbone_config, field) == getattr(source.backbone_config, field)
    assert (config.image_size, config.patch_size, config.hidden_size) == (source.image_size, source.patch_size, source.hidden_size)
    assert config.architectures == ["ViTReproForImageClassification"] == [report["architecture"]]
    processor = AutoImageProcessor.from_pretrained(folder)
    assert list(processor.image_mean) == [0.4] * 3 and list(processor.image_std) == [0.3] * 3
    assert processor.size == {"height": 32, "width": 32}
    assert json.loads((folder / "export_report.json").read_text()) == report
    assert report["versions"]["onnxruntime"] == ort.__version__
    assert set(report["files"]) == {"model.onnx"}  # what the hash protects
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no temporary folder left
    # the config reads without this package, through the configuration file copied beside it
    loaded = run_without_package(f"""
        import json
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained({str(folder)!r}, trust_remote_code=True)
        print(json.dumps({{"type": config.model_type, "image_size": config.image_size, "auto_map": config.auto_map}}))
    """, tmp_path)
    assert loaded == {"type": "vit_repro", "image_size": 32, "auto_map": {"AutoConfig": "configuration_vit_repro.ViTReproConfig"}}


def test_image_size_is_baked_and_batch_can_be_static(checkpoints, tmp_path, capsys):
    """--image-size resamples the position embeddings for good (the model's own
    resize_position_embeddings) before export; --static-batch fixes the traced batch size."""
    out = tmp_path / "at48"
    code = main(["export", str(checkpoints["classifier"]), str(out), "--image-size", "48", "--static-batch",
                 "--opset", "18", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Parity with PyTorch" in printed and "max abs diff logits" in printed
    graph = onnx.load(str(out / "model.onnx"))
    assert next(o.version for o in graph.opset_import if o.domain == "") == 18
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 48, 48]
    model = reference_model(checkpoints["classifier"])
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        on_the_fly = model(x, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(torch.from_numpy(artefact_runner(out, "onnx")(x)[0]), on_the_fly, atol=ATOL, rtol=0)
    assert AutoConfig.from_pretrained(out).image_size == 48
    assert AutoImageProcessor.from_pretrained(out).size == {"height": 48, "width": 48}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"pixel_values": torch.randn(3, 3, 48, 48).numpy()})


def test_failed_parity_check_writes_nothing_and_keeps_the_old_folder(checkpoints, exports, tmp_path, monkeypatch):
    """An export whose outputs are off by 1e-3 is refused: the earlier export in the output folder
    stays as it was and no temporary folder is left."""
    out = tmp_path / "export"
    shutil.copytree(exports["classifier", "onnx"][0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = export_module.load_exported

    def off_by_a_bit(folder, *args, **kwargs):
        run = real(folder, *args, **kwargs)
        return lambda x: {name: t + 1e-3 for name, t in run(x).items()}

    monkeypatch.setattr(export_module, "load_exported", off_by_a_bit)
    with pytest.raises(ExportError, match="differs from PyTorch by more than 0.0001 .*nothing was written"):
        export(checkpoints["classifier"], out, format="exported-program", progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.fixture
def onnx_copy(exports, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exports["classifier", "onnx"][0], folder)
    return folder


def test_verify_accepts_an_intact_export(onnx_copy, capsys):
    parity = verify(onnx_copy)
    assert parity["passed"] and max(parity["max_abs_diff"].values()) <= ATOL
    assert main(["verify-export", str(onnx_copy)]) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_refuses_a_truncated_model(onnx_copy, capsys):
    data = (onnx_copy / "model.onnx").read_bytes()
    (onnx_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="changed or damaged"):
        verify(onnx_copy)
    assert main(["verify-export", str(onnx_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vit-repro verify-export: error:") and "changed or damaged" in err and "\n" not in err


def test_verify_refuses_a_tampered_weight_even_with_a_matching_hash(onnx_copy):
    """A weight changed and the report's hash forged to match: the numerical check still fails."""
    model = onnx.load(str(onnx_copy / "model.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(onnx_copy / "model.onnx"))
    report = json.loads((onnx_copy / "export_report.json").read_text())
    report["files"]["model.onnx"] = {
        "sha256": export_module._sha256(onnx_copy / "model.onnx"), "bytes": (onnx_copy / "model.onnx").stat().st_size
    }
    (onnx_copy / "export_report.json").write_text(json.dumps(report))
    with pytest.raises(ExportError, match="does not match"):
        verify(onnx_copy)


def test_verify_refuses_another_checkpoint(onnx_copy, checkpoints, tmp_path):
    other = tmp_path / "other"
    save_tiny_checkpoint(other)  # same architecture, other weights (seeded differently below)
    model = reference_model(other)
    randomize_(model, seed=5).save_pretrained(other)
    with pytest.raises(ExportError, match="does not match"):
        verify(onnx_copy, checkpoint=other)
    with pytest.raises(ExportError, match="holds a ViTReproForImageClassification export but .* is a ViTReproModel"):
        verify(onnx_copy, checkpoint=checkpoints["encoder"])


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vit-repro {command}: error:") and "\n" not in err, err
    return err


def test_cli_bad_inputs(checkpoints, tmp_path, capsys):
    run = str(checkpoints["classifier"])
    assert main(["export", str(tmp_path / "missing" / "run"), str(tmp_path / "out")]) == 2
    assert "does not exist" in one_line_error(capsys, "export")
    assert main(["export", run, str(tmp_path / "out"), "--format", "tflite"]) == 2
    assert "onnx, exported-program" in one_line_error(capsys, "export")
    assert main(["export", run, str(tmp_path / "out"), "--image-size", "30"]) == 2
    assert "not a multiple of the model's patch size (8x8)" in one_line_error(capsys, "export")
    assert main(["export", run, str(tmp_path / "out"), "--format", "exported-program", "--opset", "18"]) == 2
    assert "onnx format only" in one_line_error(capsys, "export")
    assert main(["export", run, run]) == 2  # would overwrite the run folder
    assert "not an export folder" in one_line_error(capsys, "export")
    assert main(["verify-export", str(tmp_path)]) == 2
    assert "not an export folder" in one_line_error(capsys, "verify-export")
    assert not (tmp_path / "out").exists()


def test_missing_extra_is_named(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    assert main(["export", str(checkpoints["classifier"]), str(tmp_path / "out"), "--no-progress"]) == 2
    err = one_line_error(capsys, "export")
    assert "onnxruntime" in err and "pip install 'hf-vit-repro[export]'" in err
    assert not (tmp_path / "out").exists()


def test_help():
    for command in ("export", "verify-export"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
