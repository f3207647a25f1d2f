"""Accuracy as a local `evaluate` module (the hub version needs a network).

Config "multilabel": predictions and references are 0/1 indicator lists per row and
accuracy is the exact-match (subset) accuracy, as sklearn computes it.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    def _info(self):
        label = datasets.Value("int32")   # multi-label: a 0/1 indicator list per row
        kind = datasets.Sequence(label) if self.config_name == "multilabel" else label
        features = datasets.Features({"predictions": kind, "references": kind})
        return evaluate.MetricInfo(description="Fraction of rows predicted exactly right (0-1).",
                                   citation="", inputs_description="predictions, references",
                                   features=features)

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
