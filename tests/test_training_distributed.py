"""Data parallelism on the CPU: two processes (torchrun, gloo; Accelerate's MULTI_CPU) train the
same loss curve and weights as one process with the same global batch, and a two-process run
stopped after a checkpoint and resumed ends with the same weights as an uninterrupted one. Two
"nodes" on one host (`accelerate launch --config_file recipes/accelerate/multi_node.yaml`, one
process each, rendezvous on 127.0.0.1) train the same weights as two processes on one node."""

import json

import pytest
import torch

from hf_vit_repro import runs, training
from hf_vit_repro.training import load_recipe, train

from .launch_fixtures import (
    TRAIN, accelerate_launch, final_weights, finish, free_port, recipe_file, run, start, torchrun,
)

# Micro-batches of 4 in two processes: the no_sync / all-reduce path and the sharded sampler.
MICRO = "train.micro_batch_size=4"


def two_processes(path, *overrides):
    return run(torchrun("--standalone", "--nproc_per_node", "2", *TRAIN, str(path), MICRO, *overrides))


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory):
    return recipe_file(tmp_path_factory.mktemp("ddp"), "ddp")


@pytest.fixture(scope="module")
def one_node(recipe_path):
    """An uninterrupted run of 2 processes on one node."""
    out = recipe_path.parent / "two"
    two_processes(recipe_path, f"run.output_dir={out}")
    return out


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_and_resume_exactly(one_node, recipe_path, tmp_path):
    path = recipe_path
    one = train(load_recipe(path, [f"run.output_dir={tmp_path / 'one'}"]))
    # 48 images = 6 micro-batches per process and epoch, 2 per update: stopped at step 4, the
    # resumed session starts inside the second epoch (the sampler must be pinned three levels
    # deep) and trains steps 5-7, two of them with a learning rate above 0.
    out = two_processes(path, f"run.output_dir={tmp_path / 'resumed'}", "run.stop_after=4")
    assert "stopped after 4 steps" in out and not (tmp_path / "resumed" / runs.FINAL_DIR).exists()
    assert "Resuming ddp" in two_processes(path, f"run.output_dir={tmp_path / 'resumed'}")

    summary = runs.read_json(one_node / runs.TRAIN_SUMMARY)
    assert summary["hardware"]["num_processes"] == 2 and summary["gradient_accumulation_steps"] == 2
    assert summary["hardware"]["distributed_type"] == "MULTI_CPU" and summary["hardware"]["sharding"] is None
    assert summary["images_seen"] == 7 * 16
    lines = (one_node / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    two_losses = [json.loads(line)["loss"] for line in lines]
    assert len(two_losses) == 7
    assert two_losses == pytest.approx([loss for _, loss in one.losses], rel=1e-5, abs=1e-6)
    a, b, c = final_weights(one.run_dir), final_weights(one_node), final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() == c.keys()
    # Adam divides by the root of the squared gradient, so where a gradient is ~0 the different
    # summation order of the all-reduce shows up at ~1e-5 in a weight; updates here are ~1e-2.
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3)
        assert torch.equal(b[name], c[name]), name  # same layout, stopped and resumed: bit for bit
    # The weights moved: the comparison is not between two untouched initialisations.
    assert a["classifier.weight"].abs().sum() > 0


@pytest.mark.slow
def test_two_nodes_on_one_host_match_two_processes_on_one_node(one_node, recipe_path, tmp_path):
    # multi_node.yaml as a user runs it on each machine, here two "machines" of one process each
    # on this host: the static rendezvous at 127.0.0.1, one shared run folder. fp32 (the file
    # says bf16 for GPUs), as the one-node run.
    out, port = tmp_path / "nodes", str(free_port())
    nodes = [
        start(accelerate_launch(
            "multi_node.yaml", "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--mixed_precision", "no",
            *TRAIN, str(recipe_path), MICRO, f"run.output_dir={out}",
        ))
        for rank in (0, 1)
    ]
    logs = [finish(node) for node in nodes]
    assert f"Wrote {out}" in logs[0]
    hardware = runs.read_json(out / runs.TRAIN_SUMMARY)["hardware"]
    assert (hardware["num_nodes"], hardware["num_processes"], hardware["distributed_type"]) == (2, 2, "MULTI_CPU")
    # The last checkpoint holds one RNG file per process, the second written by the other node.
    last = training.latest_checkpoint(out)
    assert {p.name for p in last.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    # Bit for bit: the same two ranks see the same data shards, and gloo reduces two ranks over
    # TCP in the same order whether the rendezvous was standalone or static (same host, same
    # kernels). Machines with other CPUs would differ in the last bits, as any two CPUs do.
    a, b = final_weights(one_node), final_weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


MPP_RECIPE = """
name: ddp_mpp
mode: pretrain
model:
  variant: null
  image_size: 16
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, patch_size: 4}
data: {task: digits, augmentation: finetune, max_train_examples: 48, max_eval_examples: 21}
optim: {optimizer: adamw, lr: 3.0e-3, weight_decay: 0.1, warmup_steps: 1, schedule: cosine}
train: {objective: masked_patch_prediction, steps: 4, global_batch_size: 16, micro_batch_size: 16, eval_batch_size: 4}
run: {checkpoint_every: 0, progress_bar: false, trackers: [], log_every: 1}
"""


def test_masked_patch_prediction_on_two_cpu_processes_matches_one_process(tmp_path):
    # The corruption of every image comes from its own generator in the data pipeline, so both
    # processes see exactly the batches one process sees (crops and corruptions alike); 2 micro-batches
    # per process. (No dropout: its random numbers come from each process's own torch RNG.)
    # The evaluation (21 images in batches of 4 on 2 processes: Accelerate pads the last batch)
    # must count every image once.
    path = tmp_path / "mpp.yaml"
    path.write_text(MPP_RECIPE)
    one = train(load_recipe(path, [f"run.output_dir={tmp_path / 'one'}"]))
    two_processes(path, f"run.output_dir={tmp_path / 'two'}")
    lines = (tmp_path / "two" / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == pytest.approx([loss for _, loss in one.losses],
                                                                          rel=1e-5, abs=1e-6)
    a, b = final_weights(one.run_dir), final_weights(tmp_path / "two")
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("qkv.bias"):
            # The key bias (the middle third) has a true gradient of 0: softmax ignores a shift shared
            # by all keys. Adam scales the rounding noise standing in for it up to steps of any size.
            x, y = torch.cat([x[:32], x[64:]]), torch.cat([y[:32], y[64:]])
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-3, msg=lambda text: f"{name}: {text}")
    assert a["vit.embeddings.mask_token"].abs().sum() > 0  # the [mask] embedding (zero at init) was trained
    evals = [runs.read_json(run / runs.TRAIN_SUMMARY)["eval"] for run in (one.run_dir, tmp_path / "two")]
    assert evals[0]["num_images"] == evals[1]["num_images"] == 21
    for key in ("masked_patch_loss", "masked_patch_accuracy"):
        assert evals[1][key] == pytest.approx(evals[0][key], rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_augmented_run_on_two_cpu_processes_matches_one_process(tmp_path):
    # RandAugment, random erasing and the repeated copies are drawn per image from its own generator,
    # MixUp / CutMix per update from (seed, update): two processes see and mix exactly the batches of
    # one process with the same micro-batches (the partner is the next image in the micro-batch).
    changes = {"data.augmentation": "inception_crop", "data.augment_level": "strong2", "data.cutmix_alpha": 1.0,
               "data.random_erasing": 0.25, "data.repeated_aug": 3}
    path = recipe_file(tmp_path, "augreg", **changes)
    one = train(load_recipe(path, [f"run.output_dir={tmp_path / 'one'}", MICRO]))
    plain = train(load_recipe(recipe_file(tmp_path, "plain"), [f"run.output_dir={tmp_path / 'plain'}", MICRO]))
    # the augmentation is on (the first loss is log 10 in both: the head starts at zero)
    assert [loss for _, loss in one.losses][1:] != pytest.approx([loss for _, loss in plain.losses][1:], rel=1e-3)
    two_processes(path, f"run.output_dir={tmp_path / 'two'}")
    lines = (tmp_path / "two" / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == pytest.approx([loss for _, loss in one.losses],
                                                                          rel=1e-5, abs=1e-6)
