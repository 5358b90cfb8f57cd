"""Early stopping on a held-out validation set (the paper's data-size study, Sec. 4.3: "we
perform early-stopping, and report the best validation accuracy achieved during training").

With `train.early_stopping_patience: N` the loop scores the model on its evaluation set every
`train.eval_every` steps and at the last step; each new best is written to RUN_DIR/best/ (a
`save_pretrained` folder, like final/), training ends after N evaluations in a row without a
better accuracy, and the best weights are loaded back before final/ is written. So final/ is the
best validation checkpoint, and the run's summary says which step it came from.

The state (best accuracy and step, evaluations since, the history) travels in every checkpoint's
counters, so a resumed run stops where the uninterrupted one would have; a run stopped early
writes a checkpoint at that step, so resuming a finished run does not train further.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from .recipe import Recipe, RecipeError

#: Key of the early-stopping state in a checkpoint's counters (trainer_state.json).
STATE_KEY = "early_stopping"


@dataclass
class EarlyStopping:
    """Keeps the best validation accuracy; `update` says whether the model just scored is a new
    best (then save it), `stopped` whether patience ran out. Ties keep the earlier model."""

    patience: int
    eval_every: int
    best_accuracy: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    stopped: bool = False
    history: list[list[float]] = field(default_factory=list)  # [step, accuracy] per evaluation

    @classmethod
    def from_recipe(cls, recipe: Recipe, has_eval_set: bool) -> EarlyStopping | None:
        """None unless the recipe asks for early stopping; `RecipeError` if it has nothing to
        validate on."""
        t = recipe.train
        if t.early_stopping_patience is None:
            return None
        if not has_eval_set:
            raise RecipeError(
                "`train.early_stopping_patience` needs a validation set: set `data.holdout: true` with "
                "`data.val_fraction` (a held-out part of the training split), or `data.eval_split`."
            )
        return cls(patience=t.early_stopping_patience, eval_every=t.eval_every)

    def restore(self, counters: dict[str, Any]) -> None:
        """Continue from a checkpoint's counters (no-op for a checkpoint written without them)."""
        for key, value in (counters.get(STATE_KEY) or {}).items():
            if key in ("best_accuracy", "best_step", "evaluations_since_best", "stopped", "history"):
                setattr(self, key, value)

    def due(self, step: int, total_steps: int) -> bool:
        """Whether to validate after update `step`: every `eval_every` steps and at the last one."""
        return step % self.eval_every == 0 or step == total_steps

    def update(self, step: int, accuracy: float) -> bool:
        """Record the validation accuracy after `step`; True if it is a new best."""
        self.history.append([step, accuracy])
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_accuracy, self.best_step, self.evaluations_since_best = accuracy, step, 0
            return True
        self.evaluations_since_best += 1
        self.stopped = self.evaluations_since_best >= self.patience
        return False

    def state(self) -> dict[str, Any]:
        """For the checkpoint counters: `{STATE_KEY: {...}}`."""
        return {STATE_KEY: asdict(self)}

    def summary(self, steps: int) -> dict[str, Any]:
        """The `early_stopping` entry of the run's summary."""
        return {
            "patience": self.patience,
            "eval_every": self.eval_every,
            "best_validation_accuracy": self.best_accuracy,
            "best_step": self.best_step,
            "stopped_early": self.stopped,
            "stopped_at_step": steps,
            "history": self.history,
        }

    def load_best(self, accelerator, model, run_dir: Path) -> None:
        """Load RUN_DIR/best/'s weights into `model` on every process (before final/ is written);
        one safetensors file, or the shards its index names."""
        from safetensors.torch import load_file

        weights = {}
        for path in runs.weight_files(Path(run_dir) / runs.BEST_DIR):
            if path.suffix == ".safetensors":
                weights.update(load_file(str(path)))
        accelerator.unwrap_model(model).load_state_dict(weights)  # copied onto the model's device
