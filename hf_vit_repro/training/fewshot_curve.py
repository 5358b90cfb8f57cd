"""Few-shot linear evaluation during training (`train.fewshot_eval`): a learning curve of transfer.

big_vision evaluates its few-shot probes while it pretrains (`config.evals.fewshot = get_fewshot_lsr()`
with `config.evals.fewshot.log_steps`, e.g. every 25,000 steps in its ImageNet-21k ViT config); this is
the same as a recipe option:

    train:
      fewshot_eval: {every: 50, tasks: [digits], shots: [1, 5], seeds: [0]}

Every `every` updates and after the last one, the current model (the training weights, its head unused)
is scored by `evaluation.fewshot_evaluate` (big_vision's protocol: exactly k images per class of the
task's train split, least squares with l2 2^10 unless `l2_reg` says otherwise, the test split, here
capped at `max_test_examples` when given) and each task's mean accuracy per shot count is logged to the
run's trackers as `fewshot/<task>/<k>shot` at that step and appended to `logs/fewshot_curve.jsonl`
(one line per evaluation: {"step", "<task>/<k>shot": accuracy, ...}; a resumed run first drops the lines
after its checkpoint, like the training log). Every process computes the features (the model may be
sharded); only the main process writes.
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
}
DEFAULTS: dict[str, Any] = {"shots": [1, 5], "seeds": [0], "l2_reg": 2.0**10, "max_test_examples": None}


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
    return None


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
        """Drop the lines of evaluations after `step` (logged by a session that died after its checkpoint)."""
        if not self.main or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def _datasets(self, task: str):
        if task not in self._data:
            from ..data import load_task

            data_dir = self.recipe.data.data_dir if task == self.recipe.data.task else None
            train, test = load_task(task, "train", data_dir), load_task(task, "test", data_dir)
            cap = self.options["max_test_examples"]
            if cap is not None and len(test) > cap:
                test = test.select(range(cap))
            self._data[task] = (train, test)
        return self._data[task]

    def evaluate(self, model, accelerator, step: int) -> dict[str, float]:
        """Score the current model on every task; log and return {"<task>/<k>shot": mean accuracy}."""
        from ..evaluation import fewshot_evaluate

        network = accelerator.unwrap_model(model)
        was_training = network.training
        values: dict[str, float] = {}
        try:
            for task in self.options["tasks"]:
                train, test = self._datasets(task)
                results = fewshot_evaluate(
                    network, train, test, self.options["shots"], self.options["seeds"], l2_reg=float(self.options["l2_reg"]),
                    mean=self.recipe.data.mean, std=self.recipe.data.std, progress=False, precision="fp32",
                )
                values.update({f"{task}/{k}shot": float(r["mean"]) for k, r in results.items()})
        finally:
            network.train(was_training)
        if self.recipe.run.trackers:
            accelerator.log({f"fewshot/{name}": value for name, value in values.items()}, step=step)
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        return values


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluations `logs/fewshot_curve.jsonl` of a run folder holds, in step order ([] without one)."""
    path = Path(run_dir) / runs.LOGS_DIR / CURVE_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
