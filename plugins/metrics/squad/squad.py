"""SQuAD exact match and F1 as a local `evaluate` module (the hub version needs a network).

The answer normalization and the token F1 are those of the official SQuAD v1.1 / v2.0
evaluation scripts: lower-case, drop punctuation and the articles a/an/the, collapse
whitespace; each prediction scores the maximum over its reference answers; both
figures are on the 0-100 scale. An empty list of references means "unanswerable"
(SQuAD v2): only the empty prediction scores there.
"""

import collections
import re
import string

import datasets
import evaluate

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:   # v2 rule: a no-answer only matches a no-answer
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD exact match and token F1 (0-100), maximum over the references.",
            citation="Rajpurkar et al., 2016, SQuAD: 100,000+ Questions for Machine Comprehension of Text",
            inputs_description="predictions: answer strings; references: lists of answer strings "
                               "(empty for an unanswerable question)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}))

    def _compute(self, predictions, references):
        em = f = 0.0
        for pred, refs in zip(predictions, references):
            refs = list(refs) or [""]
            em += max(exact_match(pred, r) for r in refs)
            f += max(f1(pred, r) for r in refs)
        n = max(len(predictions), 1)
        return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n}
