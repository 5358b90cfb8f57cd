"""Adapter-only repos: a LoRA run's peft adapter folder -> a staged repo -> checked -> the Hub.

    vit-repro push outputs/lora-run your-name/vit-lora-digits --adapter-only

A LoRA run (`train.method: lora`, `training.peft_methods`) writes `final/` (the merged model) and
`final/adapter/` (peft's adapter folder). The adapter-only repo holds that adapter
(`adapter_config.json`, `adapter_model.safetensors`), the image processor config the run trained
with, the run's records (recipe, training summary, metrics, VTAB results, logs: `push.run_files`)
and a card rendered by `card.model_card` with `library_name: peft`, the method, and `base_model`:
the checkpoint the run started from (the recipe's `model.init_from`, or `--base-model`). The Hub
accepts only a Hub id as `base_model` (a local path fails its metadata check), so a run started
from a local folder gets no `base_model` in the metadata, and its card says the base was a local
path; `--base-model HUB_ID` names where that checkpoint is published (and is written to the
staged `adapter_config.json`'s `base_model_name_or_path`, where peft's `AutoPeftModel` looks).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import runs
from .card import Sources, is_hub_id, local_folder, read_yaml, check_repo_id, model_card
from .push import copy_file, card_problems, finish_staging, prepare_output_dir, run_files
from .redaction import active_token

#: The files of a peft adapter folder that are published (peft's own README.md is replaced by the card).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
METHOD_NAMES = {"lora": "LoRA (Hu et al., ICLR 2022)"}


@dataclass
class AdapterSources:
    """A LoRA run's adapter folder, its merged model (`final/`) and its run folder."""

    adapter: Path
    checkpoint: Path
    run: Path
    recipe: dict | None


def locate_adapter(source: str | os.PathLike) -> AdapterSources:
    """A LoRA run folder, its `final/` folder, or its `final/adapter/` folder -> `AdapterSources`.
    One-line refusals: not a LoRA run (the recipe's `train.method`, or the adapter's `peft_type`),
    no adapter folder, no merged model beside it."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder: give a LoRA run folder (with final/{runs.ADAPTER_DIR}/) or its "
                                "adapter folder.")
    if (source / "adapter_config.json").exists():
        adapter, checkpoint = source, source.parent
    elif (source / runs.FINAL_DIR).is_dir():
        checkpoint = source / runs.FINAL_DIR
        adapter = checkpoint / runs.ADAPTER_DIR
    elif (source / "config.json").exists():
        checkpoint, adapter = source, source / runs.ADAPTER_DIR
    else:
        raise FileNotFoundError(f"{source} holds no final/ (a run folder), config.json (a checkpoint) or "
                                "adapter_config.json (a peft adapter folder): give the run folder of a LoRA run.")
    run = checkpoint.parent if (checkpoint.parent / runs.RECIPE).is_file() else checkpoint
    recipe_path = next((p for p in (run / runs.RECIPE, checkpoint / runs.RECIPE) if p.is_file()), None)
    recipe = read_yaml(recipe_path) if recipe_path else None
    method = ((recipe or {}).get("train") or {}).get("method", "full") if recipe else None
    if method not in (None, "lora"):
        raise ValueError(f"{source} is a `train.method: {method}` run, not a LoRA run: only a LoRA run has a peft adapter "
                         "to publish. Push it without --adapter-only (the whole checkpoint).")
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} (the peft adapter folder) is missing: a LoRA run writes it when it finishes. "
                                "Finish the run (the same command with run.resume=auto), or push without --adapter-only.")
    peft_type = runs.read_json(adapter / "adapter_config.json").get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{adapter} holds a peft {peft_type} adapter, not LoRA: --adapter-only publishes LoRA adapters.")
    for name in ADAPTER_FILES:
        if not (adapter / name).exists():
            raise FileNotFoundError(f"{adapter / name} is missing: the adapter folder is incomplete; finish the run again.")
    if not (checkpoint / "config.json").exists():
        raise FileNotFoundError(f"{checkpoint} has no config.json: the adapter folder must sit in a LoRA run's final/ "
                                "folder, beside the merged model the card describes.")
    return AdapterSources(adapter=adapter, checkpoint=checkpoint, run=run, recipe=recipe)


def adapter_facts(sources: AdapterSources, base_model: str | None = None) -> dict:
    """What the card says about the adapter: method, base model (as the run named it, its Hub id
    when there is one, whether it was a local path), the LoRA options, trainable parameters, classes,
    and the resolution step the base needs (`resize`: None when the base runs at the adapter's)."""
    config = runs.read_json(sources.adapter / "adapter_config.json")
    recipe = sources.recipe or {}
    model = recipe.get("model") or {}
    anchors = [sources.run.resolve()]
    named = model.get("init_from") or config.get("base_model_name_or_path") or base_model
    hub_id = base_model or (named if is_hub_id(named, anchors) else None)
    summary_path = sources.run / runs.TRAIN_SUMMARY
    summary = runs.read_json(summary_path) if summary_path.is_file() else {}
    trainable, total = summary.get("trainable_parameters"), summary.get("num_parameters")
    merged = runs.read_json(sources.checkpoint / "config.json")
    size = model.get("image_size") or merged.get("image_size")
    local, load_from = local_folder(named, anchors), named
    if local is not None and (local / runs.FINAL_DIR / "config.json").exists():  # a run folder: its final/ model
        local, load_from = local / runs.FINAL_DIR, f"{named.rstrip('/')}/{runs.FINAL_DIR}"
    base_size = runs.read_json(local / "config.json").get("image_size") if local and (local / "config.json").exists() else None
    if base_size == size:
        resize = None
    elif base_size is not None:
        resize = f"the base was pretrained at {base_size} px; the adapter was trained at {size} px"
    else:
        resize = f"the adapter was trained at {size} px: resample the base's position embeddings if it runs at another size"
    return {
        "method": "lora",
        "method_name": METHOD_NAMES["lora"] + " through Hugging Face peft",
        "base_model": named or "unknown (the run records none: pass --base-model)",
        "base_hub_id": hub_id,
        "base_load": hub_id or load_from,  # what from_pretrained takes
        "base_local": bool(named) and not is_hub_id(named, anchors),
        "options": [("Rank r", config.get("r")), ("alpha", config.get("lora_alpha")), ("Dropout", config.get("lora_dropout")),
                    ("Target modules", ", ".join(f"`{m}`" for m in sorted(config.get("target_modules") or [])))],
        "trainable": f"{trainable:,}" if trainable is not None else "unrecorded",
        "total": f"{total:,}" if total is not None else "unrecorded",
        "fraction": f"{100 * trainable / total:.2f}%" if trainable is not None and total else "unrecorded",
        "num_labels": len(merged.get("id2label") or {}) or merged.get("num_labels"),
        "image_size": size,
        "resize": resize,
    }


def adapter_card(folder: str | os.PathLike, source: str | os.PathLike, repo_id: str, *, token: str | None = None,
                 base_model: str | None = None, **card_options):
    """The card of the adapter-only repo staged in `folder` from the LoRA run `source`
    (`card.model_card` with `adapter=adapter_facts(...)`)."""
    sources = locate_adapter(source)
    facts = adapter_facts(sources, base_model)
    card_options = {k: v for k, v in card_options.items() if k != "converted_from"}
    return model_card(Sources(checkpoint=sources.checkpoint, run=Path(folder)), repo_id, token=token,
                      base_model=facts["base_hub_id"], adapter=facts, recipe_root=sources.run, **card_options)


def build_adapter_folder(source: str | os.PathLike, output_dir: str | os.PathLike, repo_id: str, *,
                         include_logs: bool = True, token: str | None = None, base_model: str | None = None,
                         **card_options) -> Path:
    """Write the folder an adapter-only push uploads to `output_dir` (which must not exist or be
    empty): the adapter files, `preprocessor_config.json`, the run's records (`push.run_files`),
    README.md (`adapter_card`) and `.eval_results/`. Written to a temporary sibling and renamed."""
    check_repo_id(repo_id)
    sources = locate_adapter(source)
    token = active_token(token)
    output_dir = prepare_output_dir(output_dir)
    facts = adapter_facts(sources, base_model)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.staging-"))
    try:
        for name in ADAPTER_FILES:
            copy_file(sources.adapter / name, staging / name, token)
        if facts["base_hub_id"]:  # where peft's AutoPeftModel finds the base
            config = runs.read_json(staging / "adapter_config.json")
            config["base_model_name_or_path"] = facts["base_hub_id"]
            runs.write_json(staging / "adapter_config.json", config)
        if (sources.checkpoint / "preprocessor_config.json").exists():
            copy_file(sources.checkpoint / "preprocessor_config.json", staging / "preprocessor_config.json", token)
        for src, name in run_files(sources.run, include_logs):
            copy_file(src, staging / name, token)
        adapter_card(staging, source, repo_id, token=token, base_model=base_model, **card_options).save(staging / "README.md")
        finish_staging(staging, output_dir, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def validate_adapter_folder(folder: str | os.PathLike, *, token: str | None = None) -> None:
    """Check a staged adapter-only folder; raises ValueError listing every problem: the adapter
    files and README.md are present, the card passes `push.card_problems` with `library_name:
    peft`, peft reads the adapter config as LoRA, and the weights hold only LoRA matrices and the
    saved classifier (`modules_to_save`)."""
    from huggingface_hub import ModelCard
    from safetensors import safe_open

    folder = Path(folder)
    problems = [f"{name} is missing" for name in (*ADAPTER_FILES, "README.md") if not (folder / name).exists()]
    if not problems:
        problems += card_problems(folder, token, keys=("license", "library_name", "pipeline_tag", "tags"))
        if not problems and ModelCard.load(folder / "README.md").data.library_name != "peft":
            problems.append("README.md metadata: library_name is not peft")
        if runs.read_json(folder / "adapter_config.json").get("peft_type") != "LORA":
            problems.append("adapter_config.json is not a LoRA adapter config")
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
            stray = [k for k in weights.keys() if ".lora_" not in k and ".modules_to_save." not in k and
                     not k.startswith("base_model.model.classifier.")]
        if stray:
            problems.append(f"adapter_model.safetensors holds tensors that are neither LoRA nor the saved head: {stray[:5]}")
    if problems:
        raise ValueError(f"{folder} is not ready to publish:\n- " + "\n- ".join(problems))
