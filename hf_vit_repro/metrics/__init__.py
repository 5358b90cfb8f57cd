"""The package's `evaluate` metric modules, shipped as files and loaded by path, so they work
offline (`evaluate.load("accuracy")` fetches the Hub's module; these never touch the network).

    from hf_vit_repro.metrics import load_metric
    top_k = load_metric("top_k_accuracy")        # "accuracy", "top5_accuracy" from (N, K) scores
    per_class = load_metric("per_class_accuracy")
    real = load_metric("real_accuracy")          # ImageNet ReaL label sets

or, without this helper, `evaluate.load(str(metric_path("top_k_accuracy")))`. Each module is
`metrics/<name>/<name>.py` (evaluate's layout for a local module) and is package data in
pyproject.toml, so a non-editable install carries it.
"""

from __future__ import annotations

from pathlib import Path

METRIC_NAMES: tuple[str, ...] = ("top_k_accuracy", "per_class_accuracy", "real_accuracy")
_ROOT = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """The folder of metric module `name` (what `evaluate.load` takes)."""
    if name not in METRIC_NAMES:
        raise KeyError(f"unknown metric {name!r}; this package ships {', '.join(METRIC_NAMES)}")
    path = _ROOT / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"the metric module {path / (name + '.py')} is missing from the installed package; reinstall hf-vit-repro"
        )
    return path


def load_metric(name: str, **kwargs):
    """`evaluate.load` of one of this package's modules, by path. By default the module keeps its
    inputs in memory (`keep_in_memory=True`): no cache files, so several processes or several
    metrics in one process never contend for evaluate's lock files."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRIC_NAMES", "metric_path", "load_metric"]
