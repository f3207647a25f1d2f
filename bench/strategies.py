"""Each built-in strategy on SST-2 with MiniLM: accuracy, trainable parameters, wall time,
peak memory. Every run is a separate `tunesmith train` process, so peak RSS is per run.

    .venv/bin/python bench/strategies.py                # full 5k train / 872 validation, 1 epoch
    .venv/bin/python bench/strategies.py --max-train 2000 --strategies full,lora

Writes bench/results/strategies.json and rewrites the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "classification"
RESULTS = REPO / "bench" / "results" / "strategies.json"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- strategies:begin -->", "<!-- strategies:end -->"


def run_one(strategy: str, args, out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "tunesmith", "train", str(REPO / "examples" / "sentiment.yaml"), "--quiet",
           "--set", f"data.train={DATA / 'train.jsonl'}", "--set", f"data.validation={DATA / 'validation.jsonl'}",
           "--set", f"strategy.name={strategy}", "--set", f"training.epochs={args.epochs}",
           "--set", f"output_dir={out_dir / strategy}"]
    if args.max_train:
        cmd += ["--set", f"training.max_train_samples={args.max_train}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)   # per-process peak RSS
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return {"strategy": strategy, "error": stderr.strip().splitlines()[-1] if stderr.strip() else "failed"}
    metrics = json.loads((out_dir / strategy / "metrics.json").read_text())
    return {"strategy": strategy, "accuracy": metrics["eval"]["accuracy"], "f1": metrics["eval"]["f1"],
            "trainable_parameters": metrics["trainable_parameters"],
            "total_parameters": metrics["total_parameters"],
            "train_runtime_s": metrics["train_runtime_s"], "process_wall_s": round(time.time() - start, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def render(results: dict) -> str:
    rows = ["| strategy | accuracy | macro F1 | trainable params | % trained | train time (s) | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        if "error" in r:
            rows.append(f"| {r['strategy']} | failed: {r['error']} | | | | | |")
            continue
        pct = 100 * r["trainable_parameters"] / r["total_parameters"]
        rows.append(f"| {r['strategy']} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['trainable_parameters']:,} | "
                    f"{pct:.2f} | {r['train_runtime_s']:.0f} | {r['peak_rss_mb']:,} |")
    s = results["settings"]
    rows.append("")
    rows.append(f"Settings: {s['train_rows']} training rows, {s['epochs']} epoch(s), validation = all 872 "
                f"SST-2 dev sentences, batch 16, each strategy's default learning rate, seed 42; "
                f"measured {s['date']} on {s['machine']}.")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="full,partial,frozen,lora")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--max-train", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_one(s, args, Path(tmp)) for s in args.strategies.split(",")]
    results = {"settings": {"train_rows": args.max_train or 5000, "epochs": args.epochs,
                            "date": time.strftime("%Y-%m-%d"),
                            "machine": f"{os.cpu_count()} CPU cores, torch threads default"},
               "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        DOC.write_text(head + BEGIN + "\n" + render(results) + "\n" + END + rest.split(END, 1)[1])
    print(render(results))


if __name__ == "__main__":
    main()
