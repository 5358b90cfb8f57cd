"""The benchmark harness's FLOPs formula against torch's own FLOP counter."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel

from .conftest import tiny_kwargs

spec = importlib.util.spec_from_file_location(
    "bench_models", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_models"] = bench  # dataclasses look their module up while the file runs
spec.loader.exec_module(bench)


@pytest.mark.parametrize("overrides", [{}, {"pooling": "gap"}, {"image_size": 64, "hidden_size": 64}])
@pytest.mark.parametrize("model_cls", [ViTReproModel, ViTReproForImageClassification])
def test_flops_formula_matches_torch_flop_counter(overrides, model_cls):
    """The formula against torch's own count: the base model runs every block on all tokens;
    the classifier (token pooling) runs its last block on the class token alone."""
    config = ViTReproConfig(**tiny_kwargs(**overrides))
    model = model_cls(config).eval()
    model.set_attn_implementation("eager")  # torch's counter does not see the CPU flash-attention kernel
    size = config.image_hw[0]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    classifier = model_cls is ViTReproForImageClassification
    expected = bench.vit_flops_per_image(config, size, class_token_only_last_block=classifier)
    if not classifier:  # no head
        expected -= 2 * config.pooled_size * config.num_labels
    assert expected == counter.get_total_flops()
    if classifier and config.pooling == "token":
        assert expected < bench.vit_flops_per_image(config, size)


def test_gpu_peak_lookup():
    assert bench.gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.gpu_peak_flops("Some CPU") is None
