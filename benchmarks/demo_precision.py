"""The demo's ViT trained in fp32 and in bf16: issue 27's "demo accuracy within 1 point" of fp32.

For each seed, the demo's two ViT stages (recipes/demo/pretrain_vit.yaml, then finetune_vit.yaml from
that run) train once with `run.mixed_precision: "no"` and once with `"bf16"` (Accelerate's autocast,
what `auto` picks on a CPU with AMX or AVX512-BF16), the two precisions in turn, with `train.seed`
set. Recorded per run: the fine-tuned model's test accuracy (digits/test, 300 images, evaluated in
the precision it trained in) and the wall time of both stages; then the means, standard deviations
and the difference of the means. One seed's accuracy moves by a point or more from seed to seed, so
the criterion is the mean over seeds.

    python benchmarks/demo_precision.py --seeds 0 1 2 3 4 --out benchmarks/results/...json
    python benchmarks/demo_precision.py --runs-dir outputs/demo_precision  # an interrupted run continues

Runs land in `--runs-dir`/s<seed>_<precision>/{pretrain,finetune}; a run whose fine-tuning summary
exists is read back, not trained again (its time is the one recorded then, in timing.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import cpu_description, cpu_machine, default_results_path, save_results  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"
PRECISIONS = ("no", "bf16")


def train_demo_vit(run_dir: Path, seed: int, precision: str, extra: list[str]) -> dict:
    """Pretrain + fine-tune the demo ViT in `run_dir`; {"accuracy", "seconds", "eval_precision"}."""
    from hf_vit_repro.training import load_recipe, train

    summary_path, timing_path = run_dir / "finetune" / "train_summary.json", run_dir / "timing.json"
    if not (summary_path.is_file() and timing_path.is_file()):
        # one precision's copies of the stages; an interrupted stage resumes (`run.resume: auto`)
        common = [f"train.seed={seed}", f"run.mixed_precision={precision}", "run.progress_bar=false", *extra]
        start = time.perf_counter()
        train(load_recipe(RECIPES / "pretrain_vit.yaml", [f"run.output_dir={run_dir / 'pretrain'}", *common]))
        train(load_recipe(RECIPES / "finetune_vit.yaml", [f"run.output_dir={run_dir / 'finetune'}",
                                                           f"model.init_from={run_dir / 'pretrain'}", *common]))
        timing_path.write_text(json.dumps({"seconds": time.perf_counter() - start}))
    evaluation = json.loads(summary_path.read_text())["eval"]
    return {"accuracy": 100 * evaluation["accuracy"], "eval_precision": evaluation["precision"],
            "seconds": json.loads(timing_path.read_text())["seconds"]}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per precision: accuracies, mean, standard deviation, mean seconds; and bf16's mean minus fp32's."""
    out = {}
    for precision, results in runs.items():
        accuracy = [r["accuracy"] for r in results]
        out[precision] = {"accuracy": accuracy, "mean": statistics.mean(accuracy),
                          "stdev": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
                          "mean_seconds": statistics.mean(r["seconds"] for r in results)}
    out["bf16_minus_fp32"] = out["bf16"]["mean"] - out["no"]["mean"]
    out["bf16_time_ratio"] = out["bf16"]["mean_seconds"] / out["no"]["mean_seconds"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/demo_precision"),
                        help="where the runs are written (default: outputs/demo_precision)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run (e.g. smoke=true), repeatable")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/<machine>-demo-precision.json)")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    jobs = [(seed, precision) for seed in args.seeds for precision in PRECISIONS]
    runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    for seed, precision in tqdm(jobs, desc="demo ViT runs", disable=args.no_progress):
        result = train_demo_vit(args.runs_dir / f"s{seed}_{precision}", seed, precision, args.override)
        runs[precision].append({"seed": seed, **result})
        tqdm.write(f"seed {seed} {precision:>4}: test accuracy {result['accuracy']:.2f}%, {result['seconds']:.0f} s")
    summary = summarise(runs)
    for precision in PRECISIONS:
        s = summary[precision]
        print(f"{'fp32' if precision == 'no' else precision}: mean {s['mean']:.2f}% (sd {s['stdev']:.2f}), "
              f"{s['mean_seconds']:.0f} s per seed")
    print(f"bf16 - fp32: {summary['bf16_minus_fp32']:+.2f} points; bf16 took {summary['bf16_time_ratio']:.2f}x the time")
    machine = cpu_machine()
    rows = [{"precision": p, **run} for p in PRECISIONS for run in runs[p]]
    save_results(args.out or default_results_path(f"{machine}-demo-precision"), machine, rows,
                 {"cpu": cpu_description(), "seeds": args.seeds, "overrides": args.override, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
