"""Deployment export (hf_vit_repro.export): every class to ONNX and to a torch.export program,
checked against the PyTorch model loaded independently (transformers' Auto classes), at batch
sizes other than the traced one, the self-supervised classes with masks and corruptions drawn
here as graph inputs; baking a resolution; refusing failed, damaged, tampered and mismatched
exports; the CLI's bad inputs."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
    ViTImageProcessor,
)

import hf_vit_repro.export as export_module
from hf_vit_repro import (
    ViTReproBackbone,
    ViTReproConfig,
    ViTReproForImageClassification,
    ViTReproForMaskedImageModeling,
    ViTReproForMaskedPatchPrediction,
    ViTReproModel,
    sample_patch_corruption,
)
from hf_vit_repro.cli import main
from hf_vit_repro.export import (
    EXPORT_INPUTS,
    EXPORT_OUTPUTS,
    INPUT_SAMPLERS,
    ExportError,
    export,
    export_model,
    load_exported,
    random_inputs,
    verify,
)

from .conftest import randomize_, run_without_package, tiny_kwargs
from .run_fixtures import make_run, save_tiny_checkpoint

# fp32 exports against PyTorch: the stated tolerance on the largest absolute difference.
ATOL = 1e-4
# A small hybrid: a BiT stem and one stage (stride 4) under the tiny ViT, 1x1 patches.
TINY_HYBRID = dict(image_size=32, patch_size=1, backbone_config=dict(depths=[1], hidden_sizes=[32], embedding_size=16, num_groups=8))
FORMATS = ("onnx", "exported-program")
KINDS = ["classifier", "hybrid", "encoder", "mim", "mpp"]
NUM_PATCHES = 16  # 32 px, patch 8
# Every kind's graph inputs as the report lists them (name, dtype, shape), the batch axis dynamic.
PIXELS = ("pixel_values", "float32", ["batch", 3, 32, 32])
EXPECTED_INPUTS = {
    "classifier": [PIXELS],
    "hybrid": [PIXELS],
    "encoder": [PIXELS],
    "mim": [PIXELS, ("bool_masked_pos", "bool", ["batch", NUM_PATCHES])],
    "mpp": [PIXELS, ("corruption", "int64", ["batch", NUM_PATCHES]), ("replacement_index", "int64", ["batch", NUM_PATCHES])],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Five save_pretrained folders (weights, config, image processor): the classifier (as a run
    folder), the hybrid classifier, the bare encoder, masked image modeling and masked patch
    prediction."""
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
    mim = randomize_(ViTReproForMaskedImageModeling(ViTReproConfig(**tiny_kwargs())), seed=3).eval()
    mim.save_pretrained(root / "mim")
    processor.save_pretrained(root / "mim")
    mpp_config = ViTReproConfig(**tiny_kwargs(mpp_image_mean=[0.4] * 3, mpp_image_std=[0.3] * 3))
    randomize_(ViTReproForMaskedPatchPrediction(mpp_config), seed=4).eval().save_pretrained(root / "mpp")
    processor.save_pretrained(root / "mpp")
    kinds = ["encoder", "mim", "mpp"]
    return {"classifier": root / "run", "hybrid": root / "hybrid", **{kind: root / kind for kind in kinds}}


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


AUTO_CLASSES = {
    "ViTReproModel": AutoModel,
    "ViTReproForImageClassification": AutoModelForImageClassification,
    "ViTReproForMaskedImageModeling": AutoModelForMaskedImageModeling,
    "ViTReproForMaskedPatchPrediction": AutoModelForPreTraining,
}


def reference_model(checkpoint):
    """The checkpoint loaded through transformers' Auto classes (not the exporter's loader)."""
    path = Path(checkpoint)
    path = path / "final" if (path / "final").is_dir() else path
    architecture = AutoConfig.from_pretrained(path).architectures[0]
    return AUTO_CLASSES[architecture].from_pretrained(path).eval()


def model_inputs(kind: str, batch: int, generator: torch.Generator, size: int = 32) -> dict[str, torch.Tensor]:
    """A kind's inputs, drawn here rather than by the exporter: masks of probability 0.3, and
    corruptions as the model's own `sample_patch_corruption` draws them per image (rate and split
    raised from the paper's so that small batches hold every kind of corruption)."""
    x = torch.randn(batch, 3, size, size, generator=generator)
    num_patches = (size // 8) ** 2
    if kind == "mim":
        return {"pixel_values": x, "bool_masked_pos": torch.rand(batch, num_patches, generator=generator) < 0.3}
    if kind == "mpp":
        drawn = [sample_patch_corruption(num_patches, rate=0.75, split=(0.4, 0.4, 0.2), generator=generator) for _ in range(batch)]
        return {
            "pixel_values": x,
            "corruption": torch.stack([c for c, _ in drawn]),
            "replacement_index": torch.stack([r for _, r in drawn]),
        }
    return {"pixel_values": x}


def artefact_runner(folder: Path, fmt: str):
    """The artefact run directly by its runtime (an ONNX Runtime session, or torch.export.load),
    not through the exporter's own loader: `{input name: tensor} -> list of arrays` (the
    ExportedProgram takes the inputs positionally, in the order given)."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(folder / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, {name: t.numpy() for name, t in inputs.items()})
    module = torch.export.load(str(folder / "model.pt2")).module()

    def run(inputs):
        with torch.no_grad():
            return [t.numpy() for t in module(*inputs.values())]

    return run


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_export_matches_pytorch_at_other_batch_sizes(kind, fmt, checkpoints, exports):
    """The masks and corruptions are graph inputs: drawn here, unlike the traced ones, so a graph
    that had baked the traced mask in (or ignored its input) would not match."""
    folder, report = exports[kind, fmt]
    model = reference_model(checkpoints[kind])
    names = EXPORT_OUTPUTS[type(model).__name__]
    assert [o["name"] for o in report["outputs"]] == list(names)
    assert [(i["name"], i["dtype"], i["shape"]) for i in report["inputs"]] == EXPECTED_INPUTS[kind]
    assert report["parity"]["passed"] and report["parity"]["batch_sizes"] == [1, 3]
    assert all(d <= ATOL for d in report["parity"]["max_abs_diff"].values())
    assert (model.config.backbone_config is not None) == (kind == "hybrid")
    generator = torch.Generator().manual_seed(7)
    run = artefact_runner(folder, fmt)
    codes = set()
    for batch in (1, 3, 5):  # traced at 2
        inputs = model_inputs(kind, batch, generator)
        codes |= set(inputs.get("corruption", torch.zeros(0)).unique().tolist())
        with torch.no_grad():
            outputs = dict(model(**inputs))
            if kind in ("classifier", "hybrid"):  # the features the head reads, from the encoder alone
                outputs["pooler_output"] = model.vit(inputs["pixel_values"]).pooler_output
        got = run(inputs)
        assert len(got) == len(names)
        for name, array in zip(names, got):
            torch.testing.assert_close(torch.from_numpy(array), outputs[name], atol=ATOL, rtol=0)
            assert array.shape[:1] == ((batch,) if name != "loss" else ())
    assert codes == ({0, 1, 2, 3} if kind == "mpp" else set())  # every kind of corruption was fed


@pytest.mark.parametrize("kind", ["classifier", "encoder", "mim", "mpp"])
def test_onnx_graph_declares_a_dynamic_batch_axis(kind, exports):
    """Every input (masks and corruptions too) and every output has the one symbolic batch axis,
    but masked image modeling's loss, a scalar over the batch."""
    folder, report = exports[kind, "onnx"]
    graph = onnx.load(str(folder / "onnx/model.onnx")).graph
    onnx.checker.check_model(str(folder / "onnx/model.onnx"))
    assert [i.name for i in graph.input] == [name for name, _, _ in EXPECTED_INPUTS[kind]]
    element_types = [onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in graph.input]
    assert element_types == [dtype for _, dtype, _ in EXPECTED_INPUTS[kind]]
    assert [o.name for o in graph.output] == [o["name"] for o in report["outputs"]]
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name == "loss":
            assert kind == "mim" and len(dims) == 0 and "loss" not in report["dynamic_axes"]
            continue
        assert dims[0].dim_param == "batch" and not dims[0].dim_value  # symbolic batch, named
        assert all(d.dim_value > 0 for d in dims[1:])  # everything else fixed
        assert report["dynamic_axes"][value.name] == {"0": dims[0].dim_param}
    assert report["opset"] == next(o.version for o in onnx.load(str(folder / "onnx/model.onnx")).opset_import if o.domain == "")


def test_folder_describes_itself(checkpoints, exports, tmp_path):
    folder, report = exports["hybrid", "onnx"]
    assert {"onnx/model.onnx", "config.json", "preprocessor_config.json", "export_report.json"} <= {
        p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    config = AutoConfig.from_pretrained(folder)
    source = AutoConfig.from_pretrained(checkpoints["hybrid"])
    for field in ("depths", "hidden_sizes", "embedding_size", "num_groups"):
        assert getattr(config.backbone_config, field) == getattr(source.backbone_config, field)
    assert (config.image_size, config.patch_size, config.hidden_size) == (source.image_size, source.patch_size, source.hidden_size)
    assert config.architectures == ["ViTReproForImageClassification"] == [report["architecture"]]
    processor = AutoImageProcessor.from_pretrained(folder)
    assert list(processor.image_mean) == [0.4] * 3 and list(processor.image_std) == [0.3] * 3
    assert processor.size == {"height": 32, "width": 32}
    # the report names the processor the folder's preprocessor_config.json loads as, and its backend
    assert report["image_processor"] == {"class": type(processor).__name__, "backend": processor.backend,
                                         "source": "preprocessor_config.json"}
    assert (report["image_processor"]["class"], report["image_processor"]["backend"]) == ("ViTImageProcessor", "torchvision")
    assert json.loads((folder / "export_report.json").read_text()) == report
    assert report["versions"]["onnxruntime"] == ort.__version__
    assert set(report["files"]) == {"onnx/model.onnx"} and report["artefact"] == "onnx/model.onnx"  # what the hash protects
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
    graph = onnx.load(str(out / "onnx/model.onnx"))
    assert next(o.version for o in graph.opset_import if o.domain == "") == 18
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 48, 48]
    model = reference_model(checkpoints["classifier"])
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        on_the_fly = model(x, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(torch.from_numpy(artefact_runner(out, "onnx")({"pixel_values": x})[0]), on_the_fly, atol=ATOL, rtol=0)
    assert AutoConfig.from_pretrained(out).image_size == 48
    assert AutoImageProcessor.from_pretrained(out).size == {"height": 48, "width": 48}
    session = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"pixel_values": torch.randn(3, 3, 48, 48).numpy()})


def test_self_supervised_export_at_another_resolution_takes_masks_of_that_grid(checkpoints, tmp_path, capsys):
    """Masked image modeling baked at 48 px, static batch, as an ExportedProgram: the mask input
    follows the new grid (6 x 6 = 36 patches), the CLI prints every input, and the artefact
    matches the checkpoint run at 48 px with interpolated position embeddings."""
    out = tmp_path / "mim48"
    code = main(["export", str(checkpoints["mim"]), str(out), "--format", "exported-program", "--image-size", "48",
                 "--static-batch", "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "pixel_values [2, 3, 48, 48], bool_masked_pos [2, 36] -> reconstruction [2, 3, 48, 48], loss []" in printed
    assert "max abs diff reconstruction" in printed and ", loss " in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["dynamic_axes"] == {} and report["inputs"][1] == {"name": "bool_masked_pos", "shape": [2, 36], "dtype": "bool"}
    model = reference_model(checkpoints["mim"])
    inputs = model_inputs("mim", 2, torch.Generator().manual_seed(3), size=48)
    with torch.no_grad():
        on_the_fly = model(**inputs, interpolate_pos_encoding=True)
    reconstruction, loss = artefact_runner(out, "exported-program")(inputs)
    torch.testing.assert_close(torch.from_numpy(reconstruction), on_the_fly.reconstruction, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(loss), on_the_fly.loss, atol=ATOL, rtol=0)


def test_a_model_that_cannot_take_the_exported_inputs_is_refused_before_tracing(tmp_path):
    """A masked-image-modeling head whose decoder stride is not the patch size cannot take
    `bool_masked_pos`: the model's own error, and nothing written."""
    model = ViTReproForMaskedImageModeling(ViTReproConfig(**tiny_kwargs(encoder_stride=4)))
    with pytest.raises(ValueError, match="`encoder_stride` \\(4\\) must equal the patch size"):
        export_model(model, tmp_path / "out", format="exported-program", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_load_exported_names_the_inputs_and_casts_their_dtypes(checkpoints, exports):
    folder, _ = exports["mpp", "onnx"]
    run = load_exported(folder)
    inputs = model_inputs("mpp", 2, torch.Generator().manual_seed(11))
    with pytest.raises(ValueError, match="takes the inputs pixel_values, corruption, replacement_index; got pixel_values, corruption$"):
        run(inputs["pixel_values"], corruption=inputs["corruption"])
    # int32 codes and indices (the graph takes int64) are cast, not refused by ONNX Runtime
    got = run(inputs["pixel_values"], corruption=inputs["corruption"].int(), replacement_index=inputs["replacement_index"].int())
    with torch.no_grad():
        expected = reference_model(checkpoints["mpp"])(**inputs).logits
    torch.testing.assert_close(got["logits"], expected, atol=ATOL, rtol=0)


def test_every_exportable_class_has_inputs_outputs_and_samplers():
    """The two tables name the same classes; every input has a sampler whose draws have the
    dtype and range the model takes (every corruption kind, masks neither all nor none)."""
    assert set(EXPORT_INPUTS) == set(EXPORT_OUTPUTS)
    assert all(names[0] == "pixel_values" for names in EXPORT_INPUTS.values())
    assert {name for names in EXPORT_INPUTS.values() for name in names} == set(INPUT_SAMPLERS)
    config = ViTReproConfig(**tiny_kwargs(image_size=(32, 48)))  # 4 x 6 patches
    names = ("pixel_values", "bool_masked_pos", "corruption", "replacement_index")
    drawn = random_inputs(names, 4, config, seed=5)
    assert [(tuple(t.shape), t.dtype) for t in drawn.values()] == [
        ((4, 3, 32, 48), torch.float32), ((4, 24), torch.bool), ((4, 24), torch.int64), ((4, 24), torch.int64)
    ]  # fmt: skip
    assert 0 < drawn["bool_masked_pos"].float().mean() < 1
    assert set(drawn["corruption"].unique().tolist()) == {0, 1, 2, 3}
    assert 0 <= int(drawn["replacement_index"].min()) and int(drawn["replacement_index"].max()) < 24
    again = random_inputs(names, 4, config, seed=5)
    assert all(torch.equal(drawn[name], again[name]) for name in names)


def test_failed_parity_check_writes_nothing_and_keeps_the_old_folder(checkpoints, exports, tmp_path, monkeypatch):
    """An export whose outputs are off by 1e-3 is refused: the earlier export in the output folder
    stays as it was and no temporary folder is left."""
    out = tmp_path / "export"
    shutil.copytree(exports["classifier", "onnx"][0], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = export_module.load_exported

    def off_by_a_bit(folder, *args, **kwargs):
        run = real(folder, *args, **kwargs)
        return lambda x: {name: t + 1e-3 for name, t in run(x).items()}

    monkeypatch.setattr(export_module, "load_exported", off_by_a_bit)
    with pytest.raises(ExportError, match="differs from PyTorch by more than 0.0001 .*nothing was written"):
        export(checkpoints["classifier"], out, format="exported-program", progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
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
    data = (onnx_copy / "onnx/model.onnx").read_bytes()
    (onnx_copy / "onnx/model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="changed or damaged"):
        verify(onnx_copy)
    assert main(["verify-export", str(onnx_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vit-repro verify-export: error:") and "changed or damaged" in err and "\n" not in err


def test_verify_refuses_a_tampered_weight_even_with_a_matching_hash(onnx_copy):
    """A weight changed and the report's hash forged to match: the numerical check still fails."""
    model = onnx.load(str(onnx_copy / "onnx/model.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(onnx_copy / "onnx/model.onnx"))
    report = json.loads((onnx_copy / "export_report.json").read_text())
    report["files"]["onnx/model.onnx"] = {
        "sha256": export_module._sha256(onnx_copy / "onnx/model.onnx"), "bytes": (onnx_copy / "onnx/model.onnx").stat().st_size
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


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["mim", "mpp"])
def test_verify_checks_self_supervised_exports(kind, fmt, checkpoints, exports, tmp_path, capsys):
    """verify-export feeds fresh masks / corruptions: it accepts the folder, refuses the same class
    with other weights (the masked outputs differ) and a checkpoint of the other class."""
    folder, report = exports[kind, fmt]
    parity = verify(folder)
    assert parity["passed"] and parity["batch_sizes"] == [1, 3]
    assert set(parity["max_abs_diff"]) == set(EXPORT_OUTPUTS[report["architecture"]])
    assert max(parity["max_abs_diff"].values()) <= ATOL
    assert main(["verify-export", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out
    other = tmp_path / "other"
    model = reference_model(checkpoints[kind])
    randomize_(model, seed=9).save_pretrained(other)
    shutil.copy(checkpoints[kind] / "preprocessor_config.json", other)
    with pytest.raises(ExportError, match="does not match"):
        verify(folder, checkpoint=other)
    other_kind = "mpp" if kind == "mim" else "mim"
    with pytest.raises(ExportError, match=f"holds a {report['architecture']} export but .* is a ViTReproFor"):
        verify(folder, checkpoint=checkpoints[other_kind])


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vit-repro {command}: error:") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------- int8


def test_int8_export_quantizes_the_matmuls_and_is_checked_relative_to_the_outputs_scale(checkpoints, tmp_path, capsys):
    """`--quantize int8`: the float32 graph passes the 1e-4 check first and stays as
    onnx/model.onnx, the int8 graph beside it (onnx/model_quantized.onnx, transformers.js's name)
    has int8 weights (MatMulInteger) and matches PyTorch within 10% of the largest logit, and
    verify-export applies both checks."""
    out = tmp_path / "int8"
    assert main(["export", str(checkpoints["classifier"]), str(out), "--quantize", "int8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "(int8, dynamic)" in printed and f"Wrote {out / 'onnx/model.onnx'} (float32" in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["quantization"]["float32_parity"]["passed"] and report["quantization"]["float32_artefact"] == "onnx/model.onnx"
    assert max(report["quantization"]["float32_parity"]["max_abs_diff"].values()) <= ATOL
    parity = report["parity"]
    assert parity["relative"] and parity["tolerance"] == 0.1 and parity["passed"]
    assert 0 < parity["max_abs_diff"]["logits"] <= 0.1 * parity["max_abs_reference"]["logits"] + ATOL
    assert report["artefact"] == "onnx/model_quantized.onnx"
    assert sorted(report["files"]) == ["onnx/model.onnx", "onnx/model_quantized.onnx"] and not list(out.rglob("*.tmp*"))
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["model.onnx", "model_quantized.onnx"]
    quantized_ops = {node.op_type for node in onnx.load(str(out / "onnx/model_quantized.onnx")).graph.node}
    assert "MatMulInteger" in quantized_ops and "DynamicQuantizeLinear" in quantized_ops
    assert "MatMulInteger" not in {node.op_type for node in onnx.load(str(out / "onnx/model.onnx")).graph.node}
    # both graphs, independently of the exporter's own check: float32 within 1e-4, int8 within 10%
    model = AutoModelForImageClassification.from_pretrained(checkpoints["classifier"] / "final").eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    def logits(name):
        return torch.from_numpy(ort.InferenceSession(str(out / name)).run(None, {"pixel_values": x.numpy()})[0])
    assert (logits("onnx/model_quantized.onnx") - expected).abs().max() <= 0.1 * expected.abs().max()
    torch.testing.assert_close(logits("onnx/model.onnx"), expected, atol=ATOL, rtol=0)
    assert load_exported(out)(x)["logits"].equal(logits("onnx/model_quantized.onnx"))  # the report's artefact
    assert load_exported(out, artefact="onnx/model.onnx")(x)["logits"].equal(logits("onnx/model.onnx"))
    assert verify(out)["relative"] and main(["verify-export", str(out)]) == 0
    assert "x the largest |output|" in capsys.readouterr().out

    # verify checks the float32 graph too: a tampered weight with a forged hash is found
    graph = onnx.load(str(out / "onnx/model.onnx"))
    weight = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(graph, str(out / "onnx/model.onnx"))
    report["files"]["onnx/model.onnx"] = {"sha256": export_module._sha256(out / "onnx/model.onnx"),
                                          "bytes": (out / "onnx/model.onnx").stat().st_size}
    (out / "export_report.json").write_text(json.dumps(report))
    with pytest.raises(ExportError, match=r"onnx/model.onnx does not match"):
        verify(out)


def test_a_folder_in_the_layout_before_onnx_still_loads_and_verifies(onnx_copy):
    """model.onnx at the folder's root, as exports wrote it before the onnx/ layout."""
    (onnx_copy / "onnx/model.onnx").rename(onnx_copy / "model.onnx")
    (onnx_copy / "onnx").rmdir()
    report = json.loads((onnx_copy / "export_report.json").read_text())
    report["artefact"] = "model.onnx"
    report["files"] = {"model.onnx": report["files"].pop("onnx/model.onnx")}
    (onnx_copy / "export_report.json").write_text(json.dumps(report))
    assert verify(onnx_copy)["passed"]
    x = torch.randn(2, 3, 32, 32)
    assert load_exported(onnx_copy)(x)["logits"].shape == (2, 3)


def test_int8_export_beyond_its_tolerance_writes_nothing(checkpoints, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"int8 model differs from PyTorch by more than 1e-06 x the largest .*nothing was written"):
        export(checkpoints["classifier"], tmp_path / "int8", quantize="int8", tolerance=1e-6, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    run = str(checkpoints["classifier"])
    assert main(["export", run, str(tmp_path / "out"), "--quantize", "int8", "--format", "exported-program"]) == 2
    assert "--quantize int8 applies to the onnx format only" in one_line_error(capsys, "export")


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


def test_a_truncated_checkpoint_is_one_line(checkpoints, tmp_path, capsys):
    """A `model.safetensors` cut short (an interrupted download or copy) is named in one line, not a
    SafetensorError traceback from inside transformers (issue 24)."""
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoints["hybrid"], damaged)
    data = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["export", str(damaged), str(tmp_path / "out"), "--no-progress"]) == 2
    err = one_line_error(capsys, "export")
    assert f"{damaged / 'model.safetensors'} is truncated" in err and "save it again" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opset", ["9", "0", "99"])
def test_an_opset_torch_onnx_cannot_write_is_refused_before_exporting(checkpoints, tmp_path, capsys, monkeypatch, opset):
    """Below 18 onnx's version converter fails on LayerNormalization and onnxscript printed its
    traceback before the one-line error; above the installed onnx's latest nothing can be written.
    Both are refused before any tracing (issue 24)."""
    def no_export(*args, **kwargs):
        raise AssertionError("export ran")

    monkeypatch.setattr(export_module, "_trace", no_export)
    assert main(["export", str(checkpoints["classifier"]), str(tmp_path / "out"), "--opset", opset, "--no-progress"]) == 2
    err = one_line_error(capsys, "export")
    assert f"opset {opset} is not one torch.onnx can write; choose an opset between 18 and" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("tolerance", ["-1", "0", "nan", "inf"])
def test_a_meaningless_tolerance_is_refused(onnx_copy, checkpoints, tmp_path, capsys, tolerance):
    """verify-export accepted `--tolerance -1` (issue 24); export and verify-export refuse a
    tolerance that is not a positive finite number, before any work."""
    assert main(["verify-export", str(onnx_copy), "--tolerance", tolerance]) == 2
    assert f"--tolerance must be a positive finite number, got {float(tolerance)}" in one_line_error(capsys, "verify-export")
    assert main(["export", str(checkpoints["classifier"]), str(tmp_path / "out"), "--tolerance", tolerance]) == 2
    assert "--tolerance must be a positive finite number" in one_line_error(capsys, "export")
    assert not (tmp_path / "out").exists()


def test_parity_compares_the_features_when_the_head_is_zero(checkpoints, tmp_path, monkeypatch, capsys):
    """A freshly reset head is zero: its logits are 0 whatever the input, and a check of the logits
    alone compared nothing (issue 24: 'max abs diff logits 0.00e+00'). The classifier's graph also
    returns the features the head reads, and the check compares them: a runtime whose features are
    off is refused although its logits agree."""
    model = reference_model(checkpoints["classifier"])
    model.reset_classifier(5)  # zero-initialised, as `--num-labels` and fine-tuning start
    folder = tmp_path / "zero-head"
    model.save_pretrained(folder)
    report = export(folder, tmp_path / "ok", progress=False)
    diffs = report["parity"]["max_abs_diff"]
    assert diffs["logits"] == 0.0 and 0 < diffs["pooler_output"] <= ATOL  # the features were compared
    assert main(["verify-export", str(tmp_path / "ok")]) == 0
    assert "pooler_output" in capsys.readouterr().out
    real = export_module.load_exported

    def features_off(path, *args, **kwargs):
        run = real(path, *args, **kwargs)
        return lambda x: {name: t + 1e-2 if name != "logits" else t for name, t in run(x).items()}

    monkeypatch.setattr(export_module, "load_exported", features_off)
    with pytest.raises(ExportError, match=r"differs from PyTorch .*logits 0.00e\+00, pooler_output 1.00e-02"):
        export(folder, tmp_path / "off", progress=False)
    assert not (tmp_path / "off").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_backbone_exports_one_output_per_feature_map(fmt, tmp_path, capsys):
    """A saved ViTReproBackbone with the ViTDet pyramid (four maps) exports through the command line:
    four graph outputs, each within ATOL of PyTorch's map at a batch size other than the traced one."""
    config = ViTReproConfig(**tiny_kwargs(out_features=["stage2"], feature_pyramid_scales=[4, 2, 1, 0.5]))
    backbone = randomize_(ViTReproBackbone(config), std=0.1).eval()
    backbone.save_pretrained(tmp_path / "backbone")
    assert main(["export", str(tmp_path / "backbone"), str(tmp_path / "out"), "--format", fmt]) == 0
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["architecture"] == "ViTReproBackbone" and report["parity"]["passed"]
    names = [f"feature_maps_{i}" for i in range(4)]
    assert [o["name"] for o in report["outputs"]] == names
    assert [o["shape"][1:] for o in report["outputs"]] == [[8, 16, 16], [16, 8, 8], [32, 4, 4], [32, 2, 2]]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = load_exported(tmp_path / "out")(x)
    with torch.no_grad():
        expected = backbone(x).feature_maps
    for name, want in zip(names, expected, strict=True):
        torch.testing.assert_close(got[name], want, atol=ATOL, rtol=0)
