"""Model cards: a run folder (or a checkpoint folder, or a staged repo folder) -> README.md.

The card is rendered from `model_cards/modelcard_template.md` with the run's own files: the
model (config.json and the weights' headers), the training (recipe.yaml, train_summary.json), the
results (metrics/*.json, fewshot.json, vtab.json; the `model-index` metadata is built from the
metrics files) and the figures (analysis/*.png). Every number in a card comes from a file that is
uploaded next to it. The only constants are the paper's own numbers (`PAPER_TABLE_2`, and
`variants.PAPER_PARAMETER_COUNTS` for Table 1), always labelled as the paper's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from .redaction import active_token, redact, redact_secrets

# model_cards/modelcard_template.md, reached through the package (a link in a checkout, a copy in a
# built wheel), so installed packages have it too.
TEMPLATE_PATH = Path(__file__).resolve().parent / "modelcard_template.md"
LIBRARY_NAME = "transformers"
PIPELINE_TAG = "image-classification"
DEFAULT_LICENSE = "apache-2.0"  # the license of this package's code; pass `license=` for the weights'
BASE_TAGS = ["vision-transformer", "vit", "image-classification", "hf-vit-repro"]

#: Paper, Table 2 (Dosovitskiy et al., ICLR 2021): accuracy (%) after fine-tuning, for the
#: paper's own models, keyed by variant -> pretraining data -> benchmark. A card shows these next
#: to a run's numbers only for the same variant, in columns labelled as the paper's.
PAPER_TABLE_2: dict[str, dict[str, dict[str, float]]] = {
    "ViT-H/14": {
        "JFT-300M": {"imagenet": 88.55, "imagenet_real": 90.72, "cifar10": 99.50, "cifar100": 94.55,
                     "pets": 97.56, "flowers102": 99.68, "vtab": 77.63},
    },
    "ViT-L/16": {
        "JFT-300M": {"imagenet": 87.76, "imagenet_real": 90.54, "cifar10": 99.42, "cifar100": 93.90,
                     "pets": 97.32, "flowers102": 99.74, "vtab": 76.28},
        "ImageNet-21k": {"imagenet": 85.30, "imagenet_real": 88.62, "cifar10": 99.15, "cifar100": 93.25,
                         "pets": 94.67, "flowers102": 99.61, "vtab": 72.72},
    },
}
PAPER_SOURCE = "Dosovitskiy et al., ICLR 2021, Table 2 (fine-tuned top-1 accuracy, %)"

# Task names (lower case, letters and digits only) that are the paper's Table 2 benchmarks. Only
# the task name is matched: a VTAB-1k task ("vtab/cifar100") is not the full benchmark.
_BENCHMARKS = {
    "imagenet": {"imagenet", "imagenet1k", "ilsvrc2012", "imagenetval"},
    "imagenet_real": {"imagenetreal", "real", "imagenet1kreal"},
    "cifar10": {"cifar10"},
    "cifar100": {"cifar100"},
    "pets": {"pets", "oxfordpets", "oxfordiiitpet", "oxfordiiitpets"},
    "flowers102": {"flowers", "flowers102", "oxfordflowers102", "oxfordflowers"},
}

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


def weight_files(checkpoint: Path) -> list[Path]:
    index = checkpoint / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(runs.read_json(index)["weight_map"].values()))
        return [index] + [checkpoint / shard for shard in shards]
    return [checkpoint / "model.safetensors"]


def count_parameters(checkpoint: str | os.PathLike) -> int:
    """Number of parameters stored in a checkpoint's safetensors weights (read from the file
    headers, so nothing is loaded)."""
    from huggingface_hub.hf_api import parse_local_safetensors_file_metadata

    total = 0
    for path in weight_files(Path(checkpoint)):
        if path.suffix == ".safetensors":
            total += sum(parse_local_safetensors_file_metadata(path).parameter_count.values())
    return total


def _read_yaml(path: Path) -> Any:
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


def _is_hub_id(value: Any, anchors: list[Path]) -> bool:
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
        if value and _is_hub_id(value, anchors):
            datasets.append(value)
    base = next((v for v in _find_values(recipe, BASE_MODEL_KEYS) if _is_hub_id(v, anchors)), None)
    return datasets, base



# ============================================================================ describing the model
def _size_name(config: dict) -> str | None:
    """"B" when (width, depth, heads, MLP) is a row of `variants.SIZES`, else None."""
    from ..variants import SIZES

    dims = (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("num_attention_heads"), config.get("intermediate_size"))
    return next((size for size, row in SIZES.items() if tuple(row) == dims), None)


def _backbone_name(backbone: dict) -> str | None:
    """The hybrid's named CNN ("R50") when its stage depths and widths match `variants.BACKBONES`."""
    from .. import variants

    stages = (tuple(backbone.get("depths") or ()), tuple(backbone.get("hidden_sizes") or ()))
    return next((name for name, row in getattr(variants, "BACKBONES", {}).items() if tuple(map(tuple, row)) == stages), None)


def _pair_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " x ".join(str(v) for v in value)
    return f"{value} x {value}"


def describe_model(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a card says about the architecture, read from config.json (through `ViTReproConfig`,
    for derived values such as a hybrid's token stride) and the weights' headers.

    The name is the paper's ("ViT-B/16", "R50+ViT-B/16": the number after "/" is the pixels per
    token, which for a hybrid is the CNN's stride times the 1 x 1 patches) when the config is a
    row of `variants`, else "custom ViT" / "ResNet+ViT" with the numbers in the table.
    """
    from ..configuration_vit_repro import ViTReproConfig
    from ..variants import PAPER_PARAMETER_COUNTS, PATCH_SIZES

    checkpoint = Path(checkpoint)
    raw = runs.read_json(checkpoint / "config.json")
    if raw.get("model_type") != ViTReproConfig.model_type:
        raise ValueError(
            f"{checkpoint}/config.json is a {raw.get('model_type')!r} model, not {ViTReproConfig.model_type!r}: "
            "convert it first (`vit-repro convert`)."
        )
    config = ViTReproConfig.from_pretrained(checkpoint)
    backbone = raw.get("backbone_config") or None
    size = _size_name(raw)
    stride_h, stride_w = getattr(config, "token_stride_hw", config.patch_hw)
    variant = None
    if backbone is None:
        if size and stride_h == stride_w and stride_h in PATCH_SIZES:
            variant = f"ViT-{size}/{stride_h}"
        name = variant or "custom ViT"
    else:
        cnn = _backbone_name(backbone)
        if size and cnn and stride_h == stride_w:
            variant = f"{cnn}+ViT-{size}/{stride_h}"
        name = variant or "ResNet+ViT hybrid"
    id2label = config.id2label or {}
    parameters = count_parameters(checkpoint)
    rows = [
        ("Architecture", name + (" (hybrid: a BiT ResNet's feature map is cut into the tokens)" if backbone else "")),
        ("Parameters", f"{parameters / 1e6:.1f}M ({parameters:,}, counted in the uploaded weights)"),
        ("Layers / width / MLP / heads", f"{config.num_hidden_layers} / {config.hidden_size} / "
                                          f"{config.intermediate_size} / {config.num_attention_heads}"),
        ("Resolution", _pair_text(config.image_hw)),
    ]
    if backbone is None:
        rows.append(("Patch size", _pair_text(config.patch_hw)))
    else:
        rows.append(("Patch size", f"{_pair_text(config.patch_hw)} on the backbone's feature map: "
                                   f"{_pair_text((stride_h, stride_w))} pixels per token"))
        for key in ("depths", "hidden_sizes"):
            if backbone.get(key) is not None:
                label = {"depths": "blocks per stage", "hidden_sizes": "stage widths"}[key]
                rows.append((f"Backbone {label}", ", ".join(map(str, backbone[key]))))
    rows += [
        ("Tokens", f"{config.grid_size[0] * config.grid_size[1]} patches"
                   + (" + class token" if config.pooling == "token" else "")),
        ("Pooling", "class token" if config.pooling == "token" else "global average pooling of the patch tokens"),
        ("Pre-logits layer", f"{config.representation_size} (dense + tanh)" if config.representation_size else "none"),
        ("Classes", str(len(id2label))),
    ]
    return {
        "name": name,
        "variant": variant,
        "hybrid": backbone is not None,
        "parameters": parameters,
        "paper_parameters": PAPER_PARAMETER_COUNTS.get(variant) if variant else None,
        "rows": rows,
        "labels": [id2label[k] for k in sorted(id2label)][:10],
        "num_labels": len(id2label),
    }


# ============================================================================ results
def _benchmark(task: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", task.lower())
    return next((bench for bench, names in _BENCHMARKS.items() if key in names), None)


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


def _paper_columns(variant: str | None) -> list[tuple[str, dict[str, float]]]:
    return [(f"paper: {variant}, {data}", numbers) for data, numbers in PAPER_TABLE_2.get(variant or "", {}).items()]


def _evaluation_table(records: list[dict], variant: str | None) -> dict | None:
    if not records:
        return None
    metric_names = list(dict.fromkeys(name for record in records for name in record["metrics"]))
    paper = _paper_columns(variant)
    header = ["task", "dataset", "split", "resolution", "images"] + [
        f"{name} (%)" if "acc" in name.lower() else name for name in metric_names
    ] + [f"{label} (%)" for label, _ in paper]
    rows, any_paper = [], False
    for record in records:
        dataset = record["dataset"]
        row = [_cell(record["task"]), f"[{dataset}](https://huggingface.co/datasets/{dataset})" if "/" in dataset else _cell(dataset),
               _cell(record["split"]), _cell(record.get("resolution", "")), _cell(record.get("num_images", ""))]
        row += [_metric_text(n, record["metrics"][n]) if n in record["metrics"] else "" for n in metric_names]
        bench = _benchmark(record["task"])
        for _, numbers in paper:
            value = numbers.get(bench) if bench else None
            any_paper |= value is not None
            row.append(f"{value:.2f}" if value is not None else "")
        rows.append(row)
    if not any_paper:  # no benchmark of the paper's table among the tasks: no paper columns
        header = header[: len(header) - len(paper)]
        rows = [row[: len(row) - len(paper)] for row in rows]
    return {"header": header, "rows": rows, "paper": any_paper}


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
    return {"header": ["task"] + [f"{k}-shot (%)" for k in shots], "rows": rows}


def _vtab_table(vtab: dict | None, variant: str | None) -> dict | None:
    tasks = (vtab or {}).get("tasks") or {}
    if not tasks:
        return None
    groups = ("natural", "specialized", "structured")
    order = sorted(tasks, key=lambda t: (groups.index(tasks[t].get("group")) if tasks[t].get("group") in groups else 3, t))
    rows = []
    for task in order:
        entry = tasks[task]
        hyper = entry.get("hyperparameters") or {}
        rows.append([task, entry.get("group", ""), _pct(entry["accuracy"]), _cell(", ".join(f"{k}={v}" for k, v in hyper.items()))])
    summary = [[f"mean, {group}", _pct(value)] for group, value in (vtab.get("group_means") or {}).items()]
    if vtab.get("mean") is not None:
        summary.append([f"mean, all {len(tasks)} tasks", _pct(vtab["mean"])])
    paper = [f"{label}: {numbers['vtab']:.2f}" for label, numbers in _paper_columns(variant) if "vtab" in numbers]
    return {"header": ["task", "group", "accuracy (%)", "hyperparameters"], "rows": rows, "summary": summary, "paper": paper}


def _duration(seconds: float) -> str:
    hours, rest = divmod(float(seconds), 3600)
    text = f"{int(hours)} h {rest / 60:.0f} min" if hours else f"{rest / 60:.1f} min"
    return f"{text} ({seconds:,.0f} s)"


def _training(sources: Sources, token: str | None) -> dict | None:
    recipe_path, summary_path = sources.file(runs.RECIPE), sources.file(runs.TRAIN_SUMMARY)
    if recipe_path is None and summary_path is None:
        return None
    recipe = redact_secrets(_read_yaml(recipe_path), token) if recipe_path else None
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
):
    """Render the model card (`huggingface_hub.ModelCard`) of a run folder, a checkpoint folder or
    a staged repo folder, from `model_cards/modelcard_template.md`.

    Metadata: license, `library_name`, `pipeline_tag`, tags (`hybrid` for hybrids), training
    datasets (`datasets`, plus those the recipe names, see `recipe_metadata`), `base_model`
    (argument or the recipe's `BASE_MODEL_KEYS` when a Hub id; local folders are looked for next
    to `recipe_root`, default the run folder, and its parents), and a `model-index` with one entry
    per metric of each `metrics/*.json`. Body: the model (from config.json and the weights), the
    training (recipe.yaml, train_summary.json), results (metrics, fewshot.json, vtab.json, with
    the paper's Table 2 numbers for the same variant, labelled), figures (analysis/*.png), usage,
    limitations, citation. A file that is absent is said to be absent.

    `converted_from` (e.g. "google/vit-base-patch16-224") marks published weights converted with
    `hf_vit_repro.convert`: the card then names the source and its `license` (required) and says
    that the weights, and what they score, are the source's.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if converted_from and not license:
        raise ValueError(
            f"Say the license of the converted weights from {converted_from} (license='...', `--license` on the "
            "command line): it is the source's license, not this package's."
        )
    check_repo_id(repo_id)
    sources = locate(source)
    token = active_token(token)
    model = describe_model(sources.checkpoint)
    records = read_metrics(sources.run)
    fewshot = _read_optional_json(sources.file(runs.FEWSHOT), "few-shot results")
    vtab = _read_optional_json(sources.file(runs.VTAB), "VTAB results")
    training = None if converted_from else _training(sources, token)
    recipe = _read_yaml(sources.file(runs.RECIPE)) if sources.file(runs.RECIPE) and not converted_from else None

    recipe_datasets, recipe_base = recipe_metadata(recipe, [Path(recipe_root or sources.run).resolve()])
    train_datasets = list(dict.fromkeys(list(datasets or []) + recipe_datasets))
    base_model = base_model or recipe_base
    tags = BASE_TAGS + (["hybrid"] if model["hybrid"] else []) + (["converted"] if converted_from else [])
    results = eval_results(records)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        license=license or DEFAULT_LICENSE,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        datasets=train_datasets or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=results or None,
    )
    evaluation = _evaluation_table(records, model["variant"])
    context = {
        "repo_id": repo_id,
        "model_name": model_name,
        "model": model,
        "converted": {"source": converted_from, "license": license} if converted_from else None,
        "training": training,
        "evaluation": evaluation,
        "fewshot": _fewshot_table(fewshot),
        "vtab": _vtab_table(vtab, model["variant"]),
        "paper_source": PAPER_SOURCE,
        "figures": _figures(sources),
        "has_logs": (sources.run / runs.LOGS_DIR).is_dir(),
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

