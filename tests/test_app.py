"""The Gradio demo (`hf_vit_repro.app`, `vit-repro app`) and its Space (`hub.space`, `push --space`).

The app is served on 127.0.0.1 and called through gradio_client with scikit-learn's sample photo
of a Chinese temple; its top-5 must be the checkpoint's own (a direct forward through the saved
image processor), its rollout overlay the photo's size and drawn from the model's attention (an
independent rollout from `output_attentions`). Gradio's analytics are off and its files go to a
temporary folder; conftest refuses any connection beyond the loopback, so nothing leaves the machine.
"""

import importlib.util
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproForMaskedPatchPrediction, ViTReproModel, hub
from hf_vit_repro.app import Predictor, build_app, example_images, rollout_overlay, seen_box
from hf_vit_repro.cli import main

from .conftest import randomize_, tiny_kwargs
from .evaluation_fixtures import DIGIT_NAMES, save_classifier, tiny_digits_classifier
from .run_fixtures import save_tiny_checkpoint

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
TINY_BIT = dict(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16, num_groups=8)  # as tests/test_bit.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A module folder; gradio's uploads and outputs go to its gradio/ (GRADIO_TEMP_DIR) meanwhile."""
    folder = tmp_path_factory.mktemp("app")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    yield folder
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


@pytest.fixture(scope="module")
def checkpoint(workdir):
    """A tiny ViT that classifies digits (10 named classes), saved with its image processor."""
    return save_classifier(tiny_digits_classifier(), workdir / "digits-vit")


@pytest.fixture(scope="module")
def photo(workdir):
    """scikit-learn's photo of a Chinese temple (427 x 640), as a file."""
    return next(p for p in example_images(folder=workdir / "examples") if p.endswith("china.jpg"))


def direct_top5(folder, image_path) -> tuple[list[str], torch.Tensor]:
    """The checkpoint's own top-5 (names, probabilities) from a plain forward through its saved processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with Image.open(image_path) as image:
        pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = model(pixels).logits[0].softmax(-1)
    top = probabilities.topk(5)
    return [model.config.id2label[int(i)] for i in top.indices], top.values


def reference_rollout(model, pixels) -> torch.Tensor:
    """Attention rollout written out here from `output_attentions` (mean over heads + identity,
    rows renormalised, multiplied from the first layer up): the class token's row over the patches."""
    with torch.no_grad():
        attentions = model(pixels, output_attentions=True).attentions
    flow = None
    for attention in attentions:
        step = attention[0].mean(0) + torch.eye(attention.shape[-1])
        step = step / step.sum(-1, keepdim=True)
        flow = step if flow is None else step @ flow
    rows, cols = model.config.grid_size
    return flow[0, 1:].reshape(rows, cols)


@pytest.fixture(scope="module")
def served(checkpoint):
    app = build_app(checkpoint, device="cpu")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_served_app_gives_the_checkpoints_top5_its_rollout_and_the_distance_plot(served, checkpoint, photo, workdir):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=str(workdir / "downloads"))
    labels, rollout_path, distance_path = client.predict(handle_file(photo), api_name="/predict")

    names, probabilities = direct_top5(checkpoint, photo)
    assert [c["label"] for c in labels["confidences"]] == names and labels["label"] == names[0]
    np.testing.assert_allclose([c["confidence"] for c in labels["confidences"]], probabilities.numpy(), atol=1e-5)
    assert set(names) <= set(DIGIT_NAMES.values()) and len(set(names)) == 5

    with Image.open(photo) as image:
        original = np.asarray(image.convert("RGB"))
    overlay = np.asarray(Image.open(rollout_path))
    assert overlay.shape == original.shape == (427, 640, 3)
    assert (overlay.astype(int) <= original.astype(int)).all() and overlay.max() > 0  # the photo, dimmed by the mask
    # where the mask is brightest and darkest is where the independently computed rollout says
    model = ViTReproForImageClassification.from_pretrained(checkpoint).eval()
    from transformers import AutoImageProcessor

    pixels = AutoImageProcessor.from_pretrained(checkpoint)(images=Image.fromarray(original), return_tensors="pt")["pixel_values"]
    reference = reference_rollout(model, pixels)
    expected = rollout_overlay(original, reference)
    assert np.abs(overlay.astype(int) - expected.astype(int)).max() <= 1

    distance = Image.open(distance_path)
    assert distance.size[0] > 200 and distance.size[1] > 200 and np.asarray(distance).std() > 0


def test_predict_is_a_plain_function_of_an_image(checkpoint, photo, tmp_path):
    predictor = Predictor.from_pretrained(checkpoint, device="cpu")
    array = np.asarray(Image.open(photo).convert("RGB"))[:300, :200]  # a portrait crop, as an array
    labels, rollout, distance = predictor(array)
    Image.fromarray(array).save(tmp_path / "crop.png")
    names, probabilities = direct_top5(checkpoint, tmp_path / "crop.png")
    assert list(labels) == names
    # the app's one pass runs the eager attention kernel (it needs the weights), the direct forward SDPA
    np.testing.assert_allclose(list(labels.values()), probabilities.numpy(), atol=1e-5)
    assert rollout.shape == (300, 200, 3) and rollout.dtype == np.uint8
    assert distance.ndim == 3 and distance.shape[2] == 3
    assert predictor.maps_note is None
    with pytest.raises(ValueError, match="No image"):
        predictor(None)


def test_one_forward_pass_gives_the_labels_and_both_maps():
    """A Predictor call runs the model once (hooks count the classifier's, the encoder's and every
    attention layer's forwards), and its labels and maps are those of the two separate passes it
    replaces: the classifier's own forward, and the encoder's hooked pass of `attention_statistics`."""
    from transformers import ViTImageProcessor

    from hf_vit_repro.analysis import attention_statistics

    names = {i: f"class {chr(97 + i)}" for i in range(6)}
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=6, id2label=names))),
                       seed=5).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    predictor = Predictor(model, processor)
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)

    counts = {"classifier": 0, "encoder": 0, "attention": 0}

    def counter(name):
        return lambda *args: counts.__setitem__(name, counts[name] + 1)

    hooks = [model.register_forward_hook(counter("classifier")), model.vit.register_forward_hook(counter("encoder"))]
    hooks += [layer.attention.register_forward_hook(counter("attention")) for layer in model.vit.layers]
    try:
        labels, rollout, distance = predictor(image)
    finally:
        for hook in hooks:
            hook.remove()
    assert counts == {"classifier": 1, "encoder": 1, "attention": model.config.num_hidden_layers}

    pixels = predictor.pixel_values(image)
    with torch.no_grad():
        probabilities = model(pixels).logits[0].softmax(-1)
    top = probabilities.topk(5)
    assert list(labels) == [names[int(i)] for i in top.indices]
    np.testing.assert_allclose(list(labels.values()), top.values.numpy(), atol=1e-5)  # eager attention against SDPA
    assert labels == pytest.approx(predictor.classify(pixels), abs=1e-5)

    separate = attention_statistics(model, [pixels], rollout_images=1, precision="fp32")  # the encoder alone
    joint = attention_statistics(model, [pixels], rollout_images=1, precision="fp32", with_logits=True)
    assert separate.logits is None and joint.logits.shape == (1, 6)
    np.testing.assert_allclose(joint.mean_distance, separate.mean_distance, rtol=1e-5)
    torch.testing.assert_close(joint.rollout_maps, separate.rollout_maps)
    expected_rollout, expected_distance = predictor.maps(image, separate)
    assert rollout.shape == (48, 40, 3) and np.abs(rollout.astype(int) - expected_rollout.astype(int)).max() <= 1
    assert distance.shape == expected_distance.shape and np.array_equal(distance, expected_distance)


def test_a_centre_cropping_processor_maps_the_rollout_onto_the_part_the_model_saw():
    from transformers import BitImageProcessor

    processor = BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True)
    box = seen_box(processor, 200, 100)  # resized to 80 x 40, centre 32 x 32 kept: x 24..56, y 4..36 of it
    np.testing.assert_allclose(box, (60, 10, 140, 90))
    image = np.full((100, 200, 3), 200, dtype=np.uint8)
    overlay = rollout_overlay(image, torch.arange(16.0).reshape(4, 4), box)
    assert overlay.shape == (100, 200, 3)
    assert not overlay[:, :60].any() and not overlay[:, 141:].any() and not overlay[:10].any()
    assert overlay[85, 135].min() > overlay[15, 65].max()  # the map's largest value is in its bottom-right corner
    assert seen_box(None, 200, 100) == (0, 0, 200, 100)


def test_a_bit_resnet_is_classified_and_the_app_says_the_maps_are_vit_only(tmp_path, photo, workdir):
    from gradio_client import Client, handle_file
    from transformers import BitForImageClassification, ViTImageProcessor

    from hf_vit_repro.variants import bit_config

    names = {i: f"texture {i}" for i in range(7)}
    config = bit_config("BiT-R50x1", num_labels=7, image_size=32, id2label=names, label2id={v: k for k, v in names.items()},
                        **TINY_BIT)
    randomize_(BitForImageClassification(config), std=0.3).save_pretrained(tmp_path / "bit")
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(tmp_path / "bit")

    predictor = Predictor.from_pretrained(tmp_path / "bit", device="cpu")
    assert "ViT-only" in predictor.maps_note and "BiT ResNet" in predictor.maps_note
    labels, rollout, distance = predictor(photo)
    assert rollout is None and distance is None
    assert list(labels) == direct_top5(tmp_path / "bit", photo)[0]

    app = build_app(predictor, examples=[])
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(workdir / "downloads-bit"))
        served, no_rollout, no_distance = client.predict(handle_file(photo), api_name="/predict")
    finally:
        app.close()
    assert [c["label"] for c in served["confidences"]] == list(labels) and no_rollout is None and no_distance is None
    assert any("ViT-only" in str(block.value) for block in app.blocks.values() if type(block).__name__ == "Markdown")


def test_a_hybrid_has_attention_maps(tmp_path, photo):
    save_tiny_checkpoint(tmp_path / "hybrid", hybrid=True)
    labels, rollout, distance = Predictor.from_pretrained(tmp_path / "hybrid", device="cpu")(photo)
    assert len(labels) == 3 and rollout.shape == (427, 640, 3) and distance is not None


def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys):
    (tmp_path / "encoder").mkdir()
    ViTReproModel(ViTReproConfig(**tiny_kwargs())).save_pretrained(tmp_path / "encoder")
    ViTReproForMaskedPatchPrediction(ViTReproConfig(**tiny_kwargs())).save_pretrained(tmp_path / "mpp")
    cases = [
        (tmp_path / "nowhere", "No checkpoint folder at"),
        (tmp_path / "encoder", "holds ViTReproModel, not an image classifier: the app needs a checkpoint with a "
                               "classification head"),
        (tmp_path / "mpp", "holds ViTReproForMaskedPatchPrediction, not an image classifier"),
        ("someone/not-on-this-machine", "no Hub model by that id could be read"),
    ]
    capsys.readouterr()
    for source, message in cases:
        assert main(["app", str(source)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_missing_gradio_names_the_extra(monkeypatch, checkpoint, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["app", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'hf-vit-repro[app]'" in err and err.count("\n") == 1
    with pytest.raises(ImportError, match=r"hf-vit-repro\[app\]"):
        build_app(checkpoint)


def test_help_and_a_light_import(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["app", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and all(flag in out for flag in ("--host", "--port", "--share", "--device"))
    code = "import sys, hf_vit_repro, hf_vit_repro.app, hf_vit_repro.hub, hf_vit_repro.cli; " \
           "hf_vit_repro.cli.build_parser(); assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- the Space


def test_the_space_folder_runs_the_app_on_the_model_it_names(checkpoint, photo, tmp_path, monkeypatch):
    import yaml

    folder = hub.build_space_folder("test-user/tiny-digits", tmp_path / "space", license="mit")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    metadata = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["sdk_version"] == "6.31.0" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["test-user/tiny-digits"] and metadata["license"] == "mit"
    assert metadata["colorFrom"] and metadata["colorTo"] and metadata["emoji"] and metadata["title"]
    pins = (folder / "requirements.txt").read_text().split()
    assert "gradio==6.31.0" in pins and "hf-vit-repro[app]==0.1.0" in pins
    assert all("==" in line for line in pins)
    assert '"test-user/tiny-digits"' in (folder / "app.py").read_text()

    # app.py imported as the Space runs it, its model pointed at the local checkpoint
    monkeypatch.setenv(hub.space.SPACE_MODEL_ENV, str(checkpoint))
    spec = importlib.util.spec_from_file_location("space_app", folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert type(module.demo).__name__ == "Blocks"
    labels, rollout, _ = module.predict(photo)
    assert list(labels) == direct_top5(checkpoint, photo)[0] and rollout.shape == (427, 640, 3)

    with pytest.raises(ValueError, match="not a Space colour"):
        hub.space_files("test-user/tiny-digits", color_from="teal")
    (folder / "requirements.txt").write_text("torch\n")
    with pytest.raises(ValueError, match="must pin gradio==6.31.0"):
        hub.validate_space_folder(folder, "test-user/tiny-digits")


def test_push_space_uploads_the_folder_as_a_space(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from .hub_server import LocalHub
    from .test_hub_push import TOKEN

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    expected = hub.build_space_folder("test-user/tiny-digits", tmp_path / "expected")
    with LocalHub(TOKEN) as server:
        commit = hub.push_space("test-user/tiny-digits", "test-user/tiny-digits-demo", endpoint=server.url, verbose=False)
        on_hub = server.files("spaces/test-user/tiny-digits-demo")
    assert commit.commit_url.startswith(f"{server.url}/spaces/test-user/tiny-digits-demo/commit/")
    assert on_hub.pop(".gitattributes")
    assert on_hub == {p.name: p.read_bytes() for p in expected.iterdir()}
    assert "test-user/tiny-digits-demo" not in server.repos  # a Space, not a model repo

    # the command line: a dry run writes the folder where asked; a model push's flags are refused
    out = tmp_path / "dry"
    assert main(["push", "test-user/tiny-digits", "test-user/tiny-digits-demo", "--space", "--dry-run",
                 "--output-dir", str(out)]) == 0
    assert "the Space test-user/tiny-digits-demo" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in expected.iterdir()}
    assert main(["push", "test-user/tiny-digits", "test-user/x", "--space", "--with-export", "onnx"]) == 2
    assert "--with-export belong to the model's own push" in capsys.readouterr().err
    assert main(["push", str(tmp_path), "test-user/x", "--space", "--dry-run"]) == 2
    assert "is a local path" in capsys.readouterr().err
