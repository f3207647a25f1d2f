"""Accuracy as a local `evaluate` module (the hub version needs a network).

Config "multilabel": predictions and references are 0/1 indicator lists per row and
accuracy is the exact-match (subset) accuracy, as sklearn computes it.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilabel":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int32")),
                                          "references": datasets.Sequence(datasets.Value("int32"))})
        else:
            features = datasets.Features({"predictions": datasets.Value("int32"),
                                          "references": datasets.Value("int32")})
        return evaluate.MetricInfo(description="Fraction of rows predicted exactly right (0-1).",
                                   citation="", inputs_description="predictions, references",
                                   features=features)

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
