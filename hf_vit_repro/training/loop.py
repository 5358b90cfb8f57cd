"""The one training loop: pretraining and fine-tuning with Accelerate, read from a typed recipe.

The story of one run (`train`), top to bottom: accelerator -> resume point -> data -> model ->
optimizer -> schedule -> prepare -> resume -> loop -> save the final model -> evaluate it ->
summary -> publish. Only the main process writes files (Accelerate's checkpoint writes one RNG
file per process).

Surprises, each handled where it happens below:

- The global batch is `micro_batch_size x processes x accumulation steps`; accumulation is
  derived, and a global batch that does not divide is an error, not a silent change.
- The micro-batch losses are divided by the accumulation steps before `backward`, so k
  micro-batches give exactly the gradient of one k-times larger batch (tested).
- Exact resume: the data order and every augmentation are functions of (seed, epoch, row), the
  position inside the epoch is recomputed from the step (`distributed.micro_batches`), and
  Accelerate restores model, optimizer, scheduler and RNG state, so an interrupted and resumed
  run ends with the same weights as an uninterrupted one (tested on CPU).
- A NaN/inf loss stops the run before that update is applied (`TrainingDivergedError`).

What is learned is the objective's (`objectives.objective_for(recipe)`: a micro-batch's loss, what
the loader adds to each image, the evaluation); the loop is the same for all of them. The
classification evaluation is `hf_vit_repro.evaluation.classification.evaluate_model`, a module
below training: the VTAB runner, which runs recipes, sits above it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from .build import build_data, build_model, load_checkpoint_config, resolve_checkpoint
from .checkpoints import (
    check_checkpoint_compatible,
    check_checkpoint_layout,
    hold_run_dir,
    read_counters,
    resume_point,
    save_checkpoint,
    save_final_model,
)
from .compute import compute_record, device_description
from .distributed import (
    StopRequest, describe_distribution, finish_trackers, is_sharded, make_accelerator, micro_batches,
)
from .early_stopping import EarlyStopping
from .fewshot_curve import FewshotCurve
from . import peft_methods
from .objectives import objective_for
from .optim import EMA, build_optimizer, build_scheduler
from .recipe import SECTIONS, Recipe, RecipeError

#: One JSON line per logged step: {"step", "loss", "lr", "grad_norm", "images_per_s"}.
TRAIN_LOG = "train_log.jsonl"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the bad update was applied."""


@dataclass
class TrainState:
    """What callbacks see after every update (on every process)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    run_dir: Path
    checkpoint: Path | None = None


@dataclass
class TrainResult:
    """What `train` returns: the run folder and the figures of its summary."""

    run_dir: Path
    steps: int
    final_train_loss: float | None
    eval_accuracy: float | None  # the objective's accuracy metric (masked patch prediction: of the colours)
    train_time_s: float
    num_parameters: int
    losses: list[tuple[int, float]]
    completed: bool = True
    interrupted: bool = False
    trainable_parameters: int | None = None  # what `train.method` trains (all of them for `full`)


#: What publishes a finished run (`run.push_to_hub`): called as `publish(run_dir, repo_id)` on the main
#: process; `hf_vit_repro.hub.push_run` (passed in by `vit-repro train`).
Publisher = Callable[[Path, str], Any]


def _default_command(recipe: Recipe) -> str:
    source = getattr(recipe, "source", None)
    return f"vit-repro train {shlex.quote(str(source or recipe.output_dir / runs.RECIPE))}"


def train(
    recipe: Recipe,
    *,
    train_dataset=None,
    eval_dataset=None,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    command: str | None = None,
    publish: Publisher | None = None,
) -> TrainResult:
    """Run one recipe (no sweep: see `run_recipe`) and write its run folder.

    `train_dataset` / `eval_dataset` replace the recipe's data (any `datasets.Dataset` with
    "image" and "label"; "image" alone for masked patch prediction). `callbacks` run after every
    update on every process. `publish(run_dir, repo_id)` publishes the finished run when the recipe
    sets `run.push_to_hub` (on the main process): `hf_vit_repro.hub.push_run`, which `vit-repro
    train` passes; training itself never imports the hub (DESIGN.md's order). Raises `RecipeError`
    for bad input (`run.push_to_hub` without `publish` included) before the first update,
    `TrainingDivergedError` if the loss stops being finite (the last checkpoint stays the last
    good one).
    """
    import torch

    recipe.validate()
    if recipe.run.push_to_hub and publish is None:
        raise RecipeError(
            "`run.push_to_hub: true` needs a publisher: call train / run_recipe with publish=hf_vit_repro.hub.push_run "
            "(`vit-repro train` does), or set run.push_to_hub=false and push later with `vit-repro push`."
        )
    threads = torch.get_num_threads()
    if recipe.run.torch_threads:
        torch.set_num_threads(recipe.run.torch_threads)
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.enter_context(runs.library_progress_bars(recipe.run.progress_bar))  # off means all bars
            return _train(recipe, train_dataset, eval_dataset, callbacks, command, cleanup, publish)
    finally:
        torch.set_num_threads(threads)


def _train(recipe, train_dataset, eval_dataset, callbacks, command, cleanup: contextlib.ExitStack,
           publish: Publisher | None) -> TrainResult:
    import torch
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from ..data import make_dataloader

    r, t, o = recipe.run, recipe.train, recipe.optim
    run_dir = recipe.output_dir
    accelerator = make_accelerator(recipe, run_dir)
    main = accelerator.is_main_process
    n_proc = accelerator.num_processes
    per_step = t.micro_batch_size * n_proc
    if t.global_batch_size % per_step:
        raise RecipeError(
            f"train.global_batch_size {t.global_batch_size} is not a multiple of micro_batch_size x processes = "
            f"{t.micro_batch_size} x {n_proc}; change one of them."
        )
    accumulation = t.global_batch_size // per_step
    say = print if main else (lambda *args, **kwargs: None)

    # ---- the run folder is this run's alone; then the resume decision
    cleanup.enter_context(hold_run_dir(accelerator, run_dir, f"training {recipe.name}"))
    checkpoint = resume_point(recipe, log=say)

    # ---- data and model (a checkpoint to start from is checked first: it is cheaper than data)
    if recipe.model.init_from is not None:
        load_checkpoint_config(resolve_checkpoint(recipe.model.init_from))
    set_seed(t.seed, deterministic=r.deterministic)
    objective = objective_for(recipe)
    data = build_data(recipe, train_dataset, eval_dataset)
    stopper = EarlyStopping.from_recipe(recipe, data.eval is not None)
    total_steps = t.steps or max(1, math.ceil(t.epochs * len(data.train) / t.global_batch_size))
    if o.warmup_steps >= total_steps > 1:
        raise RecipeError(f"optim.warmup_steps ({o.warmup_steps}) must be smaller than the run's {total_steps} steps.")
    model = build_model(recipe, data.num_classes, data.id2label)
    if stopper is not None and not objective.scores_accuracy(model.config):
        raise RecipeError(
            f"`train.early_stopping_patience` keeps the model of the best validation {objective.accuracy_metric}, "
            f"which this model's target ({model.config.mpp_target}) does not have: set it to null."
        )
    if checkpoint is not None:
        check_checkpoint_compatible(checkpoint, model)
        check_checkpoint_layout(checkpoint, sharded=is_sharded(accelerator))
    trainable_parameters, num_parameters = peft_methods.trainable_parameters(model)

    train_dl = make_dataloader(
        data.train, data.train_transform, t.micro_batch_size, shuffle=True, num_workers=r.num_workers,
        seed=t.seed, drop_last=True, strict=recipe.data.strict, repeats=recipe.data.repeated_aug,
        **objective.loader_options(model),
    )
    optimizer = build_optimizer(model, o, sharded=is_sharded(accelerator))
    scheduler = build_scheduler(optimizer, total_steps, o.warmup_steps, o.schedule)
    model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)
    ema = EMA(accelerator.unwrap_model(model), t.ema_decay, t.ema_correction) if t.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # ---- run folder, trackers
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / runs.RECIPE).write_text(recipe.to_yaml(), encoding="utf-8")
    accelerator.wait_for_everyone()
    if r.trackers:
        hyper = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for s in SECTIONS for k, v in dataclasses.asdict(getattr(recipe, s)).items()}
        try:
            accelerator.init_trackers(recipe.name, config=hyper, init_kwargs=r.tracker_kwargs or None)
        except TypeError as err:  # an option the tracker's init does not take
            raise RecipeError(f"`run.tracker_kwargs`: a tracker refused its options ({err}); use the keyword "
                              "arguments of that tracker's own init.") from None

    step, images_seen, train_time, skipped_images = 0, 0, 0.0, 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = read_counters(checkpoint)
        step, images_seen, train_time = state["step"], state["images_seen"], state["train_time_s"]
        skipped_images = state.get("skipped_images", 0)
        if stopper is not None:
            stopper.restore(state)
        say(f"Resuming {recipe.name} from {checkpoint} (step {step}/{total_steps}).")
    log_file = run_dir / runs.LOGS_DIR / TRAIN_LOG
    if main:
        truncate_log(log_file, step)  # steps after the checkpoint were logged by the session that died
    fewshot = FewshotCurve(t.fewshot_eval, recipe, run_dir, main) if t.fewshot_eval else None
    if fewshot is not None:
        fewshot.start(model, accelerator, step)  # trims the curve to the checkpoint; step 0 with `at_start`

    # ---- the loop
    batches = micro_batches(accelerator, train_dl, step * accumulation)
    stop = cleanup.enter_context(StopRequest(say))

    def skipped_so_far() -> int:  # unreadable training images skipped by this session, all processes
        count = torch.tensor(train_dl.collate_fn.num_skipped, device=accelerator.device)
        return int(accelerator.reduce(count, reduction="sum"))

    losses: list[tuple[int, float]] = []
    last_checkpoint = checkpoint
    last_loss = None
    bar = tqdm(total=total_steps, initial=step, desc=f"train {recipe.name}", unit="step",
               disable=not (main and r.progress_bar), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)  # logs get a line every few seconds
    session_start, session_images, start_step = time.perf_counter(), 0, step
    model.train()
    while step < total_steps and not (stopper is not None and stopper.stopped):
        tic = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, images, stop
        for micro in range(accumulation):
            batch = next(batches)
            sync = contextlib.nullcontext() if micro == accumulation - 1 else accelerator.no_sync(model)
            with sync:
                if len(batch["pixel_values"]) == 0:  # every image of the batch was unreadable (skipped)
                    loss = sum(p.sum() for p in model.parameters()) * 0.0
                else:
                    # (seed, update, micro-batch, process): what a step's random draws (MixUp) are seeded by
                    loss = objective.step_loss(model, batch, (t.seed, step, micro, accelerator.process_index))
                # Mean of k micro-batch means = the mean over the k-times larger batch.
                accelerator.backward(loss / accumulation)
            totals[0] += loss.detach().double() / accumulation
            totals[1] += len(batch["pixel_values"])
        totals[2] = float(stop.requested)
        totals = accelerator.reduce(totals, reduction="sum")
        mean_loss = float(totals[0]) / n_proc
        if not math.isfinite(mean_loss):
            bar.close()
            where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
            raise TrainingDivergedError(
                f"{recipe.name}: the training loss became {mean_loss} at step {step + 1} (before that update was "
                f"applied); {where}. Lower optim.lr, raise optim.warmup_steps or check the data."
            )
        grad_norm = None
        if o.grad_clip_norm:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), o.grad_clip_norm))
        lr = max(scheduler.get_last_lr())  # the base rate: the head's group (layer decay lowers the others)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        step += 1
        images = int(totals[1])
        images_seen += images
        session_images += images
        elapsed = time.perf_counter() - tic
        train_time += elapsed
        last_loss = mean_loss
        losses.append((step, mean_loss))
        images_per_s = session_images / max(time.perf_counter() - session_start, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}")
        if step % r.log_every == 0 or step == total_steps:
            record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm, "images_per_s": images_per_s}
            if main:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if r.trackers:
                accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}, step=step)
        if (stopper.due(step, total_steps) if stopper is not None
                else t.eval_every and step % t.eval_every == 0 and step < total_steps and data.eval is not None):
            metrics = objective.evaluate(model, data.eval, recipe, accelerator)["metrics"]
            if r.trackers:
                accelerator.log({f"eval/{data.eval_name}/{k}": v for k, v in metrics.items()}, step=step)
            if stopper is not None and stopper.update(step, metrics[objective.accuracy_metric]):
                save_final_model(accelerator, model, recipe, runs.BEST_DIR)  # the best validation model so far
        if fewshot is not None and (fewshot.due(step, total_steps) or (stopper is not None and stopper.stopped)):
            fewshot.evaluate(model, accelerator, step)
        saved = None
        stopped_early = stopper is not None and stopper.stopped
        interrupted = bool(totals[2]) and step < total_steps and not stopped_early
        stopping = interrupted or (bool(r.stop_after) and step - start_step >= r.stop_after and step < total_steps
                                   and not stopped_early)
        if (r.checkpoint_every and step % r.checkpoint_every == 0) or step == total_steps or stopping or stopped_early:
            counters = {"step": step, "images_seen": images_seen, "train_time_s": train_time,
                        "micro_batches_per_process": step * accumulation, "total_steps": total_steps,
                        "skipped_images": skipped_images + skipped_so_far(),
                        **(stopper.state() if stopper is not None else {})}
            saved = last_checkpoint = save_checkpoint(accelerator, model, run_dir, counters, r.keep_checkpoints)
        for callback in callbacks:
            callback(TrainState(step, total_steps, mean_loss, lr, run_dir, saved))
        if stopping:
            bar.close()
            if r.trackers:
                finish_trackers(accelerator)
            if interrupted:
                say(f"{recipe.name}: stopped at step {step}/{total_steps} (interrupted); run the same command again "
                    f"(run.resume=auto) to continue from {saved}.")
            else:
                say(f"{recipe.name}: stopped after {r.stop_after} steps at step {step}/{total_steps} "
                    f"(run.stop_after); run again with resume=auto to continue from {saved}.")
            return TrainResult(run_dir, step, last_loss, None, train_time, num_parameters, losses, completed=False,
                               interrupted=interrupted, trainable_parameters=trainable_parameters)
    bar.close()

    # ---- save the final model first (an evaluation that fails must not cost the weights), then
    # evaluate it and write the summary and metrics
    if ema is not None:
        ema.copy_to(accelerator.unwrap_model(model))
    if stopper is not None:  # final/ is the best validation model
        stopper.load_best(accelerator, model, run_dir)
    final_dir = save_final_model(accelerator, model, recipe)
    accuracy = evaluation = None
    if data.eval is not None:
        evaluation = objective.evaluate(model, data.eval, recipe, accelerator)
        accuracy = evaluation["metrics"].get(objective.accuracy_metric)
        if r.trackers:
            accelerator.log({f"eval/{data.eval_name}/{k}": v for k, v in evaluation["metrics"].items()}, step=step)
    if last_loss is None and checkpoint is not None:  # resumed a finished run: read its last logged loss
        last_loss = _last_logged_loss(log_file)
    summary = {
        "name": recipe.name,
        "mode": recipe.mode,
        "objective": objective.name,
        "steps": step,
        "images_seen": images_seen,
        "train_time_s": round(train_time, 3),
        "hardware": {
            "device": _device_name(accelerator.device),
            "num_processes": n_proc,
            "mixed_precision": accelerator.mixed_precision,
            **describe_distribution(accelerator, model),
        },
        "command": command or _default_command(recipe),
        "final_train_loss": last_loss,
        "skipped_images": skipped_images + skipped_so_far(),
        "num_parameters": num_parameters,
        "method": recipe.train.method,
        "trainable_parameters": trainable_parameters,
        "global_batch_size": t.global_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_examples": len(data.train),
        "compute": compute_record(accelerator.unwrap_model(model).config, recipe.model.image_size, images_seen,
                                  train_time, n_proc, device_description(accelerator.device)),
        **({"early_stopping": stopper.summary(step)} if stopper is not None else {}),
        "eval": None if evaluation is None else {"split": data.eval_name, **evaluation["metrics"],
                                                 "num_images": evaluation["num_images"],
                                                 "num_skipped": evaluation["num_skipped"],
                                                 "precision": evaluation.get("precision", {}).get("precision")},
    }
    if main:
        runs.write_json(final_dir / runs.TRAIN_SUMMARY, summary)
        runs.write_json(run_dir / runs.TRAIN_SUMMARY, summary)
        if evaluation is not None:
            task = recipe.data.task
            split = data.eval_name if not recipe.data.holdout else "holdout"
            runs.write_json(
                runs.metrics_path(run_dir, task, split),
                runs.metrics_record(
                    checkpoint=str(final_dir), task=task, dataset=data.dataset_name, split=split,
                    resolution=recipe.model.image_size, num_images=evaluation["num_images"],
                    metrics=evaluation["metrics"], per_class_accuracy=evaluation.get("per_class_accuracy"),
                    num_skipped=evaluation["num_skipped"], objective=objective.name,
                    **({"precision": evaluation["precision"]["precision"]} if "precision" in evaluation else {}),
                    image_processor=_saved_image_processor(final_dir),
                ),
            )
    accelerator.wait_for_everyone()
    if r.trackers:
        finish_trackers(accelerator)
    if r.push_to_hub and main:
        publish(run_dir, r.hub_repo_id)
    return TrainResult(run_dir, step, last_loss, accuracy, train_time, num_parameters, losses,
                       trainable_parameters=trainable_parameters)


def _saved_image_processor(final_dir: Path) -> dict:
    """Class and backend of the image processor `save_final_model` wrote, as `AutoImageProcessor`
    (and so `pipeline`) loads it: what the run's metrics file records beside its numbers."""
    from transformers import AutoImageProcessor

    from ..data import describe_image_processor

    return describe_image_processor(AutoImageProcessor.from_pretrained(final_dir), f"{final_dir}/preprocessor_config.json")


def truncate_log(log_file: Path, step: int) -> None:
    """Drop the records of steps after `step` from the training log (atomically): a run resumed
    from its checkpoint at `step` logs those steps again."""
    if not log_file.is_file():
        return
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = log_file.with_name(f".{log_file.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, log_file)


def _last_logged_loss(log_file: Path) -> float | None:
    if not log_file.is_file():
        return None
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["loss"] if lines else None


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type

