"""Few-shot probes during training (`train.fewshot_eval`, `training.fewshot_curve`): a tiny pretraining
on digits logs `fewshot/<task>/<k>shot` to the trackers at the right steps, the same values go to
logs/fewshot_curve.jsonl, and the last one equals an independent few-shot evaluation of the final model;
with `classes` and `at_start` the step-0 point equals an independent evaluation of the initial model on
those classes; a resumed run does not repeat a line; the evaluations leave the training unchanged."""

import json

import pytest
from accelerate import Accelerator

from hf_vit_repro.data import load_task
from hf_vit_repro.evaluation import fewshot_evaluate
from hf_vit_repro.training import Recipe, RecipeError, train
from hf_vit_repro.training.fewshot_curve import FewshotCurve, fewshot_problem, read_curve

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8)
FEWSHOT = {"every": 2, "tasks": ["digits"], "shots": [1, 5], "seeds": [0], "max_test_examples": 120}


def recipe(tmp_path, **changes) -> Recipe:
    base = Recipe.from_dict({
        "name": "curve",
        "mode": "pretrain",
        "model": {"variant": None, "image_size": 16, "config": dict(TINY)},
        "data": {"task": "digits", "augmentation": "none", "max_train_examples": 64, "eval_split": None},
        "optim": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 1},
        "train": {"steps": 5, "global_batch_size": 8, "micro_batch_size": 8, "fewshot_eval": dict(FEWSHOT)},
        "run": {"output_dir": str(tmp_path / "run"), "checkpoint_every": 0, "progress_bar": False,
                "trackers": ["tensorboard"]},
    })
    return base.replace(**changes) if changes else base


def test_fewshot_values_are_logged_at_their_steps(tmp_path, monkeypatch):
    logged = []
    real_log = Accelerator.log

    def spy(self, values, step=None, log_kwargs=None):
        logged.append((step, dict(values)))
        return real_log(self, values, step=step, log_kwargs=log_kwargs or {})

    monkeypatch.setattr(Accelerator, "log", spy)
    result = train(recipe(tmp_path))
    fewshot = [(step, values) for step, values in logged if any(k.startswith("fewshot/") for k in values)]
    assert [step for step, _ in fewshot] == [2, 4, 5]  # every 2 updates and after the last one
    assert all(set(values) == {"fewshot/digits/1shot", "fewshot/digits/5shot"} for _, values in fewshot)
    assert all(0.0 <= v <= 1.0 for _, values in fewshot for v in values.values())
    curve = read_curve(result.run_dir)
    assert [row["step"] for row in curve] == [2, 4, 5]
    assert [{f"fewshot/{k}": v for k, v in row.items() if k != "step"} for row in curve] == [v for _, v in fewshot]
    # the last evaluation is the final model's, computed independently from the saved weights
    from hf_vit_repro.evaluation.common import load_checkpoint

    final = load_checkpoint(result.run_dir / "final", device="cpu").model
    test = load_task("digits", "test").select(range(120))
    reference = fewshot_evaluate(final, load_task("digits", "train"), test, [1, 5], [0], progress=False, precision="fp32")
    for k in ("1", "5"):
        assert curve[-1][f"digits/{k}shot"] == pytest.approx(reference[k]["mean"], abs=1e-6)


def test_resume_drops_evaluations_after_the_checkpoint(tmp_path):
    curve = FewshotCurve(FEWSHOT, recipe(tmp_path), tmp_path, main=True)
    curve.path.parent.mkdir(parents=True)
    curve.path.write_text("".join(json.dumps({"step": s, "digits/1shot": 0.1 * s}) + "\n" for s in (2, 4, 6)))
    curve.resume_at(4)
    assert [row["step"] for row in read_curve(tmp_path)] == [2, 4]
    assert curve.due(6, 7) and curve.due(7, 7) and not curve.due(5, 7)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tasks": ["digits"]}, "every` must be a whole number"),
        ({"every": 0, "tasks": ["digits"]}, "every` must be a whole number"),
        ({"every": 5}, "tasks` must list at least one task"),
        ({"every": 5, "tasks": ["digits"], "shots": [0]}, "shots` must list whole numbers >= 1"),
        ({"every": 5, "tasks": ["digits"], "l2_reg": -1}, "l2_reg` must be a number > 0"),
        ({"every": 5, "tasks": ["digits"], "shot": [5]}, "has no key 'shot'"),
        ({"every": 5, "tasks": ["digits"], "classes": [5]}, "classes` lists at least 2 distinct label ids"),
        ({"every": 5, "tasks": ["digits"], "classes": [5, 5]}, "classes` lists at least 2 distinct label ids"),
        ({"every": 5, "tasks": ["digits"], "at_start": "yes"}, "at_start` must be true or false"),
    ],
)
def test_bad_options_are_named(tmp_path, options, message):
    assert message in fewshot_problem(options)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
        recipe(tmp_path, **{"train.fewshot_eval": options})
    assert fewshot_problem({}) is None and fewshot_problem(FEWSHOT) is None


UNSEEN = [5, 6, 7, 8, 9]


def test_step_zero_on_some_classes_is_the_initial_model_evaluated_independently(tmp_path, monkeypatch):
    """`at_start` scores the model before its first update (step 0) and `classes` keeps those label ids:
    the step-0 point equals `fewshot_evaluate` of the model the run starts from (rebuilt as the studies'
    scratch reference does: seed, data, model) on digits 5-9 alone, to 1e-6 (the same fp32 features
    and solve; only float summation order could differ)."""
    from hf_vit_repro.data import select_classes
    from hf_vit_repro.studies.runner import initial_model

    logged = []
    real_log = Accelerator.log
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, log_kwargs=None: (
        logged.append((step, dict(values))), real_log(self, values, step=step, log_kwargs=log_kwargs or {}))[1])
    options = {**FEWSHOT, "every": 3, "classes": UNSEEN, "at_start": True}
    run = recipe(tmp_path, **{"train.fewshot_eval": options, "train.steps": 4})
    result = train(run)
    curve = read_curve(result.run_dir)
    assert [row["step"] for row in curve] == [0, 3, 4]
    assert set(curve[0]) == {"step", "digits[5,6,7,8,9]/1shot", "digits[5,6,7,8,9]/5shot"}
    fewshot_logs = [(s, v) for s, v in logged if any(k.startswith("fewshot/") for k in v)]
    assert [s for s, _ in fewshot_logs] == [0, 3, 4]
    assert set(fewshot_logs[0][1]) == {"fewshot/digits_5-6-7-8-9/1shot", "fewshot/digits_5-6-7-8-9/5shot"}
    model = initial_model(run).eval()
    train_split, test_split = select_classes(load_task("digits", "train"), UNSEEN), select_classes(load_task("digits", "test"), UNSEEN)
    reference = fewshot_evaluate(model, train_split, test_split.select(range(120)), [1, 5], [0], progress=False,
                                 precision="fp32")
    assert set(test_split.select(range(120))["label"]) <= set(range(5))  # relabelled 0..4
    for k in ("1", "5"):
        assert curve[0][f"digits[5,6,7,8,9]/{k}shot"] == pytest.approx(reference[k]["mean"], abs=1e-6)
    assert curve[0] != {**curve[-1], "step": 0}  # the trained model scores otherwise: step 0 is not the last point


def test_a_label_the_task_lacks_is_named(tmp_path):
    run = recipe(tmp_path, **{"train.fewshot_eval": {**FEWSHOT, "classes": [5, 12], "at_start": True}})
    with pytest.raises(RecipeError, match=r"`train.fewshot_eval.classes` on digits/train: classes \[12\] are not labels "
                                          r"of this dataset \(ids 0..9\); list label ids the task has"):
        train(run)


def test_a_resumed_run_neither_repeats_nor_loses_a_point(tmp_path):
    """A session stopped after 2 updates (checkpoint at 2) and resumed: the curve holds step 0 once,
    then 2, 4, 5, and equals an uninterrupted run's; a run started afresh in the folder empties it."""
    options = {**FEWSHOT, "at_start": True}
    whole = train(recipe(tmp_path / "whole", **{"train.fewshot_eval": options, "run.trackers": []}))
    stopped = recipe(tmp_path / "parts", **{"train.fewshot_eval": options, "run.trackers": [], "run.checkpoint_every": 2,
                                             "run.stop_after": 2})
    assert not train(stopped).completed
    assert [row["step"] for row in read_curve(stopped.output_dir)] == [0, 2]
    resumed = train(stopped.replace(**{"run.stop_after": None, "run.resume": "auto"}))
    assert resumed.completed
    curve = read_curve(resumed.run_dir)
    assert [row["step"] for row in curve] == [0, 2, 4, 5]
    for mine, theirs in zip(curve, read_curve(whole.run_dir)):
        assert mine == pytest.approx(theirs, abs=1e-6)
    curve_file = resumed.run_dir / "logs" / "fewshot_curve.jsonl"
    curve_file.write_text(curve_file.read_text() + json.dumps({"step": 9, "digits/1shot": 0.5}) + "\n")
    FewshotCurve(options, stopped, resumed.run_dir, main=True).resume_at(0)  # what a fresh start does first
    assert read_curve(resumed.run_dir) == []


def test_evaluations_do_not_change_the_training(tmp_path):
    """With dropout the training draws from torch's generator; the evaluations must not shift its
    draws (they run on a forked state), so the weights match a run without them exactly."""
    from safetensors.torch import load_file

    changes = {"model.dropout": 0.1, "run.trackers": [], "train.steps": 3}
    plain = train(recipe(tmp_path / "plain", **changes, **{"train.fewshot_eval": {}}))
    probed = train(recipe(tmp_path / "probed", **changes, **{"train.fewshot_eval": {**FEWSHOT, "every": 1,
                                                                                     "at_start": True}}))
    assert len(read_curve(probed.run_dir)) == 4
    a, b = (load_file(str(r.run_dir / "final" / "model.safetensors")) for r in (plain, probed))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_a_run_early_stopping_ends_is_evaluated_at_its_last_update(tmp_path, monkeypatch):
    """Validation accuracies scripted 0.2, 0.6, 0.5, 0.6 at steps 2, 4, 6, 8 with patience 2 stop the
    run at step 8 of 12: the curve (every 5) has step 5 and step 8, where the training ended."""
    from hf_vit_repro import training

    real = training.objectives.evaluate
    script = [0.2, 0.6, 0.5, 0.6]

    def evaluate(model, dataset, recipe_, accelerator):
        result = real(model, dataset, recipe_, accelerator)
        if script:
            result = {**result, "metrics": {**result["metrics"], "accuracy": script.pop(0)}}
        return result

    monkeypatch.setattr(training.objectives, "evaluate", evaluate)
    run = recipe(tmp_path, **{"train.steps": 12, "train.eval_every": 2, "train.early_stopping_patience": 2,
                              "data.holdout": True, "data.val_fraction": 0.25, "run.trackers": [],
                              "train.fewshot_eval": {**FEWSHOT, "every": 5}})
    result = train(run)
    assert result.steps == 8
    assert [row["step"] for row in read_curve(result.run_dir)] == [5, 8]
