# An `evaluate` metric module of hf_vit_repro, loaded by path (no Hub access):
#     evaluate.load("<package>/metrics/top_k_accuracy")   or   hf_vit_repro.metrics.load_metric("top_k_accuracy")
# evaluate's import scanner reads this file line by line: keep one `import` per line.
"""Top-k accuracy from class scores, with a stated rule for ties."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy: the fraction of images whose true class is among the k highest-scoring classes.
Reported as "accuracy" for k = 1 and "top{k}_accuracy" otherwise (the names runs.metrics_record
and the model card use).

Ties: classes are ranked by score, and classes with equal scores by class index, lowest first
(the rule of numpy/torch argmax, so "accuracy" equals the accuracy of argmax predictions). The
true class y is in the top k when

    #{j : s_j > s_y} + #{j < y : s_j = s_y} < k.

With scores (0.2, 0.2, 0.2, 0.2, 0.2, 0.2) the top 5 are classes 0-4, so class 5 is not in it.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of lists of float): class scores (logits or probabilities), shape (N, K).
    references (list of int): true classes in [0, K), shape (N,).
    k (int or list of int, optional): which top-k to report. Default: 1 and 5, leaving 5 out
        when there are 5 classes or fewer (where it is always 1). A k larger than K is an error.
Returns:
    accuracy (float): top-1 accuracy in [0, 1], always reported.
    top{k}_accuracy (float): for every other requested k.
Examples:
    >>> metric = evaluate.load("hf_vit_repro/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0], [0.5, 0.3, 0.2]], references=[1, 2], k=[1, 2])
    {'accuracy': 0.5, 'top2_accuracy': 0.5}
"""

_CITATION = """
@inproceedings{dosovitskiy2021an,
  title={An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale},
  author={Dosovitskiy, Alexey and others},
  booktitle={ICLR},
  year={2021}
}
"""


def true_class_rank(scores, references):
    """0-based rank of each true class under the tie rule above; (N, K) scores -> (N,) ints."""
    scores = np.asarray(scores, dtype=np.float64)
    references = np.asarray(references, dtype=np.int64)
    if scores.ndim != 2:
        raise ValueError(f"predictions must be class scores of shape (N, K), got shape {scores.shape}")
    n, num_classes = scores.shape
    if references.shape != (n,):
        raise ValueError(f"references must have shape ({n},) to match the predictions, got {references.shape}")
    if n == 0:
        raise ValueError("no predictions to score")
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN scores; the model output is broken (check the checkpoint and inputs)")
    bad = references[(references < 0) | (references >= num_classes)]
    if len(bad):
        raise ValueError(f"reference class {int(bad[0])} is outside [0, {num_classes}) for scores of {num_classes} classes")
    true = scores[np.arange(n), references][:, None]
    higher = (scores > true).sum(axis=1)
    tied_before = ((scores == true) & (np.arange(num_classes)[None, :] < references[:, None])).sum(axis=1)
    return higher + tied_before


def metric_name(k):
    return "accuracy" if k == 1 else f"top{k}_accuracy"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2010.11929"],
        )

    def _compute(self, predictions, references, k=None):
        rank = true_class_rank(predictions, references)
        num_classes = np.asarray(predictions[0]).shape[0]
        if k is None:
            ks = [1] + ([5] if num_classes > 5 else [])
        else:
            ks = sorted({int(v) for v in (k if isinstance(k, (list, tuple)) else [k])})
            if ks[0] < 1 or ks[-1] > num_classes:
                raise ValueError(f"k must lie in [1, {num_classes}] for {num_classes} classes, got {ks}")
            ks = sorted(set(ks) | {1})
        return {metric_name(v): float(np.mean(rank < v)) for v in ks}
