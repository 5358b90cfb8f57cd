"""Few-shot probes during training (`train.fewshot_eval`, `training.fewshot_curve`): a tiny pretraining
on digits logs `fewshot/<task>/<k>shot` to the trackers at the right steps, the same values go to
logs/fewshot_curve.jsonl, and the last one equals an independent few-shot evaluation of the final model."""

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
    ],
)
def test_bad_options_are_named(tmp_path, options, message):
    assert message in fewshot_problem(options)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
        recipe(tmp_path, **{"train.fewshot_eval": options})
    assert fewshot_problem({}) is None and fewshot_problem(FEWSHOT) is None
