"""`vit-repro demo` (what `make demo` runs): the paper's pipeline in miniature, offline, on a CPU.

On scikit-learn's 8x8 handwritten digits (1797 images, 10 classes, a fixed 1497 / 300
train / test partition, see `hf_vit_repro.data`), for a tiny ViT and a tiny hybrid (a BiT
ResNet stem and stage under the same ViT):

1. pretrain from scratch on the train split at 16 px (recipes/demo/pretrain_*.yaml);
2. fine-tune at 32 px: the pre-logits layer dropped, a zero-initialised head attached, the
   position embeddings resampled once from the 4x4 to the 8x8 grid (recipes/demo/finetune_*.yaml);
3. evaluate on the held-out test split;
4. few-shot linear evaluation of the pretrained representation (1/5/10/25 shots, 3 seeds;
   `vit-repro fewshot`), written to the pretraining run's fewshot.json;
5. the paper's inspection figures of the fine-tuned model (`vit-repro analyze`) in its run's
   analysis/ folder, and how mean attention distance relates to depth (Spearman's rho over the
   layers, with its permutation p-value);
6. the Hub repo folder each fine-tuned model would be published as, model card included
   (`vit-repro push --dry-run`), under OUTPUT_DIR/hub/;
and write `OUTPUT_DIR/summary.json` (per model: parameter count, test accuracy, few-shot accuracy,
training time, the commands that reproduce it) and print a table.

Each stage is an ordinary `vit-repro train` run with its own run folder under OUTPUT_DIR
(checkpoints, final/ model, TensorBoard logs, metrics JSON), so an interrupted demo continues
where it stopped; `--fresh` starts over.

`vit-repro mpp-demo` (what `make mpp-demo` runs) is the paper's self-supervision experiment
(Sec. 4.6) in the same miniature, `run_mpp_demo`: the tiny ViT pretrained by masked patch
prediction on digits/train without its labels (recipes/demo/pretrain_mpp_vit.yaml), then
fine-tuned at 32 px (recipes/demo/finetune_vit.yaml), against the same ViT trained with the same
fine-tuning steps and data from a random initialisation (recipes/demo/finetune_scratch_vit.yaml);
few-shot linear accuracy of the MPP representation against that of the untrained network.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from . import runs

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
DEFAULT_OUTPUT_DIR = "outputs/demo"
DEFAULT_MPP_OUTPUT_DIR = "outputs/mpp_demo"
SUMMARY = "summary.json"

#: model key -> (display name, what it is). Recipes: recipes/demo/{pretrain,finetune}_<key>.yaml.
MODELS: dict[str, tuple[str, str]] = {
    "vit": ("ViT", "ViT, width 64, 4 layers, 4 heads, 4x4 patches"),
    "hybrid": ("Hybrid", "BiT ResNet stem + one stage (stride 4), then the same ViT on 1x1 patches"),
}


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _recipe_path(name: str) -> Path:
    path = RECIPES_DIR / "demo" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"The demo recipe {path} is missing; the demo runs from a source checkout (pip install -e .)."
        )
    return path


def _command(recipe_path: Path, overrides: list[str]) -> str:
    try:
        shown = recipe_path.relative_to(Path.cwd())
    except ValueError:
        shown = recipe_path
    return " ".join(["vit-repro", "train", shlex.quote(str(shown)), *map(shlex.quote, overrides)])


def run_demo(output_dir: str | Path = DEFAULT_OUTPUT_DIR, models: list[str] | None = None, fresh: bool = False,
             progress_bar: bool = True, smoke: bool = False) -> dict[str, Any]:
    """Run the demo and return (and write) its summary; see the module docstring. `smoke`
    runs every stage as its recipe's smoke version (3 steps of a tiny model): a pipeline check."""
    from .training import load_recipe, run_recipe

    output_dir = Path(output_dir)
    models = list(models or MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"Unknown demo model(s) {unknown}; choose from {', '.join(MODELS)}.")
    if fresh:
        for key in MODELS:
            for stage in ("pretrain", "finetune"):
                shutil.rmtree(output_dir / f"{key}_{stage}", ignore_errors=True)
        (output_dir / SUMMARY).unlink(missing_ok=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "description": "The paper's pipeline in miniature on scikit-learn's digits: pretrain from scratch at "
        "16 px, fine-tune at 32 px with resampled position embeddings, evaluate on the held-out test split.",
        "data": {"task": "digits", "train": "train (1497 images)", "test": "test (300 images)"},
        "models": {},
    }
    for number, key in enumerate(models, start=1):
        name, what = MODELS[key]
        results, commands = {}, []
        for stage, title in (
            ("pretrain", f"pretrain the {name} from scratch on digits/train at 16 px"),
            ("finetune", f"fine-tune the {name} at 32 px (position embeddings resampled), evaluate on digits/test"),
        ):
            _heading(f"[{number}/{len(models)}] {name}: {title}")
            recipe_path = _recipe_path(f"{stage}_{key}")
            overrides = [f"run.output_dir={output_dir / f'{key}_{stage}'}"]
            if stage == "finetune":
                overrides.append(f"model.init_from={output_dir / f'{key}_pretrain'}")
            if smoke:
                overrides.append("smoke=true")
            command = _command(recipe_path, overrides)
            recipe = load_recipe(recipe_path, overrides + ([] if progress_bar else ["run.progress_bar=false"]))
            result = run_recipe(recipe, command=command)
            results[stage], commands = result, commands + [command]
            accuracy = "n/a" if result.eval_accuracy is None else f"{result.eval_accuracy:.4f}"
            print(f"{name} {stage}: {result.steps} steps in {result.train_time_s:.1f} s, test accuracy {accuracy}")
        pre, fin = results["pretrain"], results["finetune"]
        fewshot, analysis, card_dir = _inspect_and_publish(key, name, number, len(models), pre, fin, output_dir,
                                                           smoke, progress_bar, commands)
        summary["models"][key] = {
            "name": name,
            "architecture": what,
            "parameters": fin.num_parameters,
            "test_accuracy": fin.eval_accuracy,
            "pretrain_test_accuracy": pre.eval_accuracy,
            "train_time_s": round(pre.train_time_s + fin.train_time_s, 2),
            "pretrain": {"run_dir": str(pre.run_dir), "steps": pre.steps, "train_time_s": round(pre.train_time_s, 2)},
            "finetune": {"run_dir": str(fin.run_dir), "steps": fin.steps, "train_time_s": round(fin.train_time_s, 2),
                         "checkpoint": str(fin.run_dir / runs.FINAL_DIR)},
            "fewshot_accuracy": {shots: entry["mean"] for shots, entry in fewshot.items()},
            "mean_attention_distance_px": analysis["layer_mean_pixels"],
            "attention_distance_grows_with_depth": analysis["grows_with_depth"],  # the sign of rho only
            "attention_distance_vs_depth": {key: analysis[key] for key in ("spearman_rho", "spearman_p_value", "num_layers")},
            "model_card": str(card_dir / "README.md"),
            "commands": commands,
        }
    summary["total_time_s"] = round(time.perf_counter() - start, 2)
    summary["smoke"] = smoke
    summary["versions"] = runs.software_versions()
    runs.write_json(output_dir / SUMMARY, summary)
    _heading("summary")
    print(format_table(summary))
    print(f"\nWrote {output_dir / SUMMARY}; run folders, checkpoints and TensorBoard logs under {output_dir}/.")
    return summary


#: mpp-demo stages: run folder -> (recipe under recipes/demo/, what it is).
MPP_STAGES: dict[str, tuple[str, str]] = {
    "mpp_pretrain": ("pretrain_mpp_vit",
                     "pretrain the ViT by masked patch prediction on digits/train at 16 px (no labels)"),
    "mpp_finetune": ("finetune_vit", "fine-tune the MPP-pretrained ViT at 32 px, evaluate on digits/test"),
    "scratch_finetune": ("finetune_scratch_vit", "train the same ViT from scratch with the same fine-tuning steps"),
}


def run_mpp_demo(output_dir: str | Path = DEFAULT_MPP_OUTPUT_DIR, fresh: bool = False, progress_bar: bool = True,
                 smoke: bool = False) -> dict[str, Any]:
    """The self-supervision comparison (module docstring): train the three `MPP_STAGES`, run the
    few-shot evaluation of the MPP representation and of the same network untrained (randomly
    initialised with the recipe's seed), write `OUTPUT_DIR/summary.json` and print a
    table. `smoke`: every stage as its recipe's smoke version (a pipeline check)."""
    import torch

    from .data import load_task
    from .evaluation import fewshot_evaluate, fewshot_protocol, load_checkpoint, write_fewshot_results
    from .evaluation.common import image_size_of
    from .training import build_model, load_recipe, run_recipe

    output_dir = Path(output_dir)
    if fresh:
        for stage in MPP_STAGES:
            shutil.rmtree(output_dir / stage, ignore_errors=True)
        (output_dir / SUMMARY).unlink(missing_ok=True)
    start = time.perf_counter()
    results, commands, recipes = {}, {}, {}
    for number, (stage, (recipe_name, title)) in enumerate(MPP_STAGES.items(), start=1):
        _heading(f"[{number}/{len(MPP_STAGES) + 1}] {title}")
        recipe_path = _recipe_path(recipe_name)
        overrides = [f"run.output_dir={output_dir / stage}"]
        if stage == "mpp_finetune":
            overrides.append(f"model.init_from={output_dir / 'mpp_pretrain'}")
        if smoke:
            overrides.append("smoke=true")
        commands[stage] = _command(recipe_path, overrides)
        recipes[stage] = load_recipe(recipe_path, overrides + ([] if progress_bar else ["run.progress_bar=false"]))
        results[stage] = result = run_recipe(recipes[stage], command=commands[stage])
        accuracy = "n/a" if result.eval_accuracy is None else f"{result.eval_accuracy:.4f}"
        print(f"{stage}: {result.steps} steps in {result.train_time_s:.1f} s, test accuracy {accuracy}")

    _heading(f"[{len(MPP_STAGES) + 1}/{len(MPP_STAGES) + 1}] few-shot linear evaluation: MPP representation vs "
             "the untrained network")
    shots, seeds = ((1, 5), (0,)) if smoke else ((1, 5, 10, 25), (0, 1, 2))
    train_split, test_split = load_task("digits", "train"), load_task("digits", "test")
    pre = results["mpp_pretrain"]
    pretrained = load_checkpoint(pre.run_dir, device="cpu")
    # The untrained network: the MPP run's architecture at its resolution, randomly initialised.
    initial = recipes["mpp_pretrain"].replace(**{"train.objective": "classification"})
    torch.manual_seed(initial.train.seed)
    untrained = build_model(initial, num_classes=0).eval()
    fewshot = {}
    for key, model in (("mpp", pretrained.model), ("scratch", untrained)):
        fewshot[key] = fewshot_evaluate(model, train_split, test_split, shots=shots, seeds=seeds, mean=pretrained.mean,
                                        std=pretrained.std, progress=progress_bar)
        print(f"{key}: " + ", ".join(f"{k}-shot {100 * v['mean']:.1f}%" for k, v in fewshot[key].items()))
    protocol = fewshot_protocol(shots=shots, seeds=seeds, resolution=image_size_of(pretrained.model))
    write_fewshot_results(pre.run_dir / runs.FEWSHOT, pre.run_dir, protocol, {"digits": fewshot["mpp"]})

    pre_eval = runs.read_json(pre.run_dir / runs.TRAIN_SUMMARY)["eval"]
    summary: dict[str, Any] = {
        "description": "Masked patch prediction (paper Sec. 4.6) in miniature on scikit-learn's digits: the tiny ViT "
        "pretrained without labels, then fine-tuned, against the same ViT trained from scratch with the same "
        "fine-tuning steps and data; few-shot linear accuracy of the frozen representations.",
        "data": {"task": "digits", "train": "train (1497 images)", "test": "test (300 images)"},
        "mpp_pretraining": {"steps": pre.steps, "train_time_s": round(pre.train_time_s, 2),
                            "test_masked_patch_loss": pre_eval["masked_patch_loss"],
                            "test_masked_patch_accuracy": pre_eval["masked_patch_accuracy"]},
        "from_mpp": {"test_accuracy": results["mpp_finetune"].eval_accuracy, "steps": results["mpp_finetune"].steps,
                     "fewshot_accuracy": {k: v["mean"] for k, v in fewshot["mpp"].items()}},
        "from_scratch": {"test_accuracy": results["scratch_finetune"].eval_accuracy,
                         "steps": results["scratch_finetune"].steps,
                         "fewshot_accuracy": {k: v["mean"] for k, v in fewshot["scratch"].items()}},
        "fewshot": {"shots": list(shots), "seeds": list(seeds), "representation": "class token after the final "
                    "LayerNorm, at 16 px (the pretraining resolution)", "protocol": protocol},
        "commands": {**commands, "fewshot": f"vit-repro fewshot {pre.run_dir} digits --shots {' '.join(map(str, shots))}"},
        "total_time_s": round(time.perf_counter() - start, 2),
        "smoke": smoke,
        "versions": runs.software_versions(),
    }
    runs.write_json(output_dir / SUMMARY, summary)
    _heading("summary")
    print(format_mpp_table(summary))
    print(f"\nWrote {output_dir / SUMMARY}; run folders under {output_dir}/.")
    return summary


def format_mpp_table(summary: dict[str, Any]) -> str:
    """The mpp-demo summary as a Markdown table (what `vit-repro mpp-demo` prints at the end)."""
    shots = [str(k) for k in summary["fewshot"]["shots"]]
    rows = [
        "| initialisation | fine-tuned test accuracy (32 px) | " + " | ".join(f"{k}-shot linear" for k in shots) + " |",
        "|---|---|" + "---|" * len(shots),
    ]
    pre = summary["mpp_pretraining"]
    for key, label in (("from_mpp", f"masked patch prediction ({pre['steps']} steps, no labels)"),
                       ("from_scratch", "from scratch (random)")):
        entry = summary[key]
        cells = [f"{100 * entry['fewshot_accuracy'][k]:.1f}%" for k in shots]
        rows.append(f"| {label} | {100 * entry['test_accuracy']:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (
        f"\n\nMPP on digits/test: loss {pre['test_masked_patch_loss']:.3f}, colour accuracy "
        f"{100 * pre['test_masked_patch_accuracy']:.1f}%; whole demo: {summary['total_time_s']:.1f} s"
    )


def _inspect_and_publish(key, name, number, total, pre, fin, output_dir, smoke, progress_bar, commands):
    """Stages 4-6 for one model; returns (few-shot results, attention-distance trend, card folder)."""
    from .analysis import analyze_checkpoint
    from .data import load_task
    from .evaluation import fewshot_evaluate, fewshot_protocol, load_checkpoint, write_fewshot_results
    from .evaluation.common import image_size_of
    from .hub import push_to_hub

    shots, seeds = ((1, 5), (0,)) if smoke else ((1, 5, 10, 25), (0, 1, 2))
    _heading(f"[{number}/{total}] {name}: few-shot linear evaluation of the pretrained representation")
    loaded = load_checkpoint(pre.run_dir, device="cpu")
    fewshot = fewshot_evaluate(
        loaded.model, load_task("digits", "train"), load_task("digits", "test"), shots=shots, seeds=seeds,
        mean=loaded.mean, std=loaded.std, progress=progress_bar,
    )
    protocol = fewshot_protocol(shots=shots, seeds=seeds, resolution=image_size_of(loaded.model))
    write_fewshot_results(pre.run_dir / runs.FEWSHOT, pre.run_dir, protocol, {"digits": fewshot})
    print(", ".join(f"{k}-shot {100 * v['mean']:.1f}%" for k, v in fewshot.items()) + f" (mean of {len(seeds)} seeds)")
    commands.append(f"vit-repro fewshot {pre.run_dir} digits --shots {' '.join(map(str, shots))}")

    _heading(f"[{number}/{total}] {name}: the paper's inspection figures of the fine-tuned model")
    test_images = load_task("digits", "test")["image"][: 16 if smoke else 128]
    result = analyze_checkpoint(fin.run_dir, test_images, device="cpu", progress=progress_bar)
    trend = result["mean_attention_distance"]["trend"]
    means = ", ".join(f"{value:.1f}" for value in trend["layer_mean_pixels"])
    print(f"figures in {fin.run_dir / runs.ANALYSIS_DIR}; mean attention distance per layer {means} px; "
          f"against depth: {trend['summary']}")
    commands.append(f"vit-repro analyze {fin.run_dir} --images <folder of test images>")

    _heading(f"[{number}/{total}] {name}: the Hub repo folder and model card it would be published with")
    # Written beside the previous demo's folder, then swapped in: a second demo refreshes it.
    card_dir, fresh = output_dir / "hub" / key, output_dir / "hub" / f".{key}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    push_to_hub(fin.run_dir, f"hf-vit-repro/digits-{key}", dry_run=True, output_dir=fresh, verbose=False)
    runs.replace_dir(fresh, card_dir)
    print(f"wrote {card_dir} (model card: {Path(card_dir) / 'README.md'}); publish with "
          f"`vit-repro push {fin.run_dir} YOUR_NAME/digits-{key}`")
    commands.append(f"vit-repro push {fin.run_dir} hf-vit-repro/digits-{key} --dry-run")
    return fewshot, trend, Path(card_dir)


def _rho_cell(trend: dict[str, Any] | None) -> str:
    """"0.40 (4 layers, p = 0.38)": the statistic, its value, the layers and the p-value."""
    if not trend or trend.get("spearman_rho") is None:
        return "n/a"
    return f"{trend['spearman_rho']:.2f} ({trend['num_layers']} layers, p = {trend['spearman_p_value']:.2g})"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a small Markdown table (what the demo prints at the end)."""
    rows = [
        "| model | parameters | test accuracy (32 px, fine-tuned) | test accuracy (16 px, pretrained) "
        "| 10-shot linear (pretrained) | attention distance vs depth: Spearman's rho (layers, one-sided p) "
        "| training time |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary["models"].values():
        def pct(value):
            return "n/a" if value is None else f"{100 * value:.1f}%"

        rows.append(
            f"| {entry['name']} | {entry['parameters']:,} | {pct(entry['test_accuracy'])} | "
            f"{pct(entry['pretrain_test_accuracy'])} | {pct(entry.get('fewshot_accuracy', {}).get('10'))} | "
            f"{_rho_cell(entry.get('attention_distance_vs_depth'))} | {entry['train_time_s']:.1f} s |"
        )
    return "\n".join(rows) + f"\n\nwhole demo: {summary['total_time_s']:.1f} s"


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.output_dir or DEFAULT_OUTPUT_DIR, args.models, fresh=args.fresh, progress_bar=not args.no_progress, smoke=args.smoke)
    return 0


def _cmd_mpp_demo(args: argparse.Namespace) -> int:
    run_mpp_demo(args.output_dir or DEFAULT_MPP_OUTPUT_DIR, fresh=args.fresh, progress_bar=not args.no_progress,
                 smoke=args.smoke)
    return 0


def add_cli(subparsers) -> None:
    from .cli_options import add_no_progress, add_output_dir

    p = subparsers.add_parser(
        "demo",
        help="the offline end-to-end demo (what `make demo` runs)",
        description="Pretrain a tiny ViT and a tiny hybrid from scratch on scikit-learn's digits, fine-tune them "
        "at a higher resolution with resampled position embeddings, evaluate on the held-out test split, write "
        "OUTPUT_DIR/summary.json and print a summary table. Offline; a few minutes on 2 CPU cores. An "
        "interrupted demo continues where it stopped.",
    )
    add_output_dir(p, str(DEFAULT_OUTPUT_DIR))
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="which models (default: all)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the demo's earlier run folders first and start over (needed after editing recipes/demo/)")
    add_no_progress(p)
    p.add_argument("--smoke", action="store_true", help="a few steps of tiny models per stage (checks the pipeline)")
    p.set_defaults(func=_cmd_demo)

    p = subparsers.add_parser(
        "mpp-demo",
        help="the paper's self-supervision experiment in miniature (what `make mpp-demo` runs)",
        description="Pretrain the demo's tiny ViT by masked patch prediction (paper Sec. 4.6) on scikit-learn's "
        "digits without labels, fine-tune it at 32 px, and compare with the same ViT trained from scratch with the "
        "same fine-tuning steps and data (test accuracy), and the few-shot linear accuracy of the MPP representation "
        "with that of the untrained network. Writes OUTPUT_DIR/summary.json and prints a table. Offline; a few "
        "minutes on 2 CPU cores. An interrupted run continues where it stopped.",
    )
    add_output_dir(p, str(DEFAULT_MPP_OUTPUT_DIR))
    p.add_argument("--fresh", action="store_true", help="delete the earlier run folders first and start over")
    add_no_progress(p)
    p.add_argument("--smoke", action="store_true", help="a few steps of tiny models per stage (checks the pipeline)")
    p.set_defaults(func=_cmd_mpp_demo)
