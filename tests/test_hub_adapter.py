"""Adapter-only repos (`vit-repro push --adapter-only`, hf_vit_repro.hub.adapter): a LoRA run's peft
adapter published to the local Hub (tests/hub_server.py), downloaded, and loaded with
`PeftModel.from_pretrained` on the base the run started from gives the run's logits (its merged
`final/` model) within 1e-5 of the logits' scale (`assert_logits_close`); the card's metadata and
text; the one-line refusals.
"""

import secrets
import shutil

import pytest
import torch
import yaml

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, hub, runs
from hf_vit_repro.cli import main
from hf_vit_repro.training import Recipe, run_recipe

from .conftest import assert_logits_close, randomize_, tiny_kwargs
from .evaluation_fixtures import save_classifier
from .hub_server import LocalHub
from .run_fixtures import make_run

peft = pytest.importorskip("peft", reason="peft is part of the test extra (pip install -e '.[test]')")

TOKEN = "hf_" + secrets.token_hex(17)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(run folder, pretrained checkpoint): a 2-step LoRA fine-tune of a tiny 'pretrained' ViT on digits."""
    root = tmp_path_factory.mktemp("lora")
    # pretrained at 16 px with a pre-logits layer: the base needs both of the run's changes (dropped
    # pre-logits layer, position embeddings resampled to 32 px) before the adapter fits it
    config = ViTReproConfig(**tiny_kwargs(image_size=16, representation_size=16))
    model = randomize_(ViTReproForImageClassification(config), seed=5)
    checkpoint = save_classifier(model, root / "pretrained" / "final")
    recipe = Recipe.from_dict({
        "name": "lora", "mode": "finetune",
        "model": {"variant": None, "init_from": str(checkpoint), "image_size": 32},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 16, "max_eval_examples": 16},
        "optim": {"optimizer": "sgd", "lr": 0.1, "warmup_steps": 0, "schedule": "constant"},
        "train": {"steps": 2, "global_batch_size": 8, "micro_batch_size": 8, "method": "lora",
                  "method_options": {"r": 2}},
        "run": {"output_dir": str(root / "run"), "checkpoint_every": 0, "progress_bar": False, "trackers": []},
    })
    return run_recipe(recipe).run_dir, checkpoint


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_adapter_only_push_downloads_and_loads_on_its_base_to_the_runs_logits(lora_run, tmp_path, online):
    from huggingface_hub import ModelCard, snapshot_download
    from transformers import AutoModelForImageClassification

    run, checkpoint = lora_run
    with LocalHub(TOKEN) as server:
        hub.push_to_hub(run, "test-user/tiny-lora", endpoint=server.url, verbose=False, adapter_only=True,
                        base_model="test-user/tiny-base")
        on_hub = set(server.files("test-user/tiny-lora"))
        path = snapshot_download("test-user/tiny-lora", endpoint=server.url, cache_dir=tmp_path / "cache")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "preprocessor_config.json",
            "recipe.yaml", "train_summary.json", "metrics/digits_test.json"} <= on_hub
    assert not {"model.safetensors", "config.json"} & on_hub  # adapter only: no full weights, not a transformers repo

    card = ModelCard.load(f"{path}/README.md")
    assert card.data.library_name == "peft" and card.data.base_model == "test-user/tiny-base"
    assert {"peft", "lora"} <= set(card.data.tags)
    accuracy = runs.read_json(run / "metrics" / "digits_test.json")["metrics"]["accuracy"]
    assert [r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy"] == [accuracy]
    assert f"`{checkpoint}` (a local path, not a Hub id" in card.text and "LoRA (Hu et al., ICLR 2022)" in card.text
    assert runs.read_json(f"{path}/adapter_config.json")["base_model_name_or_path"] == "test-user/tiny-base"

    # The base as the card says to build it: the pretrained checkpoint, a new 10-way head, resampled to 32 px.
    assert "base.reset_classifier(10)" in card.text and "base.resize_position_embeddings(32)" in card.text
    base = AutoModelForImageClassification.from_pretrained(checkpoint)
    base.reset_classifier(10)
    base.resize_position_embeddings(32)
    adapted = peft.PeftModel.from_pretrained(base, path).eval()
    merged = ViTReproForImageClassification.from_pretrained(run / runs.FINAL_DIR).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = merged(pixel_values=x).logits
        assert expected.abs().max() > 1e-3  # the trained head is not the zero it started as
        assert_logits_close(adapted(pixel_values=x).logits, expected)


def test_the_card_names_a_hub_base_in_the_metadata_and_a_local_one_in_the_text(lora_run, tmp_path):
    from huggingface_hub import ModelCard

    run, checkpoint = lora_run
    local = hub.build_adapter_folder(run, tmp_path / "local", "me/lora")
    card = ModelCard.load(local / "README.md")
    assert card.data.base_model is None and f"`{checkpoint}`" in card.text and "a local path, not a Hub id" in card.text
    assert "1,866 of" in card.text  # train_summary.json's trainable parameters (r=2, 2 blocks, 10-way head)

    hub_run = tmp_path / "hub-run"  # the same run, as if it had started from a Hub checkpoint
    shutil.copytree(run, hub_run)
    recipe = yaml.safe_load((hub_run / runs.RECIPE).read_text())
    recipe["model"]["init_from"] = "google/vit-base-patch16-224-in21k"
    (hub_run / runs.RECIPE).write_text(yaml.safe_dump(recipe))
    folder = hub.build_adapter_folder(hub_run, tmp_path / "hub", "me/lora")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "google/vit-base-patch16-224-in21k" and "a local path" not in card.text
    assert 'from_pretrained("google/vit-base-patch16-224-in21k")' in card.text
    hub.validate_adapter_folder(folder)


def test_refusals_are_one_line(lora_run, tmp_path, capsys):
    run, _ = lora_run
    make_run(tmp_path / "full")  # a full fine-tuning run: no adapter
    capsys.readouterr()
    assert main(["push", str(tmp_path / "full"), "me/x", "--adapter-only", "--dry-run"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a `train.method: full` run, not a LoRA run" in err

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / runs.FINAL_DIR / "adapter")
    assert main(["push", str(broken), "me/x", "--adapter-only", "--dry-run", "--output-dir", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(the peft adapter folder) is missing" in err
    assert not (tmp_path / "o").exists()
