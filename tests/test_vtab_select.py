"""`vit-repro vtab --method vpt-* --select` (hf_vit_repro.vtab.selection): VPT's selection protocol on a local
VTAB-1k fixture with a 2 x 1 grid and the smoke schedule. The chosen setting is the grid member with the best
val200 accuracy as each member's own run folder reports it, members train on train800 and score val200, the final
run trains on train800val200 with the chosen (batch-scaled) rate and weight decay and scores the test split; an
interrupted grid resumes without retraining its finished members; bad combinations are one-line errors."""

import json

import pytest
import yaml

from hf_vit_repro import cli, runs
from hf_vit_repro.training import loop
from hf_vit_repro.vtab import run_vtab, selection

from .test_vtab import SMOKE, Killed, checkpoint, vtab_data  # noqa: F401  (module fixtures: tiny checkpoint, local tasks)

GRID = ["--select-lr", "1", "0.05", "--select-weight-decay", "0.001"]


def saved_recipe(run_dir):
    return yaml.safe_load((run_dir / runs.RECIPE).read_text())


def test_select_chooses_the_best_val200_member_and_retrains_on_train800val200(vtab_data, checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "select"
    code = cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--method", "vpt-deep", "--select", *GRID,
                     "--output-dir", str(out), "--data-root", str(vtab_data)])
    assert code == 0
    task_dir = out / "vtab" / "dtd"
    record = json.loads((out / runs.VTAB).read_text())
    assert record["protocol"]["name"] == "select"
    assert record["protocol"]["selection_grid"] == {"lr": [1.0, 0.05], "weight_decay": [0.001]}
    scale = 8 / 256  # smoke's global batch 8, VPT's rates per 256 images
    members = {}
    for lr in (1.0, 0.05):
        member_dir = task_dir / selection.SELECT_DIR / selection.member_name(lr, 0.001)
        recipe = saved_recipe(member_dir)
        assert (recipe["data"]["train_split"], recipe["data"]["eval_split"]) == ("train800", "val200")
        assert recipe["optim"]["lr"] == pytest.approx(lr * scale) and recipe["optim"]["weight_decay"] == 0.001
        summary = runs.read_json(member_dir / runs.TRAIN_SUMMARY)
        assert summary["eval"]["split"].startswith("val200")
        members[lr] = summary["eval"]["accuracy"]
    best = max(members, key=lambda lr: (members[lr], -lr))  # best val200; ties: the smaller rate (VPT)
    final = saved_recipe(task_dir)
    assert final["data"]["train_split"] == "train800val200" and final["data"]["eval_split"] == "test"
    assert final["optim"]["lr"] == pytest.approx(best * scale) and final["optim"]["weight_decay"] == 0.001
    assert final["train"]["method"] == "vpt-deep" and final["optim"]["grad_clip_norm"] is None
    entry = record["tasks"]["vtab/dtd"]
    assert entry["hyperparameters"]["lr"] == pytest.approx(best * scale) and entry["hyperparameters"]["weight_decay"] == 0.001
    assert entry["train_split"] == "train800val200" and entry["method"] == "vpt-deep"
    assert entry["val_accuracy_by_setting"] == {selection.member_name(lr, 0.001): acc for lr, acc in members.items()}
    report = (out / "vtab.md").read_text()
    assert "**Protocol: select.**" in report and "val200 accuracy by setting (%)" in report
    assert "**Published (vpt-deep):**" in report and "| 65.80 " in report  # VPT-Deep's DTD, V-PETL Bench


def test_an_interrupted_grid_resumes_without_retraining_finished_members(vtab_data, checkpoint, tmp_path):  # noqa: F811
    grid = {"lr": [1.0, 0.05], "weight_decay": [0.001]}
    out = tmp_path / "resume"
    calls = []

    def dies_in_second_member(recipe):
        calls.append(recipe.data.train_split)
        if len(calls) == 2:
            raise Killed
        return loop.train(recipe)

    kwargs = dict(protocol="select", output_dir=out, overrides=[*SMOKE, "train.method=vpt-shallow"], data_root=vtab_data,
                  log=lambda _: None)
    with pytest.raises(Killed):
        run_vtab(checkpoint, ["vtab/dtd"], finetune_fn=selection.selecting_finetune(grid, dies_in_second_member), **kwargs)
    done = runs.read_json(out / "vtab" / "dtd" / selection.SELECT)
    assert list(done["members"]) == [selection.member_name(1.0, 0.001)]  # VPT's order: the larger rate first
    calls.clear()

    def counting(recipe):
        calls.append(recipe.data.train_split)
        return loop.train(recipe)

    record = run_vtab(checkpoint, ["vtab/dtd"], finetune_fn=selection.selecting_finetune(grid, counting), **kwargs)
    assert calls == ["train800", "train800val200"]  # the second member, then the final run
    assert set(record["tasks"]["vtab/dtd"]["val_accuracy_by_setting"]) == {"lr_1_wd_0.001", "lr_0.05_wd_0.001"}


def test_best_setting_breaks_ties_as_vpt_does():
    members = {"a": {"lr": 5.0, "weight_decay": 0.0, "val_accuracy": 0.5},
               "b": {"lr": 1.0, "weight_decay": 0.0, "val_accuracy": 0.5},
               "c": {"lr": 1.0, "weight_decay": 0.01, "val_accuracy": 0.5},
               "d": {"lr": 10.0, "weight_decay": 0.0, "val_accuracy": 0.4}}
    assert selection.best_setting(members) == members["c"]
    assert selection.best_setting({**members, "e": {"lr": 50.0, "weight_decay": 0.0, "val_accuracy": 0.6}})["lr"] == 50.0


def test_select_refuses_what_it_cannot_run(checkpoint, tmp_path, capsys):  # noqa: F811
    assert cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--method", "lora", "--select",
                     "--output-dir", str(tmp_path)]) == 2
    assert "vpt-shallow and vpt-deep only" in capsys.readouterr().err
    assert cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--method", "vpt-deep", "--select", "--protocol",
                     "sweep", "--output-dir", str(tmp_path)]) == 2
    assert "does not combine" in capsys.readouterr().err
    assert cli.main(["vtab", str(checkpoint), *SMOKE, "--tasks", "dtd", "--select-lr", "1", "--output-dir",
                     str(tmp_path)]) == 2
    assert "add --select" in capsys.readouterr().err
    assert selection.default_grid() == {"lr": [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05],
                                        "weight_decay": [0.01, 0.001, 0.0001, 0.0]}  # typed from VPT's tune_vtab.py
