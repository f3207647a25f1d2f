"""Each built-in strategy on SST-2 with MiniLM, through `tunesmith compare` (one process
per strategy, so peak RSS is per run): accuracy, trainable parameters, wall time, peak
memory, throughput (examples/s, non-padding tokens/s) and the achieved training FLOP/s
as a fraction of this machine's fp32 matmul FLOP/s, measured here too.

    flock /tmp/tunesmith-heavy.lock .venv/bin/python bench/strategies.py --max-train 2000
    .venv/bin/python bench/strategies.py --from comparison/comparison.json   # tables from a finished compare

Writes bench/results/strategies.json and rewrites the strategies and throughput tables
in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DOC, REPO, OFFLINE, replace_section  # noqa: E402

RESULTS = REPO / "bench" / "results" / "strategies.json"


def matmul_flops(n: int = 1024, seconds: float = 3.0) -> float:
    """Sustained fp32 matmul FLOP/s with torch's default threads (2·n³ per product)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def render(results: dict) -> str:
    rows = ["| strategy | accuracy | macro F1 | trainable params | % trained | train time (s) | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        if "error" in r:
            rows.append(f"| {r['strategy']} | failed: {r['error']} | | | | | |")
            continue
        rows.append(f"| {r['strategy']} | {r['metrics']['accuracy']:.4f} | {r['metrics']['f1']:.4f} | "
                    f"{r['trainable_parameters']:,} | {r['trainable_percent']:.2f} | {r['train_runtime_s']:.0f} | "
                    f"{r['peak_rss_mb']:,.0f} |")
    rows += ["", results["settings"]]
    return "\n".join(rows)


def render_throughput(results: dict) -> str:
    peak = results["matmul_flops_per_s"]
    rows = ["| strategy | examples/s | non-padding tokens/s | est. training GFLOP/s | % of fp32 matmul peak |",
            "|---|---:|---:|---:|---:|"]
    for r in results["runs"]:
        if "error" in r:
            continue
        rows.append(f"| {r['strategy']}{' (cached features)' if r.get('feature_cache') else ''} | "
                    f"{r['examples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['train_flops_per_s'] / 1e9:.1f} | "
                    f"{100 * r['train_flops_per_s'] / peak:.1f} |")
    rows += ["", f"fp32 matmul peak measured by the same script: {peak / 1e9:.1f} GFLOP/s "
                 f"(1024×1024 `torch.mm`, default threads). FLOPs are estimated as in "
                 f"`tunesmith.apps.compare.throughput` (2·N forward, 2·N backward through the trainable part "
                 f"and 2·N for weight gradients, per token; evaluation passes included). {results['settings']}"]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="full,partial,frozen,lora")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--from", dest="source", help="reuse a comparison.json instead of training")
    args = ap.parse_args()
    os.environ.update(OFFLINE)
    if args.source:
        comparison = json.loads(Path(args.source).read_text())
    else:
        from tunesmith.apps.compare import compare

        overrides = [f"data.train={DATA / 'train.jsonl'}", f"data.validation={DATA / 'validation.jsonl'}",
                     f"training.epochs={args.epochs}", f"training.max_train_samples={args.max_train}"]
        with tempfile.TemporaryDirectory() as tmp:
            comparison = compare(REPO / "examples" / "sentiment.yaml", args.strategies.split(","), overrides,
                                 Path(tmp) / "cmp", echo=print)
    runs = comparison["runs"]
    n = next((r["train_examples"] for r in runs if "train_examples" in r), args.max_train)
    epochs = next((r["epochs"] for r in runs if "epochs" in r), args.epochs)
    results = {"settings": f"Settings: {n} training rows, {epochs:g} epoch(s), validation = all 872 SST-2 dev "
                           f"sentences, batch 16, each strategy's default learning rate, seed 42; measured "
                           f"{comparison['date'][:10]} on {os.cpu_count()} shared CPU cores.",
               "matmul_flops_per_s": matmul_flops(), "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "strategies", render(results))
    replace_section(DOC, "throughput", render_throughput(results))
    print(render(results) + "\n\n" + render_throughput(results))


if __name__ == "__main__":
    main()
