"""FSDP2 on the CPU: `accelerate launch --config_file recipes/accelerate/fsdp.yaml` with two
processes (gloo) shards the model (every ViTReproLayer a shard unit), trains the same loss curve
and weights as one unsharded process, writes sharded checkpoints atomically (one shard file per
process; a crash between the shard writes and the rename leaves nothing `resume=auto` picks)
that a stopped or killed run continues from bit for bit, and gathers a normal `from_pretrained`
folder at the end. A launch that asks for FSDP or several processes and cannot have them is never
silent."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from hf_vit_repro import ViTReproForImageClassification, runs, training
from hf_vit_repro.training import RecipeError, load_recipe, train
from hf_vit_repro.training.checkpoints import _saved_shapes, checkpoint_problem
from hf_vit_repro.training.distributed import launch_warnings

from .conftest import run_without_package
from .launch_fixtures import LAUNCH_CONFIGS, TRAIN, accelerate_launch, final_weights, finish, recipe_file, run, start

# Dropout off (the variant's default), EMA on (its sharded state is saved, gathered and resumed
# too), evaluation at the end (data-parallel over the sharded model), checkpoints every 2 steps,
# micro-batches of 4 (2 per update and process: gradient sync skipped on every other one).
CHANGES = {"data.eval_split": "test", "train.ema_decay": 0.5, "train.micro_batch_size": 4, "run.checkpoint_every": 2,
           "run.mixed_precision": "no"}
# fsdp.yaml as a user runs it, on 2 CPU processes instead of 8 GPUs (fp32: the recipe says so).
FSDP = ("--num_processes", "2")
# FSDP2's units as Accelerate's FSDP2 path makes them from fsdp.yaml: its wrap class (one per
# encoder block), the input embedding and the final norm (carved out by Accelerate), the root.
UNITS = {"LayerNorm": 1, "ViTReproForImageClassification": 1, "ViTReproLayer": 2, "ViTReproPatchEmbeddings": 1}
KILL_AFTER_SAVE = Path(__file__).with_name("kill_after_save.py")


def fsdp_train(recipe_path, out_dir, *overrides, script=TRAIN):
    return accelerate_launch("fsdp.yaml", *FSDP, *script, str(recipe_path), f"run.output_dir={out_dir}", *overrides)


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory):
    return recipe_file(tmp_path_factory.mktemp("fsdp"), "fsdp", **CHANGES)


@pytest.fixture(scope="module")
def sharded_run(recipe_path):
    """An uninterrupted 2-process FSDP2 run."""
    out = recipe_path.parent / "sharded"
    run(fsdp_train(recipe_path, out))
    return out


def losses(run_dir):
    lines = (run_dir / runs.LOGS_DIR / training.TRAIN_LOG).read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_trains_like_one_process(sharded_run, recipe_path, tmp_path):
    summary = runs.read_json(sharded_run / runs.TRAIN_SUMMARY)
    hardware = summary["hardware"]
    assert hardware["distributed_type"] == "FSDP" and hardware["num_processes"] == 2 and hardware["num_nodes"] == 1
    assert hardware["sharding"] == {"fsdp_version": 2, "units": UNITS, "state_dict_type": "SHARDED_STATE_DICT"}
    assert hardware["warnings"] == [] and summary["gradient_accumulation_steps"] == 2

    # Checkpoints: model and optimizer as torch.distributed.checkpoint folders, one shard file
    # per process; every matrix of the encoder blocks is stored as two halves, one per process.
    checkpoints = training.list_checkpoints(sharded_run)
    assert [c.name for c in checkpoints] == ["step_0000006", "step_0000007"]
    for folder in (training.SHARDED_MODEL_DIR, "optimizer_0"):
        files = sorted(p.name for p in (checkpoints[-1] / folder).iterdir())
        assert files == [".metadata", "__0_0.distcp", "__1_0.distcp"], files
    assert not (checkpoints[-1] / "model.safetensors").exists()
    rng_files = {p.name for p in checkpoints[-1].glob("random_states_*.pkl")}
    assert rng_files == {"random_states_0.pkl", "random_states_1.pkl"}
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(checkpoints[-1] / training.SHARDED_MODEL_DIR)).read_metadata()
    block_weights = {k: m for k, m in metadata.state_dict_metadata.items() if ".layers." in k and k.endswith("weight")}
    assert block_weights and all(len(m.chunks) == 2 for m in block_weights.values())
    # A damaged shard is found from the metadata, so resume=auto can fall back past it.
    assert checkpoint_problem(checkpoints[-1]) is None
    damaged = shutil.copytree(checkpoints[-1], tmp_path / "damaged")
    shard = damaged / training.SHARDED_MODEL_DIR / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    assert "pytorch_model_fsdp_0/__1_0.distcp is truncated" in checkpoint_problem(damaged)

    # One unsharded process, the same global batch: the same losses and (Adam amplifies the
    # different summation order of the reduce-scatter where a gradient is ~0) weights within
    # 1e-4 (updates here are ~1e-2; measured difference 3e-5).
    one = train(load_recipe(recipe_path, [f"run.output_dir={tmp_path / 'one'}"]))
    assert losses(sharded_run) == pytest.approx([loss for _, loss in one.losses], rel=1e-5, abs=1e-6)
    a, b = final_weights(one.run_dir), final_weights(sharded_run)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-4, rtol=1e-3)
    assert one.losses[-1][1] < one.losses[0][1] - 0.01  # the weights moved: not two untouched initialisations
    assert summary["eval"]["accuracy"] == pytest.approx(one.eval_accuracy, abs=0.01)  # 3 of 300 test images

    # final/ is a normal checkpoint: the same files as a one-process run's (the shipped model code,
    # no FSDP sources, auto_map naming the plain classes), loadable where the package is not installed.
    final = sharded_run / runs.FINAL_DIR
    assert sorted(p.name for p in final.iterdir()) == sorted(p.name for p in (one.run_dir / runs.FINAL_DIR).iterdir())
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["ViTReproForImageClassification"]
    assert all(v.startswith(("modeling_vit_repro.", "configuration_vit_repro.")) for v in config["auto_map"].values())
    remote = run_without_package(
        f"""
        import json, torch
        from transformers import pipeline, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(final)!r}, trust_remote_code=True)
        classify = pipeline("image-classification", model={str(final)!r}, trust_remote_code=True)
        from PIL import Image
        print(json.dumps({{"cls": type(model).__name__, "n": len(classify(Image.new("RGB", (16, 16))))}}))
        """,
        tmp_path,
    )
    assert remote["cls"] == "ViTReproForImageClassification" and remote["n"] >= 1
    model, info = ViTReproForImageClassification.from_pretrained(sharded_run / runs.FINAL_DIR, output_loading_info=True)
    assert not any(info.values()), info
    reference = ViTReproForImageClassification.from_pretrained(one.run_dir / runs.FINAL_DIR)
    pixels = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, reference(pixels).logits, atol=1e-4, rtol=1e-3)

    # The weights are checked against the checkpoint before anything is loaded: the same run
    # continued without sharding is refused, naming why.
    with pytest.raises(RecipeError, match="written by a sharded"):
        train(load_recipe(recipe_path, [f"run.output_dir={sharded_run}"]))
    assert _saved_shapes(checkpoints[-1]) == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


@pytest.mark.slow
def test_fsdp2_checkpoints_stop_kill_and_resume_bit_for_bit(sharded_run, recipe_path, tmp_path):
    out = tmp_path / "resumed"
    # Session 1 stops after 4 steps (run.stop_after) with a sharded checkpoint.
    log = run(fsdp_train(recipe_path, out, "run.stop_after=4"))
    assert "stopped after 4 steps" in log
    # Session 2 resumes and is killed at step 6, after both processes wrote their shards of
    # checkpoint 6 and before it got its final name.
    log = finish(start(fsdp_train(recipe_path, out, script=[str(KILL_AFTER_SAVE), "6", "1", "train"])), ok=False)
    assert "Resuming fsdp" in log and "process 1: killed after writing" in log
    partial = out / runs.CHECKPOINTS_DIR / ".step_0000006.tmp"
    assert {p.name for p in (partial / training.SHARDED_MODEL_DIR).glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert training.latest_checkpoint(out).name == "step_0000004"
    # Session 3 continues from step 4 (the partial checkpoint is ignored, then replaced) and ends
    # bit for bit where the uninterrupted run did: same process layout, same kernels.
    log = run(fsdp_train(recipe_path, out))
    assert f"from {out / runs.CHECKPOINTS_DIR / 'step_0000004'}" in log
    assert not partial.exists()
    a, b = final_weights(sharded_run), final_weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert runs.read_json(out / runs.TRAIN_SUMMARY)["eval"] == runs.read_json(sharded_run / runs.TRAIN_SUMMARY)["eval"]


def tiny_recipe(tmp_path, *overrides):
    overrides = [f"run.output_dir={tmp_path / 'run'}", "train.steps=1", "optim.warmup_steps=0", "data.eval_split=null",
                 *overrides]
    return load_recipe(recipe_file(tmp_path, "fsdp", **CHANGES), overrides)


def test_fsdp_asked_for_in_one_process_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(RecipeError, match="FSDP was asked for .* single process without a process group"):
        train(tiny_recipe(tmp_path))
    assert not (tmp_path / "run").exists()


def test_fsdp_config_with_cpu_is_refused_not_silently_unsharded(tmp_path, monkeypatch):
    """`accelerate launch --config_file fsdp.yaml --cpu` reads the FSDP config, then starts one plain
    process that trained unsharded without a word (issue 24). The launch is read back from the
    parent's command line and refused before anything is written; a real launch shows it."""
    from hf_vit_repro.training import distributed

    fsdp = str(LAUNCH_CONFIGS / "fsdp.yaml")
    message = distributed.launch_refusal(["--config_file", fsdp, "--cpu", *TRAIN, "r.yaml"])
    assert "asks for FSDP, but --cpu makes accelerate launch drop it" in message and "Leave out --cpu" in message
    assert distributed.launch_refusal(["--config_file", fsdp, "--num_processes", "2", *TRAIN, "r.yaml"]) is None
    assert distributed.launch_refusal(["--config_file", str(LAUNCH_CONFIGS / "multi_node.yaml"), "--cpu", *TRAIN]) is None
    assert distributed.launch_refusal(["--config_file", fsdp, *TRAIN, "r.yaml", "--cpu"]) is None  # the script's own flag
    assert distributed.launcher_argv() is None  # pytest was not started by accelerate launch

    recipe = tiny_recipe(tmp_path)
    out = run(accelerate_launch("fsdp.yaml", "--cpu", *TRAIN, str(recipe_file(tmp_path, "fsdp", **CHANGES)),
                                f"run.output_dir={tmp_path / 'run'}"), ok=False, timeout=120)
    assert "vit-repro train: error: the launch config" in out and "asks for FSDP, but --cpu" in out
    assert not (tmp_path / "run").exists() and recipe.output_dir == tmp_path / "run"


def test_fsdp1_on_cpu_processes_and_mismatched_checkpoints_are_refused(tmp_path, monkeypatch):
    from accelerate.utils import DistributedType

    from hf_vit_repro.training.distributed import enable_fsdp_on_cpu

    class CpuProcesses:  # what Accelerate builds for 2 torchrun processes without a GPU
        distributed_type, num_processes = DistributedType.MULTI_CPU, 2

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(RecipeError, match="only FSDP2 runs there"):
        enable_fsdp_on_cpu(CpuProcesses())
    unsharded = tmp_path / "step_0000002"
    unsharded.mkdir()
    (unsharded / "model.safetensors").write_bytes(b"")
    training.check_checkpoint_layout(unsharded, sharded=False)
    with pytest.raises(RecipeError, match="written by an unsharded run"):
        training.check_checkpoint_layout(unsharded, sharded=True)


def test_accelerate_cpu_launch_of_several_processes_warns_and_is_recorded(tmp_path, monkeypatch, capsys):
    # The environment Accelerate's own launcher gives `accelerate launch --cpu --num_processes 2`:
    # one process (its command starts the script directly, no torchrun), MASTER_ADDR for the 2.
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    def launcher_env(*argv):
        args, _, _ = _validate_launch_command(launch_command_parser().parse_args([*argv, "x.py"]))
        command, env = prepare_simple_launcher_cmd_env(args)
        assert "torch.distributed.run" not in command and "torchrun" not in command
        return env

    class OneProcess:
        num_processes = 1

    for key, value in launcher_env("--cpu").items():
        monkeypatch.setenv(key, value)
    assert launch_warnings(OneProcess()) == []
    for key, value in launcher_env("--cpu", "--num_processes", "2").items():
        monkeypatch.setenv(key, value)
    assert "started only one" in launch_warnings(OneProcess())[0]

    shutil.rmtree(tmp_path / "run", ignore_errors=True)
    result = train(tiny_recipe(tmp_path))
    assert "WARNING: accelerate launch was asked for several CPU processes" in capsys.readouterr().err
    hardware = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)["hardware"]
    assert hardware["num_processes"] == 1 and hardware["distributed_type"] == "NO" and hardware["sharding"] is None
    assert hardware["warnings"] == launch_warnings(OneProcess())


def test_sharded_sgd_steps_on_dtensor_parameters(tmp_path):
    # torch's fused SGD has no DTensor rule: fine-tuning (SGD, optim.fused on by default) under
    # FSDP2 would fail at its first step; build_optimizer(sharded=True) takes the unfused update.
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from hf_vit_repro import ViTReproConfig

    from .conftest import tiny_kwargs

    recipe = tiny_recipe(tmp_path, "mode=finetune", "optim.optimizer=sgd", "optim.lr=0.1", "optim.weight_decay=0.0")
    assert recipe.optim.fused
    config = ViTReproConfig(**tiny_kwargs())
    pixels, labels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])

    def one_step(model, optimizer):
        torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits, labels).backward()
        optimizer.step()
        return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach() for n, p in model.named_parameters()}

    torch.manual_seed(0)
    reference = ViTReproForImageClassification(config)
    sharded = [ViTReproForImageClassification(config) for _ in range(2)]
    initial = {n: p.detach().clone() for n, p in reference.named_parameters()}
    for model in sharded:
        model.load_state_dict(reference.state_dict())
    expected = one_step(reference, training.build_optimizer(reference, recipe.optim))
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        for model in sharded:
            fully_shard(model)
        assert isinstance(sharded[0].classifier.weight, DTensor)
        with pytest.raises(NotImplementedError, match="_fused_sgd_"):
            one_step(sharded[0], training.build_optimizer(sharded[0], recipe.optim))
        got = one_step(sharded[1], training.build_optimizer(sharded[1], recipe.optim, sharded=True))
    finally:
        dist.destroy_process_group()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=1e-5)
    assert (expected["classifier.weight"] - initial["classifier.weight"]).abs().max() > 1e-4  # the step moved it


def test_fsdp_sweep_trains_several_sharded_runs_in_one_process(tmp_path, monkeypatch):
    # run_recipe's learning-rate sweep trains three runs in one process. Accelerate keeps FSDP in
    # its per-process state after the first; a second Accelerator built on that had no FSDP plugin,
    # and Accelerate's end_training (trackers on) destroyed the process group after each run.
    # One process in a process group of one (gloo), in this test's own process: FSDP2 over one
    # rank, the same code as over two.
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, PartialState

    from .launch_fixtures import free_port

    launcher = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port()), "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
                "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "ViTReproLayer",
                "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "OMP_NUM_THREADS": "1"}
    for key, value in launcher.items():
        monkeypatch.setenv(key, value)
    before = dict(PartialState._shared_state)
    PartialState._reset_state()
    try:
        recipe = tiny_recipe(tmp_path, "mode=finetune", "optim.optimizer=sgd", "optim.lr_sweep=[0.01,0.1]",
                             "data.val_fraction=0.25", "train.steps=2", "run.trackers=[tensorboard]")
        result = training.run_recipe(recipe)
        # Ending a run's trackers must not end the process group the next run needs.
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._shared_state.update(before)
    assert runs.read_json(result.run_dir / training.SWEEP)["best_lr"] in (0.01, 0.1)
    for member in [*(result.run_dir / training.SWEEP_DIR).iterdir(), result.run_dir]:
        hardware = runs.read_json(member / runs.TRAIN_SUMMARY)["hardware"]
        assert hardware["distributed_type"] == "FSDP" and hardware["sharding"]["units"] == UNITS, member
