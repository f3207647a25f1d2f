"""F1 as a local `evaluate` module (the hub version needs a network).

Default config: single-label; returns ``f1`` = macro F1 over the classes (0-1).
Config "multilabel": 0/1 indicator lists per row; returns ``f1_micro`` and ``f1_macro``.
"""

import evaluate
from sklearn.metrics import f1_score

from tunesmith.plugins.classification import label_metric_info


class F1(evaluate.Metric):
    def _info(self):
        return label_metric_info(self.config_name, "Macro (and for multi-label micro) F1, 0-1.")

    def _compute(self, predictions, references):
        if self.config_name == "multilabel":
            return {"f1_micro": float(f1_score(references, predictions, average="micro", zero_division=0)),
                    "f1_macro": float(f1_score(references, predictions, average="macro", zero_division=0))}
        return {"f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
