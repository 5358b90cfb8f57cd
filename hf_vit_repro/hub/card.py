"""Model cards: a run folder (or a checkpoint folder, or a staged repo folder) -> README.md.

The card is rendered from `model_cards/modelcard_template.md` with the run's own files: the
model (config.json and the weights' headers), the training (recipe.yaml, train_summary.json), the
results (metrics/*.json, fewshot.json, vtab.json; the `model-index` metadata is built from the
metrics files) and the figures (analysis/*.png). Every number in a card comes from a file that is
uploaded next to it; the paper's own numbers come from `hf_vit_repro.paper_results` (and
`variants.PAPER_PARAMETER_COUNTS` for Table 1), always labelled as the paper's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from .model_facts import CLASSIFIER_PIPELINE_TAG, describe_model
from .redaction import active_token, redact, redact_secrets

# model_cards/modelcard_template.md, reached through the package (a link in a checkout, a copy in a
# built wheel), so installed packages have it too.
TEMPLATE_PATH = Path(__file__).resolve().parent / "modelcard_template.md"
LIBRARY_NAME = "transformers"
#: The task of the metrics in `model-index` / `.eval_results` (classification accuracies); the
#: card's `pipeline_tag` is the checkpoint's own (`model_facts.pipeline_tag_of`).
PIPELINE_TAG = CLASSIFIER_PIPELINE_TAG
DEFAULT_LICENSE = "apache-2.0"  # the license of this package's code; pass `license=` for the weights'
BASE_TAGS = ["vision-transformer", "vit", "image-classification", "hf-vit-repro"]
#: Tags of a BiT ResNet's card (the paper's CNN baseline; transformers' own model_type "bit").
BIT_TAGS = ["bit", "resnet", "image-classification", "hf-vit-repro"]

# Recipe keys (at any depth of recipe.yaml) the card reads for its metadata. A dataset value is a
# task of `hf_vit_repro.data.TASKS` (its Hub id is used) or a "namespace/name" Hub id; a base
# model is listed only when it is a "namespace/name" Hub id and not a local folder.
DATASET_KEYS = ("task", "dataset", "datasets", "dataset_id", "train_dataset", "pretrain_dataset", "finetune_dataset")
BASE_MODEL_KEYS = ("base_model", "init_from", "pretrained", "pretrained_model", "model_name_or_path")


# ============================================================================ reading a run
@dataclass
class Sources:
    """Where a card's inputs live: the save_pretrained folder and the folder with the run files
    (the same folder for a staged repo or a plain checkpoint)."""

    checkpoint: Path
    run: Path

    def file(self, name: str) -> Path | None:
        path = self.run / name
        return path if path.exists() else None


def locate(source: str | os.PathLike) -> Sources:
    """A run folder (has `final/`), a run's `final/` folder (its parent holds the run files), or a
    plain save_pretrained folder -> `Sources`. Raises `FileNotFoundError` saying what is missing."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder: give a run folder (with final/) or a checkpoint folder.")
    if (source / runs.FINAL_DIR).is_dir():
        checkpoint, run = source / runs.FINAL_DIR, source
    elif (source / "config.json").exists():
        checkpoint = run = source
        parent = source.parent
        if source.name == runs.FINAL_DIR and ((parent / runs.RECIPE).exists() or (parent / runs.TRAIN_SUMMARY).exists()):
            run = parent
    else:
        raise FileNotFoundError(
            f"{source} holds neither final/ (a run folder) nor config.json (a checkpoint folder). "
            f"Give the run folder of a finished training run, or a folder written by save_pretrained."
        )
    if not (checkpoint / "config.json").exists():
        raise FileNotFoundError(f"{checkpoint} has no config.json: it is not a save_pretrained folder.")
    if not (checkpoint / "model.safetensors").exists() and not (checkpoint / "model.safetensors.index.json").exists():
        found = sorted(p.name for p in checkpoint.iterdir())
        hint = ""
        if any(name.endswith(".bin") for name in found):
            hint = " It holds PyTorch .bin weights: load it and save_pretrained it again to write safetensors."
        raise FileNotFoundError(
            f"{checkpoint} has no weights (model.safetensors or a sharded model.safetensors.index.json); "
            f"found {found or 'nothing'}.{hint} Publish a folder written by `model.save_pretrained(...)` "
            "(training writes one to RUN_DIR/final/ when it finishes)."
        )
    return Sources(checkpoint=checkpoint, run=run)


def read_yaml(path: Path) -> Any:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _read_optional_json(path: Path | None, what: str) -> Any:
    if path is None:
        return None
    try:
        return runs.read_json(path)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} ({what}) is not valid JSON: {err}. Re-run the step that writes it.") from err


def _flatten(mapping: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping -> [("optimizer.lr", 0.001), ...] in file order."""
    if not isinstance(mapping, dict):
        return [(prefix or "value", mapping)]
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name))
        else:
            rows.append((name, value))
    return rows


def _find_values(mapping: Any, keys: tuple[str, ...]) -> list[Any]:
    found = []
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            if str(key) in keys:
                found.extend(value if isinstance(value, list) else [value])
            elif isinstance(value, dict):
                found.extend(_find_values(value, keys))
    return found


def is_hub_id(value: Any, anchors: list[Path]) -> bool:
    """A "namespace/name" Hub id, and not a folder relative to the working directory or to any of
    `anchors` and their parents (a run's `init_from: outputs/pretrain` is a local folder)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str) or value.count("/") != 1 or value.startswith((".", "~")):
        return False
    if Path(value).exists() or any((p / value).exists() for a in anchors for p in (a, *a.parents)):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def recipe_metadata(recipe: Any, anchors: list[Path]) -> tuple[list[str], str | None]:
    """(training datasets as Hub ids, base model Hub id or None) named by a recipe."""
    from ..data import TASKS

    datasets = []
    for value in _find_values(recipe, DATASET_KEYS):
        if isinstance(value, str) and value in TASKS:
            value = TASKS[value].hub_id
        if value and is_hub_id(value, anchors):
            datasets.append(value)
    base = next((v for v in _find_values(recipe, BASE_MODEL_KEYS) if is_hub_id(v, anchors)), None)
    return datasets, base



def local_folder(value: Any, anchors: list[Path]) -> Path | None:
    """`value` as an existing folder: as given, or relative to any of `anchors` and their parents."""
    if not isinstance(value, str) or not value:
        return None
    candidates = [Path(value)] + [p / value for a in anchors for p in (a, *a.parents)]
    return next((c for c in candidates if c.is_dir()), None)


def pretraining_of(recipe: Any, anchors: list[Path], given: str | None = None) -> str | None:
    """The paper's name of the data a checkpoint was pretrained on ("ImageNet-21k", ...): `given`
    (ValueError if it is not one of the paper's), else the `data.task` of the first recipe with
    `mode: pretrain` along the `model.init_from` chain of run folders starting at `recipe`
    (local folders only: a Hub id or a converted checkpoint says nothing), else None."""
    from .. import paper_results

    if given:
        name = paper_results.pretraining_name(given)
        if name is None:
            raise ValueError(f"pretraining data {given!r} is not one of the paper's: ImageNet, ImageNet-21k, JFT-300M")
        return name
    for _ in range(8):  # a chain of fine-tunings; bounded against a cycle of folders
        if not isinstance(recipe, dict):
            return None
        if recipe.get("mode") == "pretrain":
            return paper_results.pretraining_name((recipe.get("data") or {}).get("task"))
        folder = local_folder((recipe.get("model") or {}).get("init_from"), anchors)
        if folder is None:
            return None
        run = folder.parent if folder.name == runs.FINAL_DIR else folder
        recipe = read_yaml(run / runs.RECIPE) if (run / runs.RECIPE).is_file() else None
    return None


# ============================================================================ results
def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _metric_text(name: str, value: float) -> str:
    return _pct(value) if "acc" in name.lower() else f"{value:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, list):
        text = ", ".join(map(str, value))
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def read_metrics(run: Path) -> list[dict]:
    """Every `metrics/*.json` of a run (schema `runs.metrics_record`), sorted by file name."""
    folder = run / runs.METRICS_DIR
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = _read_optional_json(path, "an evaluation's metrics")
        missing = [key for key in ("task", "dataset", "split", "metrics") if key not in record]
        if missing:
            raise ValueError(f"{path} lacks {missing}: metrics files follow hf_vit_repro.runs.metrics_record.")
        records.append({**record, "file": f"{runs.METRICS_DIR}/{path.name}"})
    return records


def eval_results(records: list[dict]):
    """`huggingface_hub.EvalResult`s (the card's model-index) from metrics records: one per
    metric, values exactly as in the files."""
    from huggingface_hub import EvalResult

    results = []
    for record in records:
        for metric, value in record["metrics"].items():
            results.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name="Image Classification",
                    dataset_type=record["dataset"],
                    dataset_name=record["task"],
                    dataset_split=record["split"],
                    metric_type=metric,
                    metric_name=metric.replace("_", " "),
                    metric_value=value,
                )
            )
    return results


#: The folder of the Hub's eval-results files (huggingface_hub's `constants.EVAL_RESULTS_FOLDER`).
EVAL_RESULTS_DIR = ".eval_results"


def eval_result_files(records: list[dict]) -> dict[str, str]:
    """The Hub's `.eval_results/*.yaml` files from metrics records: {path in the repo: YAML text}.

    Format: the one huggingface_hub documents and parses (`EvalResultEntry`,
    `eval_result_entries_to_yaml`; https://huggingface.co/docs/hub/eval-results): a list of
    entries `{dataset: {id, task_id}, value, notes}`. One file per metrics file
    (`metrics/cifar10_test.json` -> `.eval_results/cifar10_test.yaml`), one entry per metric:
    `dataset.id` the record's Hub dataset, `task_id` its task, `value` exactly as in the file (a
    fraction), and `notes` naming the metric, split, resolution, image count and source file (the
    format has no field for the metric: a benchmark's eval.yaml fixes it, and these datasets have
    none). A record whose dataset is not a Hub id (local data) gets no file. The Hub shows such
    results on the model page; it puts them on a leaderboard only for datasets registered as
    benchmarks."""
    import yaml
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    files = {}
    for record in records:
        if not is_hub_id(record["dataset"], []):
            continue
        source = record.get("file") or f"{runs.METRICS_DIR}/{record['task']}_{record['split']}.json"
        resolution = record.get("resolution")
        where = [f"split {record['split']}"]
        if resolution:
            where.append(f"{_cell(resolution).replace(', ', 'x')} px")
        if record.get("num_images") is not None:
            where.append(f"{record['num_images']} images")
        entries = [
            EvalResultEntry(dataset_id=record["dataset"], task_id=str(record["task"]), value=value,
                            notes=f"{metric} ({', '.join(where)}); {source}")
            for metric, value in record["metrics"].items()
        ]
        name = f"{EVAL_RESULTS_DIR}/{Path(source).stem}.yaml"
        files[name] = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False)
    return files


def _paper_cell(record: dict, variant: str | None, pretraining: str | None, recipe: dict | None):
    """The paper's number matching one metrics record, or None: Table 2 for ImageNet / ReaL
    fine-tuned at 512 or 518 px with Polyak averaging 0.9999 (the paper's headline setting),
    Table 5 for its six benchmarks fine-tuned at 384 px; only for the same variant and pretraining
    data. A VTAB-1k task ("vtab/cifar100") is not the full benchmark and matches nothing."""
    from .. import paper_results

    bench = paper_results.benchmark_name(record.get("task"))
    if not (bench and variant and pretraining):
        return None
    resolution = record.get("resolution")
    resolution = resolution[0] if isinstance(resolution, (list, tuple)) and len(set(resolution)) == 1 else resolution
    ema = ((recipe or {}).get("train") or {}).get("ema_decay")
    if bench in ("imagenet", "imagenet_real") and resolution in (512, 518) and ema == 0.9999:
        return paper_results.sota_row(variant, pretraining, bench)
    if resolution == 384:
        return paper_results.transfer_row(variant, pretraining, bench)
    return None


def _evaluation_table(records: list[dict], variant: str | None, pretraining: str | None,
                      recipe: dict | None) -> dict | None:
    """The metrics files as a table, with a "paper (%)" column holding the paper's matching
    number or "no matching row" (`_paper_cell`), and the citation of every number shown."""
    if not records:
        return None
    metric_names = list(dict.fromkeys(name for record in records for name in record["metrics"]))
    # the numeric precision each evaluation ran in (metrics files written before it was recorded have none)
    precision = any("precision" in record for record in records)
    header = ["task", "dataset", "split", "resolution", "images"] + ["precision"] * precision + [
        f"{name} (%)" if "acc" in name.lower() else name for name in metric_names
    ] + ["paper (%)"]
    rows, citations = [], []
    for record in records:
        dataset = record["dataset"]
        row = [_cell(record["task"]), f"[{dataset}](https://huggingface.co/datasets/{dataset})" if "/" in dataset else _cell(dataset),
               _cell(record["split"]), _cell(record.get("resolution", "")), _cell(record.get("num_images", ""))]
        row += [_cell(record.get("precision", ""))] * precision
        row += [_metric_text(n, record["metrics"][n]) if n in record["metrics"] else "" for n in metric_names]
        paper = _paper_cell(record, variant, pretraining, recipe)
        if paper is None:
            row.append("no matching row")
        else:
            row.append(f"{paper.value:.2f}" + (f" ± {paper.std:.2f}" if paper.std is not None else ""))
            citations.append(paper.citation)
        rows.append(row)
    if not citations:  # nothing to set beside: the card says so once instead of a column of "no matching row"
        header, rows = header[:-1], [row[:-1] for row in rows]
    identity = (f"{variant or 'an architecture outside the paper’s variants'} pretrained on "
                f"{pretraining or 'data the run folders do not name (pass --pretraining-data)'}")
    return {"header": header, "rows": rows, "paper": bool(citations), "citations": list(dict.fromkeys(citations)),
            "identity": identity}


def _fewshot_table(fewshot: dict | None) -> dict | None:
    results = (fewshot or {}).get("results") or {}
    if not results:
        return None
    shots = sorted({int(k) for per_task in results.values() for k in per_task}, key=int)
    rows = []
    for task, per_task in results.items():
        row = [task]
        for k in shots:
            entry = per_task.get(str(k))
            if entry is None:
                row.append("")
                continue
            text = _pct(entry["mean"])
            if entry.get("std") is not None:
                text += f" ± {_pct(entry['std'])}"
            if entry.get("seeds"):
                text += f" ({len(entry['seeds'])} seeds)"
            row.append(text)
        rows.append(row)
    protocol = (fewshot.get("protocol") or {}).get("name") or "unrecorded (an older fewshot.json)"
    return {"header": ["task"] + [f"{k}-shot (%)" for k in shots], "rows": rows, "protocol": protocol}


def _vtab_table(vtab: dict | None) -> dict | None:
    """vtab.json as a table labelled with its protocol; a "paper (%)" column from the paper's
    Table 9 only where vtab.json itself found the row comparable (the paper's protocol, no
    departures, the same variant and pretraining data: `vtab.runner.paper_comparison`), and
    the paper's mean only beside a 19-task mean. Otherwise vtab.json's note says why not."""
    from .. import paper_results

    tasks = (vtab or {}).get("tasks") or {}
    if not tasks:
        return None
    comparison = vtab.get("paper") or {}
    row = None
    if comparison.get("comparable"):
        row = next((r for r in paper_results.vtab_rows() if r.label == comparison.get("row")), None)
    groups = ("natural", "specialized", "structured")
    order = sorted(tasks, key=lambda t: (groups.index(tasks[t].get("group")) if tasks[t].get("group") in groups else 3, t))
    rows = []
    for task in order:
        entry = tasks[task]
        hyper = entry.get("hyperparameters") or {}
        paper = [f"{row.tasks[task]:.1f}" if task in row.tasks else "no matching row"] if row else []
        rows.append([task, entry.get("group", ""), _pct(entry["accuracy"]), *paper,
                     _cell(", ".join(f"{k}={v}" for k, v in hyper.items()))])
    summary = [[f"mean, {group}", _pct(value)] for group, value in (vtab.get("group_means") or {}).items()]
    if vtab.get("mean") is not None:
        summary.append([f"mean, all {len(tasks)} tasks", _pct(vtab["mean"])])
    full = row is not None and set(row.tasks) <= set(tasks)
    if full:
        summary.append([f"paper mean, 19 tasks ({row.label})", f"{row.mean:.1f}"])
    protocol = vtab.get("protocol") or {}
    header = ["task", "group", "accuracy (%)"] + (["paper (%)"] if row else []) + ["hyperparameters"]
    return {"header": header, "rows": rows, "summary": summary,
            "protocol": protocol.get("name") or "unrecorded (an older vtab.json)",
            "paper_citation": row.citation if row else None,
            "paper_note": comparison.get("note") or "no matching row: vtab.json names no row of the paper's Table 9."}


def _duration(seconds: float) -> str:
    hours, rest = divmod(float(seconds), 3600)
    text = f"{int(hours)} h {rest / 60:.0f} min" if hours else f"{rest / 60:.1f} min"
    return f"{text} ({seconds:,.0f} s)"


def _training(sources: Sources, token: str | None) -> dict | None:
    recipe_path, summary_path = sources.file(runs.RECIPE), sources.file(runs.TRAIN_SUMMARY)
    if recipe_path is None and summary_path is None:
        return None
    recipe = redact_secrets(read_yaml(recipe_path), token) if recipe_path else None
    summary = redact_secrets(_read_optional_json(summary_path, "the training summary"), token) or {}
    facts = []
    if summary.get("steps") is not None:
        facts.append(("Optimizer steps", f"{int(summary['steps']):,}"))
    if summary.get("images_seen") is not None:
        facts.append(("Images seen", f"{int(summary['images_seen']):,}"))
    if summary.get("train_time_s") is not None:
        facts.append(("Training time", _duration(summary["train_time_s"])))
    hardware = summary.get("hardware")
    if isinstance(hardware, dict) and hardware:
        facts.append(("Hardware", ", ".join(f"{k}: {v}" for k, v in hardware.items())))
    elif hardware:
        facts.append(("Hardware", str(hardware)))
    if summary.get("final_train_loss") is not None:
        facts.append(("Final training loss", f"{float(summary['final_train_loss']):.4f}"))
    compute = _compute(summary.get("compute"), facts)
    stopping = summary.get("early_stopping")
    if isinstance(stopping, dict) and stopping.get("best_validation_accuracy") is not None:
        facts.append(("Early stopping", f"best validation accuracy {100 * float(stopping['best_validation_accuracy']):.2f}% "
                                        f"at step {stopping.get('best_step')} (final/ holds that model)"))
    command = summary.get("command")
    if isinstance(command, list):
        command = " ".join(map(str, command))
    return {
        "facts": [(k, _cell(v)) for k, v in facts],
        "recipe": [(k, _cell(v)) for k, v in _flatten(recipe)] if recipe else None,
        "command": command,
        "compute": compute,
    }


def _compute(compute: Any, facts: list) -> dict | None:
    """The training summary's `compute` entry (`hf_vit_repro.training.compute`): facts rows for
    the training compute and device time, and the numbers the card's sentence on them needs."""
    if not isinstance(compute, dict):
        return None
    if compute.get("training_exaflops") is not None:
        facts.append(("Training compute", f"{float(compute['training_exaflops']):.3g} exaFLOPs"))
    if compute.get("device_seconds") is not None:
        devices = f"{compute.get('num_devices', 1)} x {compute.get('device', 'unknown device')}"
        facts.append(("Device time", f"{_duration(float(compute['device_seconds']))} ({devices})"))
    if compute.get("training_exaflops") is None:
        return None
    return {
        "exaflops": f"{float(compute['training_exaflops']):.3g}",
        "forward_gflops": f"{float(compute.get('forward_flops_per_image', 0)) / 1e9:.4g}",
        "image_size": compute.get("image_size"),
        "images_seen": f"{int(compute.get('images_seen', 0)):,}",
    }


#: Captions of the figures `vit-repro analyze` draws (hf_vit_repro.analysis); others get their file name.
FIGURE_CAPTIONS = {
    "embedding_filters": "Principal components of the patch embedding filters E (paper, Figure 7 left)",
    "position_embedding_similarity": "Cosine similarity between position embeddings (paper, Figure 7 centre)",
    "mean_attention_distance": "Mean attention distance of each head against depth (paper, Figure 7 right)",
    "attention_rollout": "Attention maps by attention rollout (paper, Figure 6)",
}


def _figures(sources: Sources) -> list[dict]:
    folder = sources.run / runs.ANALYSIS_DIR
    if not folder.is_dir():
        return []
    return [
        {"path": path.relative_to(sources.run).as_posix(),
         "caption": FIGURE_CAPTIONS.get(path.stem, path.stem.replace("_", " ").replace("-", " "))}
        for path in sorted(folder.glob("*.png"))
    ]


# ============================================================================ the card
def model_card(
    source: str | os.PathLike,
    repo_id: str,
    *,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    converted_from: str | None = None,
    token: str | None = None,
    template_path: str | os.PathLike | None = None,
    recipe_root: str | os.PathLike | None = None,
    pretraining_data: str | None = None,
    adapter: dict | None = None,
):
    """Render the model card (`huggingface_hub.ModelCard`) of a run folder, a checkpoint folder or
    a staged repo folder, from `model_cards/modelcard_template.md`.

    Metadata: license, `library_name`, `pipeline_tag` (`image-classification` for a classifier,
    `image-feature-extraction` for an encoder: the bare model or a masked-patch-prediction /
    masked-image-modeling checkpoint, by config.json's `architectures`), tags (`hybrid` for hybrids), training
    datasets (`datasets`, plus those the recipe names, see `recipe_metadata`), `base_model`
    (argument or the recipe's `BASE_MODEL_KEYS` when a Hub id; local folders are looked for next
    to `recipe_root`, default the run folder, and its parents), and a `model-index` with one entry
    per metric of each `metrics/*.json`. Body: the model (from config.json and the weights), the
    training (recipe.yaml, train_summary.json), results (metrics, fewshot.json, vtab.json, each
    with the paper's matching number beside it, labelled and cited, or "no matching row": see
    `_paper_cell` and `_vtab_table`), figures (analysis/*.png), usage, limitations, citation. A
    file that is absent is said to be absent. `pretraining_data` names the data the checkpoint was
    pretrained on ("ImageNet-21k"...) where the run folders do not (`pretraining_of`).

    `converted_from` (e.g. "google/vit-base-patch16-224") marks published weights converted with
    `hf_vit_repro.convert`: the card then names the source and its `license` (required) and says
    that the weights, and what they score, are the source's.

    `adapter` (`hub.adapter.adapter_facts`) makes it the card of an adapter-only repo: `source` is
    then a `Sources` whose checkpoint is the run's merged model (described in the Model section)
    and whose run folder is the staged repo; `library_name: peft`, the method's tags, an Adapter
    section (base model, method, options, trainable parameters) and peft's usage.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .. import paper_results

    if converted_from and not license:
        raise ValueError(
            f"Say the license of the converted weights from {converted_from} (license='...', `--license` on the "
            "command line): it is the source's license, not this package's."
        )
    check_repo_id(repo_id)
    sources = source if isinstance(source, Sources) else locate(source)
    token = active_token(token)
    model = describe_model(sources.checkpoint)
    if adapter:  # the model table describes the merged model, whose weights an adapter repo does not hold
        model["rows"] = [(k, v.replace("the uploaded weights", "the merged model's weights")) for k, v in model["rows"]]
    records = read_metrics(sources.run)
    fewshot = _read_optional_json(sources.file(runs.FEWSHOT), "few-shot results")
    vtab = _read_optional_json(sources.file(runs.VTAB), "VTAB results")
    training = None if converted_from else _training(sources, token)
    recipe = read_yaml(sources.file(runs.RECIPE)) if sources.file(runs.RECIPE) and not converted_from else None

    recipe_datasets, recipe_base = recipe_metadata(recipe, [Path(recipe_root or sources.run).resolve()])
    train_datasets = list(dict.fromkeys(list(datasets or []) + recipe_datasets))
    base_model = base_model or recipe_base
    base_tags = BIT_TAGS if model["family"] == "bit" else BASE_TAGS
    base_tags = [model["pipeline_tag"] if tag == CLASSIFIER_PIPELINE_TAG else tag for tag in base_tags]
    tags = base_tags + (["hybrid"] if model["hybrid"] else []) + (["converted"] if converted_from else [])
    if adapter:
        tags += ["peft", adapter["method"]]
    results = eval_results(records)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        license=license or DEFAULT_LICENSE,
        library_name="peft" if adapter else LIBRARY_NAME,
        pipeline_tag=model["pipeline_tag"],
        tags=tags,
        datasets=train_datasets or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=results or None,
    )
    anchors = [Path(recipe_root or sources.run).resolve()]
    pretraining = pretraining_of(recipe, anchors, pretraining_data)
    evaluation = _evaluation_table(records, model["variant"], pretraining, recipe)
    context = {
        "repo_id": repo_id,
        "model_name": model_name,
        "model": model,
        "converted": {"source": converted_from, "license": license} if converted_from else None,
        "training": training,
        "evaluation": evaluation,
        "fewshot": _fewshot_table(fewshot),
        "vtab": _vtab_table(vtab),
        "paper_citation": paper_results.CITATION,
        "figures": _figures(sources),
        "has_logs": (sources.run / runs.LOGS_DIR).is_dir(),
        # ONNX graphs staged by `push --with-export` (hf_vit_repro.export's onnx/ layout)
        "adapter": adapter,
        "onnx": sorted(p.relative_to(sources.run).as_posix() for p in (sources.run / "onnx").glob("*.onnx")),
    }
    context["evaluated"] = bool(context["evaluation"] or context["fewshot"] or context["vtab"])
    card = ModelCard.from_template(card_data, template_path=str(template_path or _template_path()), **context)
    card.text = redact(card.text, token)  # belt and braces: the inputs were redacted already
    return card


def _template_path() -> Path:
    if not TEMPLATE_PATH.exists():
        raise FileNotFoundError(
            f"The model card template {TEMPLATE_PATH} is missing (the package ships a copy of the repository's "
            "model_cards/modelcard_template.md; reinstall the package, or pass template_path=...)."
        )
    return TEMPLATE_PATH


def check_repo_id(repo_id: str) -> None:
    """Raise ValueError, with what a repo id may hold, unless `repo_id` is a valid Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if not repo_id or repo_id.startswith("/") or repo_id.endswith("/"):
            raise HFValidationError("it is empty or has an empty part")
    except HFValidationError as err:
        raise ValueError(
            f"Invalid repo id {repo_id!r}: {str(err).rstrip('.')}. A repo id is 'name' or 'namespace/name' made of "
            "letters, digits, '-', '_' and '.' (no '--' or '..', at most 96 characters), e.g. 'your-name/vit-b16-cifar10'."
        ) from None

