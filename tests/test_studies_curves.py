"""A study's few-shot curves (`transfer.fewshot.curve`): every pretraining run gets `train.fewshot_eval`
on the transfer's task and classes; the runner reads each run's logs/fewshot_curve.jsonl into study.json
(a finished run's curve reused, not recomputed); the curve starts at the model the run starts from; the
report draws a curve figure (mean over seeds, a min-max band) and a table in study.md."""

import json
from pathlib import Path

import pytest
import yaml

from hf_vit_repro.studies import StudyConfigError, load_study_config, plan_runs, pretrain_recipe, run_study
from hf_vit_repro.studies.curves import curve_figure, curve_table, read_run_curve, seed_spread
from hf_vit_repro.studies.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SEEN, UNSEEN = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "patch_size": 4}
CURVE = {"every": 2, "shots": [1, 5], "seeds": 1}


def study_file(tmp_path, fewshot=None, **changes) -> Path:
    """A data-size study of one tiny ViT on 144 digits 0-4 (16 held out), two seeds, 4 steps each,
    5-shot on the digits 5-9 with a curve every 2 updates."""
    config = {
        "study": "data-size", "name": "curves", "recipe": str(ROOT / "recipes" / "studies" / "pretrain_digits.yaml"),
        "output_dir": str(tmp_path / "study"),
        "overrides": {"train.steps": 4, "train.global_batch_size": 16, "train.micro_batch_size": 16,
                      "optim.warmup_steps": 1, "data.max_train_examples": 160, "run.checkpoint_every": 0,
                      "run.num_workers": 0, "run.torch_threads": None},
        "data": {"task": "digits", "val_fraction": 0.1, "sizes": [1.0], "classes": SEEN},
        "seeds": [0, 1],
        "early_stopping": {"patience": 5, "eval_every": 2},
        "models": [{"name": "ViT", "config": TINY, "overrides": {"model.representation_size": 32}}],
        "transfer": {"fewshot": fewshot or {"task": "digits", "shots": [1, 5], "seeds": 1, "classes": UNSEEN,
                                            "scratch_reference": True, "curve": dict(CURVE)}},
        **changes,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_study_logs_reads_and_draws_its_curves_and_reuses_them(tmp_path, capsys):
    from hf_vit_repro.data import load_task, select_classes
    from hf_vit_repro.evaluation import fewshot_evaluate
    from hf_vit_repro.studies.runner import initial_model

    config = load_study_config(study_file(tmp_path))
    planned = plan_runs(config)
    recipes = [pretrain_recipe(config, p) for p in planned]
    assert recipes[0].train.fewshot_eval == {"every": 2, "tasks": ["digits"], "shots": [1, 5], "seeds": [0],
                                             "max_test_examples": None, "classes": UNSEEN, "at_start": True}
    study = run_study(config, progress=False)
    records = study["runs"]
    for record in records:
        curve = record["curve"]
        assert curve["task"] == "digits[5,6,7,8,9]" and curve["steps"] == [0, 2, 4] and record["steps"] == 4
        assert set(curve["accuracy"]) == {"1", "5"} and all(0 <= a <= 1 for a in curve["accuracy"]["5"])
    # step 0 is the model each run starts from, on the unseen digits: equal to fewshot_evaluate of the
    # rebuilt initial model at fp32 (the curve's precision) to 1e-9; the study's scratch reference (fp32
    # too, studies.runner.STUDY_PRECISION, but its own batches) within one of the test images
    train, test = (select_classes(load_task("digits", split), UNSEEN) for split in ("train", "test"))
    for record, recipe, reference in zip(records, recipes, study["references"]):
        model = initial_model(recipe).eval()
        direct = fewshot_evaluate(model, train, test, [1, 5], [0], mean=recipe.data.mean, std=recipe.data.std,
                                  progress=False, precision="fp32")
        for k in ("1", "5"):
            assert record["curve"]["accuracy"][k][0] == pytest.approx(direct[k]["mean"], abs=1e-9)
            assert record["curve"]["accuracy"][k][0] == pytest.approx(reference["accuracy"][k], abs=1 / len(test))
    assert records[0]["curve"]["accuracy"]["5"][0] != records[1]["curve"]["accuracy"]["5"][0]  # two initialisations
    folder = config.folder
    assert (folder / "data_size_curves.png").stat().st_size > 0
    table = (folder / "study.md").read_text()
    at_start = [r["curve"]["accuracy"]["5"][0] for r in records]
    start = f"{100 * sum(at_start) / 2:.1f} ({100 * min(at_start):.1f}-{100 * max(at_start):.1f})"
    assert "Few-shot during pretraining" in table and f"| ViT   | 144 examples | 2     | {start}" in table
    # resumable: finished runs are kept and their curves read again, not recomputed
    logs = [Path(r["run_dir"]) / "logs" / "fewshot_curve.jsonl" for r in records]
    stamps = [p.stat().st_mtime_ns for p in logs]
    capsys.readouterr()
    again = run_study(config, progress=False)
    assert capsys.readouterr().out.count("pretraining finished earlier; kept.") == 2
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in records]
    assert [p.stat().st_mtime_ns for p in logs] == stamps


def _curve(steps, values):
    return {"task": "digits[5,6,7,8,9]", "steps": steps, "accuracy": {"5": values}}


def _record(run, point, seed, examples, curve, level=None):
    return {"run": run, "point": point, "seed": seed, "model": "ViT", "family": "ViT", "level": level,
            "train_examples": examples, "epochs": None, "steps": curve["steps"][-1], "run_dir": "nowhere",
            "curve": curve}


def _study(records, kind="data-size"):
    return {"study": kind, "name": "synthetic", "runs": records,
            "config": {"plot": {"shots": 5}, "transfer": {"fewshot": {"task": "digits", "curve": dict(CURVE)}}}}


def test_the_figure_draws_each_points_seed_mean_with_a_min_max_band_and_the_table_sums_it_up():
    """Two seeds of a point, one stopped early at step 4: the mean is over the seeds that reached a step."""
    records = [_record("a-s0", "a", 0, 100, _curve([0, 2, 4], [0.2, 0.4, 0.6])),
               _record("a-s1", "a", 1, 100, _curve([0, 2, 4, 6], [0.4, 0.6, 0.5, 0.7])),
               _record("b-s0", "b", 0, 300, _curve([0, 2], [0.3, 0.9]))]
    assert seed_spread([r["curve"] for r in records[:2]], "5") == [
        pytest.approx((0, 30, 20, 40, 2)), pytest.approx((2, 50, 40, 60, 2)), pytest.approx((4, 55, 50, 60, 2)),
        pytest.approx((6, 70, 70, 70, 1))]
    figure = curve_figure(_study(records))
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert [line.get_label() for line in ax.lines] == ["100 examples", "300 examples"]
    assert list(ax.lines[0].get_xdata()) == [0, 2, 4, 6]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([30, 50, 55, 70])
    (band,) = ax.collections  # only the two-seed point has a spread
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(20) and max(ys) == pytest.approx(70)
    assert "5-shot" in ax.get_ylabel() and "mean of 2 seeds, band min-max" in figure.get_suptitle().replace("\n", " ")
    table = curve_table(_study(records))
    # step 0: 30 (20-40); best: seed 0 at step 4 (0.6), seed 1 at step 6 (0.7); end: 0.6 and 0.7
    assert "| ViT   | 100 examples | 2     | 30.0 (20.0-40.0) | 65.0 (60.0-70.0) | 4, 6" in table
    assert "| 65.0 (60.0-70.0) | 4, 6     |" in table
    assert "| ViT   | 300 examples | 1     | 30.0 " in table


def test_augreg_curves_get_a_panel_per_level_and_a_study_without_curves_draws_none(tmp_path):
    records = [_record(f"{lv}-{n}", f"{lv}-{n}", 0, n, _curve([0, 2], [0.1, 0.2 + n / 1000]), level=lv)
               for lv in ("none", "medium1") for n in (10, 30)]
    figure = curve_figure(_study(records, "augreg"))
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["ViT, none", "ViT, medium1"]
    assert all(len(ax.lines) == 2 for ax in visible)
    plain = _study([{**r, "curve": None} for r in records], "augreg")
    assert curve_figure(plain) is None and curve_table(plain) == ""


def test_the_report_falls_back_to_each_runs_curve_file(tmp_path):
    """A study.json written before curves were read (no `curve` key) is redrawn from the run folders."""
    run_dir = tmp_path / "runs" / "a-s0"
    (run_dir / "logs").mkdir(parents=True)
    rows = [{"step": s, "digits[5,6,7,8,9]/5shot": a, "digits/5shot": 0.99} for s, a in ((0, 0.25), (3, 0.5))]
    (run_dir / "logs" / "fewshot_curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_run_curve(run_dir, "digits", UNSEEN) == _curve([0, 3], [0.25, 0.5])
    record = _record("a-s0", "a", 0, 50, _curve([0], [0.0]))
    del record["curve"]
    record["run_dir"] = str(run_dir)
    study = _study([record])
    study["config"]["transfer"]["fewshot"]["classes"] = UNSEEN
    assert list(curve_figure(study).axes[0].lines[0].get_ydata()) == pytest.approx([25, 50])
    assert read_run_curve(tmp_path, "digits", UNSEEN) is None  # a folder without a curve


@pytest.mark.parametrize("change, message", [
    ({"curve": {"every": 0}}, "needs every >= 1"),
    ({"curve": {"every": 5, "max_test_examples": 0}}, "max_test_examples` is null or >= 1"),
    ({"curve": {"every": 5}, "test_split": "validation"}, "train and test splits at the pretraining resolution"),
    ({"curve": {"every": 5}, "resolution": 32}, "train and test splits at the pretraining resolution"),
    ({"curve": {"evry": 5}}, "Did you mean 'every'"),
])
def test_curve_config_errors_say_what_to_change(tmp_path, change, message):
    fewshot = {"task": "digits", "shots": [5], "seeds": 1, "classes": UNSEEN, **change}
    with pytest.raises(StudyConfigError, match=message):
        load_study_config(study_file(tmp_path, fewshot=fewshot))


@pytest.mark.parametrize("name", ["data_size", "compute", "augreg"])
def test_shipped_studies_log_a_curve_on_the_unseen_digits(name):
    config = load_study_config(ROOT / "recipes" / "studies" / f"{name}.yaml")
    options = pretrain_recipe(config, plan_runs(config)[0]).train.fewshot_eval
    assert options["classes"] == UNSEEN and options["at_start"] and options["shots"] == [config.plot.shots]
    assert options["every"] >= 10 and options["seeds"] == [0]
