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

from tunesmith.plugins.code_exec import score_completions


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
    if isinstance(obj, dict) and "test" in obj:
        return {"prompt": obj.get("prompt", ""), "test": obj["test"],
                "entry_point": obj.get("entry_point"), "task_id": obj.get("task_id")}
    return {"prompt": "", "test": reference, "entry_point": None}


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
        rows, samples = [], []
        for pred, ref in zip(predictions, references):
            row = _row(ref)
            if row["entry_point"] is None:   # whole programs: the test code follows each one
                row = {"prompt": "", "test": "", "entry_point": None, "raw_test": ref}
            rows.append(row)
            samples.append([pred] if isinstance(pred, str) else list(pred))
        he = [i for i, r in enumerate(rows) if r["entry_point"] is not None]
        raw = [i for i, r in enumerate(rows) if r["entry_point"] is None]
        passed = {}
        if he:
            res = score_completions([rows[i] for i in he], [samples[i] for i in he], ks=(1,),
                                    workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
            passed.update({i: d["passed"] for i, d in zip(he, res["details"])})
        if raw:
            from tunesmith.plugins.code_exec import run_program
            from concurrent.futures import ThreadPoolExecutor
            jobs = [(i, f"{p}\n{rows[i]['raw_test']}\n") for i in raw for p in samples[i]]
            with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
                outs = list(pool.map(lambda job: run_program(job[1], timeout_s=timeout_s,
                                                             memory_mb=memory_mb).passed, jobs))
            for (i, _), ok in zip(jobs, outs):
                passed[i] = passed.get(i, 0) + int(ok)
        from tunesmith.plugins.code_exec import pass_at_k
        n_min = min((len(s) for s in samples), default=0)
        out = {}
        for k in _ks(self.config_name):
            if samples and k <= n_min:
                out[f"pass@{k}"] = sum(pass_at_k(len(s), passed[i], k)
                                       for i, s in enumerate(samples)) / len(samples)
        return out
