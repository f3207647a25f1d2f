"""pass@k of generated code, run in the tunesmith sandbox, as a local `evaluate` module.

predictions: one completion (a string) or n sampled completions (a list of strings) per
problem. references: per problem either a JSON object string with ``prompt``, ``test``
and ``entry_point`` (HumanEval layout: program = prompt + completion + test +
``check(entry_point)``; ``tunesmith.plugins.code_exec.metric_reference(row)`` makes it),
or plain test code appended to a prediction that is a whole program. Config name: the
k values, e.g. ``"1,10"`` (default ``"1"``); pass@k is reported for k <= the fewest
samples of any problem. Every program runs in a separate sandboxed process.
"""

import json

import datasets
import evaluate

from tunesmith.plugins.code_exec.scoring import humaneval_program, pass_at_ks, run_programs


def _ks(config_name) -> tuple:
    text = (config_name or "default").strip()
    if text in ("", "default"):
        return (1,)
    text = text[2:] if text.startswith("k=") else text
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"pass_at_k config must be k values like '1,10', got {config_name!r}") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"pass_at_k config must be k values >= 1, got {config_name!r}")
    return ks


def _row(reference: str) -> dict:
    try:
        obj = json.loads(reference)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and {"prompt", "test", "entry_point"} <= set(obj):
        return obj
    return None


class PassAtK(evaluate.Metric):
    def _info(self):
        _ks(self.config_name)   # a bad config fails at load time, not after generation
        return evaluate.MetricInfo(
            description="pass@k (0-1): unbiased estimate that one of k samples passes the tests, "
                        "run in a sandboxed subprocess.",
            citation="Chen et al., 2021, Evaluating Large Language Models Trained on Code",
            inputs_description="predictions: completion(s) per problem; references: JSON "
                               "{prompt, test, entry_point} or test code",
            features=[datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                         "references": datasets.Value("string")}),
                      datasets.Features({"predictions": datasets.Value("string"),
                                         "references": datasets.Value("string")})])

    def _compute(self, predictions, references, workers=2, timeout_s=10.0, memory_mb=1024):
        programs = []
        for pred, ref in zip(predictions, references):
            samples = [pred] if isinstance(pred, str) else list(pred)
            row = _row(ref)
            if row is None:   # whole programs: the test code follows each one
                programs.append([f"{p}\n{ref}\n" for p in samples])
            else:
                programs.append([humaneval_program(row, p) for p in samples])
        results = run_programs(programs, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
        return pass_at_ks([len(p) for p in programs], [sum(r.passed for r in rs) for rs in results],
                          _ks(self.config_name))
