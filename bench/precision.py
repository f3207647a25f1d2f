"""tunesmith in float32 against ``training.precision: auto`` (bf16 mixed precision where
the CPU has avx512_bf16/AMX), per strategy, on SST-2 with MiniLM: accuracy and train
time. Each run is a fresh ``tunesmith train`` process; fp32 and auto alternate per
strategy, in one invocation, so machine load hits both alike. Target (issue 19):
accuracy within 0.5 points of float32.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/precision.py --strategies lora,frozen
    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/precision.py --strategies full --max-train 5000 \\
        --epochs 3 --section precision-long

Writes bench/results/precision[-long].json and rewrites its table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DOC, REPO, env, replace_section  # noqa: E402


def run(strategy: str, precision: str, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "tunesmith", "train", str(REPO / "examples" / "sentiment.yaml"), "--quiet",
           "--set", f"data.train={DATA / 'train.jsonl'}", "--set", f"data.validation={DATA / 'validation.jsonl'}",
           "--set", f"training.max_train_samples={args.max_train}", "--set", f"training.epochs={args.epochs}",
           "--set", f"strategy.name={strategy}", "--set", f"training.precision={precision}",
           "--set", f"output_dir={out}"]
    start = time.time()
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{strategy}/{precision} failed: {proc.stderr.strip().splitlines()[-1:]}")
    wall = time.time() - start
    m = json.loads((out / "metrics.json").read_text())
    used = json.loads((out / "tunesmith.json").read_text())["precision"]
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("tunesmith:")]
    return {"strategy": strategy, "requested": precision, "precision": used["used"], "why": used["why"],
            "wall_s": round(wall, 2), "train_runtime_s": round(m["train_runtime_s"], 2),
            "accuracy": m["eval"]["accuracy"], "stderr_notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="lora,frozen")
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--section", default="precision", help="docs/benchmarks.md section to rewrite")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            for precision in ("fp32", "auto"):
                runs.append(run(strategy, precision, Path(tmp) / f"{strategy}-{precision}", args))
                print(runs[-1], flush=True)
    rows = ["| strategy | precision | validation accuracy | train time (s) | process wall (s) | "
            "time ratio auto / fp32 | accuracy difference (points) |", "|---|---|---:|---:|---:|---:|---:|"]
    pairs = []
    for i in range(0, len(runs), 2):
        f, a = runs[i], runs[i + 1]
        ratio = a["train_runtime_s"] / f["train_runtime_s"]
        diff = 100 * (a["accuracy"] - f["accuracy"])
        pairs.append({"strategy": f["strategy"], "train_ratio": round(ratio, 3),
                      "wall_ratio": round(a["wall_s"] / f["wall_s"], 3), "accuracy_diff_points": round(diff, 2)})
        rows.append(f"| {f['strategy']} | fp32 | {f['accuracy']:.4f} | {f['train_runtime_s']:.1f} | {f['wall_s']:.1f} | | |")
        rows.append(f"| {a['strategy']} | auto → {a['precision']} | {a['accuracy']:.4f} | {a['train_runtime_s']:.1f} | "
                    f"{a['wall_s']:.1f} | {ratio:.3f} | {diff:+.2f} |")
    settings = (f"{args.max_train} training rows, {args.epochs:g} epoch(s), 872 validation rows, batch 16, each "
                f"strategy's default learning rate, seed 42, one run each; train time includes evaluation "
                f"(and frozen's feature extraction); measured {time.strftime('%Y-%m-%d')}.")
    body = "\n".join(rows + ["", settings])
    name = "precision" if args.section == "precision" else args.section
    results = REPO / "bench" / "results" / f"{name}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"runs": runs, "pairs": pairs, "settings": settings}, indent=2) + "\n")
    replace_section(DOC, args.section, body)
    print(body)


if __name__ == "__main__":
    main()
