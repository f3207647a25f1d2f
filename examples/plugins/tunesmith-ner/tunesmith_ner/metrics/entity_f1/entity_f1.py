"""Entity-level precision / recall / F1 (seqeval-style, 0-1) as a local `evaluate` module.

An entity counts as correct only when its type and its exact word span match a
reference entity (micro-averaged over all entities, as seqeval's
``classification_report`` "micro avg"). Also returns token accuracy and F1 per type
(``f1_PER``, ...). Computed here, so nothing is fetched from the hub.
"""

import datasets
import evaluate

from tunesmith_ner.entities import get_entities


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class EntityF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level micro precision/recall/F1 over BIO tag sequences (0-1).",
            citation="", inputs_description="predictions, references: lists of tag sequences",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}))

    def _compute(self, predictions, references):
        correct = n_pred = n_gold = right_tokens = tokens = 0
        per_type: dict = {}
        for pred, ref in zip(predictions, references):
            p, g = set(get_entities(pred)), set(get_entities(ref))
            correct, n_pred, n_gold = correct + len(p & g), n_pred + len(p), n_gold + len(g)
            for ents, slot in ((p & g, 0), (p, 1), (g, 2)):
                for kind, _, _ in ents:
                    per_type.setdefault(kind, [0, 0, 0])[slot] += 1
            right_tokens += sum(a == b for a, b in zip(pred, ref))
            tokens += len(ref)
        precision, recall, f1 = _prf(correct, n_pred, n_gold)
        out = {"precision": precision, "recall": recall, "f1": f1,
               "accuracy": right_tokens / tokens if tokens else 0.0}
        for kind in sorted(per_type):
            out[f"f1_{kind}"] = _prf(*per_type[kind])[2]
        return out
