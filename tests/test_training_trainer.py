"""The Trainer-based fine-tuning example (examples/trainer_finetune.py) runs: our model, a
datasets image dataset, the package's `evaluate` accuracy module, a saved remote-code checkpoint."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trainer_finetune.py"


def load_example():
    spec = importlib.util.spec_from_file_location("trainer_finetune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trainer_example_fine_tunes_and_reports_accuracy(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

    # A "pretrained" checkpoint at 16 px with a pre-logits layer and a 3-way head.
    pretrained = ViTReproForImageClassification(ViTReproConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3, representation_size=16))
    pretrained.save_pretrained(tmp_path / "pre")
    out = tmp_path / "out"
    metrics = load_example().main([
        "--checkpoint", str(tmp_path / "pre"), "--image-size", "32", "--output-dir", str(out), "--max-steps", "3",
        "--warmup-steps", "1", "--batch-size", "8", "--gradient-accumulation-steps", "2",
        "--max-train-examples", "32", "--max-eval-examples", "20",
    ])
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_top5_accuracy" in metrics
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.num_labels == 10 and model.config.image_size == 32
    assert model.config.representation_size is None  # the pre-logits layer was dropped
    assert model.vit.embeddings.position_embeddings.shape[1] == 1 + 16  # 4x4 grid at 32 px
    assert AutoImageProcessor.from_pretrained(out).size == {"height": 32, "width": 32}
    assert (out / "modeling_vit_repro.py").is_file()
    with pytest.raises(SystemExit):
        load_example().main(["--no-such-option"])
