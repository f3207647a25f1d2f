"""tunesmith against a plain Hugging Face Trainer script (bench/plain_hf.py) doing the
same work: same model, data, hyperparameters and seed. Runs alternate (tunesmith,
plain, tunesmith, plain, ...) one at a time, each in a fresh process, so load on a
shared machine hits both alike. tunesmith runs with ``training.precision`` (default
auto: bf16 mixed precision where the CPU has avx512_bf16/AMX); the plain script stays
float32. Targets (issue 19): wall-time ratio <= 0.75, accuracy within 0.5 points.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/vs_hf.py [--pairs 2] [--max-train 2000] [--precision auto] [--section vs-hf]

Writes bench/results/vs_hf.json and rewrites its table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DOC, REPO, env, replace_section  # noqa: E402

RESULTS = REPO / "bench" / "results" / "vs_hf.json"


def command(kind: str, out: Path, args) -> list[str]:
    if kind == "plain":
        return [sys.executable, str(REPO / "bench" / "plain_hf.py"), str(out), "--max-train", str(args.max_train),
                "--epochs", str(args.epochs)]
    return [sys.executable, "-m", "tunesmith", "train", str(REPO / "examples" / "sentiment.yaml"), "--quiet",
            "--set", f"data.train={DATA / 'train.jsonl'}", "--set", f"data.validation={DATA / 'validation.jsonl'}",
            "--set", f"training.max_train_samples={args.max_train}", "--set", f"training.epochs={args.epochs}",
            "--set", f"training.precision={args.precision}", "--set", f"output_dir={out}"]


def run(kind: str, out: Path, args) -> dict:
    start = time.time()
    subprocess.run(command(kind, out, args), check=True, env=env(), capture_output=True)
    wall = time.time() - start
    m = json.loads((out / "metrics.json").read_text())
    manifest = out / "tunesmith.json"
    used = json.loads(manifest.read_text())["precision"]["used"] if manifest.is_file() else "fp32"
    return {"kind": kind, "wall_s": round(wall, 2), "train_runtime_s": round(m["train_runtime_s"], 2),
            "accuracy": m["eval"]["accuracy"], "precision": used}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--precision", default="auto", help="tunesmith's training.precision (the plain script: fp32)")
    ap.add_argument("--section", default="vs-hf", help="docs/benchmarks.md section (and bench/results/SECTION.json)")
    args = ap.parse_args()
    results = RESULTS.with_name(args.section.replace("-", "_") + ".json")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for kind in ("tunesmith", "plain"):
                runs.append(run(kind, Path(tmp) / f"{kind}-{i}", args))
                print(runs[-1], flush=True)
    med = {k: {f: statistics.median(r[f] for r in runs if r["kind"] == k)
               for f in ("wall_s", "train_runtime_s", "accuracy")} for k in ("tunesmith", "plain")}
    result = {"runs": runs, "median": med, "wall_ratio": med["tunesmith"]["wall_s"] / med["plain"]["wall_s"],
              "train_ratio": med["tunesmith"]["train_runtime_s"] / med["plain"]["train_runtime_s"],
              "settings": f"{args.max_train} training rows, {args.epochs:g} epoch(s), 872 validation rows, full "
                          f"fine-tuning, batch 16, lr 5e-5, seed 42, {args.pairs} alternating pairs; measured "
                          f"{time.strftime('%Y-%m-%d')}."}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    t, p = med["tunesmith"], med["plain"]
    used = runs[0]["precision"]
    result["tunesmith_precision"] = {"requested": args.precision, "used": used}
    results.write_text(json.dumps(result, indent=2) + "\n")
    body = "\n".join([
        "| | precision | process wall (s, median) | train loop (s, median) | validation accuracy |",
        "|---|---|---:|---:|---:|",
        f"| tunesmith train (`training.precision: {args.precision}`) | {used} | {t['wall_s']:.1f} | "
        f"{t['train_runtime_s']:.1f} | {t['accuracy']:.4f} |",
        f"| plain HF Trainer script | fp32 | {p['wall_s']:.1f} | {p['train_runtime_s']:.1f} | {p['accuracy']:.4f} |",
        "", f"Wall-time ratio tunesmith / plain: **{result['wall_ratio']:.3f}** (train loop "
            f"{result['train_ratio']:.3f}); accuracy difference {100 * abs(t['accuracy'] - p['accuracy']):.2f} "
            f"points. {result['settings']}"])
    replace_section(DOC, args.section, body)
    print(body)


if __name__ == "__main__":
    main()
