"""A study step data-parallel: two CPU processes (torchrun, gloo) run the same study as one
process with the same global batch, and write the same study.json (as
tests/test_training_distributed.py does for one recipe)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_vit_repro import runs
from hf_vit_repro.studies import STUDY_JSON, load_study_config, run_study

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "patch_size": 4}


def write_config(tmp_path) -> Path:
    """One tiny ViT on a 50% subset of 200 digits 0-4 (20 held out): 6 steps of 16 images in
    micro-batches of 4, validation every 2 steps; then 1/5-shot evaluation and 4 fine-tuning steps
    on the digits 5-9 (class-disjoint transfer)."""
    config = {
        "study": "data-size",
        "name": "ddp",
        "recipe": str(ROOT / "recipes" / "studies" / "pretrain_digits.yaml"),
        "overrides": {"train.steps": 6, "train.global_batch_size": 16, "train.micro_batch_size": 4,
                      "optim.warmup_steps": 1, "data.max_train_examples": 200, "run.checkpoint_every": 0,
                      "run.num_workers": 0, "run.torch_threads": None},
        "data": {"task": "digits", "val_fraction": 0.1, "sizes": [0.5], "classes": [0, 1, 2, 3, 4]},
        "early_stopping": {"patience": 5, "eval_every": 2},
        "models": [{"name": "ViT", "config": TINY, "overrides": {"model.representation_size": 32}}],
        "transfer": {"fewshot": {"task": "digits", "shots": [1, 5], "seeds": 2, "classes": [5, 6, 7, 8, 9]},
                     "finetune": {"recipe": str(ROOT / "recipes" / "studies" / "finetune_digits.yaml"),
                                  "classes": [5, 6, 7, 8, 9],
                                  "overrides": {"train.steps": 4, "optim.warmup_steps": 1, "train.global_batch_size": 16,
                                                "train.micro_batch_size": 4, "data.max_train_examples": 64,
                                                "data.max_eval_examples": 64}}},
    }
    path = tmp_path / "ddp_study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_processes_run_a_study_step_like_one(tmp_path):
    path = write_config(tmp_path)
    config = load_study_config(path)
    config.output_dir = str(tmp_path / "one")
    one = run_study(config, progress=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "hf_vit_repro", "study", "data-size", str(path), "--output-dir", str(tmp_path / "two"),
               "--no-progress"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = runs.read_json(tmp_path / "two" / STUDY_JSON)

    (a,), (b,) = one["runs"], two["runs"]
    assert b["compute"]["num_devices"] == 2 and a["compute"]["num_devices"] == 1
    for key in ("train_examples", "steps", "images_seen", "best_step", "stopped_early"):
        assert a[key] == b[key], key
    assert b["compute"]["training_exaflops"] == a["compute"]["training_exaflops"]  # same images, same model
    # Two separately reduced computations: weights agree to ~1e-5 (Adam's division by the root of a
    # near-zero second moment amplifies the all-reduce's summation order), so a prediction may flip.
    assert b["best_validation_accuracy"] == pytest.approx(a["best_validation_accuracy"], abs=1 / 20 + 1e-9)
    for k in ("1", "5"):
        assert b["fewshot"]["accuracy"][k] == pytest.approx(a["fewshot"]["accuracy"][k], abs=0.02), k
    assert b["finetune"]["steps"] == a["finetune"]["steps"] == 4
    assert b["finetune"]["accuracy"] == pytest.approx(a["finetune"]["accuracy"], abs=2 / 64 + 1e-9)
    for stage in ("", "finetune"):
        wa = load_file(str(Path(a["run_dir"]) / stage / runs.FINAL_DIR / "model.safetensors"))
        wb = load_file(str(tmp_path / "two" / "runs" / b["run"] / stage / runs.FINAL_DIR / "model.safetensors"))
        assert wa.keys() == wb.keys()
        # Where a gradient is ~0, Adam's m / sqrt(v) is the ratio of two rounding noises: such a
        # weight may move by up to lr (3e-3) per step differently; the rest agree to 1e-4.
        far = sum(int(((wa[n] - wb[n]).abs() > 1e-4).sum()) for n in wa)
        assert far <= 0.005 * sum(t.numel() for t in wa.values()), far
        for name in wa:
            torch.testing.assert_close(wa[name], wb[name], atol=2e-3, rtol=1e-3)
        assert wa["classifier.weight"].abs().sum() > 0  # trained, not two untouched initialisations
    # one writer: one study.json, one fewshot.json, the plot and the table
    assert (tmp_path / "two" / "data_size.png").is_file() and (tmp_path / "two" / "study.md").is_file()
