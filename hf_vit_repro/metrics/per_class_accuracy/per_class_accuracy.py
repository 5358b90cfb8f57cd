# An `evaluate` metric module of hf_vit_repro, loaded by path (no Hub access):
#     evaluate.load("<package>/metrics/per_class_accuracy")   or   hf_vit_repro.metrics.load_metric("per_class_accuracy")
# evaluate's import scanner reads this file line by line: keep one `import` per line.
"""Accuracy of each class, and their mean (balanced accuracy)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Per-class accuracy: for every class c, the fraction of images of class c predicted as c (the
recall of c), and the mean over the classes that occur in the references ("mean per-class" or
balanced accuracy, the metric of Pets and Flowers in some papers). Predictions are class ids, or
class scores (then the prediction is the argmax, lowest class index on ties).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int, or list of lists of float): predicted classes (N,), or scores (N, K).
    references (list of int): true classes (N,).
    num_classes (int, optional): K. Default: the scores' width, else 1 + the largest class id seen.
Returns:
    per_class_accuracy (list of float or None): K entries; None for a class with no reference image.
    per_class_count (list of int): reference images of each class.
    mean_per_class_accuracy (float): mean of the non-None entries.
Examples:
    >>> metric = evaluate.load("hf_vit_repro/metrics/per_class_accuracy")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2], num_classes=3)["per_class_accuracy"]
    [1.0, 1.0, 0.5]
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerClassAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Either class ids or class scores; evaluate picks the format that fits the first input.
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
                ),
            ],
        )

    def _compute(self, predictions, references, num_classes=None):
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("no predictions to score")
        predictions = np.asarray(predictions)
        if predictions.ndim == 2:
            if np.isnan(predictions).any():
                raise ValueError("predictions contain NaN scores")
            num_classes = num_classes or predictions.shape[1]
            predictions = predictions.argmax(axis=1)
        predictions = predictions.astype(np.int64)
        if num_classes is None:
            num_classes = int(max(predictions.max(), references.max())) + 1
        for name, values in (("reference", references), ("predicted", predictions)):
            bad = values[(values < 0) | (values >= num_classes)]
            if len(bad):
                raise ValueError(f"{name} class {int(bad[0])} is outside [0, {num_classes})")
        counts = np.bincount(references, minlength=num_classes)
        hits = np.bincount(references[predictions == references], minlength=num_classes)
        per_class = [float(h / c) if c else None for h, c in zip(hits, counts)]
        present = [v for v in per_class if v is not None]
        return {
            "per_class_accuracy": per_class,
            "per_class_count": [int(c) for c in counts],
            "mean_per_class_accuracy": float(np.mean(present)),
        }
