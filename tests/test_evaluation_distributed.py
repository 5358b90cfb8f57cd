"""Two CPU processes (torchrun, gloo) give the same metrics as one on a split whose size is not a
multiple of the global batch: Accelerate pads the last batch with repeated images and
`gather_for_metrics` must drop them (45 images, 2 x 4 per step: the last step holds 5)."""

import json
import os
import subprocess
import sys

from hf_vit_repro.evaluation import evaluate_checkpoint

from .evaluation_fixtures import save_classifier, tiny_digits_classifier


def test_two_processes_equal_one(tmp_path):
    checkpoint = save_classifier(tiny_digits_classifier(), tmp_path / "ckpt")
    single, _ = evaluate_checkpoint(checkpoint, "digits", max_images=45, batch_size=4, output=tmp_path / "one.json",
                                    progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hf_vit_repro", "evaluate", str(checkpoint), "digits", "--max-images", "45", "--batch-size", "4",
        "--output-dir", str(tmp_path / "two.json"), "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    double = json.loads((tmp_path / "two.json").read_text())
    assert double["evaluation"]["num_processes"] == 2
    assert double["num_images"] == single["num_images"] == 45
    assert double["metrics"] == single["metrics"]
    assert double["per_class_accuracy"] == single["per_class_accuracy"]
    assert 0.2 < single["metrics"]["accuracy"] < 1.0  # predictions vary, so a lost or doubled image would show
    assert done.stdout.count("Wrote") == 1  # only the main process writes and prints


def test_skipping_unreadable_images_gives_the_same_metrics_on_two_processes(tmp_path):
    from datasets import Dataset, Image

    from hf_vit_repro.data import load_task

    digits = load_task("digits", "test").select(range(45)).cast_column("image", Image(decode=False))
    rows = digits.to_list()
    for row in (3, 44):  # one in a full batch, one in the padded last one
        rows[row]["image"] = {"bytes": b"", "path": f"broken_{row}.png"}
    (tmp_path / "data" / "data").mkdir(parents=True)
    Dataset.from_list(rows, features=digits.features).to_parquet(str(tmp_path / "data" / "data" / "test-00000.parquet"))
    checkpoint = save_classifier(tiny_digits_classifier(), tmp_path / "ckpt")
    single, _ = evaluate_checkpoint(checkpoint, str(tmp_path / "data"), "test", batch_size=4, strict=False,
                                    output=tmp_path / "one.json", progress=False)
    assert single["num_images"] == 43 and single["num_skipped"] == 2
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hf_vit_repro", "evaluate", str(checkpoint), str(tmp_path / "data"), "--batch-size", "4",
        "--skip-unreadable", "--output-dir", str(tmp_path / "two.json"), "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    double = json.loads((tmp_path / "two.json").read_text())
    assert (double["num_images"], double["num_skipped"]) == (43, 2)
    assert double["metrics"] == single["metrics"]
