"""F1 as a local `evaluate` module (the hub version needs a network).

Default config: single-label; returns ``f1`` = macro F1 over the classes (0-1).
Config "multilabel": 0/1 indicator lists per row; returns ``f1_micro`` and ``f1_macro``.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        label = datasets.Value("int32")   # multi-label: a 0/1 indicator list per row
        kind = datasets.Sequence(label) if self.config_name == "multilabel" else label
        features = datasets.Features({"predictions": kind, "references": kind})
        return evaluate.MetricInfo(description="Macro (and for multi-label micro) F1, 0-1.",
                                   citation="", inputs_description="predictions, references",
                                   features=features)

    def _compute(self, predictions, references):
        if self.config_name == "multilabel":
            return {"f1_micro": float(f1_score(references, predictions, average="micro", zero_division=0)),
                    "f1_macro": float(f1_score(references, predictions, average="macro", zero_division=0))}
        return {"f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
