"""The benchmark harness: its GPU peak table and its ablation switches (the FLOPs formula it uses,
`hf_vit_repro.flops`, is tested in test_flops.py)."""

import importlib.util
import sys
from pathlib import Path

import torch

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

from .conftest import tiny_kwargs

spec = importlib.util.spec_from_file_location(
    "bench_models", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_models"] = bench  # dataclasses look their module up while the file runs
spec.loader.exec_module(bench)


def test_gpu_peak_lookup():
    assert bench.gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.gpu_peak_flops("Some CPU") is None


def test_ablation_switches_turn_each_fast_path_off():
    """ablate_models.py's "off" variants really leave their path: the classifier's last block
    sees every token, the hybrid's CNN gets NCHW input, inference skips torch's fused kernel."""
    spec = importlib.util.spec_from_file_location(
        "ablate_models", Path(__file__).resolve().parents[1] / "benchmarks" / "ablate_models.py"
    )
    ablate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablate)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)

    model = ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())).train()
    seen = []
    model.vit.layers[-1].mlp.fc1.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    ablate._logits(model)(x), ablate._full_path_logits(model)(x)
    assert seen == [1, 17]

    calls = []
    model.eval()
    native = torch._transformer_encoder_layer_fwd
    try:
        torch._transformer_encoder_layer_fwd = lambda *args: calls.append(1) or native(*args)
        with torch.inference_mode():
            ablate._logits(model)(x)
            on = len(calls)
            ablate._without_native_kernel(model)(x)
    finally:
        torch._transformer_encoder_layer_fwd = native
    assert on == 1 and len(calls) == on  # the class-token last block never takes the fused kernel

    hybrid = ViTReproForImageClassification(ViTReproConfig(
        image_size=32, patch_size=1, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        backbone_config={"depths": [1], "hidden_sizes": [32], "embedding_size": 16, "num_groups": 8},
    ))
    layouts = []
    hybrid.vit.embeddings.patch_embeddings.backbone.register_forward_pre_hook(
        lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        ablate._logits(hybrid)(x), ablate._nchw(hybrid)(x)
    assert layouts == [True, False]
