"""Start-up time of `tunesmith --help` and `tunesmith plugins`, and proof that neither
imports torch, transformers or evaluate.

    .venv/bin/python bench/startup.py            # median of 7 runs each

Writes bench/results/startup.json and rewrites its table in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOC, REPO, replace_section  # noqa: E402

RESULTS = REPO / "bench" / "results" / "startup.json"
PROBE = ("import sys, runpy; sys.argv = ['tunesmith'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('tunesmith', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'evaluate', 'datasets') if m in sys.modules),"
         " file=sys.stderr)")


def measure(args: list[str], n: int) -> dict:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    heavy = probe.stderr.strip().rsplit("HEAVY=", 1)[-1].strip()
    return {"command": "tunesmith " + " ".join(args), "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3), "runs": n, "heavy_modules_imported": heavy.split(",") if heavy else []}


def render(results: dict) -> str:
    rows = ["| command | median (s) | min (s) | imports torch/transformers/evaluate/datasets |", "|---|---:|---:|---|"]
    for r in results["runs"]:
        rows.append(f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                    f"{', '.join(r['heavy_modules_imported']) or 'none'} |")
    rows.append("")
    rows.append(f"Measured {results['date']} ({os.cpu_count()} shared CPU cores), `python -m tunesmith`, "
                f"median of {results['runs'][0]['runs']} runs.")
    return "\n".join(rows)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    results = {"date": time.strftime("%Y-%m-%d"), "runs": [measure(["--help"], n), measure(["plugins"], n)]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "startup", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
