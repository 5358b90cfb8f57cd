"""Recipes with a learning-rate sweep (the paper's fine-tuning protocol, Appendix B.1.1): one run per
rate on a held-out split, the best chosen, then the final run on the whole training split.

    RUN_DIR/sweep/lr_0.01/   one run folder per swept rate (never published)
    RUN_DIR/sweep.json       validation accuracy per rate and the chosen one
"""

from __future__ import annotations

from typing import Any

from .. import runs
from . import loop
from .loop import TrainResult
from .recipe import Recipe

#: Learning-rate sweep results in a run folder (`run_recipe`).
SWEEP = "sweep.json"
SWEEP_DIR = "sweep"


def sweep_member(recipe: Recipe, lr: float) -> Recipe:
    """The recipe of one sweep run: learning rate `lr`, trained on the sweep's training split and
    evaluated on the validation split (or the held-out fraction), in `RUN_DIR/sweep/lr_<lr>/`,
    never published."""
    d = recipe.data
    changes: dict[str, Any] = {
        "optim.lr": lr,
        "optim.lr_sweep": [],
        "run.output_dir": str(recipe.output_dir / SWEEP_DIR / f"lr_{lr:g}"),
        "run.push_to_hub": False,
        "name": f"{recipe.name}-lr_{lr:g}",
    }
    if d.sweep_train_split:
        changes["data.train_split"] = d.sweep_train_split
    if d.val_split:
        changes["data.eval_split"] = d.val_split
    else:
        changes["data.holdout"] = True
    return recipe.replace(**changes)


def run_recipe(recipe: Recipe, *, command: str | None = None, **train_kwargs) -> TrainResult:
    """Run a recipe. With `optim.lr_sweep`, first train one sweep member per learning rate, pick
    the best validation accuracy (ties: the smaller rate), record it in `RUN_DIR/sweep.json`, then
    train the final run on the full training split with that rate (paper Appendix B.1.1; VTAB:
    800 + 200 to choose, all 1000 for the final run)."""
    o = recipe.optim
    if not o.lr_sweep:
        return loop.train(recipe, command=command, **train_kwargs)
    results = {}
    for lr in o.lr_sweep:
        member = sweep_member(recipe, lr)
        result = loop.train(member, command=command, **train_kwargs)
        if not result.completed:  # run.stop_after ended the session inside the sweep
            return result
        results[lr] = result.eval_accuracy
    best = max(sorted(results), key=lambda lr: (results[lr], -lr))
    from accelerate import PartialState

    if PartialState().is_main_process:
        recipe.output_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(recipe.output_dir / SWEEP, {
            "validation": recipe.data.val_split or f"{recipe.data.train_split}[holdout {recipe.data.val_fraction:g}]",
            "accuracy_by_lr": {f"{lr:g}": acc for lr, acc in results.items()},
            "best_lr": best,
        })
        print(f"{recipe.name}: learning-rate sweep {results} -> {best:g}")
    return loop.train(recipe.replace(**{"optim.lr": best, "optim.lr_sweep": []}), command=command, **train_kwargs)

