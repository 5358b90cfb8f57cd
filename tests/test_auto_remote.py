"""Auto classes, remote code without the package, image processor, pipeline and Trainer."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    ViTImageProcessor,
    pipeline,
)

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel

from .conftest import randomize_, run_without_package, tiny_kwargs

SHIPPED = {"configuration_vit_repro.py", "modeling_vit_repro.py"}


def save_checkpoint(path, **overrides):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = ViTReproConfig(**tiny_kwargs(id2label=labels, label2id={v: k for k, v in labels.items()}, **overrides))
    torch.manual_seed(0)
    model = randomize_(ViTReproForImageClassification(config)).eval()
    model.save_pretrained(path)
    size = config.image_hw
    ViTImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return model


def test_auto_classes_resolve_our_classes(tmp_path):
    save_checkpoint(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ViTReproConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is ViTReproModel
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path)) is ViTReproForImageClassification
    assert type(AutoModelForImageClassification.from_config(ViTReproConfig(**tiny_kwargs()))) is ViTReproForImageClassification
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), ViTImageProcessor)


def test_checkpoint_folder_carries_code_and_full_auto_map(tmp_path):
    save_checkpoint(tmp_path)
    assert SHIPPED <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "model.safetensors").exists()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_vit_repro.ViTReproConfig",
        "AutoModel": "modeling_vit_repro.ViTReproModel",
        "AutoModelForImageClassification": "modeling_vit_repro.ViTReproForImageClassification",
        "AutoModelForMaskedImageModeling": "modeling_vit_repro.ViTReproForMaskedImageModeling",
        "AutoModelForPreTraining": "modeling_vit_repro.ViTReproForMaskedPatchPrediction",
        "AutoBackbone": "modeling_vit_repro.ViTReproBackbone",
    }
    # what transformers' remote-code loader sees the shipped files import: nothing from this package
    from transformers.dynamic_module_utils import get_imports

    for name in SHIPPED:
        third_party = {m for m in get_imports(tmp_path / name) if m not in sys.stdlib_module_names}
        assert third_party <= {"torch", "transformers", "huggingface_hub"}, (name, third_party)


@pytest.mark.parametrize("overrides", [{}, {"pooling": "gap", "representation_size": 16}], ids=["token", "gap+pre-logits"])
def test_remote_code_loads_without_the_package(tmp_path, overrides):
    checkpoint = tmp_path / "ckpt"
    model = save_checkpoint(checkpoint, **overrides)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModel, AutoModelForImageClassification, AutoImageProcessor
        try:
            import hf_vit_repro
            raise SystemExit("the package should not be importable here")
        except ImportError:
            pass
        path = {str(checkpoint)!r}
        model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            logits = model(x).logits
            big = model(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True).logits
            attentions = model(x, output_attentions=True).attentions
        print(json.dumps({{
            "module": type(model).__module__, "base": type(base).__name__,
            "logits": logits.tolist(), "big": list(big.shape), "num_attentions": len(attentions),
            "processor": type(AutoImageProcessor.from_pretrained(path)).__name__,
        }}))
        """,
        tmp_path,
    )
    assert out["module"].startswith("transformers_modules.")
    assert out["base"] == "ViTReproModel"
    assert out["processor"] == "ViTImageProcessor"
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(out["logits"]), model(x).logits, atol=1e-6, rtol=0)
    assert out["big"] == [1, 3] and out["num_attentions"] == 2


def test_self_supervised_heads_load_as_remote_code_without_the_package(tmp_path):
    """Masked patch prediction (AutoModelForPreTraining) and masked image modeling
    (AutoModelForMaskedImageModeling) from their checkpoints' own code, in a process that cannot
    import this package: same loss and predictions for the same corruption; the shipped
    `sample_patch_corruption` draws the same corruption from the same seed."""
    from hf_vit_repro import ViTReproForMaskedImageModeling, ViTReproForMaskedPatchPrediction, sample_patch_corruption

    config = ViTReproConfig(**tiny_kwargs(image_size=(32, 48), mpp_image_mean=[0.4, 0.5, 0.6]))
    torch.manual_seed(0)
    mpp = randomize_(ViTReproForMaskedPatchPrediction(config)).eval()
    mim = randomize_(ViTReproForMaskedImageModeling(config)).eval()
    mpp.save_pretrained(tmp_path / "mpp")
    mim.save_pretrained(tmp_path / "mim")
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(2, 24, generator=torch.Generator().manual_seed(1)) < 0.5
    torch.save({"x": x, "mask": mask}, tmp_path / "inputs.pt")
    out = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForMaskedImageModeling, AutoModelForPreTraining
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        mpp = AutoModelForPreTraining.from_pretrained({str(tmp_path / "mpp")!r}, trust_remote_code=True).eval()
        mim = AutoModelForMaskedImageModeling.from_pretrained({str(tmp_path / "mim")!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            a = mpp(inputs["x"], generator=torch.Generator().manual_seed(3))
            b = mim(inputs["x"], bool_masked_pos=inputs["mask"])
        print(json.dumps({{
            "modules": [type(mpp).__module__, type(mim).__module__],
            "classes": [type(mpp).__name__, type(mim).__name__],
            "mpp_loss": a.loss.item(), "logits": a.logits.tolist(), "corruption": a.corruption.tolist(),
            "replacement": a.replacement_index.tolist(), "targets": a.targets.tolist(),
            "mim_loss": b.loss.item(), "reconstruction": b.reconstruction.tolist(),
        }}))
        """,
        tmp_path,
    )
    assert all(module.startswith("transformers_modules.") for module in out["modules"])
    assert out["classes"] == ["ViTReproForMaskedPatchPrediction", "ViTReproForMaskedImageModeling"]
    generator = torch.Generator().manual_seed(3)
    drawn = [sample_patch_corruption(24, generator=generator) for _ in range(2)]
    corruption, replacement = torch.stack([c for c, _ in drawn]), torch.stack([r for _, r in drawn])
    assert out["corruption"] == corruption.tolist() and out["replacement"] == replacement.tolist()
    with torch.no_grad():
        ours = mpp(x, corruption=corruption, replacement_index=replacement)
        reconstruction = mim(x, bool_masked_pos=mask)
    assert out["targets"] == ours.targets.tolist()
    torch.testing.assert_close(torch.tensor(out["logits"]), ours.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(out["mpp_loss"]), ours.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(out["reconstruction"]), reconstruction.reconstruction, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(out["mim_loss"]), reconstruction.loss, atol=1e-6, rtol=0)


def sample_photo() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0])  # china.jpg, 427x640 RGB


def test_pipeline_classifies_a_real_image(tmp_path):
    model = save_checkpoint(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path), device="cpu")
    predictions = classifier(sample_photo(), top_k=3)
    assert [p["label"] for p in predictions] != [] and {p["label"] for p in predictions} == {"cat", "dog", "bird"}
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-4
    # same answer as running processor + model by hand
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        probs = model(**processor(sample_photo(), return_tensors="pt")).logits.softmax(-1)[0]
    assert predictions[0]["label"] == model.config.id2label[int(probs.argmax())]
    assert abs(predictions[0]["score"] - probs.max().item()) < 1e-5


def digits_dataset(n=256):
    from datasets import Dataset
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [Image.fromarray((img * 255 / 16).astype(np.uint8)) for img in digits.images[:n]]
    return Dataset.from_dict({"image": images, "label": digits.target[:n].tolist()})


def test_trainer_fine_tunes_on_a_local_image_dataset(tmp_path):
    from transformers import Trainer, TrainingArguments

    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    dataset = digits_dataset()

    def transform(batch):
        out = processor([img.convert("RGB") for img in batch["image"]], return_tensors="pt")
        out["labels"] = batch["label"]
        return out

    dataset.set_transform(transform)
    torch.manual_seed(0)
    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10, hidden_size=64)))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        max_steps=40,
        learning_rate=2e-3,
        warmup_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
