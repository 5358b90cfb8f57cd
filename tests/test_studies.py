"""`vit-repro study`: study configs (the shipped miniatures and bad ones), the recipes a study
runs, resuming a killed study without redoing finished runs, and the plots and table in the
paper's forms with Table 6 kept apart from measured points. Tiny models on digits, a few steps."""

from pathlib import Path

import pytest
import torch
import yaml

from hf_vit_repro import cli, runs, training
from hf_vit_repro.studies import (
    STUDY_JSON,
    StudyConfigError,
    finetune_recipe,
    load_study_config,
    paper_table6,
    plan_runs,
    pretrain_recipe,
    reference_points,
    run_study,
    study_figure,
    study_table,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
SEEN, UNSEEN = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]  # class-disjoint transfer: pretrain on SEEN, transfer to UNSEEN
ONE_SIZE = {"task": "digits", "val_fraction": 0.1, "sizes": [1.0], "classes": SEEN}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "patch_size": 4}


def tiny_study(tmp_path, **changes) -> Path:
    """A data-size study of one tiny ViT on two nested subsets of 160 digits 0-4 (16 held out), 6 steps
    each with validation every 2 and a checkpoint every 2, then 1- and 5-shot evaluation on digits 5-9."""
    config = {
        "study": "data-size",
        "name": "tiny",
        "recipe": str(ROOT / "recipes" / "studies" / "pretrain_digits.yaml"),
        "output_dir": str(tmp_path / "study"),
        "overrides": {"train.steps": 6, "train.global_batch_size": 16, "train.micro_batch_size": 16,
                      "optim.warmup_steps": 1, "data.max_train_examples": 160, "run.checkpoint_every": 2,
                      "run.keep_checkpoints": 5, "run.num_workers": 0, "run.torch_threads": None},
        "data": {"task": "digits", "val_fraction": 0.1, "sizes": [0.5, 1.0], "classes": SEEN},
        "early_stopping": {"patience": 5, "eval_every": 2},
        "models": [{"name": "ViT", "config": TINY, "overrides": {"model.representation_size": 32}}],
        "transfer": {"fewshot": {"task": "digits", "shots": [1, 5], "seeds": 1, "classes": UNSEEN}},
    }
    for key, value in changes.items():
        config[key] = value
    path = tmp_path / "tiny_study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------ configs and the recipes they make


@pytest.mark.parametrize("kind", ["data-size", "compute", "augreg"])
def test_shipped_miniature_studies_load_and_make_valid_recipes(kind):
    path = ROOT / "recipes" / "studies" / f"{kind.replace('-', '_')}.yaml"
    config = load_study_config(path, kind=kind)
    planned = plan_runs(config)
    points = len(config.models) * (len(config.data.sizes) if kind != "compute" else len(config.epochs))
    assert len(config.seeds) >= 2 and len(planned) == points * len(config.seeds) * max(1, len(config.levels))
    assert not set(config.data.classes) & set(config.transfer.fewshot.classes)  # class-disjoint transfer
    assert config.transfer.fewshot.scratch_reference  # with the no-pretraining reference beside it
    families = {m.resolved_family() for m in config.models}
    assert families == ({"ViT"} if kind == "augreg" else {"ViT", "Hybrid", "ResNet (BiT)"})
    for model in config.models:  # every model's recipe is valid (a ResNet's drops the ViT's pre-logits layer)
        recipe = pretrain_recipe(config, next(p for p in planned if p.model is model))
        assert (recipe.model.variant == "BiT-R50x1") == (model.resolved_family() == "ResNet (BiT)")
    first = pretrain_recipe(config, planned[0], ["run.num_workers=0"])
    assert first.output_dir == config.folder / "runs" / planned[0].key and first.run.num_workers == 0
    assert first.model.config == config.models[0].config and first.data.holdout and first.data.val_fraction == 0.1
    assert first.data.classes == config.data.classes and first.train.seed == config.seeds[0]
    if kind == "data-size":
        sizes = [load_recipe_size(config, p) for p in planned if p.model is config.models[0] and p.seed == config.seeds[0]]
        assert sizes == [0.1, 0.3, 1.0]  # smallest first
        assert first.train.early_stopping_patience == 4 and first.train.eval_every == 25
    elif kind == "augreg":  # AugReg's levels: none, light1, medium1 with dropout and stochastic depth
        recipes = [pretrain_recipe(config, p) for p in planned if p.size == 1.0 and p.seed == config.seeds[0]]
        assert [r.data.augment_level for r in recipes] == ["none", "light1", "medium1"]
        assert [r.model.drop_path_rate for r in recipes] == [0.0, 0.0, 0.1] and recipes[-1].model.dropout == 0.1
    else:
        assert first.train.epochs == 7 and first.train.steps is None and first.data.subset is None
        assert config.transfer.finetune is not None and config.plot.reference
        tuned = finetune_recipe(config, planned[0], first.output_dir)
        assert tuned.data.classes == config.transfer.finetune.classes and not set(tuned.data.classes) & set(config.data.classes)


def load_recipe_size(config, planned):
    return pretrain_recipe(config, planned).data.subset


def test_study_config_errors_name_what_to_change(tmp_path, capsys):
    with pytest.raises(StudyConfigError, match="unknown key 'model'.*Did you mean 'models'"):
        load_study_config(tiny_study(tmp_path, model=[]))
    with pytest.raises(StudyConfigError, match="early stopping"):
        load_study_config(tiny_study(tmp_path, early_stopping=None))
    with pytest.raises(StudyConfigError, match="run it with `vit-repro study data-size`"):
        load_study_config(tiny_study(tmp_path), kind="compute")
    with pytest.raises(StudyConfigError, match="needs `epochs`"):
        load_study_config(tiny_study(tmp_path, study="compute", data={"task": "digits"}))
    with pytest.raises(ValueError, match=r"models\[0\].config.*mapping"):
        load_study_config(tiny_study(tmp_path, models=[{"name": "ViT", "config": [1, 2]}]))
    # the command line: one line, exit status 2, no traceback
    code = cli.main(["study", "data-size", str(tiny_study(tmp_path, data={"sizes": [0]}))])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vit-repro study: error:") and "data.sizes" in err and "Traceback" not in err


# ------------------------------------------------------------------ class-disjoint transfer and seeds


def test_select_classes_keeps_those_rows_and_relabels_them_in_the_order_given():
    import numpy as np

    from hf_vit_repro.data import DataError, load_task, select_classes

    digits = load_task("digits", "test")
    labels = np.asarray(digits["label"])
    chosen = select_classes(digits, [7, 2])
    assert chosen.features["label"].names == ["7", "2"]  # 7 -> 0, 2 -> 1
    rows = np.flatnonzero(np.isin(labels, [7, 2]))
    assert list(chosen["label"]) == [0 if labels[r] == 7 else 1 for r in rows]
    for i in (0, len(rows) - 1):  # the same images, in the dataset's order
        assert np.array_equal(np.asarray(chosen[i]["image"]), np.asarray(digits[int(rows[i])]["image"]))
    with pytest.raises(DataError, match=r"classes \[10\] are not labels"):
        select_classes(digits, [3, 10])
    with pytest.raises(DataError, match="at least 2 distinct"):
        select_classes(digits, [3, 3])


def test_class_disjoint_study_pretrains_on_some_classes_and_transfers_to_the_others(tmp_path):
    import numpy as np

    from hf_vit_repro.data import load_task
    from hf_vit_repro.training.build import build_data

    config = load_study_config(tiny_study(tmp_path, overrides={}))
    recipe = pretrain_recipe(config, plan_runs(config)[-1])
    assert recipe.data.classes == SEEN
    data = build_data(recipe)
    raw = np.asarray(load_task("digits", "train")["label"])
    assert data.num_classes == 5 and data.id2label == {i: str(c) for i, c in enumerate(SEEN)}
    seen_labels = np.concatenate([np.asarray(data.train["label"]), np.asarray(data.eval["label"])])
    assert set(seen_labels) == set(range(5))  # only the chosen classes, labels remapped to 0..4
    assert len(seen_labels) == np.isin(raw, SEEN).sum()  # every image of them: training + validation hold-out
    assert np.array_equal(np.bincount(seen_labels), np.bincount(raw)[SEEN])
    # the few-shot task: the other classes only (relabelled 0..4 for the linear head)
    from hf_vit_repro.data import select_classes

    test = select_classes(load_task("digits", "test"), config.transfer.fewshot.classes)
    assert test.features["label"].names == [str(c) for c in UNSEEN] and not set(UNSEEN) & set(SEEN)


def test_transfer_to_classes_pretraining_saw_is_refused_unless_allowed(tmp_path):
    fewshot = {"task": "digits", "shots": [1], "seeds": 1}
    with pytest.raises(StudyConfigError, match=r"classes pretraining saw \(\[4\]\).*allow_class_overlap"):
        load_study_config(tiny_study(tmp_path, transfer={"fewshot": {**fewshot, "classes": [4, 5, 6]}}))
    with pytest.raises(StudyConfigError, match=r"transfer.fewshot.*\[0, 1, 2, 3, 4\]"):  # all classes include 0-4
        load_study_config(tiny_study(tmp_path, transfer={"fewshot": fewshot}))
    finetune = {"recipe": str(ROOT / "recipes" / "studies" / "finetune_digits.yaml")}  # a digits recipe, all classes
    with pytest.raises(StudyConfigError, match="`transfer.finetune` transfers to digits classes pretraining saw"):
        load_study_config(tiny_study(tmp_path, transfer={"fewshot": {**fewshot, "classes": UNSEEN}, "finetune": finetune}))
    with pytest.raises(StudyConfigError, match="all of them"):  # neither side chooses classes: the old, same-class study
        load_study_config(tiny_study(tmp_path, data={"task": "digits", "val_fraction": 0.1}, transfer={"fewshot": fewshot}))
    allowed = load_study_config(tiny_study(tmp_path, transfer={"fewshot": fewshot, "allow_class_overlap": True}))
    assert allowed.transfer.fewshot.classes is None
    with pytest.raises(StudyConfigError, match="distinct training seeds"):
        load_study_config(tiny_study(tmp_path, seeds=[1, 1]))


def test_a_study_of_several_seeds_reports_their_mean_and_spread(tmp_path, capsys):
    fewshot = {"task": "digits", "shots": [1, 5], "seeds": 1, "classes": UNSEEN, "scratch_reference": True}
    config = load_study_config(tiny_study(tmp_path, seeds=[0, 1], data=ONE_SIZE, transfer={"fewshot": fewshot}))
    planned = plan_runs(config)
    assert [p.key for p in planned] == ["ViT-f1-s0", "ViT-f1-s1"] and {p.point for p in planned} == {"ViT-f1"}
    assert [pretrain_recipe(config, p).train.seed for p in planned] == [0, 1]
    study = run_study(config, progress=False)
    records = study["runs"]
    assert [r["seed"] for r in records] == [0, 1] and {r["point"] for r in records} == {"ViT-f1"}
    from hf_vit_repro.data import load_task

    unseen_test = sum(label in UNSEEN for label in load_task("digits", "test")["label"])
    for r in records:  # few-shot on the 5 unseen classes of digits/test only
        saved = runs.read_json(config.folder / "runs" / r["run"] / runs.FEWSHOT)["results"]
        assert list(saved) == ["digits[5,6,7,8,9]"] and saved["digits[5,6,7,8,9]"]["5"]["num_test_images"] == unseen_test
    weights = [(config.folder / "runs" / r["run"] / runs.FINAL_DIR / "model.safetensors").read_bytes() for r in records]
    assert weights[0] != weights[1]  # the seeds train different models
    five = [r["fewshot"]["accuracy"]["5"] for r in records]
    table = (config.folder / "study.md").read_text()
    mean = f"{100 * sum(five) / 2:.1f}"
    assert f"| {mean} ({100 * min(five):.1f}-{100 * max(five):.1f})" in table and "training seeds [0, 1]" in table
    # the no-pretraining reference: each seed's model at initialisation, few-shot on the same classes
    references = study["references"]
    assert [(r["model"], r["seed"]) for r in references] == [("ViT", 0), ("ViT", 1)]
    assert all(0 <= r["accuracy"]["5"] <= 1 for r in references) and references[0] != references[1]
    at_init = [r["accuracy"]["5"] for r in references]
    assert f"`transfer.fewshot.scratch_reference`), 5-shot: ViT {100 * sum(at_init) / 2:.1f}" in table
    figure = study_figure(study)
    dashed = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["ViT at initialisation"]
    assert list(dashed[0].get_ydata()) == pytest.approx([100 * sum(at_init) / 2] * 2)
    capsys.readouterr()
    again = run_study(config, progress=False)  # resumable: both seeds finished, nothing trained or evaluated again
    assert again["runs"] == records and capsys.readouterr().out.count("pretraining finished earlier; kept.") == 2
    assert again["references"] == references


def test_the_scratch_reference_evaluates_the_weights_the_run_starts_from(tmp_path):
    """A run of one step at learning rate 1e-30 ends where it started (to 1e-20: fp32 weights cannot
    move by that; zero-initialised ones move by ~1e-30): its weights are the reference model's."""
    from safetensors.torch import load_file

    from hf_vit_repro.studies.runner import initial_model, scratch_reference

    fewshot = {"task": "digits", "shots": [1], "seeds": 1, "classes": UNSEEN, "scratch_reference": True}
    config = load_study_config(tiny_study(tmp_path, seeds=[3], data=ONE_SIZE, transfer={"fewshot": fewshot}))
    planned = plan_runs(config)[0]
    recipe = pretrain_recipe(config, planned, ["train.steps=1", "optim.lr=1e-30", "optim.warmup_steps=0"])
    training.run_recipe(recipe)
    trained = load_file(str(recipe.output_dir / runs.FINAL_DIR / "model.safetensors"))
    torch.manual_seed(12345)  # whatever the RNG held before, the reference seeds it as the run does
    initial = initial_model(recipe).state_dict()
    assert trained.keys() <= initial.keys()
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, initial[name], rtol=0, atol=1e-20)
    record = scratch_reference(config, planned, recipe, "cpu", False)
    assert record["seed"] == 3 and (config.folder / "references" / "ViT-s3.json").is_file()


def test_the_plot_draws_the_mean_of_a_points_seeds_with_a_bar_from_lowest_to_highest():
    records = []
    for seed, (low, high) in enumerate(((0.3, 0.6), (0.5, 0.8))):
        for n, a in ((50, low), (500, high)):
            record = _record("ViT", "ViT", n, a)
            record.update(run=f"ViT-{n}-s{seed}", point=f"ViT-{n}", seed=seed)
            records.append(record)
    figure = study_figure(_study("data-size", records))
    fewshot = figure.axes[0]
    (line,) = fewshot.lines
    assert list(line.get_xdata()) == [50, 500] and list(line.get_ydata()) == pytest.approx([40, 70])
    (bars,) = fewshot.collections
    assert [sorted(seg[:, 1]) for seg in bars.get_segments()] == [pytest.approx([30, 50]), pytest.approx([60, 80])]
    assert "mean of 2 seeds, bars min-max" in fewshot.get_title()
    assert "| 40.0 (30.0-50.0)" in study_table(_study("data-size", records))


def test_augreg_study_trains_each_size_at_each_level_and_plots_a_line_per_level(tmp_path):
    """AugReg's Figure 1 in miniature: the level's keys reach the recipe, the runs and the report."""
    levels = [{"name": "none", "overrides": {"data.augment_level": "none"}},
              {"name": "medium1+reg", "overrides": {"data.augment_level": "medium1", "model.dropout": 0.1,
                                                    "model.drop_path_rate": 0.1}}]
    config = load_study_config(tiny_study(tmp_path, study="augreg", levels=levels, overrides={
        "train.steps": 4, "train.global_batch_size": 16, "train.micro_batch_size": 16, "optim.warmup_steps": 1,
        "data.max_train_examples": 80, "run.checkpoint_every": 0, "run.num_workers": 0, "run.torch_threads": None},
        data=ONE_SIZE), kind="augreg")
    planned = plan_runs(config)
    assert [p.key for p in planned] == ["ViT-none-f1", "ViT-medium1+reg-f1"]
    strong = pretrain_recipe(config, planned[1])
    assert (strong.data.augment_level, strong.model.dropout, strong.model.drop_path_rate) == ("medium1", 0.1, 0.1)
    assert pretrain_recipe(config, planned[0]).model.drop_path_rate == 0.0
    study = run_study(config, progress=False)
    assert [(r["level"], r["train_examples"]) for r in study["runs"]] == [("none", 72), ("medium1+reg", 72)]
    saved = yaml.safe_load((config.folder / "runs" / "ViT-medium1+reg-f1" / runs.RECIPE).read_text())
    assert saved["data"]["augment_level"] == "medium1" and saved["model"]["drop_path_rate"] == 0.1
    fewshot = study_figure(study).axes[0]
    assert [line.get_label() for line in fewshot.lines] == ["ViT, none", "ViT, medium1+reg"]
    assert "| ViT   | medium1+reg |" in (config.folder / "study.md").read_text() and (config.folder / "augreg.png").is_file()
    with pytest.raises(StudyConfigError, match="`levels`.*augreg"):
        load_study_config(tiny_study(tmp_path, study="augreg"))
    with pytest.raises(StudyConfigError, match="`levels`.*augreg"):
        load_study_config(tiny_study(tmp_path, levels=levels))  # a data-size study has no levels


# ------------------------------------------------------------------ resuming


def test_killed_study_resumes_without_redoing_finished_runs(tmp_path, monkeypatch, capsys):
    config = load_study_config(tiny_study(tmp_path))
    folder = config.folder
    real = training.run_recipe
    trained = []

    class Killed(Exception):
        pass

    def kill_at_step_3(state):
        if state.step == 3:  # the second run has written its step-2 checkpoint, not yet final/
            raise Killed

    def run_recipe(recipe, **kwargs):
        trained.append(recipe.output_dir.name)
        if kill and len(trained) == 2:
            kwargs["callbacks"] = [kill_at_step_3]
        return real(recipe, **kwargs)

    monkeypatch.setattr(training, "run_recipe", run_recipe)
    kill = True
    with pytest.raises(Killed):
        run_study(config, progress=False)
    first_run, second_run = folder / "runs" / "ViT-f0.5", folder / "runs" / "ViT-f1"
    assert trained == ["ViT-f0.5", "ViT-f1"]
    partial = runs.read_json(folder / STUDY_JSON)
    assert [r["run"] for r in partial["runs"]] == ["ViT-f0.5"]  # written after every run
    assert not (second_run / runs.FINAL_DIR).exists() and (second_run / "checkpoints" / "step_0000002").is_dir()
    finished_files = [first_run / runs.FINAL_DIR / "model.safetensors", first_run / runs.FEWSHOT,
                      first_run / runs.TRAIN_SUMMARY]
    stamps = [p.stat().st_mtime_ns for p in finished_files]

    kill = False
    trained.clear()
    capsys.readouterr()
    study = run_study(config, progress=False)
    out = capsys.readouterr().out
    assert trained == ["ViT-f1"]  # the finished run is not trained again ...
    assert [p.stat().st_mtime_ns for p in finished_files] == stamps  # ... nor re-evaluated
    assert "ViT-f0.5: pretraining finished earlier; kept." in out
    assert "Resuming tiny-ViT-f1 from" in out and "step_0000002 (step 2/6)" in out  # the killed one continues
    records = runs.read_json(folder / STUDY_JSON)["runs"]
    assert records == study["runs"] and [r["run"] for r in records] == ["ViT-f0.5", "ViT-f1"]
    assert records[0] == partial["runs"][0]
    for record in records:
        assert set(record["fewshot"]["accuracy"]) == {"1", "5"} and 0 <= record["fewshot"]["accuracy"]["5"] <= 1
        assert record["compute"]["training_exaflops"] > 0 and record["compute"]["num_devices"] == 1
    # 144 training images after the hold-out of 16; the subsets: 72 and all 144
    assert [r["train_examples"] for r in records] == [72, 144] and records[1]["steps"] == 6
    assert (folder / "data_size.png").is_file() and (folder / "study.md").is_file()

    trained.clear()
    run_study(config, progress=False)  # everything finished: nothing is trained
    assert trained == [] and runs.read_json(folder / STUDY_JSON)["runs"] == records

    (folder / "data_size.png").unlink()
    assert cli.main(["study", "report", str(folder)]) == 0 and (folder / "data_size.png").is_file()  # redrawn
    assert cli.main(["study", "report", str(tmp_path)]) == 2
    assert "holds no study.json" in capsys.readouterr().err


def test_a_session_stopped_early_ends_the_study_and_the_next_call_continues(tmp_path, capsys):
    config = load_study_config(tiny_study(tmp_path, data=ONE_SIZE))
    run_dir = config.folder / "runs" / "ViT-f1"
    study = run_study(config, ["run.stop_after=2"], progress=False)  # as Ctrl-C does, after a step
    assert study["complete"] is False and study["runs"] == [] and not study["interrupted"]
    assert "ViT-f1: stopped at step 2 (run.stop_after)" in capsys.readouterr().out
    assert not (run_dir / runs.FEWSHOT).exists()  # an unfinished model is not evaluated
    study = run_study(config, progress=False)
    assert study["complete"] is True and [r["steps"] for r in study["runs"]] == [6]
    assert runs.read_json(config.folder / STUDY_JSON)["complete"] is True and (run_dir / runs.FEWSHOT).is_file()


def test_report_of_a_study_without_runs_is_an_error(tmp_path, capsys):
    """`study report` on a study.json with no finished run exited 0 and wrote nothing (issue 24)."""
    folder = tmp_path / "study"
    runs.write_json(folder / STUDY_JSON, _study("data-size", []))
    capsys.readouterr()
    assert cli.main(["study", "report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vit-repro study: error:") and "\n" not in err and "records no finished run" in err
    assert sorted(p.name for p in folder.iterdir()) == [STUDY_JSON]


def test_a_changed_recipe_is_not_reported_as_the_finished_run(tmp_path):
    config = load_study_config(tiny_study(tmp_path, data=ONE_SIZE))
    run_study(config, progress=False)
    with pytest.raises(ValueError, match=r"another recipe \(optim.lr: 0.003 -> 0.01\).*--fresh"):
        run_study(config, ["optim.lr=0.01"], progress=False)


def test_a_bit_resnet_runs_through_a_compute_study(tmp_path):
    """The paper's CNN baseline in a study: pretrained (transformers' BitForImageClassification),
    few-shot on its pooled features, fine-tuned at another resolution, FLOPs from the BiT formula."""
    from hf_vit_repro.flops import forward_flops
    from hf_vit_repro.models import config_from_variant

    bit = {"depths": [1, 1], "hidden_sizes": [32, 64], "embedding_size": 16, "num_groups": 8}
    finetune = {"recipe": str(ROOT / "recipes" / "studies" / "finetune_digits.yaml"), "classes": UNSEEN,
                "overrides": {"train.steps": 3, "optim.warmup_steps": 1, "train.global_batch_size": 16,
                              "train.micro_batch_size": 16, "data.max_train_examples": 48, "data.max_eval_examples": 48}}
    config = load_study_config(tiny_study(
        tmp_path, study="compute", data={"task": "digits", "val_fraction": 0.1, "classes": SEEN}, early_stopping=None,
        epochs=[0.5],
        models=[{"name": "R", "variant": "BiT-R50x1", "config": bit, "overrides": {"model.representation_size": None}}],
        transfer={"fewshot": {"task": "digits", "shots": [1], "seeds": 1, "classes": UNSEEN}, "finetune": finetune},
    ))
    (record,) = run_study(config, progress=False)["runs"]
    assert record["family"] == "ResNet (BiT)" and record["steps"] == 5  # 0.5 epoch of 144 images, batches of 16
    saved = runs.read_json(config.folder / "runs" / "R-e0.5" / runs.FINAL_DIR / "config.json")
    assert saved["model_type"] == "bit" and saved["depths"] == [1, 1]
    flops = forward_flops(config_from_variant("BiT-R50x1", **bit, num_labels=5), 16)  # a 5-way head: digits 0-4
    assert record["compute"]["forward_flops_per_image"] == flops
    assert 0.0 <= record["fewshot"]["accuracy"]["1"] <= 1.0 and record["finetune"]["steps"] == 3
    assert record["finetune"]["split"] == "digits/test, classes 5,6,7,8,9"  # fine-tuned and scored on the unseen digits


# ------------------------------------------------------------------ plots and tables


def _record(model, family, x, accuracy, *, exaflops=None, epochs=None, finetune=None):
    return {
        "run": f"{model}-{x}", "model": model, "family": family, "variant": None, "num_parameters": 1234,
        "subset": None, "train_examples": x, "epochs": epochs, "steps": 10, "images_seen": 100,
        "best_validation_accuracy": accuracy, "validation": "train[holdout 0.1]", "best_step": 8, "stopped_early": False,
        "fewshot": {"task": "digits", "test_split": "test", "seeds": 3, "accuracy": {"5": accuracy}, "std": {"5": 0.01}},
        "finetune": None if finetune is None else {"accuracy": finetune, "split": "digits/test", "steps": 5},
        "compute": {"training_exaflops": exaflops or x * 1e-9, "forward_flops_per_image": 1000, "device_seconds": 12.6,
                    "num_devices": 1, "device": "cpu: Test CPU"},
        "run_dir": "somewhere",
    }


def _study(kind, records, finetune=False):
    return {
        "study": kind, "name": "synthetic", "description": "", "command": f"vit-repro study {kind} x.yaml",
        "config": {"plot": {"shots": 5, "reference": True, "reference_column": "imagenet"}, "data": {"task": "digits"},
                   "transfer": {"fewshot": {"task": "digits", "test_split": "test", "shots": [1, 5]},
                                "finetune": {"recipe": "f.yaml"} if finetune else None}},
        "runs": records,
    }


def test_compute_plot_keeps_the_papers_table6_apart_from_measured_points(tmp_path):
    records = [_record("ViT-S", "ViT", 100, 0.5, exaflops=2e-7, epochs=10, finetune=0.9),
               _record("ViT-S", "ViT", 300, 0.6, exaflops=6e-7, epochs=30, finetune=0.95),
               _record("R+ViT-S", "Hybrid", 100, 0.7, exaflops=3e-7, epochs=10, finetune=0.96),
               _record("ViT-XS", "ViT", 100, 0.4, exaflops=1e-7, epochs=10, finetune=0.8)]
    study = _study("compute", records, finetune=True)
    figure = study_figure(study)
    *measured, reference = figure.axes
    assert len(measured) == 2  # few-shot and fine-tuned accuracy
    measured_x = {x for ax in measured for line in ax.lines for x in line.get_xdata()}
    assert measured_x == {2e-7, 6e-7, 3e-7, 1e-7}
    fewshot_y = sorted(y for line in measured[0].lines for y in line.get_ydata())
    assert fewshot_y == pytest.approx([40, 50, 60, 70])
    paper_x = {x for line in reference.lines for x in line.get_xdata()}
    assert paper_x == {row["pretrain_exaflops"] for row in paper_table6()} and not paper_x & measured_x
    legend = [line.get_label() for line in measured[0].lines if not line.get_label().startswith("_")]
    assert len(measured[0].lines) == 3 and legend == ["ViT", "Hybrid"]  # coloured and listed by family
    assert {text.get_text() for text in measured[0].texts} == {"ViT-S", "ViT-XS", "R+ViT-S"}  # each model named
    assert "paper (JFT-300M)" in reference.get_title() and reference.get_xscale() == "log"
    assert {line.get_label() for line in reference.lines} == {"ViT", "ResNet (BiT)", "Hybrid"}
    table = study_table(study)
    assert "| Hybrid | R+ViT-S | 10     | 1,234" in table and "| 70.0 " in table and "| 96.0 " in table
    assert "3e-07" in table and "13 s" in table and "1 x cpu: Test CPU" in table
    written = write_report(study, tmp_path)
    assert [p.name for p in written] == ["compute.png", "study.md"] and all(p.stat().st_size > 0 for p in written)


def test_data_size_plot_has_one_line_per_model_against_pretraining_examples():
    records = [_record("ViT", "ViT", n, a) for n, a in ((50, 0.3), (500, 0.6))]
    records += [_record("Hybrid", "Hybrid", n, a) for n, a in ((50, 0.5), (500, 0.7))]
    figure = study_figure(_study("data-size", records))
    fewshot, validation = figure.axes
    assert [line.get_label() for line in fewshot.lines] == ["ViT", "Hybrid"]
    assert [list(line.get_xdata()) for line in fewshot.lines] == [[50, 500], [50, 500]]
    assert fewshot.get_xscale() == "log" and "5-shot" in fewshot.get_ylabel() and "validation" in validation.get_ylabel()
    assert "| ViT    | ViT    | 500" in study_table(_study("data-size", records))


def test_table6_reference_is_the_papers_numbers():
    vit = {label: (x, y) for x, y, label in reference_points("imagenet")["ViT"]}
    assert vit["ViT-B/32, 7 ep"] == (55.0, 80.73) and vit["ViT-H/14, 14 ep"] == (4262.0, 88.08)
    resnet = {label: y for _, y, label in reference_points("average5")["ResNet (BiT)"]}
    assert resnet["ResNet50x1, 7 ep"] == pytest.approx((77.54 + 97.67 + 86.07 + 91.11 + 94.26) / 5)
    assert sum(len(points) for points in reference_points("cifar10").values()) == len(paper_table6()) == 18
    with pytest.raises(ValueError, match="reference_column"):
        reference_points("objectnet")
