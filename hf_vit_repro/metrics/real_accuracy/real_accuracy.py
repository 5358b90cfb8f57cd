# An `evaluate` metric module of hf_vit_repro, loaded by path (no Hub access):
#     evaluate.load("<package>/metrics/real_accuracy")   or   hf_vit_repro.metrics.load_metric("real_accuracy")
# evaluate's import scanner reads this file line by line: keep one `import` per line.
"""ImageNet ReaL accuracy (Beyer et al. 2020, "Are we done with ImageNet?")."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
ReaL accuracy: ImageNet validation images carry a *set* of "Reassessed Labels" (real.json of
google-research/reassessed-imagenet, one list per validation image in file-name order). A top-1
prediction counts as correct when it is in the image's set; images whose set is empty (no
label the raters agreed on) are left out of the mean, as in the paper's ReaL numbers (Table 2,
"ImageNet ReaL"). Predictions are class ids, or class scores (argmax, lowest index on ties).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int, or list of lists of float): predicted classes (N,), or scores (N, K).
    references (list of lists of int): the ReaL label set of each image (possibly empty).
Returns:
    real_accuracy (float): mean over images with a non-empty set of [prediction in set].
    real_num_images (int): how many images that mean is over.
Examples:
    >>> metric = evaluate.load("hf_vit_repro/metrics/real_accuracy")
    >>> metric.compute(predictions=[3, 1, 7], references=[[3, 5], [], [2]])
    {'real_accuracy': 0.5, 'real_num_images': 2}
"""

_CITATION = """
@article{beyer2020imagenet,
  title={Are we done with ImageNet?},
  author={Beyer, Lucas and H{\\'e}naff, Olivier J and Kolesnikov, Alexander and Zhai, Xiaohua and van den Oord, A{\\"a}ron},
  journal={arXiv preprint arXiv:2006.07159},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RealAccuracy(evaluate.Metric):
    def _info(self):
        label_set = datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": label_set}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")), "references": label_set}),
            ],
            reference_urls=["https://github.com/google-research/reassessed-imagenet"],
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("no predictions to score")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} label sets")
        if len(predictions) and np.ndim(predictions[0]) == 1:
            scores = np.asarray(predictions, dtype=np.float64)
            if np.isnan(scores).any():
                raise ValueError("predictions contain NaN scores")
            predictions = scores.argmax(axis=1)
        hits = [int(p) in set(int(v) for v in labels) for p, labels in zip(predictions, references) if len(labels)]
        if not hits:
            raise ValueError("every image has an empty ReaL label set; there is nothing to score")
        return {"real_accuracy": float(np.mean(hits)), "real_num_images": len(hits)}
