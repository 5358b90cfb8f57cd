"""`vit-repro convert` from a transformers ViT checkpoint folder (laid out as on the Hub) and from a
folder this package wrote, pickle refusal, and --help. (timm and .npz sources: test_convert_timm.py,
test_convert_npz.py.)"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification, ViTImageProcessor

from hf_vit_repro import ViTReproForImageClassification
from hf_vit_repro.cli import build_parser, main

from .conftest import randomize_


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A transformers ViT checkpoint folder as `save_pretrained` (and the Hub) lays it out."""
    path = tmp_path_factory.mktemp("hf_vit")
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=4, layer_norm_eps=1e-6,
    )
    model = randomize_(ViTForImageClassification(config)).eval()
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path, model


def test_convert_writes_a_loadable_folder_with_equal_logits(hf_checkpoint, tmp_path):
    source, reference = hf_checkpoint
    assert main(["convert", str(source), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_vit_repro.py"} <= {
        p.name for p in out.iterdir()
    }
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert isinstance(model, ViTReproForImageClassification)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, atol=1e-5, rtol=0)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5] * 3 and processor["size"] == {"height": 32, "width": 32}


def test_convert_masked_image_modeling_checkpoint(tmp_path, capsys):
    """A transformers ViTForMaskedImageModeling folder converts to our masked-image-modeling class
    (AutoModelForMaskedImageModeling), which keeps it when converted again; --num-labels is refused."""
    from transformers import AutoModelForMaskedImageModeling, ViTForMaskedImageModeling

    from hf_vit_repro import ViTReproForMaskedImageModeling

    source = tmp_path / "hf_mim"
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, layer_norm_eps=1e-6, encoder_stride=8,
    )
    reference = randomize_(ViTForMaskedImageModeling(config)).eval()
    reference.save_pretrained(source)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(source)
    assert main(["convert", str(source), str(tmp_path / "out")]) == 0
    assert "AutoModelForMaskedImageModeling.from_pretrained" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "out"), str(tmp_path / "again"), "--image-size", "48"]) == 0
    x, mask = torch.randn(2, 3, 32, 32), torch.rand(2, 16) < 0.5
    model = AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "out").eval()
    again = AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "again").eval()
    assert type(model) is ViTReproForMaskedImageModeling and type(again) is ViTReproForMaskedImageModeling
    with torch.no_grad():
        expected = reference(x, bool_masked_pos=mask)
        got = model(x, bool_masked_pos=mask)
        torch.testing.assert_close(got.reconstruction, expected.reconstruction, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
        bigger = torch.randn(1, 3, 48, 48)
        torch.testing.assert_close(
            again(bigger).reconstruction,
            reference(bigger, interpolate_pos_encoding=True).reconstruction,
            atol=1e-5,
            rtol=0,
        )
    assert main(["convert", str(source), str(tmp_path / "refused"), "--num-labels", "3"]) == 2
    assert "no classification head" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_convert_with_new_resolution_and_head(hf_checkpoint, tmp_path):
    source, reference = hf_checkpoint
    assert main(["convert", str(source), str(tmp_path), "--image-size", "48", "--num-labels", "7"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert model.config.image_size == 48 and model.config.num_labels == 7
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["size"] == {"height": 48, "width": 48}
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        # resampled once at conversion == transformers' own on-the-fly interpolation (bicubic)
        ours = model.vit(x).last_hidden_state
        theirs = reference.vit(x, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert torch.count_nonzero(model(x).logits) == 0  # zero-initialised 7-way head


def test_convert_rejects_a_checkpoint_of_another_architecture(tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(tmp_path)
    assert main(["convert", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a transformers ViT" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"convert", "variants", "demo"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage: vit-repro " + name in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("vit-repro")
    executable = str(script) if script.exists() else shutil.which("vit-repro")
    result = subprocess.run([executable, "variants", "--patch", "16"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ViT-B/16" in result.stdout and "85.8M" in result.stdout


def test_pickled_transformers_checkpoint_needs_an_opt_in(hf_checkpoint, tmp_path, capsys):
    source, reference = hf_checkpoint
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (pickled / name).write_text((source / name).read_text())
    torch.save(reference.state_dict(), pickled / "pytorch_model.bin")  # and no model.safetensors
    assert main(["convert", str(pickled), str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin is a pickle file" in err and "--allow-pickle" in err
    assert not (tmp_path / "refused").exists()
    assert main(["convert", str(pickled), str(tmp_path / "out"), "--allow-pickle"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, atol=1e-5, rtol=0)


def test_a_converted_folder_converts_again_to_a_new_resolution(hf_checkpoint, tmp_path):
    source, reference = hf_checkpoint
    assert main(["convert", str(source), str(tmp_path / "first")]) == 0
    assert main(["convert", str(tmp_path / "first"), str(tmp_path / "second"), "--image-size", "48"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "second").eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        theirs = reference(x, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(model(x).logits, theirs, atol=1e-5, rtol=0)
    processor = json.loads((tmp_path / "second" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 48, "width": 48} and processor["image_mean"] == [0.5] * 3
