"""Few-shot linear evaluation during training (`train.fewshot_eval`): a learning curve of transfer.

big_vision evaluates its few-shot probes while it pretrains (`config.evals.fewshot = get_fewshot_lsr()`
with `config.evals.fewshot.log_steps`, e.g. every 25,000 steps in its ImageNet-21k ViT config); this is
the same as a recipe option:

    train:
      fewshot_eval: {every: 50, tasks: [digits], shots: [1, 5], seeds: [0], classes: [5, 6, 7, 8, 9], at_start: true}

Every `every` updates, after the last one (or the one early stopping ends the run at) and, with
`at_start: true`, once before the first update (step 0: the model at initialisation, the
no-pretraining reference; big_vision's `itstime(first=True)` evaluates after update 1 instead), the
current model (the training weights, its head unused) is scored by `evaluation.fewshot_evaluate`
(big_vision's protocol: exactly k images per class of the task's train split, least squares with l2
2^10 unless `l2_reg` says otherwise, the test split, here capped at `max_test_examples` when given;
`classes` keeps only those label ids of every task, relabelled 0..K-1, as `data.classes` and
`data.select_classes` do) and each task's mean accuracy per shot count is logged to the run's
trackers as `fewshot/<task>/<k>shot` at that step and appended to `logs/fewshot_curve.jsonl` (one
line per evaluation: {"step", "<task>/<k>shot": accuracy, ...}, where <task> is fewshot.json's name
for it, e.g. "digits[5,6,7,8,9]" with classes; trackers get "digits_5-6-7-8-9", which every tracker
accepts). A run that starts afresh empties the file; a resumed run drops the lines after its
checkpoint (like the training log) and does not evaluate step 0 again. The evaluations run under
their own random state (`torch.random.fork_rng`): a run trains the same with or without them (tested).
Every process computes the features (the model may be sharded); only the main process writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import runs

CURVE_FILE = "fewshot_curve.jsonl"
#: `train.fewshot_eval` keys -> what they are, for the error message.
OPTIONS = {
    "every": "updates between evaluations (> 0)",
    "tasks": "registry tasks or local folders with train and test splits",
    "shots": "images per class, default [1, 5]",
    "seeds": "draws of the shots to average, default [0]",
    "l2_reg": "the least-squares penalty, default 2^10 (big_vision's)",
    "max_test_examples": "score at most this many test images (null: all)",
    "classes": "label ids of each task to keep, relabelled 0..K-1 (null: all), as data.classes",
    "at_start": "also evaluate before the first update (step 0, the model at initialisation), default false",
}
DEFAULTS: dict[str, Any] = {"shots": [1, 5], "seeds": [0], "l2_reg": 2.0**10, "max_test_examples": None,
                            "classes": None, "at_start": False}


def _whole_numbers(value, minimum: int) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value))


def fewshot_problem(options: Mapping[str, Any]) -> str | None:
    """What is wrong with `train.fewshot_eval` ({} is off), or None."""
    if not options:
        return None
    if not isinstance(options, Mapping):
        return f"`train.fewshot_eval` must be a mapping ({', '.join(OPTIONS)}), got {options!r}."
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        return f"`train.fewshot_eval` has no key {unknown[0]!r}; its keys: " + "; ".join(f"{k}: {w}" for k, w in OPTIONS.items())
    every = options.get("every")
    if not isinstance(every, int) or isinstance(every, bool) or every <= 0:
        return f"`train.fewshot_eval.every` must be a whole number of updates > 0, got {every!r}."
    tasks = options.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        return f"`train.fewshot_eval.tasks` must list at least one task (e.g. [digits]), got {tasks!r}."
    if not _whole_numbers(options.get("shots", DEFAULTS["shots"]), 1):
        return f"`train.fewshot_eval.shots` must list whole numbers >= 1, got {options.get('shots')!r}."
    if not _whole_numbers(options.get("seeds", DEFAULTS["seeds"]), 0):
        return f"`train.fewshot_eval.seeds` must list whole numbers >= 0, got {options.get('seeds')!r}."
    l2 = options.get("l2_reg", DEFAULTS["l2_reg"])
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 <= 0:
        return f"`train.fewshot_eval.l2_reg` must be a number > 0, got {l2!r}."
    cap = options.get("max_test_examples")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0):
        return f"`train.fewshot_eval.max_test_examples` must be null or a whole number > 0, got {cap!r}."
    classes = options.get("classes")
    from ..data import classes_problem

    if classes is not None and (problem := classes_problem(classes)):
        return f"`train.fewshot_eval.classes` {problem}"
    if not isinstance(options.get("at_start", False), bool):
        return f"`train.fewshot_eval.at_start` must be true or false, got {options.get('at_start')!r}."
    return None


def tracker_name(task: str, classes) -> str:
    """A task's name in the trackers' keys: without brackets and commas, which some trackers refuse (MLflow)."""
    return task if classes is None else f"{task}_{'-'.join(str(int(c)) for c in classes)}"


class FewshotCurve:
    """The few-shot evaluations of one run (`train.fewshot_eval`); the loop asks `due(step)` after
    every update and then calls `evaluate(model, accelerator, step)`."""

    def __init__(self, options: Mapping[str, Any], recipe, run_dir: Path, main: bool):
        self.options = {**DEFAULTS, **options}
        self.recipe, self.main = recipe, main
        self.path = Path(run_dir) / runs.LOGS_DIR / CURVE_FILE
        self._data: dict[str, tuple[Any, Any]] = {}

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.options["every"] == 0 or step == total_steps

    def resume_at(self, step: int) -> None:
        """Drop the lines of evaluations after `step` (logged by a session that died after its
        checkpoint); at step 0 (a run that starts afresh) drop them all."""
        if not self.main or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if step > 0 and line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def start(self, model, accelerator, step: int) -> None:
        """Where a session begins: trim the file to `step` (`resume_at`) and, for a run that starts
        afresh with `at_start`, evaluate the model at initialisation (step 0)."""
        self.resume_at(step)
        if step == 0 and self.options["at_start"]:
            self.evaluate(model, accelerator, 0)

    def _datasets(self, task: str):
        if task not in self._data:
            from ..data import load_task

            data_dir = self.recipe.data.data_dir if task == self.recipe.data.task else None
            train, test = load_task(task, "train", data_dir), load_task(task, "test", data_dir)
            classes = self.options["classes"]
            if classes is not None:
                train, test = _select(train, classes, task, "train"), _select(test, classes, task, "test")
            cap = self.options["max_test_examples"]
            if cap is not None and len(test) > cap:
                test = test.select(range(cap))
            self._data[task] = (train, test)
        return self._data[task]

    def evaluate(self, model, accelerator, step: int) -> dict[str, float]:
        """Score the current model on every task; log and return {"<task>/<k>shot": mean accuracy}."""
        import torch

        from ..evaluation import fewshot_evaluate
        from ..evaluation.fewshot import fewshot_task_name

        network = accelerator.unwrap_model(model)
        was_training = network.training
        classes = self.options["classes"]
        values: dict[str, float] = {}
        logged: dict[str, float] = {}
        # its own random state: whatever an evaluation might draw from torch's generator (today it
        # draws nothing) never shifts the training's dropout and drop-path draws
        devices = [accelerator.device.index or 0] if accelerator.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                for task in self.options["tasks"]:
                    train, test = self._datasets(task)
                    results = fewshot_evaluate(
                        network, train, test, self.options["shots"], self.options["seeds"],
                        l2_reg=float(self.options["l2_reg"]), mean=self.recipe.data.mean, std=self.recipe.data.std,
                        progress=False, precision="fp32",
                    )
                    values.update({f"{fewshot_task_name(task, classes)}/{k}shot": float(r["mean"]) for k, r in results.items()})
                    logged.update({f"fewshot/{tracker_name(task, classes)}/{k}shot": float(r["mean"])
                                   for k, r in results.items()})
        finally:
            network.train(was_training)
        if self.recipe.run.trackers:
            accelerator.log(logged, step=step)
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        return values


def _select(dataset, classes, task: str, split: str):
    """`dataset` restricted to `classes` (`data.select_classes`), a bad label id a `RecipeError` naming the option."""
    from ..data import DataError, select_classes

    from .recipe import RecipeError

    try:
        return select_classes(dataset, classes)
    except DataError as err:
        raise RecipeError(f"`train.fewshot_eval.classes` on {task}/{split}: {err}; list label ids the task has.") from None


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluations `logs/fewshot_curve.jsonl` of a run folder holds, in step order ([] without one)."""
    path = Path(run_dir) / runs.LOGS_DIR / CURVE_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
