"""Model cards and the repo folder a push uploads: built from a run's files, offline.

The uploads themselves (against a local Hub server) are in test_hub_push.py.
"""

import json
import re
import secrets
import shutil

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from hf_vit_repro import ViTReproConfig, hub, runs
from hf_vit_repro.cli import main

from .run_fixtures import FEWSHOT, FIGURES, METRICS, TRAIN_SUMMARY, VTAB, make_run, save_tiny_checkpoint


def fake_token() -> str:
    return "hf_" + secrets.token_hex(17)


def card_metadata(folder):
    """The README.md front matter as huggingface_hub parses it, and its model-index as tuples."""
    metadata = metadata_load(folder / "README.md")
    index = metadata.get("model-index")
    results = model_index_to_eval_results(index)[1] if index else []
    found = {(r.dataset_name, r.dataset_type, r.dataset_split, r.metric_type, r.metric_value) for r in results}
    return metadata, found


def metrics_in_files(folder):
    """(task, dataset, split, metric, value) of every metrics/*.json, read with plain json."""
    rows = set()
    for path in (folder / "metrics").glob("*.json"):
        record = json.loads(path.read_text())
        rows |= {(record["task"], record["dataset"], record["split"], k, v) for k, v in record["metrics"].items()}
    return rows


def pct(value):
    return f"{100 * value:.2f}"


@pytest.fixture(autouse=True)
def _no_login(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


# --------------------------------------------------------------------------- cards


def test_card_of_an_evaluated_run_comes_from_its_files(tmp_path):
    model = make_run(tmp_path / "run", recipe_extra="init_from: google/vit-base-patch16-224-in21k\n")
    folder = hub.build_repo_folder(tmp_path / "run", tmp_path / "repo", "someone/tiny-vit")
    hub.validate_repo_folder(folder)

    # exactly the files a push uploads
    staged = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert staged == {
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json",
        "configuration_vit_repro.py", "modeling_vit_repro.py", "recipe.yaml", "train_summary.json",
        "fewshot.json", "vtab.json", "metrics/cifar10_test.json", "metrics/digits_test.json",
        ".eval_results/cifar10_test.yaml", ".eval_results/digits_test.yaml",
        *(f"analysis/{name}.png" for name in FIGURES),
    }
    assert (folder / "model.safetensors").read_bytes() == (tmp_path / "run/final/model.safetensors").read_bytes()

    # metadata parses with huggingface_hub; the model-index equals the metrics files
    metadata, found = card_metadata(folder)
    assert found == metrics_in_files(folder)
    assert found == {(t, d, s, k, v) for t, d, s, metrics in METRICS for k, v in metrics.items()}
    assert metadata["license"] == "apache-2.0" and metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-classification"
    assert {"vision-transformer", "vit"} <= set(metadata["tags"]) and "hybrid" not in metadata["tags"]
    assert metadata["datasets"] == ["uoft-cs/cifar10"]  # the recipe's data.task, by its registry Hub id
    assert metadata["base_model"] == "google/vit-base-patch16-224-in21k"  # the recipe's init_from
    assert ModelCard.load(folder / "README.md").data.model_name == "tiny-vit"

    text = (folder / "README.md").read_text()
    body = text.split("\n---\n", 1)[1]
    # the model, from config.json and the weights
    params = sum(p.numel() for p in model.parameters())
    assert f"{params:,}" in body and "| Resolution | 32 x 32 |" in body and "| Patch size | 8 x 8 |" in body
    assert "| Tokens | 16 patches + class token |" in body and "cat, dog, bird" in body
    # the training, from recipe.yaml and train_summary.json
    assert "| `optim.lr` | 0.00123 |" in body and "| `optim.schedule.decay` | cosine |" in body
    assert "| `optim.betas` | 0.9, 0.999 |" in body and "| `model.variant` | null |" in body
    assert "| Optimizer steps | 1,234 |" in body and "| Images seen | 78,976 |" in body
    assert "1 h 12 min (4,321 s)" in body and "Tiny Test Accelerator" in body and "num_processes: 2" in body
    assert TRAIN_SUMMARY["command"] in body and "0.3141" in body
    # its compute: exaFLOPs = 3 x forward x images seen, device time = wall time x devices
    assert "| Training compute | 0.00105 exaFLOPs |" in body and "= 3 x 4.412 GFLOPs per 224 px image" in body
    assert "| Device time | 2 h 24 min (8,642 s) (2 x Tiny Test Accelerator) |" in body
    assert "best validation accuracy 81.25% at step 1000" in body
    # results: each number from its file, as a percentage
    for task, _, _, metrics in METRICS:
        assert all(pct(v) in body for v in metrics.values()), task
    for k, entry in FEWSHOT["results"]["cifar10"].items():
        assert f"{pct(entry['mean'])} ± {pct(entry['std'])} (3 seeds)" in body, k
    for task, entry in VTAB["tasks"].items():
        assert re.search(rf"\| {task} \| {entry['group']} \| {pct(entry['accuracy'])} \| lr={entry['hyperparameters']['lr']}", body)
    assert f"| mean, all 3 tasks | {pct(VTAB['mean'])} |" in body
    assert "not been evaluated" not in body
    # no paper numbers for a variant the paper does not have
    assert "paper:" not in body and "Table 2" not in body
    # figures are linked and shipped; usage names the repo; the paper is cited
    for name in FIGURES:
        assert f"](analysis/{name}.png)" in body
    assert 'from_pretrained("someone/tiny-vit", trust_remote_code=True)' in body
    assert 'pipeline("image-classification", model="someone/tiny-vit"' in body and "Trainer(" in body
    assert "## Limitations" in body and "@inproceedings{dosovitskiy2021an" in body


def _paper_variant_folder(folder, variant, metrics, vtab=None, recipe=None, resolution=384):
    """config.json of a paper variant with a stand-in weights file (cards read only headers)."""
    from safetensors.torch import save_file

    ViTReproConfig.from_variant(variant, image_size=32, num_labels=10).save_pretrained(folder)
    save_file({"w": torch.zeros(3, 5)}, folder / "model.safetensors")
    for task, dataset, value in metrics:
        runs.write_json(runs.metrics_path(folder, task, "test"), runs.metrics_record(
            checkpoint="c", task=task, dataset=dataset, split="test", resolution=resolution, num_images=10,
            metrics={"accuracy": value}))
    if vtab is not None:
        runs.write_json(folder / runs.VTAB, vtab)
    if recipe is not None:
        (folder / runs.RECIPE).write_text(yaml.safe_dump(recipe))
    return folder


def _finetuned_from(tmp_path, pretraining_task):
    """A fine-tuning recipe whose init_from is a pretraining run folder on `pretraining_task`."""
    pretrain = tmp_path / "pretrain_run"
    pretrain.mkdir(parents=True, exist_ok=True)
    (pretrain / runs.RECIPE).write_text(yaml.safe_dump({"mode": "pretrain", "data": {"task": pretraining_task}}))
    return {"mode": "finetune", "model": {"init_from": str(pretrain)}, "data": {"task": "cifar100"}}


def table_rows(text):
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ") and "test" in line}


def test_card_sets_the_papers_matching_row_beside_the_results(tmp_path):
    metrics = [("cifar100", "uoft-cs/cifar100", 0.8123), ("vtab/cifar100", "uoft-cs/cifar100", 0.6012),
               ("digits", "x/digits", 0.5)]
    folder = _paper_variant_folder(tmp_path / "l16", "ViT-L/16", metrics, recipe=_finetuned_from(tmp_path, "imagenet21k"))
    text = hub.model_card(folder, "someone/l16").text
    header = next(line for line in text.splitlines() if line.startswith("| task |"))
    assert header.endswith("| accuracy (%) | paper (%) |")
    rows = table_rows(text)
    # Table 5 of the paper, by hand: ViT-L/16 pretrained on ImageNet-21k, fine-tuned on CIFAR-100 at 384 px: 93.44
    assert rows["cifar100"].endswith("| 81.23 | 93.44 |")
    assert rows["vtab/cifar100"].endswith("| 60.12 | no matching row |")  # VTAB-1k's CIFAR-100 is not the benchmark
    assert rows["digits"].endswith("| 50.00 | no matching row |")
    assert "paper, Table 5: ViT-L/16 pretrained on ImageNet-21k, fine-tuned on CIFAR-100" in text
    assert "**paper's** numbers" in text and "not results of this checkpoint" in text
    assert "Table 1 gives 307M parameters for ViT-L/16" in text

    # the same results from a checkpoint whose pretraining the run folders do not name: no paper column ...
    unknown = _paper_variant_folder(tmp_path / "unknown", "ViT-L/16", metrics)
    text = hub.model_card(unknown, "someone/l16").text
    assert "paper (%)" not in text and "Paper: no matching row" in text and "pass --pretraining-data" in text
    # ... unless the publisher says what it was
    text = hub.model_card(unknown, "someone/l16", pretraining_data="ImageNet-21k").text
    assert table_rows(text)["cifar100"].endswith("| 81.23 | 93.44 |")
    with pytest.raises(ValueError, match="not one of the paper's"):
        hub.model_card(unknown, "someone/l16", pretraining_data="my-private-set")
    # another resolution is another setting; a variant the paper does not report has no row
    at_224 = _paper_variant_folder(tmp_path / "224", "ViT-L/16", metrics[:1], resolution=224,
                                   recipe=_finetuned_from(tmp_path, "imagenet21k"))
    assert "Paper: no matching row" in hub.model_card(at_224, "someone/l16").text
    other = _paper_variant_folder(tmp_path / "s16", "ViT-S/16", metrics[:1], recipe=_finetuned_from(tmp_path, "imagenet21k"))
    assert "paper (%)" not in hub.model_card(other, "someone/s16").text


def test_card_uses_table_2_for_the_papers_imagenet_setting(tmp_path):
    recipe = {**_finetuned_from(tmp_path, "imagenet21k"), "train": {"ema_decay": 0.9999}}
    folder = _paper_variant_folder(tmp_path / "l16", "ViT-L/16", [("imagenet1k", "timm/imagenet-1k-wds", 0.8512)],
                                   recipe=recipe, resolution=512)
    text = hub.model_card(folder, "someone/l16").text
    # Table 2 by hand: ViT-L/16 (ImageNet-21k) on ImageNet, 85.30 +- 0.02
    assert table_rows(text)["imagenet1k"].endswith("| 85.12 | 85.30 ± 0.02 |")
    assert "paper, Table 2: ViT-L/16 (ImageNet-21k), ImageNet" in text
    without_ema = _paper_variant_folder(tmp_path / "no-ema", "ViT-L/16", [("imagenet1k", "timm/imagenet-1k-wds", 0.85)],
                                        recipe=_finetuned_from(tmp_path, "imagenet21k"), resolution=512)
    assert "Paper: no matching row" in hub.model_card(without_ema, "someone/l16").text


def test_card_vtab_follows_the_comparison_vtab_json_made(tmp_path):
    tasks = {"vtab/dtd": {"group": "natural", "accuracy": 0.70, "hyperparameters": {"lr": 0.01}},
             "vtab/eurosat": {"group": "specialized", "accuracy": 0.95, "hyperparameters": {"lr": 0.01}}}
    comparable = {"tasks": tasks, "mean": 0.825, "protocol": {"name": "paper", "departures": []},
                  "paper": {"row": "ViT-L/16 (I21k)", "comparable": True, "note": "..."}}
    folder = _paper_variant_folder(tmp_path / "l16", "ViT-L/16", [], vtab=comparable)
    text = hub.model_card(folder, "someone/l16").text
    assert "(protocol: paper)" in text
    # Table 9 by hand, ViT-L/16 (I21k): DTD 74.1, EuroSAT 95.6
    assert "| vtab/dtd | natural | 70.00 | 74.1 |" in text and "| vtab/eurosat | specialized | 95.00 | 95.6 |" in text
    assert "paper, Table 9: ViT-L/16 (I21k)" in text
    assert "paper mean" not in text  # two tasks are not the paper's 19-task mean
    sweep = {**comparable, "protocol": {"name": "sweep"},
             "paper": {"row": "ViT-L/16 (I21k)", "comparable": False,
                       "note": "the paper's row ViT-L/16 (I21k) is not comparable: this run chose a learning rate per task"}}
    folder = _paper_variant_folder(tmp_path / "sweep", "ViT-L/16", [], vtab=sweep)
    text = hub.model_card(folder, "someone/l16").text
    assert "(protocol: sweep)" in text and "| vtab/dtd | natural | 70.00 | lr=0.01 |" in text
    assert "Paper: the paper's row ViT-L/16 (I21k) is not comparable" in text and "74.1" not in text


def test_card_of_a_hybrid(tmp_path):
    make_run(tmp_path / "run", hybrid=True, evaluated=False, figures=False)
    folder = hub.build_repo_folder(tmp_path / "run", tmp_path / "repo", "someone/tiny-hybrid")
    hub.validate_repo_folder(folder)
    metadata, found = card_metadata(folder)
    assert "hybrid" in metadata["tags"] and found == set()
    body = (folder / "README.md").read_text()
    config = json.loads((folder / "config.json").read_text())["backbone_config"]
    assert f"| Backbone blocks per stage | {', '.join(map(str, config['depths']))} |" in body
    assert f"| Backbone stage widths | {', '.join(map(str, config['hidden_sizes']))} |" in body
    assert "1 x 1 on the backbone's feature map: 16 x 16 pixels per token" in body  # stride 16: 3 stages
    assert "| Tokens | 16 patches + class token |" in body  # (64 / 16)^2
    # a paper hybrid is named as the paper names it
    named = tmp_path / "r50"
    ViTReproConfig.from_variant("R50+ViT-B/16", num_labels=10).save_pretrained(named)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, named / "model.safetensors")
    assert "| Architecture | R50+ViT-B/16 (hybrid" in hub.model_card(named, "someone/r50").text


def test_the_card_describes_the_family_models_family_of_names(tmp_path):
    """The card's model section follows `models.family_of` of the config (the family module decides):
    a ViT's patch size, a hybrid's backbone, a BiT ResNet's GroupNorm; transformers' own ViT is
    described as a ViT; a model of no family is refused in one line."""
    from transformers import BitConfig, BitForImageClassification

    from hf_vit_repro.models import BIT, HYBRID, VIT, family_of

    save_tiny_checkpoint(tmp_path / "vit")
    save_tiny_checkpoint(tmp_path / "hybrid", hybrid=True)
    BitForImageClassification(BitConfig(depths=[1, 1], hidden_sizes=[32, 64], embedding_size=16, num_groups=8,
                                        num_labels=4)).save_pretrained(tmp_path / "bit")
    described = {}
    for kind, family in (("vit", VIT), ("hybrid", HYBRID), ("bit", BIT)):
        assert family_of(json.loads((tmp_path / kind / "config.json").read_text())) is family
        facts = hub.describe_model(tmp_path / kind)
        described[kind] = dict(facts["rows"])
        assert facts["hybrid"] == (family is HYBRID) and facts["family"] == ("bit" if family is BIT else "vit")
    assert described["vit"]["Patch size"] == "8 x 8" and "Backbone blocks per stage" not in described["vit"]
    assert "hybrid" in described["hybrid"]["Architecture"] and described["hybrid"]["Backbone blocks per stage"] == "2, 1, 2"  # TINY_BACKBONE
    assert described["bit"]["GroupNorm groups"] == "8" and "Patch size" not in described["bit"]
    with pytest.raises(ValueError, match="'clip' model, not 'vit_repro', 'vit' or 'bit'"):
        (tmp_path / "clip").mkdir()
        (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
        hub.describe_model(tmp_path / "clip")


@pytest.mark.parametrize("kind", ["run without evaluation", "plain checkpoint"])
def test_card_without_evaluation_says_so(tmp_path, kind):
    if kind == "plain checkpoint":
        save_tiny_checkpoint(tmp_path / "ckpt")
        source = tmp_path / "ckpt"
    else:
        # fine-tuned from a local run folder named relative to where training ran: no base_model
        (tmp_path / "outputs/pretrain").mkdir(parents=True)
        make_run(tmp_path / "outputs/run", evaluated=False, figures=False, recipe_extra="init_from: outputs/pretrain\n")
        source = tmp_path / "outputs/run"
    folder = hub.build_repo_folder(source, tmp_path / "repo", "someone/unevaluated")
    hub.validate_repo_folder(folder)
    metadata, found = card_metadata(folder)
    assert "model-index" not in metadata and found == set() and "base_model" not in metadata
    body = (folder / "README.md").read_text().split("\n---\n", 1)[1]
    assert "This checkpoint has not been evaluated" in body
    assert "### Evaluation" not in body and "### VTAB-1k" not in body and "(%)" not in body
    assert ("No training record" in body) == (kind == "plain checkpoint")
    assert not (folder / "metrics").exists()


def test_card_of_converted_weights_names_source_and_license(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from hf_vit_repro.convert import convert

    torch.manual_seed(0)
    source = tmp_path / "google-vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64, num_labels=3)).save_pretrained(source)
    converted = convert(source, tmp_path / "converted")
    with pytest.raises(ValueError, match="license of the converted weights"):
        hub.build_repo_folder(converted, tmp_path / "repo", "someone/vit-converted", converted_from="google/vit-tiny-test")
    folder = hub.build_repo_folder(converted, tmp_path / "repo", "someone/vit-converted",
                                   converted_from="google/vit-tiny-test", license="mit")
    hub.validate_repo_folder(folder)
    metadata, _ = card_metadata(folder)
    assert metadata["license"] == "mit" and "converted" in metadata["tags"]
    body = (folder / "README.md").read_text()
    assert "`google/vit-tiny-test`" in body and "**mit**" in body
    assert "not trained by hf_vit_repro" in body and "reflect the source's training" in body


# --------------------------------------------------------------------------- folder, dry run, validation


def test_dry_run_command_writes_the_folder_and_validates_it(tmp_path, capsys):
    make_run(tmp_path / "run")
    out = tmp_path / "staged"
    assert main(["push", str(tmp_path / "run"), "someone/tiny-vit", "--dry-run", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert all(name in printed for name in files) and f"{len(files)} files" in printed
    assert "passed validation; nothing was uploaded" in printed
    # a second dry run never overwrites the folder
    assert main(["push", str(tmp_path / "run"), "someone/tiny-vit", "--dry-run", "--output-dir", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert not (out / "logs").exists()
    # RUN_DIR/final works too, and picks up the run's files from its parent; the training logs by default
    (tmp_path / "run/logs/train").mkdir(parents=True)
    (tmp_path / "run/logs/train/events.out.tfevents.1").write_bytes(b"\x00event")
    (tmp_path / "run/logs/train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    folder = hub.build_repo_folder(tmp_path / "run/final", tmp_path / "from-final", "someone/tiny-vit")
    assert (folder / "recipe.yaml").exists() and (folder / "metrics/cifar10_test.json").exists()
    assert (folder / "logs/train/events.out.tfevents.1").read_bytes() == b"\x00event"
    assert (folder / "logs/train_log.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'
    assert "TensorBoard logs of the run are in `logs/`" in (folder / "README.md").read_text()
    # the command line: logs by default (the old --include-logs still accepted), --no-logs leaves them out
    for flags, has_logs in (([], True), (["--include-logs"], True), (["--no-logs"], False)):
        out = tmp_path / f"cli{len(flags)}{has_logs}"
        assert main(["push", str(tmp_path / "run"), "someone/tiny-vit", "--dry-run", "--output-dir", str(out), *flags]) == 0
        assert (out / "logs/train/events.out.tfevents.1").is_file() == has_logs, flags
        assert ("TensorBoard logs of the run are in `logs/`" in (out / "README.md").read_text()) == has_logs


def test_validation_names_what_is_wrong(tmp_path):
    make_run(tmp_path / "run")
    good = hub.build_repo_folder(tmp_path / "run", tmp_path / "good", "someone/tiny-vit")

    def broken(name, edit):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        edit(folder)
        with pytest.raises(ValueError) as info:
            hub.validate_repo_folder(folder)
        return str(info.value)

    def change_metric(folder):
        path = folder / "metrics/digits_test.json"
        record = json.loads(path.read_text())
        record["metrics"]["accuracy"] = 0.1
        path.write_text(json.dumps(record))

    assert "model-index" in broken("metric", change_metric)
    assert "modeling_vit_repro.py, which is missing" in broken("code", lambda f: (f / "modeling_vit_repro.py").unlink())
    assert "links to analysis/mean_attention_distance.png" in broken(
        "figure", lambda f: (f / "analysis/mean_attention_distance.png").unlink())

    def wrong_weights(folder):
        config = json.loads((folder / "config.json").read_text())
        config["num_hidden_layers"] = 3
        (folder / "config.json").write_text(json.dumps(config))

    assert "missing_keys" in broken("weights", wrong_weights)


@pytest.mark.parametrize("repo_id", ["bad id!", "a/b/c", "my--model", "x" * 97, "org/.hidden", ""])
def test_invalid_repo_id_is_refused_before_any_work(tmp_path, capsys, repo_id):
    with pytest.raises(ValueError, match="Invalid repo id") as info:
        hub.push_to_hub(tmp_path / "does-not-exist", repo_id)
    assert repr(repo_id) in str(info.value) and "'namespace/name'" in str(info.value)
    assert main(["push", str(tmp_path), repo_id, "--dry-run"]) == 2
    assert "Invalid repo id" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_folders_that_cannot_be_published(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    ViTReproConfig(num_labels=3).save_pretrained(run / "final")  # config only: no weights
    with pytest.raises(FileNotFoundError, match="has no weights.*save_pretrained"):
        hub.push_to_hub(run, "someone/x", dry_run=True, output_dir=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="neither final/ .* nor config.json"):
        hub.push_to_hub(tmp_path, "someone/x", dry_run=True, output_dir=tmp_path / "out")
    ckpt = tmp_path / "ckpt"
    save_tiny_checkpoint(ckpt)
    (ckpt / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        hub.push_to_hub(ckpt, "someone/x", dry_run=True, output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="create_pr .* --revision"):
        hub.push_to_hub(ckpt, "someone/x", create_pr=True, revision="dev")
    assert not (tmp_path / "out").exists()


def test_the_token_appears_in_no_written_file_or_output(tmp_path, monkeypatch, capsys):
    token = fake_token()
    monkeypatch.setenv("HF_TOKEN", token)
    make_run(tmp_path / "run", recipe_extra=f"hub_token: {token}\nhub:\n  api_key: abc\n")
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    summary["command"] += f" --token {token} --other hf_{'x' * 30}"
    runs.write_json(tmp_path / "run/train_summary.json", summary)

    folder = hub.push_to_hub(tmp_path / "run", "someone/tiny-vit", dry_run=True, output_dir=tmp_path / "out")
    printed = capsys.readouterr()
    for path in folder.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in printed.out + printed.err
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert recipe["hub_token"] == "<redacted>" and recipe["hub"]["api_key"] == "<redacted>"
    assert recipe["optim"]["lr"] == 0.00123 and recipe["data"]["task"] == "cifar10"  # everything else is kept
    card = (folder / "README.md").read_text()
    assert "| `hub_token` | <redacted> |" in card and "--token <redacted> --other <redacted>" in card

    # a binary file holding the token (here a TensorBoard log) stops the push, without echoing it
    (tmp_path / "run/logs").mkdir()
    (tmp_path / "run/logs/events.out.tfevents.1").write_bytes(b"\x00\x01" + token.encode() + b"\x00")
    with pytest.raises(ValueError, match="logs/events.out.tfevents.1 contains a Hugging Face token") as info:
        hub.push_to_hub(tmp_path / "run", "someone/tiny-vit", dry_run=True, output_dir=tmp_path / "out2", include_logs=True)
    assert token not in str(info.value) and not (tmp_path / "out2").exists()
    assert not list(tmp_path.glob(".out2.staging-*"))  # nothing half-written left behind


def test_end_of_training_hook(tmp_path, monkeypatch):
    make_run(tmp_path / "run", evaluated=False, figures=False)
    monkeypatch.setenv("RANK", "1")
    assert hub.push_run(tmp_path / "run", "someone/tiny-vit", dry_run=True, output_dir=tmp_path / "out") is None
    assert not (tmp_path / "out").exists()  # only the main process publishes
    monkeypatch.setenv("RANK", "0")
    folder = hub.push_run(tmp_path / "run", "someone/tiny-vit", dry_run=True, output_dir=tmp_path / "out", verbose=False)
    assert (folder / "README.md").exists() and (folder / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="no final/ checkpoint"):
        hub.push_run(tmp_path / "run/final", "someone/tiny-vit", dry_run=True)


# --------------------------------------------------------------------------- the Hub's conventions


@pytest.mark.parametrize("head", ["ViTReproForMaskedPatchPrediction", "ViTReproForMaskedImageModeling", "ViTReproModel"])
def test_an_encoder_is_tagged_image_feature_extraction_and_its_card_says_how_to_use_it(tmp_path, head):
    from transformers import ViTImageProcessor, pipeline

    from hf_vit_repro import modeling_vit_repro

    from .conftest import randomize_, tiny_kwargs

    model = randomize_(getattr(modeling_vit_repro, head)(ViTReproConfig(**tiny_kwargs()))).eval()
    model.save_pretrained(tmp_path / "ckpt")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path / "ckpt")
    folder = hub.build_repo_folder(tmp_path / "ckpt", tmp_path / "repo", "someone/tiny-encoder")
    hub.validate_repo_folder(folder)  # loads with the class config.json names, not a classifier

    metadata, _ = card_metadata(folder)
    assert metadata["pipeline_tag"] == "image-feature-extraction"
    assert "image-feature-extraction" in metadata["tags"] and "image-classification" not in metadata["tags"]
    body = (folder / "README.md").read_text().split("\n---\n", 1)[1]
    assert 'pipeline("image-feature-extraction", model="someone/tiny-encoder", trust_remote_code=True)' in body
    assert "| Head | " in body and "| Classes |" not in body and "Labels (" not in body
    assert 'pipeline("image-classification"' not in body

    # what the card says works: the feature-extraction pipeline gives the encoder's hidden states
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    features = torch.tensor(pipeline("image-feature-extraction", model=str(folder))(image))
    encoder = model if head == "ViTReproModel" else model.vit
    pixels = ViTImageProcessor.from_pretrained(folder)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = encoder(pixels).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_a_classifier_keeps_image_classification(tmp_path):
    make_run(tmp_path / "run", evaluated=False, figures=False)
    folder = hub.build_repo_folder(tmp_path / "run", tmp_path / "repo", "someone/tiny-vit")
    metadata, _ = card_metadata(folder)
    assert metadata["pipeline_tag"] == "image-classification" and "image-feature-extraction" not in metadata["tags"]


def test_eval_results_files_in_the_hubs_format_beside_the_model_index(tmp_path):
    from huggingface_hub import parse_eval_result_entries

    make_run(tmp_path / "run")
    # a metrics file of local data (no Hub dataset id) gets no eval-results file
    runs.write_json(tmp_path / "run/metrics/mine_test.json", runs.metrics_record(
        checkpoint="x", task="mine", dataset="mine (local)", split="test", resolution=32, num_images=5,
        metrics={"accuracy": 0.2}))
    folder = hub.build_repo_folder(tmp_path / "run", tmp_path / "repo", "someone/tiny-vit")
    hub.validate_repo_folder(folder, load_model=False)
    files = sorted(p.name for p in (folder / ".eval_results").iterdir())
    assert files == ["cifar10_test.yaml", "digits_test.yaml"]
    for task, dataset, split, metrics in METRICS:
        raw = yaml.safe_load((folder / f".eval_results/{task}_{split}.yaml").read_text())
        assert raw[0]["dataset"] == {"id": dataset, "task_id": task} and set(raw[0]) == {"dataset", "value", "notes"}
        entries = parse_eval_result_entries(raw)  # huggingface_hub's own reader of the format
        assert [(e.dataset_id, e.task_id, e.value) for e in entries] == [(dataset, task, v) for v in metrics.values()]
        for entry, metric in zip(entries, metrics):
            assert entry.notes.startswith(f"{metric} (split {split}, 32 px, 50 images)")
            assert entry.notes.endswith(f"metrics/{task}_{split}.json")

    def broken(name, edit):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        edit(copy)
        with pytest.raises(ValueError) as info:
            hub.validate_repo_folder(copy, load_model=False)
        return str(info.value)

    assert ".eval_results/digits_test.yaml is missing" in broken("gone", lambda f: (f / ".eval_results/digits_test.yaml").unlink())

    def change_value(f):
        path = f / ".eval_results/cifar10_test.yaml"
        path.write_text(path.read_text().replace("0.4567", "0.9999"))

    assert ".eval_results/cifar10_test.yaml differs from its metrics file" in broken("changed", change_value)
    assert ".eval_results/extra.yaml matches no metrics file" in broken(
        "extra", lambda f: (f / ".eval_results/extra.yaml").write_text("[]\n"))


def test_push_with_export_stages_the_onnx_graphs_where_transformers_js_looks(tmp_path, capsys):
    from hf_vit_repro.export import export

    model = make_run(tmp_path / "run", evaluated=False, figures=False)
    export(tmp_path / "run", tmp_path / "int8", quantize="int8", progress=False)
    out = tmp_path / "staged"
    assert main(["push", str(tmp_path / "run"), "someone/tiny-vit", "--dry-run", "--output-dir", str(out),
                 "--with-export", str(tmp_path / "int8")]) == 0
    assert "onnx/model_quantized.onnx" in capsys.readouterr().out
    for name in ("onnx/model.onnx", "onnx/model_quantized.onnx"):
        assert (out / name).read_bytes() == (tmp_path / "int8" / name).read_bytes()
    assert json.loads((out / "onnx/export_report.json").read_text())["artefact"] == "onnx/model_quantized.onnx"
    assert (out / "config.json").read_bytes() == (tmp_path / "run/final/config.json").read_bytes()  # the checkpoint's, not the export's
    body = (out / "README.md").read_text()
    assert "`onnx/model.onnx`, `onnx/model_quantized.onnx`: exports of these weights" in body
    assert 'hf_hub_download("someone/tiny-vit", "onnx/model.onnx")' in body

    # refused, before anything is staged: graphs of other weights, another resolution, a .pt2, the old layout
    other = tmp_path / "other"
    save_tiny_checkpoint(other)
    theirs = model.__class__.from_pretrained(other)
    with torch.no_grad():
        theirs.classifier.bias.add_(1.0)
    theirs.save_pretrained(other)
    export(other, tmp_path / "other-onnx", progress=False)
    export(tmp_path / "run", tmp_path / "at48", image_size=48, progress=False)
    export(tmp_path / "run", tmp_path / "pt2", format="exported-program", progress=False)
    old = tmp_path / "old-layout"
    shutil.copytree(tmp_path / "int8", old)
    report = json.loads((old / "export_report.json").read_text())
    report["files"] = {name.removeprefix("onnx/"): entry for name, entry in report["files"].items()}
    (old / "export_report.json").write_text(json.dumps(report))
    for folder, message in (("other-onnx", "does not match"), ("at48", "exported at 48x48 px but the checkpoint runs at 32x32"),
                            ("pt2", "only ONNX exports are published"), ("old-layout", "layout before onnx/")):
        staged = tmp_path / f"staged-{folder}"
        capsys.readouterr()
        assert main(["push", str(tmp_path / "run"), "someone/tiny-vit", "--dry-run", "--output-dir", str(staged),
                     "--with-export", str(tmp_path / folder)]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the loading bars of the check
        assert error.startswith("vit-repro push: error:") and message in error, error
        assert not staged.exists() and not list(tmp_path.glob(f".staged-{folder}*"))
