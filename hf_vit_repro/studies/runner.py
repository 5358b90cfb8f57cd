"""Running a study: one ordinary recipe run per (model, data size) or (model, epochs), each in its
own folder, then its transfer evaluations; study.json rewritten after every run.

    STUDY_DIR/
      study.json                    the config, and one record per run (see `run_record`)
      study.md                      the measured table (Table 6's form)
      data_size.png | compute.png | augreg.png   the paper's Figure 3/4 or 5, AugReg's Figure 1
      data_size_curves.png | ...    few-shot accuracy against pretraining step (`transfer.fewshot.curve`)
      references/<model>-s<seed>.json            few-shot accuracy at initialisation (`scratch_reference`)
      runs/<model>[-<level>]-<size|epochs>[-s<seed>]/   a normal run folder: recipe.yaml, checkpoints/,
                                    best/, final/, train_summary.json (with `compute`), fewshot.json, finetune/,
                                    logs/fewshot_curve.jsonl (the curve, read into study.json)

Resumable run by run: a run whose folder holds a train_summary.json of the same recipe is not
trained again (and its few-shot / fine-tuning results are reused when they are there); a run
that was interrupted continues from its last checkpoint (`run.resume=auto`). Data-parallel under
`torchrun` / `accelerate launch` like `vit-repro train`: every process walks the same plan, the
training runs are collective, and only the main process evaluates few-shot (the others wait) and
writes files.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from .config import SIZED, LevelEntry, ModelEntry, StudyConfig

STUDY_JSON = "study.json"
RUNS_DIR = "runs"
FINETUNE_DIR = "finetune"


@dataclass
class PlannedRun:
    """One pretraining run of a study: `key` names its folder under runs/; `point` is the key without
    the seed (the runs of one point differ only in `seed`, the recipe's `train.seed`)."""

    key: str
    model: ModelEntry
    size: float | None = None
    epochs: float | None = None
    seed: int | None = None
    point: str = ""
    level: LevelEntry | None = None

    def describe(self, config: StudyConfig) -> str:
        seed = ("" if self.level is None else f", {self.level.name}") + ("" if self.seed is None else f", seed {self.seed}")
        if self.size is not None:
            amount = f"{self.size:.0%}" if self.size <= 1 else f"{int(self.size)} images"
            return f"{self.model.name} on {amount} of {config.data.task}/{config.data.train_split}{seed}"
        return f"{self.model.name}, {self.epochs:g} epochs of {config.data.task}/{config.data.train_split}{seed}"


def plan_runs(config: StudyConfig) -> list[PlannedRun]:
    """The runs of a study, seed by seed (`seeds`; once with the recipe's seed when left out), then
    model by model: every data size (data-size study, smallest first; the augreg study: at each
    level) or every epochs value (compute study). Seed first: a study stopped half-way has whole
    curves of its first seeds."""
    planned = []
    for seed in config.seeds or [None]:
        suffix = "" if seed is None else f"-s{seed}"
        for model in config.models:
            if config.study in SIZED:
                for level in config.levels or [None]:
                    for size in sorted(config.data.sizes, key=lambda s: (s > 1, s)):
                        point = "-".join([model.slug] + ([level.slug] if level else [])
                                         + [f"f{size:g}" if size <= 1 else f"n{int(size)}"])
                        planned.append(PlannedRun(point + suffix, model, size=size, seed=seed, point=point, level=level))
            else:
                for epochs in model.epochs or config.epochs:
                    point = f"{model.slug}-e{epochs:g}"
                    planned.append(PlannedRun(point + suffix, model, epochs=epochs, seed=seed, point=point))
    return planned


def pretrain_recipe(config: StudyConfig, planned: PlannedRun, overrides=()):
    """The recipe of one pretraining run: the base recipe, then the study's `overrides`, the
    model's own, the command line's, and last what the study varies and where it writes (the
    model, the augreg level's keys, the data and its subset, early stopping, epochs, the few-shot
    curve, folder)."""
    from ..training import load_recipe, parse_overrides

    m, d = planned.model, config.data
    pairs = list(config.overrides.items()) + list(m.overrides.items()) + parse_overrides(list(overrides))
    pairs += list(planned.level.overrides.items()) if planned.level is not None else []
    pairs += [("model.variant", m.variant), ("model.config", m.config),
              ("data.task", d.task), ("data.data_dir", d.data_dir), ("data.image_column", d.image_column),
              ("data.label_column", d.label_column), ("data.train_split", d.train_split)]
    if d.val_fraction > 0:
        pairs += [("data.holdout", True), ("data.val_fraction", d.val_fraction)]
    if d.classes is not None:
        pairs += [("data.classes", d.classes)]
    if planned.seed is not None:
        pairs += [("train.seed", planned.seed)]
    if planned.size is not None:
        pairs += [("data.subset", planned.size), ("data.subset_seed", d.subset_seed)]
    if config.early_stopping is not None:
        pairs += [("train.early_stopping_patience", config.early_stopping.patience),
                  ("train.eval_every", config.early_stopping.eval_every)]
    if planned.epochs is not None:
        pairs += [("train.steps", None), ("train.epochs", planned.epochs)]
    if (curve := config.curve_options()) is not None:  # few-shot during pretraining (`transfer.fewshot.curve`)
        pairs += [("train.fewshot_eval", curve)]
    pairs += [("name", f"{config.name}-{planned.key}"), ("run.resume", "auto"),
              ("run.output_dir", str(config.folder / RUNS_DIR / planned.key))]
    return load_recipe(config.resolve_path(config.recipe), pairs)


def finetune_recipe(config: StudyConfig, planned: PlannedRun, run_dir: Path, overrides=()):
    """The fine-tuning run of a pretrained model: the study's fine-tuning recipe with
    `model.init_from` = the pretraining run, in RUN_DIR/finetune/."""
    from ..training import load_recipe, parse_overrides

    spec = config.transfer.finetune
    pairs = list(spec.overrides.items()) + parse_overrides(list(overrides))
    pairs += [("data.classes", spec.classes)] if spec.classes is not None else []
    pairs += [("train.seed", planned.seed)] if planned.seed is not None else []
    pairs += [("model.init_from", str(run_dir)), ("name", f"{config.name}-{planned.key}-finetune"),
              ("run.resume", "auto"), ("run.output_dir", str(run_dir / FINETUNE_DIR))]
    return load_recipe(config.resolve_path(spec.recipe), pairs)


def _state():
    """Accelerate's process state (the CPU is asked for explicitly without a GPU, as the
    training loop does, so torchrun's CPU processes join one group)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _finished(recipe, folder: Path) -> bool:
    """Whether `folder` holds a finished run of `recipe`; a finished run of another recipe is an
    error (reporting it as this one's would be wrong)."""
    from ..training import Recipe, recipe_differences

    if not (folder / runs.TRAIN_SUMMARY).is_file():
        return False
    import yaml

    saved = Recipe.from_dict(yaml.safe_load((folder / runs.RECIPE).read_text(encoding="utf-8")) or {},
                             str(folder / runs.RECIPE), validate=False)
    changes = recipe_differences(saved, recipe)
    if changes:
        raise ValueError(
            f"{folder} holds a finished run of another recipe ({'; '.join(changes[:4])}). The study config or "
            "its recipes changed since: choose another output_dir, or pass --fresh to start the study over."
        )
    return True


def _fewshot_done(run_dir: Path, spec) -> bool:
    from ..evaluation.fewshot import fewshot_task_name

    path = run_dir / runs.FEWSHOT
    if not path.is_file():
        return False
    results = runs.read_json(path).get("results", {}).get(fewshot_task_name(spec.task, spec.classes), {})
    return all(str(k) in results and len(results[str(k)].get("seeds", [])) == spec.seeds for k in spec.shots)


def _run_fewshot(config: StudyConfig, run_dir: Path, device: str, progress: bool) -> None:
    from ..evaluation import fewshot_checkpoint

    spec = config.transfer.fewshot
    extra = {} if spec.l2_reg is None else {"l2_reg": spec.l2_reg}
    fewshot_checkpoint(
        run_dir, [spec.task], shots=spec.shots, seeds=range(spec.seeds), train_split=spec.train_split,
        test_split=spec.test_split, data_dirs={spec.task: spec.data_dir} if spec.data_dir else None,
        resolution=spec.resolution, device=device, cache_dir=None, batch_size=spec.batch_size,
        progress=progress, classes=spec.classes, precision=STUDY_PRECISION, **extra,
    )


REFERENCES_DIR = "references"
#: The studies' few-shot features are fp32 on every CPU, not `auto`: the final point, the scratch
#: reference and the curve during pretraining (`train.fewshot_eval`, fp32) are one measurement,
#: and a study's table then means the same on an AMX Xeon and on an AMD without bf16 (its tiny
#: models gain nothing from bf16).
STUDY_PRECISION = "fp32"


def initial_model(recipe):
    """The model a pretraining recipe's run starts from: seeded, then data and model built, as `run_recipe` does."""
    from accelerate.utils import set_seed

    from ..training.build import build_data, build_model

    set_seed(recipe.train.seed)
    data = build_data(recipe)
    return build_model(recipe, data.num_classes, data.id2label)


def scratch_reference(config: StudyConfig, planned: PlannedRun, recipe, device: str, progress: bool) -> dict[str, Any]:
    """Few-shot accuracy of `planned`'s model at its initialisation: the weights its pretraining run
    starts from (the same seed, data and model building as `run_recipe`), evaluated as the pretrained
    model is. Written to STUDY_DIR/references/<model>[-s<seed>].json and read from there when present."""
    path = config.folder / REFERENCES_DIR / f"{planned.model.slug}{'' if planned.seed is None else f'-s{planned.seed}'}.json"
    spec = config.transfer.fewshot
    if path.is_file():
        return runs.read_json(path)
    from ..evaluation.fewshot import fewshot_evaluate, fewshot_splits

    model = initial_model(recipe).to(device).eval()
    train, test = fewshot_splits(spec.task, spec.train_split, spec.test_split, spec.data_dir, spec.classes)
    extra = {} if spec.l2_reg is None else {"l2_reg": spec.l2_reg}
    results = fewshot_evaluate(model, train, test, spec.shots, range(spec.seeds), mean=recipe.data.mean, std=recipe.data.std,
                               image_size=spec.resolution or recipe.model.image_size, batch_size=spec.batch_size,
                               progress=progress, precision=STUDY_PRECISION, **extra)
    record = {"model": planned.model.name, "family": planned.model.resolved_family(), "seed": planned.seed,
              "accuracy": {k: v["mean"] for k, v in results.items()}}
    runs.write_json(path, record)
    return record


def run_record(config: StudyConfig, planned: PlannedRun, run_dir: Path) -> dict[str, Any]:
    """What study.json says of one run, read from its folder: the model, the data it saw, its
    length, best validation accuracy, few-shot accuracy per shot, fine-tuned accuracy, compute."""
    summary = runs.read_json(run_dir / runs.TRAIN_SUMMARY)
    stopping = summary.get("early_stopping") or {}
    evaluation = summary.get("eval") or {}
    compute = summary.get("compute") or {}
    train_examples = summary.get("train_examples")
    record: dict[str, Any] = {
        "run": planned.key,
        "point": planned.point or planned.key,
        "seed": planned.seed,
        "level": planned.level.name if planned.level is not None else None,
        "classes": config.data.classes,
        "model": planned.model.name,
        "family": planned.model.resolved_family(),
        "variant": planned.model.variant,
        "num_parameters": summary.get("num_parameters"),
        "subset": planned.size,
        "train_examples": train_examples,
        "epochs": planned.epochs if planned.epochs is not None else (
            round(summary["images_seen"] / train_examples, 3) if train_examples else None),
        "steps": summary.get("steps"),
        "images_seen": summary.get("images_seen"),
        "best_validation_accuracy": stopping.get("best_validation_accuracy", evaluation.get("accuracy")),
        "validation": evaluation.get("split"),
        "best_step": stopping.get("best_step"),
        "stopped_early": stopping.get("stopped_early"),
        "fewshot": None,
        "curve": None,
        "finetune": None,
        "compute": {key: compute.get(key) for key in ("training_exaflops", "forward_flops_per_image", "device_seconds",
                                                       "num_devices", "device")},
        "run_dir": str(run_dir),
    }
    spec = config.transfer.fewshot
    if spec is not None and (run_dir / runs.FEWSHOT).is_file():
        from ..evaluation.fewshot import fewshot_task_name

        results = runs.read_json(run_dir / runs.FEWSHOT)["results"].get(fewshot_task_name(spec.task, spec.classes), {})
        record["fewshot"] = {
            "task": spec.task, "classes": spec.classes, "test_split": spec.test_split, "seeds": spec.seeds,
            "accuracy": {k: results[k]["mean"] for k in sorted(results, key=int)},
            "std": {k: results[k]["std"] for k in sorted(results, key=int)},
        }
    if config.curve_options() is not None:
        from .curves import read_run_curve

        record["curve"] = read_run_curve(run_dir, spec.task, spec.classes)
    finetune_summary = run_dir / FINETUNE_DIR / runs.TRAIN_SUMMARY
    if config.transfer.finetune is not None and finetune_summary.is_file():
        import yaml

        tuned = runs.read_json(finetune_summary)
        data = (yaml.safe_load((run_dir / FINETUNE_DIR / runs.RECIPE).read_text(encoding="utf-8")) or {})["data"]
        only = f", classes {','.join(map(str, data['classes']))}" if data.get("classes") else ""
        record["finetune"] = {"accuracy": (tuned.get("eval") or {}).get("accuracy"),
                              "split": f"{data['task']}/{(tuned.get('eval') or {}).get('split')}{only}",
                              "steps": tuned.get("steps")}
    return record


def _stopped(study: dict[str, Any], run: PlannedRun, result, main: bool) -> dict[str, Any]:
    """A training session of the study ended before its run did (Ctrl-C, `run.stop_after`): keep
    what is finished, say how to continue, and return the study as it stands (`complete` false)."""
    study["interrupted"] = bool(result.interrupted)
    if main:
        print(f"{run.key}: stopped at step {result.steps} ({'interrupted' if result.interrupted else 'run.stop_after'}); "
              f"{len(study['runs'])} run(s) finished. Run the same study command again to continue.")
    return study


def run_study(config: StudyConfig, overrides=(), *, fresh: bool = False, progress: bool = True,
              command: str | None = None) -> dict[str, Any]:
    """Run (or continue) a study and write STUDY_DIR/study.json, study.md and the plot; returns
    the study record (`complete` false when a training session stopped early: Ctrl-C, or
    `run.stop_after`; the same call continues it). `overrides` (`key=value`) apply to every
    pretraining and fine-tuning recipe (e.g. `run.num_workers=2`, `smoke=true`); `fresh` deletes
    the study's runs first."""
    from ..training import run_recipe
    from .report import write_report

    state = _state()
    main = state.is_main_process
    folder = config.folder
    overrides = list(overrides) + ([] if progress else ["run.progress_bar=false"])
    if fresh and main:
        shutil.rmtree(folder / RUNS_DIR, ignore_errors=True)
        shutil.rmtree(folder / REFERENCES_DIR, ignore_errors=True)
        (folder / STUDY_JSON).unlink(missing_ok=True)
    state.wait_for_everyone()
    planned = plan_runs(config)
    study: dict[str, Any] = {
        "study": config.study,
        "name": config.name,
        "description": config.description,
        "command": command or f"vit-repro study {config.study} {shlex.quote(config.source)}",
        "config": config.to_dict(),
        "overrides": overrides,
        "runs": [],
        "references": [],
        "versions": runs.software_versions() if main else None,
    }
    start = time.perf_counter()
    study["complete"] = False
    for number, run in enumerate(planned, start=1):
        recipe = pretrain_recipe(config, run, overrides)
        run_dir = recipe.output_dir
        if main:
            print(f"\n=== [{number}/{len(planned)}] {run.describe(config)}: {run_dir} ===", flush=True)
        trained = False
        if _finished(recipe, run_dir):
            if main:
                print(f"{run.key}: pretraining finished earlier; kept.")
        else:
            if main:  # a finetune/ of an older pretraining would be reused by resume=auto
                shutil.rmtree(run_dir / FINETUNE_DIR, ignore_errors=True)
            result = run_recipe(recipe, command=f"vit-repro train {shlex.quote(str(run_dir / runs.RECIPE))}")
            if not result.completed:
                return _stopped(study, run, result, main)
            trained = True
        if config.transfer.fewshot is not None:
            if main and (trained or not _fewshot_done(run_dir, config.transfer.fewshot)):
                _run_fewshot(config, run_dir, str(state.device), progress)
            seen = {(r["model"], r["seed"]) for r in study["references"]}
            if main and config.transfer.fewshot.scratch_reference and (run.model.name, run.seed) not in seen:
                study["references"].append(scratch_reference(config, run, recipe, str(state.device), progress))
            state.wait_for_everyone()
        if config.transfer.finetune is not None:
            tuned = finetune_recipe(config, run, run_dir, overrides)
            if not _finished(tuned, tuned.output_dir):
                result = run_recipe(tuned, command=f"vit-repro train {shlex.quote(str(tuned.output_dir / runs.RECIPE))}")
                if not result.completed:
                    return _stopped(study, run, result, main)
        study["runs"].append(run_record(config, run, run_dir))
        if main:
            study["time_s"] = round(time.perf_counter() - start, 2)
            runs.write_json(folder / STUDY_JSON, study)
        state.wait_for_everyone()
    study["complete"] = True
    if main:
        runs.write_json(folder / STUDY_JSON, study)
        written = write_report(study, folder)
        print(f"\nWrote {folder / STUDY_JSON}, " + ", ".join(str(p) for p in written))
    state.wait_for_everyone()
    return study
