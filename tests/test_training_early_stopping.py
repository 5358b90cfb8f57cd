"""What the data-size study (paper Sec. 4.3) needs of a training run: nested seeded subsets of the
training split beside a fixed validation hold-out (`data.subset`), and early stopping that keeps
the best validation checkpoint as final/ (`train.early_stopping_patience`), also across a resume."""

import pytest
import torch
from datasets import Image
from safetensors.torch import load_file

from hf_vit_repro import runs, training
from hf_vit_repro.training import Recipe, RecipeError, build_data, train

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)


def recipe(tmp_path, name="run", **changes) -> Recipe:
    """12 steps of the DESIGN.md tiny model at 16 px on 48 digits, 16 of them held out to validate
    on every 2 steps; patience 2."""
    base = Recipe.from_dict({
        "name": "stop",
        "mode": "pretrain",
        "model": {"variant": None, "image_size": 16, "config": dict(TINY)},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 48, "holdout": True,
                 "val_fraction": 0.33, "eval_split": None},
        "optim": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 1},
        "train": {"steps": 12, "global_batch_size": 8, "micro_batch_size": 8, "eval_every": 2,
                  "early_stopping_patience": 2},
        "run": {"output_dir": str(tmp_path / name), "checkpoint_every": 2, "keep_checkpoints": 10,
                "progress_bar": False, "trackers": []},
    })
    return base.replace(**changes) if changes else base


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def scripted(monkeypatch):
    """The loop's periodic validations report these accuracies in turn (the real evaluation runs,
    its accuracy is replaced); once they are used up, evaluations are real again (the final one).
    `used.clear()` starts the script over for another run."""
    real = training.objectives.evaluate
    script = [0.2, 0.6, 0.5, 0.6]  # steps 2, 4, 6, 8: best at 4 (a tie later keeps the earlier model)
    used = []

    def evaluate(model, dataset, recipe, accelerator):
        result = real(model, dataset, recipe, accelerator)
        if len(used) < len(script):
            result = {**result, "metrics": {**result["metrics"], "accuracy": script[len(used)]}}
            used.append(script[len(used)])
        return result

    monkeypatch.setattr(training.objectives, "evaluate", evaluate)
    return used


def test_early_stopping_keeps_the_best_validation_checkpoint_as_final(tmp_path, scripted):
    result = train(recipe(tmp_path))
    run_dir = result.run_dir
    summary = runs.read_json(run_dir / runs.TRAIN_SUMMARY)
    stopping = summary["early_stopping"]
    # two evaluations without a better accuracy after step 4: stopped after step 8 of 12
    assert result.steps == summary["steps"] == 8 and summary["images_seen"] == 8 * 8
    assert stopping["stopped_early"] and stopping["stopped_at_step"] == 8
    assert stopping["best_step"] == 4 and stopping["best_validation_accuracy"] == 0.6
    assert stopping["history"] == [[2, 0.2], [4, 0.6], [6, 0.5], [8, 0.6]]
    # final/ and best/ hold the weights of step 4 (its checkpoint), not those of the last step
    checkpoints = run_dir / runs.CHECKPOINTS_DIR
    at_best, last = weights(checkpoints / "step_0000004"), weights(checkpoints / "step_0000008")
    assert not same_weights(at_best, last)
    assert same_weights(weights(run_dir / runs.FINAL_DIR), at_best)
    assert same_weights(weights(run_dir / runs.BEST_DIR), at_best)
    assert summary["eval"]["split"] == "train[holdout 0.33]" and summary["eval"]["num_images"] == 16


def test_early_stopping_resumes_to_the_same_decision_and_weights(tmp_path, scripted):
    reference = train(recipe(tmp_path, "uninterrupted"))
    scripted.clear()  # the same accuracies for the interrupted run

    class Killed(Exception):
        pass

    def kill_at_step_5(state):
        if state.step == 5:  # after the step-4 checkpoint (the best so far), before step 6's
            raise Killed

    interrupted = recipe(tmp_path, "interrupted")
    with pytest.raises(Killed):
        train(interrupted, callbacks=[kill_at_step_5])
    assert not (interrupted.output_dir / runs.FINAL_DIR).exists()
    resumed = train(interrupted)
    assert resumed.losses[0][0] == 5 and resumed.steps == 8
    first = runs.read_json(reference.run_dir / runs.TRAIN_SUMMARY)["early_stopping"]
    second = runs.read_json(interrupted.output_dir / runs.TRAIN_SUMMARY)["early_stopping"]
    assert first == second
    assert same_weights(weights(reference.run_dir / runs.FINAL_DIR), weights(interrupted.output_dir / runs.FINAL_DIR))
    # Running a finished, early-stopped run again trains nothing more.
    again = train(interrupted)
    assert again.losses == [] and again.steps == 8


def test_final_model_scores_the_best_validation_accuracy(tmp_path):
    # Real evaluations every step and no early end: the model written as final/ is re-scored on the
    # validation set after the loop, and must score exactly the best accuracy seen during training.
    result = train(recipe(tmp_path, **{"train.steps": 6, "train.eval_every": 1, "train.early_stopping_patience": 100,
                                       "optim.lr": 1e-2}))
    summary = runs.read_json(result.run_dir / runs.TRAIN_SUMMARY)
    history = summary["early_stopping"]["history"]
    accuracies = [accuracy for _, accuracy in history]
    assert [step for step, _ in history] == [1, 2, 3, 4, 5, 6] and not summary["early_stopping"]["stopped_early"]
    assert summary["early_stopping"]["best_validation_accuracy"] == max(accuracies)
    assert summary["early_stopping"]["best_step"] == history[accuracies.index(max(accuracies))][0]
    assert result.eval_accuracy == pytest.approx(max(accuracies), abs=1e-12)


def test_early_stopping_needs_validation_data_and_an_interval(tmp_path):
    with pytest.raises(RecipeError, match="needs `train.eval_every`"):
        recipe(tmp_path, **{"train.eval_every": 0})
    with pytest.raises(RecipeError, match="ema_decay"):
        recipe(tmp_path, **{"train.ema_decay": 0.9})
    no_validation = recipe(tmp_path, **{"data.holdout": False})
    with pytest.raises(RecipeError, match="needs a validation set"):
        train(no_validation)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _rows(dataset) -> list[str]:
    return [image["path"] for image in dataset.cast_column("image", Image(decode=False))["image"]]


def test_subsets_are_nested_and_the_validation_rows_do_not_depend_on_the_size(tmp_path):
    def data(subset):
        changes = {"data.max_train_examples": 200, "data.val_fraction": 0.2}
        if subset is not None:
            changes["data.subset"] = subset
        return build_data(recipe(tmp_path, **changes))

    whole, half, quarter, counted = data(None), data(0.5), data(0.25), data(60)
    validation = _rows(whole.eval)
    assert len(validation) == 40 and all(_rows(d.eval) == validation for d in (half, quarter, counted))
    rows = {name: set(_rows(d.train)) for name, d in (("whole", whole), ("half", half), ("quarter", quarter),
                                                      ("counted", counted))}
    assert [len(rows[k]) for k in ("whole", "half", "quarter", "counted")] == [160, 80, 40, 60]
    assert rows["quarter"] < rows["counted"] < rows["half"] < rows["whole"]
    assert not rows["whole"] & set(validation)
    assert _rows(data(0.25).train) == _rows(quarter.train)  # the same seed, the same rows
    seeded = build_data(recipe(tmp_path, **{"data.max_train_examples": 200, "data.val_fraction": 0.2,
                                           "data.subset": 0.25, "data.subset_seed": 1}))
    assert set(_rows(seeded.train)) != rows["quarter"]
    with pytest.raises(RecipeError, match="whole number"):
        recipe(tmp_path, **{"data.subset": 2.5})
    with pytest.raises(RecipeError, match="only 160 rows"):
        build_data(recipe(tmp_path, **{"data.max_train_examples": 200, "data.val_fraction": 0.2, "data.subset": 500}))
