"""Accuracy as a local `evaluate` module (the hub version needs a network).

Config "multilabel": predictions and references are 0/1 indicator lists per row and
accuracy is the exact-match (subset) accuracy, as sklearn computes it.
"""

import evaluate
from sklearn.metrics import accuracy_score

from tunesmith.plugins.classification import label_metric_info


class Accuracy(evaluate.Metric):
    def _info(self):
        return label_metric_info(self.config_name, "Fraction of rows predicted exactly right (0-1).")

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
