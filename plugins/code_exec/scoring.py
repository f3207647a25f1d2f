"""pass@k for code: run every completion against its tests in the sandbox and estimate.

``pass_at_k`` is the unbiased estimator of Chen et al. (2021, "Evaluating Large
Language Models Trained on Code"), in the numerically stable product form of its
reference implementation. ``score_completions`` builds one program per completion in
the HumanEval layout and runs them on a few sandboxed subprocesses at a time.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

from .sandbox import STATUSES, ExecResult, run_program


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn from ``n`` (``c`` correct) passes:
    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``."""
    if not (0 <= c <= n) or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def humaneval_program(row: dict, completion: str) -> str:
    """The program HumanEval runs: prompt + completion, the tests, then ``check(entry_point)``."""
    for field in ("prompt", "test", "entry_point"):
        if not isinstance(row.get(field), str):
            raise ValueError(f"a code row needs a string field {field!r}")
    return f"{row['prompt']}{completion}\n{row['test']}\ncheck({row['entry_point']})\n"


def run_programs(programs: list, *, workers: int = 2, timeout_s: float = 10.0,
                 memory_mb: int = 1024) -> list:
    """``programs[i][j]`` → ``ExecResult``, same shape; ``workers`` sandboxes at a time."""
    jobs = [(i, j, prog) for i, progs in enumerate(programs) for j, prog in enumerate(progs)]

    def one(job):
        i, j, program = job
        return i, j, run_program(program, timeout_s=timeout_s, memory_mb=memory_mb)

    out: list[list[ExecResult]] = [[None] * len(progs) for progs in programs]
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for i, j, res in pool.map(one, jobs):
            out[i][j] = res
    return out


def pass_at_ks(sample_counts: list, passed_counts: list, ks) -> dict:
    """Mean pass@k over problems for each k no larger than the fewest samples of any problem."""
    n_min = min(sample_counts, default=0)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in zip(sample_counts, passed_counts)) / len(sample_counts)
            for k in sorted(set(int(k) for k in ks)) if sample_counts and 1 <= k <= n_min}


def score_completions(rows: list, completions: list, ks=(1,), *, workers: int = 2,
                      timeout_s: float = 10.0, memory_mb: int = 1024) -> dict:
    """Run ``completions[i][j]`` (sample j for row i) against ``rows[i]``'s tests.

    Returns ``{"pass@k": mean over rows, ... (only k <= the fewest samples of any row),
    "n": rows, "samples": programs run, "status_counts": {status: count},
    "details": [{"index", "task_id", "passed", "results": [ExecResult dict, ...]}]}``.
    A completion that crashes, hangs or misbehaves is a failure; the run goes on.
    """
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} lists of completions")
    if any(isinstance(c, str) for c in completions):
        raise ValueError("completions must be one list of strings per row (wrap a single one in a list)")
    programs = [[humaneval_program(row, comp) for comp in comps] for row, comps in zip(rows, completions)]
    results = run_programs(programs, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
    counts = collections.Counter()
    details = []
    for i, (row, rs) in enumerate(zip(rows, results)):
        counts.update(r.status for r in rs)
        details.append({"index": i, "task_id": row.get("task_id"), "passed": sum(r.passed for r in rs),
                        "results": [r.to_dict() for r in rs]})
    out = pass_at_ks([len(c) for c in completions], [d["passed"] for d in details], ks)
    out.update({"n": len(rows), "samples": sum(len(c) for c in completions),
                "status_counts": {s: counts[s] for s in STATUSES if counts[s]},
                "details": details})
    return out
