"""Execution-based scoring of generated code: a process sandbox, pass@k, HumanEval.

Nothing here imports torch or transformers, and no generated code ever runs in the
calling process: see ``sandbox.run_program`` and docs/sandbox.md.
"""

from pathlib import Path

from .sandbox import STATUSES, ExecResult, describe_isolation, run_program
from .scoring import humaneval_program, pass_at_k, pass_at_ks, run_programs, score_completions

# the local `evaluate` module wrapping score_completions, for register_metrics
METRIC_DIR = Path(__file__).resolve().parent.parent / "metrics" / "pass_at_k"

__all__ = ["ExecResult", "STATUSES", "METRIC_DIR", "describe_isolation", "humaneval_program", "metric_reference",
           "pass_at_k", "pass_at_ks", "run_program", "run_programs", "score_completions"]


def metric_reference(row: dict) -> str:
    """The ``references`` string the pass_at_k metric module takes for a HumanEval-layout row."""
    import json

    return json.dumps({k: row[k] for k in ("prompt", "test", "entry_point")}
                      | ({"task_id": row["task_id"]} if "task_id" in row else {}))
