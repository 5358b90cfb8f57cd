"""Converting timm checkpoints: hub-repo folders (config.json + model.safetensors) of plain and
hybrid ViTs built by timm with random weights, through `convert` / `vit-repro convert`; the
converted folders match timm's logits, also at a new resolution, and reload by the Auto classes
and by the remote-code path. timm model names map to our configs like timm builds them."""

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf
from transformers import AutoModelForImageClassification

from hf_vit_repro import ViTReproForImageClassification
from hf_vit_repro.cli import main
from hf_vit_repro.convert import ConversionError, config_from_timm, convert, load_checkpoint, load_timm_checkpoint

from .test_auto_remote import run_without_package
from .test_hybrid import BACKBONES, timm_hybrid
from .test_parity import timm_vit

ATOL = 1e-4
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LABELS = ["n01", "n02", "n03", "n04", "n05"]
DESCRIPTIONS = {"n01": "tench", "n02": "goldfish", "n03": "shark", "n04": "ray", "n05": "cock"}


def write_plain_folder(path, model):
    """A plain ViT as timm's own exporter (`save_for_hf`, what `push_to_hf_hub` uploads) writes it."""
    size = model.patch_embed.img_size
    save_for_hf(
        model,
        path,
        safe_serialization=True,
        model_config={"label_names": LABELS, "label_descriptions": DESCRIPTIONS},
        data_config={"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, *size), "interpolation": "bicubic"},
    )
    return path


def write_hybrid_folder(path, model, architecture, image_size):
    """A hybrid as timm's hub repos hold it. timm's exporter cannot serialise the hand-built tiny
    CNN, so config.json is written here with the fields those repos carry."""
    path.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), path / "model.safetensors")
    config = {
        "architecture": architecture,
        "num_classes": 5,
        "num_features": 32,
        "global_pool": "token",
        "model_args": {"img_size": image_size, "embed_dim": 32, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0},
        "pretrained_cfg": {
            "tag": "orig_in21k_ft_in1k",
            "custom_load": False,
            "input_size": [3, image_size, image_size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "num_classes": 5,
            "first_conv": "patch_embed.backbone.stem.conv",
            "classifier": "head",
        },
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def emphasise_positions(model, factor=20.0):
    """Random patch embeddings dwarf N(0, 0.2^2) position embeddings (a sum over P^2 C inputs);
    scale the latter up so that how they are resampled shows in the logits."""
    with torch.no_grad():
        model.pos_embed.mul_(factor)
    return model


B16 = dict(image_size=224, patch_size=16, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96)
S32 = dict(image_size=64, patch_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
# case -> (random timm reference, writer of its hub folder, native size, new size, our config overrides)
CASES = {
    # new sizes below and above: antialiasing only acts when the grid shrinks
    "vit_base_patch16_224-like": (lambda: emphasise_positions(timm_vit(B16)), write_plain_folder, 224, 160, {}),
    "vit_small_patch32_224-like": (lambda: emphasise_positions(timm_vit(S32, name="vit_small_patch32_224")), write_plain_folder, 64, 96, {}),
    "vit_base_r50_s16_224-like": (
        lambda: emphasise_positions(timm_hybrid("r50-like")),
        lambda path, model: write_hybrid_folder(path, model, "vit_base_r50_s16_224", 64),
        64,
        32,
        {"backbone_config": BACKBONES["r50-like"]},  # the tiny CNN: what timm's config cannot record
    ),
    "vit_small_r26_s32_224-like": (
        lambda: emphasise_positions(timm_hybrid("r26-like")),
        lambda path, model: write_hybrid_folder(path, model, "vit_small_r26_s32_224", 64),
        64,
        96,
        {"backbone_config": BACKBONES["r26-like"]},
    ),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """case -> (timm reference, timm folder, converted folder, converted-at-new-size folder, inputs)."""
    out = {}
    for i, (case, (make_reference, write_folder, size, new_size, overrides)) in enumerate(CASES.items()):
        root = tmp_path_factory.mktemp(f"timm{i}")
        reference = make_reference()
        folder = write_folder(root / "timm", reference)
        native = convert(folder, root / "converted", **overrides)
        resized = convert(folder, root / "resized", image_size=new_size, **overrides)
        generator = torch.Generator().manual_seed(i)
        inputs = (torch.randn(2, 3, size, size, generator=generator), torch.randn(1, 3, new_size, new_size, generator=generator))
        out[case] = (reference, folder, native, resized, inputs)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_converted_timm_folder_matches_timm(converted, case):
    reference, _, native, resized, (x, x_new) = converted[case]
    model = AutoModelForImageClassification.from_pretrained(native).eval()
    assert type(model) is ViTReproForImageClassification
    at_new_size = AutoModelForImageClassification.from_pretrained(resized).eval()
    assert at_new_size.config.image_hw == tuple(x_new.shape[-2:])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
        # resampled once at conversion, and on the fly, both as timm does at a new size
        expected_new = reference(x_new)
        torch.testing.assert_close(at_new_size(x_new).logits, expected_new, atol=ATOL, rtol=0)
        torch.testing.assert_close(model(x_new, interpolate_pos_encoding=True).logits, expected_new, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_preprocessing_and_labels_follow_the_timm_config(converted, case):
    _, folder, native, resized, (x, x_new) = converted[case]
    timm_config = json.loads((folder / "config.json").read_text())
    for out, size in ((native, x.shape[-1]), (resized, x_new.shape[-1])):
        processor = json.loads((out / "preprocessor_config.json").read_text())
        # timm's evaluation transform: shortest edge to floor(size / crop_pct), centre crop to size
        assert processor["image_processor_type"] == "BitImageProcessor"
        assert processor["image_mean"] == pytest.approx(timm_config["pretrained_cfg"]["mean"])
        assert processor["image_std"] == pytest.approx(timm_config["pretrained_cfg"]["std"])
        crop_pct = timm_config["pretrained_cfg"]["crop_pct"]
        assert processor["crop_pct"] == crop_pct
        assert processor["size"] == {"shortest_edge": math.floor(size / crop_pct)}
        assert processor["crop_size"] == {"height": size, "width": size} and processor["do_center_crop"]
        assert processor["resample"] == 3  # PIL bicubic, timm's "interpolation"
    config = json.loads((native / "config.json").read_text())
    if "label_names" in timm_config:
        assert config["id2label"] == {str(i): DESCRIPTIONS[name] for i, name in enumerate(LABELS)}
    assert config["position_embedding_interpolation"] == "bicubic_antialias"


def test_converted_timm_folders_load_without_the_package(converted, tmp_path):
    paths, expected = {}, {}
    for case, (reference, _, native, resized, (x, x_new)) in converted.items():
        torch.save((x, x_new), tmp_path / f"{len(paths)}.pt")
        paths[case] = (str(native), str(resized), str(tmp_path / f"{len(paths)}.pt"))
        with torch.no_grad():
            expected[case] = (reference(x), reference(x_new))
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForImageClassification
        result = {{}}
        for case, (native, resized, inputs) in {paths!r}.items():
            x, x_new = torch.load(inputs)
            load = lambda path: AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
            with torch.no_grad():
                result[case] = [load(native)(x).logits.tolist(), load(resized)(x_new).logits.tolist()]
        print(json.dumps(result))
        """,
        tmp_path,
    )
    for case, (logits, logits_new) in expected.items():
        torch.testing.assert_close(torch.tensor(out[case][0]), logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(torch.tensor(out[case][1]), logits_new, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "name",
    [
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "vit_small_patch32_384",
        "vit_tiny_patch16_224",
        "vit_large_patch16_384",
        "vit_huge_patch14_224",
        "vit_base_r50_s16_384.orig_in21k_ft_in1k",
        "vit_small_r26_s32_224",
        "vit_base_r26_s32_224",
        "vit_large_r50_s32_384",
    ],
)
def test_timm_names_map_to_the_model_timm_builds(name):
    architecture = name.split(".")[0]
    with torch.device("meta"):
        reference = timm.create_model(architecture, pretrained=False)
        config = config_from_timm(name, num_labels=reference.num_classes)
        ours = ViTReproForImageClassification(config)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert ours.vit.embeddings.position_embeddings.shape == reference.pos_embed.shape
    assert config.hidden_size == reference.embed_dim and config.num_attention_heads == reference.blocks[0].attn.num_heads
    assert config.token_stride_hw[0] * config.grid_size[0] == reference.patch_embed.img_size[0]
    if config.is_hybrid:  # the CNN's blocks per stage, as timm's ResNetV2 has them
        assert list(config.backbone_config.depths) == [len(s.blocks) for s in reference.patch_embed.backbone.stages]


def test_the_large_r50_hybrid_is_a_four_stage_stride_32_resnet():
    config = config_from_timm("vit_large_r50_s32_224")
    assert list(config.backbone_config.depths) == [3, 4, 6, 3] and config.backbone_stride == 32
    assert config.grid_size == (7, 7) and config.hidden_size == 1024


def test_unknown_timm_architecture_suggests_close_names(converted, tmp_path, capsys):
    with pytest.raises(ConversionError, match="Did you mean vit_base_patch16_224"):
        config_from_timm("vit_base_patch16_clip_224")
    _, folder, *_ = converted["vit_small_patch32_224-like"]
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "vit_smal_patch32_224"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps(config))
    (tmp_path / "src" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Unknown timm architecture 'vit_smal_patch32_224'" in err and "vit_small_patch32_224" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"reg_tokens": 4}, "reg_tokens=4"),
        ({"init_values": 1e-5}, "init_values=1e-05"),
        ({"class_token": False, "global_pool": "avg"}, "fc_norm"),
    ],
)
def test_timm_arguments_without_a_counterpart_are_refused_by_name(model_args, message):
    with pytest.raises(ConversionError, match=message):
        config_from_timm({"architecture": "vit_small_patch32_224", "model_args": model_args})


def test_pickled_timm_weights_need_an_opt_in(converted, tmp_path, capsys):
    reference, folder, _, _, (x, _) = converted["vit_small_patch32_224-like"]
    src = tmp_path / "pickled"
    src.mkdir()
    (src / "config.json").write_text((folder / "config.json").read_text())
    torch.save(reference.state_dict(), src / "pytorch_model.bin")  # no model.safetensors
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin is a pickle file.*allow_pickle=True.*--allow-pickle"):
        load_timm_checkpoint(src)
    assert main(["convert", str(src), str(tmp_path / "refused")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(["convert", str(src), str(tmp_path / "out"), "--allow-pickle"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)


def test_bare_timm_weights_file_with_its_architecture(converted, tmp_path, capsys):
    reference, folder, _, _, (x, _) = converted["vit_small_patch32_224-like"]
    assert main(["convert", str(folder / "model.safetensors"), str(tmp_path / "a")]) == 2
    assert "--timm-architecture" in capsys.readouterr().err
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    # the tiny model's sizes are config overrides (a real checkpoint's name says them all)
    tiny = dict(image_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=5)
    with pytest.raises(ConversionError, match="pickle"):
        load_checkpoint(tmp_path / "weights.pth", architecture="vit_small_patch32_224", **tiny)
    for path, allow_pickle in ((folder / "model.safetensors", False), (tmp_path / "weights.pth", True)):
        model, processor = load_checkpoint(path, architecture="vit_small_patch32_224", allow_pickle=allow_pickle, **tiny)
        # no pretrained_cfg: timm's defaults (crop_pct 0.875, bicubic) around the 64-pixel crop
        assert processor.crop_size == {"height": 64, "width": 64} and processor.size == {"shortest_edge": 73}
        with torch.no_grad():
            torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)


def serve_from_hub_cache(tmp_path, monkeypatch, repo_id, files):
    """Lay `files` ({name: source path}) out as huggingface_hub's cache holds a downloaded repo, so
    the real `hf_hub_download` (offline in tests) serves them for `repo_id`."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for name, source in files.items():
        (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / name).write_bytes(Path(source).read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_hub_repo_id_reads_through_hf_hub_download(converted, tmp_path, monkeypatch):
    """A repo id takes the same path as a folder, through huggingface_hub's own `hf_hub_download`."""
    reference, folder, _, _, (x, _) = converted["vit_small_patch32_224-like"]
    files = {name: folder / name for name in ("config.json", "model.safetensors")}
    serve_from_hub_cache(tmp_path, monkeypatch, "timm/vit_small_patch32_224.tiny", files)
    out = convert("timm/vit_small_patch32_224.tiny", tmp_path / "out")
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
    with pytest.raises(ConversionError, match="could not be fetched"):
        convert("timm/not-in-the-cache", tmp_path / "none")


def test_bare_1000_class_timm_file_reads_its_class_count(tmp_path, capsys):
    """A real-sized bare timm file (ViT-Ti/16 with its 1000-class head, as timm builds it) converts
    from its architecture name alone: the class count comes from the weights (issue 14, item 7)."""
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    with torch.no_grad():
        torch.nn.init.normal_(reference.head.weight, std=0.02)  # timm starts the head at zero
    assert reference.head.out_features == 1000
    save_file(reference.state_dict(), tmp_path / "vit_tiny.safetensors")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "vit_tiny.safetensors"), str(out), "--timm-architecture", "vit_tiny_patch16_224"]) == 0
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.num_labels == 1000 and model.classifier.out_features == 1000
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=ATOL, rtol=0)
    # --num-labels still swaps the head afterwards (fine-tuning), and a wrong explicit count is named
    assert main(["convert", str(tmp_path / "vit_tiny.safetensors"), str(tmp_path / "ten"), "--timm-architecture",
                 "vit_tiny_patch16_224", "--num-labels", "10"]) == 0
    assert AutoModelForImageClassification.from_pretrained(tmp_path / "ten").config.num_labels == 10
    with pytest.raises(ConversionError, match=r"classifier\.bias: checkpoint \(1000,\) vs model \(2,\)"):
        load_checkpoint(tmp_path / "vit_tiny.safetensors", architecture="vit_tiny_patch16_224", num_labels=2)


# timm's evaluation transforms of published ViTs (pretrained_cfg: size, crop_pct, interpolation)
EVAL_TRANSFORMS = {
    "augreg 224, crop 0.9, bicubic": (224, 0.9, "bicubic"),
    "384, crop 1.0, bicubic": (384, 1.0, "bicubic"),
    "224, crop 0.875, bilinear": (224, 0.875, "bilinear"),
}


@pytest.mark.parametrize("case", list(EVAL_TRANSFORMS))
def test_converted_processor_reproduces_timms_evaluation_transform_on_a_photo(case, tmp_path):
    """The image processor a timm checkpoint converts to (through AutoImageProcessor, no remote code)
    vs timm's own `create_transform(**resolve_data_config({}, model=m))`, on a real photo
    (scikit-learn's china.jpg, 640x427).

    Measured (normalised pixels, mean = std = 0.5, so one grey level is 2/255 = 0.0078): the PIL
    backend's resize equals timm's exactly, the torchvision backend's (the default) within one grey
    level (max 0.0078, mean 4e-5), at 224/0.9, 384/1.0 and 224/0.875. The crops then differ by one
    column: the resized photo leaves a horizontal margin of 147, 191 and 159 pixels (each 3 mod 4),
    which transformers splits at floor(margin / 2) and torchvision's CenterCrop at
    round-half-to-even(margin / 2), one pixel further right. So the bound is checked where the two
    crops coincide (the processor's output shifted by that one column, as computed from the sizes),
    and the whole crop is compared with a bound on the mean: 0.1 measured at most 0.099, against
    0.25-0.33 for the straight resize the converter wrote before (the ViTImageProcessor kept for
    the JAX sources)."""
    from sklearn.datasets import load_sample_images
    from PIL import Image
    from transformers import AutoImageProcessor

    size, crop_pct, interpolation = EVAL_TRANSFORMS[case]
    reference = timm.create_model("vit_small_patch32_224", pretrained=False, img_size=size, depth=1, num_classes=5)
    data_config = {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": (3, size, size), "interpolation": interpolation,
                   "crop_pct": crop_pct}
    save_for_hf(reference, tmp_path / "timm", safe_serialization=True, data_config=data_config)
    convert(tmp_path / "timm", tmp_path / "out")
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=False)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=timm_model))
    photo = Image.fromarray(load_sample_images().images[0])
    expected = transform(photo)
    assert tuple(expected.shape) == (3, size, size)

    # where timm's crop starts in the resized photo, and where transformers' does
    scale = math.floor(size / crop_pct)
    resized_w = int(scale * photo.width / photo.height)
    margin = resized_w - size
    shift = round(margin / 2) - margin // 2  # torchvision's CenterCrop vs transformers' center_crop
    assert margin % 4 == 3 and shift == 1  # the case the docstring describes, for this photo
    for backend, level_bound in (("pil", 0.0), ("torchvision", 2 / 255 + 1e-6)):
        processor = AutoImageProcessor.from_pretrained(tmp_path / "out", backend=backend)
        assert type(processor).__name__.startswith("BitImageProcessor")
        got = processor(photo, return_tensors="pt").pixel_values[0]
        assert got.shape == expected.shape
        overlap = (got[..., shift:] - expected[..., : size - shift]).abs()
        assert overlap.max() <= level_bound, (backend, overlap.max())
        assert (got - expected).abs().mean() < 0.1, backend
