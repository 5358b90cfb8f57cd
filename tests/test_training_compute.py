"""Compute accounting (paper Sec. 4.4, Table 6): the forward FLOPs of an architecture
(`hf_vit_repro.flops.forward_flops`) against torch's FlopCounterMode and against the paper's own
pretraining exaFLOPs, and the `compute` entry that every training run writes."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_vit_repro import ViTReproConfig, ViTReproModel, runs
from hf_vit_repro.flops import forward_flops
from hf_vit_repro.models import config_from_variant
from hf_vit_repro.studies import paper_table6
from hf_vit_repro.training import Recipe, train
from hf_vit_repro.training.compute import EXA
from hf_vit_repro.variants import canonical_name

from .conftest import tiny_kwargs

TINY_BACKBONE = dict(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16, num_groups=8)
#: JFT-300M: 303M images (paper Sec. 4.1) and about 18k classes.
JFT_IMAGES, JFT_CLASSES = 303e6, 18291


@pytest.mark.parametrize("overrides", [
    {},
    {"representation_size": 24},  # the pretraining head's pre-logits layer
    {"pooling": "gap", "image_size": 48},
    {"patch_size": 1, "backbone_config": TINY_BACKBONE, "representation_size": 16},  # hybrid: CNN, then 1x1 patches
])
def test_forward_flops_match_torch_flop_counter(overrides):
    """Every block on all tokens (the architecture; ViTReproModel computes exactly that) plus the
    classifier head, the hybrid's CNN included (tests/test_flops.py checks each family alone)."""
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    model = ViTReproModel(config).eval()
    model.set_attn_implementation("eager")  # torch's counter does not see the CPU flash-attention kernel
    size = config.image_hw[0]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    head = 2 * config.pooled_size * config.num_labels
    assert forward_flops(config, size) == counter.get_total_flops() + head


def _table6_rows():
    rows = []
    for row in paper_table6():
        name = row["model"].replace("R50x1+", "R50+")
        if row["family"].startswith("ResNet"):
            name = "BiT-" + name.replace("ResNet", "R")
        try:
            rows.append((canonical_name(name), row["epochs"], row["pretrain_exaflops"]))
        except ValueError:  # a variant this package does not define
            continue
    return rows


def test_training_flops_reproduce_the_papers_table6():
    """3 x forward x images seen, with the paper's 303M JFT images and 7 or 14 epochs, gives the
    pretraining exaFLOPs of Table 6 within 3% for every ViT and R50 hybrid this package defines.
    (The largest gap is R50x1+ViT-L/16 at 7 epochs: the paper prints 859, half its own 14-epoch
    1668 is 834, and 834 is what the formula gives.) The BiT ResNets come out 3.5-5% above the
    paper's figures (R50x1: 52.5 against 50; R200x3: 3422 against 3306), within 6%: the paper
    does not say how it counted them (norms? the 300M round figure?), so the tolerance is wider."""
    rows = _table6_rows()
    assert {name for name, _, _ in rows} >= {"ViT-B/32", "ViT-B/16", "ViT-L/32", "ViT-L/16", "ViT-H/14",
                                              "R50+ViT-B/16", "R50+ViT-L/16", "BiT-R50x1", "BiT-R200x3"}
    for name, epochs, paper in rows:
        config = config_from_variant(name, num_labels=JFT_CLASSES)
        ours = 3 * forward_flops(config, 224) * epochs * JFT_IMAGES / EXA
        tolerance = 0.06 if name.startswith("BiT-") else 0.03
        assert ours == pytest.approx(paper, rel=tolerance), (name, epochs, ours, paper)


def test_every_run_summary_carries_its_compute(tmp_path):
    recipe = Recipe.from_dict({
        "name": "compute",
        "mode": "pretrain",
        "model": {"variant": None, "image_size": 16, "representation_size": 16,
                  "config": {k: v for k, v in tiny_kwargs().items() if k not in ("image_size", "num_labels")}},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 24, "eval_split": None},
        "optim": {"optimizer": "adamw", "lr": 1e-3, "warmup_steps": 1},
        "train": {"steps": 3, "global_batch_size": 8, "micro_batch_size": 4},
        "run": {"output_dir": str(tmp_path / "run"), "checkpoint_every": 0, "progress_bar": False, "trackers": []},
    })
    result = train(recipe)
    summary = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)
    compute = summary["compute"]
    config = ViTReproConfig.from_pretrained(result.run_dir / runs.FINAL_DIR)
    assert config.representation_size == 16 and config.num_labels == 10
    assert compute["forward_flops_per_image"] == forward_flops(config, 16)
    assert compute["images_seen"] == summary["images_seen"] == 24 and compute["image_size"] == 16
    assert compute["training_flops"] == 3 * compute["forward_flops_per_image"] * 24
    assert compute["training_exaflops"] == compute["training_flops"] / 1e18
    assert compute["num_devices"] == 1 and compute["device"].startswith("cpu")
    assert compute["device_seconds"] == pytest.approx(summary["train_time_s"], abs=2e-3) and compute["device_seconds"] > 0
    assert summary["train_examples"] == 24


def test_an_architecture_without_a_formula_keeps_its_run_and_says_why(monkeypatch):
    from hf_vit_repro import flops
    from hf_vit_repro.training.compute import compute_record

    def no_formula(config, image_size):
        raise NotImplementedError("no FLOPs formula for this test architecture")

    monkeypatch.setattr(flops, "forward_flops", no_formula)
    record = compute_record(ViTReproConfig(**tiny_kwargs()), 32, 100, 2.5, 2, "cpu: Test CPU")
    assert record["training_exaflops"] is None and record["forward_flops_per_image"] is None
    assert record["flops_unavailable"] == "NotImplementedError: no FLOPs formula for this test architecture"
    assert record["device_seconds"] == 5.0 and record["num_devices"] == 2 and record["images_seen"] == 100
