"""Model cards and publishing: a run folder (or a plain checkpoint folder) -> a Hub repo.

The flow (DESIGN.md: "metrics JSON --hub--> model card + push"):

    source (RUN_DIR or a save_pretrained folder)
      --build_repo_folder--> staging folder: weights, config (auto_map), shipped code, image
                             processor config, the run's result files, figures, recipe, README.md
      --validate_repo_folder--> checked (card metadata, model-index, links, weights, no token)
      --upload (huggingface_hub create_repo + upload_folder)--> the Hub

The staging folder mirrors the run folder's layout (`hf_vit_repro.runs`), with `final/` flattened
to the top, and the card is rendered from the staged files themselves: every number in a card
comes from a file that is uploaded next to it. The only constants are the paper's own numbers
(`PAPER_TABLE_2`, and `variants.PAPER_PARAMETER_COUNTS` for Table 1), always labelled as the
paper's.

The token comes from huggingface_hub's usual sources (the `token` argument, else `HF_TOKEN`, else
the login file). It is never written to a file, printed, or put in an error message: text files are
redacted before staging, and a staged file that still holds the token stops the push.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs

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
# Recipe keys whose values are secrets: never shown, never uploaded.
_SECRET_KEY = re.compile(r"(^|[_\-.])(token|secret|password|passwd|api[_-]?key|credentials?)$", re.IGNORECASE)
# What a Hugging Face token looks like, so one is redacted even if it is not the active token.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
REDACTED = "<redacted>"

_CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "model.safetensors.index.json")
_TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ".py", ".csv"}


class HubPushError(OSError):
    """The upload failed (network, authentication, or the Hub refused it). The message says what
    happened and what to do; it never contains the token."""


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


def _weight_files(checkpoint: Path) -> list[Path]:
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
    for path in _weight_files(Path(checkpoint)):
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
    from .data import TASKS

    datasets = []
    for value in _find_values(recipe, DATASET_KEYS):
        if isinstance(value, str) and value in TASKS:
            value = TASKS[value].hub_id
        if value and _is_hub_id(value, anchors):
            datasets.append(value)
    base = next((v for v in _find_values(recipe, BASE_MODEL_KEYS) if _is_hub_id(v, anchors)), None)
    return datasets, base


# ============================================================================ redaction
def active_token(token: str | None = None) -> str | None:
    """The token a push would use: `token`, else huggingface_hub's usual sources."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def redact(text: str, token: str | None = None) -> str:
    """`text` with `token` and anything shaped like a Hugging Face token replaced by <redacted>."""
    if token:
        text = text.replace(token, REDACTED)
    return _TOKEN_PATTERN.sub(REDACTED, text)


def _redact_secrets(value: Any, token: str | None) -> Any:
    """Recipe values under secret-looking keys, and token strings anywhere, -> <redacted>."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) and v is not None else _redact_secrets(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_secrets(v, token) for v in value]
    if isinstance(value, str):
        return redact(value, token)
    return value


# ============================================================================ describing the model
def _size_name(config: dict) -> str | None:
    """"B" when (width, depth, heads, MLP) is a row of `variants.SIZES`, else None."""
    from .variants import SIZES

    dims = (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("num_attention_heads"), config.get("intermediate_size"))
    return next((size for size, row in SIZES.items() if tuple(row) == dims), None)


def _backbone_name(backbone: dict) -> str | None:
    """The hybrid's named CNN ("R50") when its stage depths and widths match `variants.BACKBONES`."""
    from . import variants

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
    from .configuration_vit_repro import ViTReproConfig
    from .variants import PAPER_PARAMETER_COUNTS, PATCH_SIZES

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
    recipe = _redact_secrets(_read_yaml(recipe_path), token) if recipe_path else None
    summary = _redact_secrets(_read_optional_json(summary_path, "the training summary"), token) or {}
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
    command = summary.get("command")
    if isinstance(command, list):
        command = " ".join(map(str, command))
    return {
        "facts": [(k, _cell(v)) for k, v in facts],
        "recipe": [(k, _cell(v)) for k, v in _flatten(recipe)] if recipe else None,
        "command": command,
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
    _check_repo_id(repo_id)
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


# ============================================================================ the repo folder
def _check_repo_id(repo_id: str) -> None:
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


def _copy_text(src: Path, dst: Path, token: str | None) -> None:
    text = src.read_text(encoding="utf-8")
    clean = redact(text, token)
    if src.suffix in (".yaml", ".yml") and src.name == runs.RECIPE:
        import yaml

        recipe = yaml.safe_load(text)
        redacted = _redact_secrets(recipe, token)
        if redacted != recipe:
            clean = "# Secrets in this recipe were redacted for publishing.\n" + yaml.safe_dump(redacted, sort_keys=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(clean, encoding="utf-8")


def _copy(src: Path, dst: Path, token: str | None) -> None:
    if src.suffix in _TEXT_SUFFIXES:
        _copy_text(src, dst, token)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _staged_files(sources: Sources, include_logs: bool) -> list[tuple[Path, str]]:
    """(source path, path in repo) for everything a push uploads, README.md excepted."""
    ckpt, run = sources.checkpoint, sources.run
    files = [(p, p.name) for p in _weight_files(ckpt)]
    for name in ("config.json", "preprocessor_config.json"):
        if (ckpt / name).exists():
            files.append((ckpt / name, name))
    files += [(p, p.name) for p in sorted(ckpt.glob("*.py"))]  # the shipped code (auto_map)
    for name in (runs.RECIPE, runs.TRAIN_SUMMARY, runs.FEWSHOT, runs.VTAB):
        if (run / name).exists():
            files.append((run / name, name))
    for folder, pattern in ((runs.METRICS_DIR, "*.json"), (runs.ANALYSIS_DIR, "*.png"), (runs.ANALYSIS_DIR, runs.ANALYSIS_JSON)):
        files += [(p, f"{folder}/{p.name}") for p in sorted((run / folder).glob(pattern))]
    if include_logs and (run / runs.LOGS_DIR).is_dir():
        files += [(p, p.relative_to(run).as_posix()) for p in sorted((run / runs.LOGS_DIR).rglob("*")) if p.is_file()]
    return files


def build_repo_folder(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    include_logs: bool = False,
    token: str | None = None,
    **card_options,
) -> Path:
    """Write the exact folder a push uploads to `output_dir` (which must not exist or be empty):
    safetensors weights, config.json (with `auto_map`), the shipped code, the image processor
    config, the run's recipe, training summary, metrics, few-shot and VTAB results, figures,
    TensorBoard logs if `include_logs`, and README.md rendered from those staged files. Text files
    have secrets redacted. Written to a temporary sibling and renamed, so a crash leaves nothing
    half-written. `card_options` go to `model_card`."""
    _check_repo_id(repo_id)
    sources = locate(source)
    token = active_token(token)
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir} already exists and is not empty; remove it or choose another output folder.")
    if not (sources.checkpoint / "preprocessor_config.json").exists():
        raise FileNotFoundError(
            f"{sources.checkpoint} has no preprocessor_config.json: save the image processor used in training next to "
            "the weights (`processor.save_pretrained(folder)`), so pipeline() and AutoImageProcessor work."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.staging-"))
    try:
        for src, name in _staged_files(sources, include_logs):
            _copy(src, staging / name, token)
        card = model_card(staging, repo_id, token=token, **{"recipe_root": sources.run, **card_options})
        card.save(staging / "README.md")
        _check_no_token(staging, token)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _check_no_token(folder: Path, token: str | None) -> None:
    needles = [token.encode()] if token else []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(needle in data for needle in needles) or (path.suffix in _TEXT_SUFFIXES and _TOKEN_PATTERN.search(data.decode("utf-8", "replace"))):
            raise ValueError(
                f"{path.relative_to(folder)} contains a Hugging Face token; it will not be published. Remove the token "
                "from the run's files (or leave that file out, e.g. logs without --include-logs) and try again."
            )


def validate_repo_folder(folder: str | os.PathLike, *, token: str | None = None, load_model: bool = True) -> None:
    """Check a staged repo folder before it is uploaded; raises ValueError listing every problem.

    Checks: the files a checkpoint needs (config.json with a complete `auto_map` whose code files
    are present, safetensors weights, preprocessor_config.json, README.md); the card's metadata
    parses with huggingface_hub (license, library_name, pipeline_tag, tags) and its `model-index`
    equals the metrics files in the folder; every relative link in the card points to a file in the
    folder; no file holds the token; and (`load_model`) the weights load into the config's model
    with no missing or unexpected tensor.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    problems = []
    for name in ("config.json", "preprocessor_config.json", "README.md"):
        if not (folder / name).exists():
            problems.append(f"{name} is missing")
    if not (folder / "model.safetensors").exists() and not (folder / "model.safetensors.index.json").exists():
        problems.append("the safetensors weights are missing")
    if (folder / "config.json").exists():
        auto_map = runs.read_json(folder / "config.json").get("auto_map") or {}
        for auto in ("AutoConfig", "AutoModel", "AutoModelForImageClassification"):
            if auto not in auto_map:
                problems.append(f"config.json's auto_map lacks {auto}: the checkpoint will not load without this package")
        for reference in auto_map.values():
            module = reference.split("--")[-1].rsplit(".", 1)[0]
            if not (folder / f"{module}.py").exists():
                problems.append(f"config.json's auto_map names {module}.py, which is missing")
    if (folder / "README.md").exists():
        try:
            card = ModelCard.load(folder / "README.md")
        except ValueError as err:
            problems.append(f"README.md metadata does not parse: {err}")
        else:
            data = card.data
            for key in ("license", "library_name", "pipeline_tag", "tags"):
                if not getattr(data, key, None):
                    problems.append(f"README.md metadata lacks {key}")
            expected = {(r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value)
                        for r in eval_results(read_metrics(folder))}
            found = {(r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value)
                     for r in (data.eval_results or [])}
            if expected != found:
                problems.append(f"README.md model-index {sorted(found)} differs from the metrics files {sorted(expected)}")
            for target in re.findall(r"\]\(([^)\s]+)\)", card.text):
                if not re.match(r"^[a-z]+:", target) and not target.startswith("#") and not (folder / target).exists():
                    problems.append(f"README.md links to {target}, which is not in the folder")
    try:
        _check_no_token(folder, active_token(token))
    except ValueError as err:
        problems.append(str(err))
    if load_model and not problems:
        problems += _load_problems(folder)
    if problems:
        raise ValueError(f"{folder} is not ready to publish:\n- " + "\n- ".join(problems))


def _load_problems(folder: Path) -> list[str]:
    import hf_vit_repro  # noqa: F401  (registers the Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        _, info = AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
        AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        return [f"the checkpoint does not load: {err}"]
    return [f"{kind} weights: {sorted(keys)}" for kind in ("missing_keys", "unexpected_keys") if (keys := info.get(kind))]


# ============================================================================ publishing
def _plan(folder: Path, target: str) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"{len(files)} files, {_size(total)}, for {target}:"]
    lines += [f"  {_size(p.stat().st_size):>9}  {p.relative_to(folder).as_posix()}" for p in files]
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _upload_error(err: BaseException, endpoint: str, repo_id: str, token: str | None) -> HubPushError:
    """A huggingface_hub / network exception -> a HubPushError that says what to do."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    chain, cause = [], err
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    status = next((c.response.status_code for c in chain if isinstance(c, HfHubHTTPError) and c.response is not None), None)
    transport = next((c for c in chain if isinstance(c, httpx2.TransportError)), None)
    if any(isinstance(c, OfflineModeIsEnabled) for c in chain):
        message = "huggingface_hub is in offline mode (HF_HUB_OFFLINE=1). Unset it to publish, or use --dry-run."
    elif status == 401 and not token:
        message = "no Hugging Face token was found. Log in with `hf auth login` or set HF_TOKEN to a token with write access."
    elif status == 401:
        message = (f"{endpoint} refused the credentials. Log in with `hf auth login` or set HF_TOKEN to a token "
                   "with write access, then run the same command again.")
    elif status in (403, 404):
        message = f"{endpoint} denied access to {repo_id} (HTTP {status}): check that your token may write to this namespace."
    elif isinstance(transport, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        message = (f"could not connect to {endpoint} ({type(transport).__name__}). Check the network (and HF_ENDPOINT, "
                   "if set), then run the same command again.")
    elif transport is not None:
        message = (f"the connection to {endpoint} was lost during the upload ({type(transport).__name__}). "
                   "Run the same command again: files the Hub already has are not uploaded twice, and only what is "
                   "missing is sent.")
    else:
        message = f"{type(err).__name__}: {err}. Running the same command again resumes an interrupted upload."
    return HubPushError(redact(f"Publishing to {repo_id} failed: {message}", token))


def push_to_hub(
    source: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    include_logs: bool = False,
    endpoint: str | None = None,
    verbose: bool = True,
    **card_options,
):
    """Publish a run folder or checkpoint folder to the Hub repo `repo_id`.

    Builds the repo folder (`build_repo_folder`), validates it (`validate_repo_folder`), prints
    what will be uploaded, then `create_repo(exist_ok=True)` (+ `create_branch` for `revision`) and
    `upload_folder` with huggingface_hub. `create_pr` opens a pull request on the main branch
    instead of committing to it. `dry_run` stops after validation and keeps the folder in
    `output_dir` (default `outputs/hub/<repo name>`); without it the folder is temporary unless
    `output_dir` is given. `endpoint` is a Hub mirror (default: `HF_ENDPOINT` / huggingface.co).
    `card_options` (license, datasets, base_model, converted_from) go to `model_card`.

    Returns the `huggingface_hub.CommitInfo` (`.pr_url` for a pull request), or the folder for a
    dry run. Raises ValueError / FileNotFoundError for bad input before anything is sent, and
    HubPushError when the upload fails; running the same call again finishes an interrupted push.
    """
    _check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise ValueError("create_pr opens a pull request on the main branch; do not combine it with --revision.")
    token = active_token(token)
    say = print if verbose else (lambda *a, **k: None)
    name = repo_id.split("/")[-1]
    temporary = None
    if output_dir is None and dry_run:
        output_dir = Path("outputs") / "hub" / name
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix=f"vit-repro-push-{name}-")
        output_dir = Path(temporary.name) / name
    try:
        folder = build_repo_folder(source, output_dir, repo_id, include_logs=include_logs, token=token, **card_options)
        validate_repo_folder(folder, token=token)
        target = f"{repo_id}" + (f" (branch {revision})" if revision else "") + (" (pull request)" if create_pr else "")
        say(redact(_plan(folder, target), token))
        if dry_run:
            say(f"Dry run: the folder above is in {folder} and passed validation; nothing was uploaded.")
            return folder
        return _upload(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                       commit_message=commit_message, token=token, endpoint=endpoint, say=say,
                       card_options={"recipe_root": locate(source).run, **card_options})
    finally:
        if temporary is not None:
            temporary.cleanup()


def _upload(folder, repo_id, *, private, revision, create_pr, commit_message, token, endpoint, say, card_options):
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint or constants.ENDPOINT
    try:
        full_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if full_id != repo_id:  # "name" went to the token's namespace: the card's snippets name the real repo
            model_card(folder, full_id, token=token, **card_options).save(folder / "README.md")
            repo_id = full_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} with hf_vit_repro",
        )
    except Exception as err:  # noqa: BLE001 - every failure is reported as a HubPushError
        raise _upload_error(err, where, repo_id, token) from None
    say(f"Published {commit.pr_url or commit.commit_url}")
    return commit


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    **options,
):
    """The end-of-training hook (recipe options `push_to_hub: true`, `hub_repo_id: ...`): publish
    RUN_DIR's final checkpoint with its card. Only the main process publishes: on any other rank
    (`RANK` / `LOCAL_RANK` not 0) this returns None without doing anything."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    if rank != 0:
        return None
    run_dir = Path(run_dir)
    if not (run_dir / runs.FINAL_DIR).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {runs.FINAL_DIR}/ checkpoint: the training run did not finish saving it.")
    return push_to_hub(run_dir, repo_id, private=private, revision=revision, create_pr=create_pr,
                       commit_message=commit_message, token=token, dry_run=dry_run, **options)


# ============================================================================ CLI
def _cmd_push(args: argparse.Namespace) -> int:
    result = push_to_hub(
        args.source,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        output_dir=args.output_dir,
        include_logs=args.include_logs,
        license=args.license,
        datasets=args.dataset,
        base_model=args.base_model,
        converted_from=args.converted_from,
    )
    return 0 if result is not None else 1


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "push",
        help="publish a run folder or checkpoint to the Hugging Face Hub with a model card",
        description="Build the repo folder of a run (weights, config with auto_map, shipped code, image processor, "
        "README.md model card from the run's results, metrics, figures, recipe), validate it, show it, and upload it "
        "with huggingface_hub. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("source", help="run folder (with final/) or a save_pretrained checkpoint folder")
    p.add_argument("repo_id", help="Hub repo, 'namespace/name' (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    p.add_argument("--commit-message", default=None, help="commit message")
    p.add_argument("--dry-run", action="store_true", help="write and validate the folder, upload nothing")
    p.add_argument("--output-dir", default=None, help="where to write the repo folder (default for --dry-run: outputs/hub/NAME)")
    p.add_argument("--include-logs", action="store_true", help="also upload the run's TensorBoard logs (logs/)")
    p.add_argument("--license", default=None, help=f"license of the weights (default {DEFAULT_LICENSE}; required with --converted-from)")
    p.add_argument("--dataset", action="append", default=None, help="Hub id of a training dataset (repeatable)")
    p.add_argument("--base-model", default=None, help="Hub id of the checkpoint this one was fine-tuned from")
    p.add_argument("--converted-from", default=None, help="source of converted published weights (e.g. google/vit-base-patch16-224)")
    p.set_defaults(func=_cmd_push)


__all__ = [
    "PAPER_TABLE_2",
    "HubPushError",
    "build_repo_folder",
    "count_parameters",
    "describe_model",
    "eval_results",
    "locate",
    "model_card",
    "push_run",
    "push_to_hub",
    "read_metrics",
    "redact",
    "validate_repo_folder",
]
