"""`vit-repro demo` end to end in its smoke version (a few steps per stage): stage folders,
summary.json per model with the commands that reproduce each stage, the printed table."""

import shlex

from huggingface_hub import metadata_load

from hf_vit_repro import runs
from hf_vit_repro.demo import SUMMARY, run_demo
from hf_vit_repro.training import load_recipe


def test_demo_smoke_writes_summary_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    summary = run_demo(out, smoke=True, progress_bar=False)
    printed = capsys.readouterr().out
    assert "=== [1/2] ViT: pretrain" in printed and "=== [2/2] Hybrid: fine-tune" in printed
    assert "| ViT |" in printed and "| Hybrid |" in printed
    assert runs.read_json(out / SUMMARY) == summary
    assert set(summary["models"]) == {"vit", "hybrid"} and summary["smoke"] is True
    for key, entry in summary["models"].items():
        assert entry["parameters"] > 0 and 0.0 <= entry["test_accuracy"] <= 1.0 and entry["train_time_s"] > 0
        for stage, command in zip(("pretrain", "finetune"), entry["commands"]):
            run_dir = out / f"{key}_{stage}"
            assert (run_dir / runs.FINAL_DIR / "model.safetensors").is_file()
            assert list((run_dir / runs.LOGS_DIR).rglob("events.out.tfevents.*"))  # TensorBoard
            words = shlex.split(command)
            assert words[:2] == ["vit-repro", "train"]
            # The recorded command rebuilds exactly the recipe the stage ran (progress bars aside).
            rebuilt, ran = load_recipe(words[2], words[3:]).to_dict(), load_recipe(run_dir / runs.RECIPE).to_dict()
            rebuilt["run"].pop("progress_bar"), ran["run"].pop("progress_bar")
            assert rebuilt == ran
        assert entry["test_accuracy"] == runs.read_json(out / f"{key}_finetune" / runs.TRAIN_SUMMARY)["eval"]["accuracy"]
        # few-shot of the pretrained representation, figures of the fine-tuned model, a model card
        fewshot = runs.read_json(out / f"{key}_pretrain" / runs.FEWSHOT)["results"]["digits"]
        assert entry["fewshot_accuracy"] == {shots: fewshot[shots]["mean"] for shots in ("1", "5")}
        figures = out / f"{key}_finetune" / runs.ANALYSIS_DIR
        assert (figures / "attention_rollout.png").is_file() and (figures / runs.ANALYSIS_JSON).is_file()
        trend = runs.read_json(figures / runs.ANALYSIS_JSON)["mean_attention_distance"]["trend"]
        assert entry["attention_distance_grows_with_depth"] == trend["grows_with_depth"]
        card = metadata_load(out / "hub" / key / "README.md")
        metrics = card["model-index"][0]["results"][0]["metrics"]
        assert {"type": "accuracy", "value": entry["test_accuracy"]}.items() <= metrics[0].items()
    hybrid = runs.read_json(out / "hybrid_finetune" / runs.FINAL_DIR / "config.json")
    assert hybrid["backbone_config"] is not None

    # A second run in the same folder resumes the finished stages and refreshes the Hub folders.
    (out / "hub" / "vit" / "stale.txt").write_text("from an older demo")
    again = run_demo(out, smoke=True, progress_bar=False)
    assert {k: v["test_accuracy"] for k, v in again["models"].items()} == {
        k: v["test_accuracy"] for k, v in summary["models"].items()
    }
    assert (out / "hub" / "vit" / "README.md").is_file() and not (out / "hub" / "vit" / "stale.txt").exists()
    assert sorted(p.name for p in (out / "hub").iterdir()) == ["hybrid", "vit"]


def test_demo_table_shows_rho_with_layers_and_p_value():
    """The summary table reports the statistic, not a bare True (issue 14, item 19)."""
    from hf_vit_repro.demo import format_table

    entry = {"name": "ViT", "parameters": 1000, "test_accuracy": 0.5, "pretrain_test_accuracy": 0.4,
             "fewshot_accuracy": {"10": 0.3}, "train_time_s": 1.0, "attention_distance_grows_with_depth": True,
             "attention_distance_vs_depth": {"spearman_rho": 0.4, "spearman_p_value": 0.375, "num_layers": 4}}
    table = format_table({"models": {"vit": entry}, "total_time_s": 2.0})
    assert "Spearman's rho" in table.splitlines()[0]
    assert "| 0.40 (4 layers, p = 0.38) |" in table and "True" not in table
