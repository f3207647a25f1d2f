"""`tunesmith tune` on SST-2 with MiniLM + LoRA (issue 17's acceptance run): 12 trials over
the learning rate and the rank, median pruning on an evaluation every 25 steps, against
the default LoRA run (strategy defaults, same data, one epoch).

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/tune.py [--data ../shared/data/classification]

Both are real CLI processes. Writes bench/results/tune.json, copies the two plots to
docs/img/ and rewrites the tune section of docs/benchmarks.md. The wall time of 12
unpruned trials is estimated as 12 x the mean wall time of the completed trials (said so
in the table); the tune's own wall time is measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DOC, REPO, env, replace_section  # noqa: E402

RESULTS = REPO / "bench" / "results" / "tune.json"
SPACE = ["training.learning_rate=loguniform(1e-4,1e-2)", "strategy.r=choice(4,8,16)"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA if DATA.is_dir() else Path("/work/shared/data/classification"))
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--eval-steps", type=int, default=25)
    args = p.parse_args(argv)
    common = ["--set", f"data.train={args.data / 'train.jsonl'}", "--set", f"data.validation={args.data / 'validation.jsonl'}",
              "--set", "training.max_train_samples=2000", "--set", "training.epochs=1", "--set", "strategy.name=lora"]
    shown = ("--set training.max_train_samples=2000 --set training.epochs=1 --set strategy.name=lora "
             "--set data.train=../shared/data/classification/train.jsonl "
             "--set data.validation=../shared/data/classification/validation.jsonl")
    tune_opts = ["--trials", str(args.trials), "--pruner", "median", "--eval-steps", str(args.eval_steps)]
    for s in SPACE:
        tune_opts += ["--space", s]
    cli = [sys.executable, "-m", "tunesmith"]
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        tmp = Path(tmp)
        started = time.time()
        proc = subprocess.run([*cli, "train", str(REPO / "examples" / "sentiment.yaml"), "--quiet", *common,
                               "--set", f"output_dir={tmp / 'default'}"], env=env(), capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        default_wall = time.time() - started
        default = json.loads((tmp / "default" / "metrics.json").read_text())
        started = time.time()
        proc = subprocess.run([*cli, "tune", str(REPO / "examples" / "sentiment.yaml"), *common, *tune_opts,
                               "--output", str(tmp / "tune")], env=env(), capture_output=True, text=True)
        tune_wall = time.time() - started
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        result = json.loads((tmp / "tune" / "trials.json").read_text())
        for name in ("optimization_history.png", "param_importances.png"):
            if (tmp / "tune" / name).is_file():
                shutil.copy(tmp / "tune" / name, REPO / "docs" / "img" / f"tune-sst2-lora-{name}")
        best_yaml = (tmp / "tune" / "best.yaml").read_text()
    complete = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    mean_complete = sum(t["wall_s"] for t in complete) / len(complete)
    out = {"date": time.strftime("%Y-%m-%d"), "trials": args.trials, "eval_steps": args.eval_steps,
           "default": {"accuracy": default["eval"]["accuracy"], "train_runtime_s": default["train_runtime_s"],
                       "process_wall_s": round(default_wall, 1)},
           "tune_wall_s": round(tune_wall, 1), "counts": result["counts"], "best": result["best"],
           "mean_complete_trial_wall_s": round(mean_complete, 1),
           "estimated_unpruned_wall_s": round(args.trials * mean_complete, 1),
           "trials_wall_s_sum": round(sum(t["wall_s"] or 0 for t in result["trials"]), 1),
           "table": result["trials"], "best_yaml": best_yaml,
           "commands": {"default": f"tunesmith train examples/sentiment.yaml {shown}",
                        "tune": f"tunesmith tune examples/sentiment.yaml {shown} {' '.join(tune_opts[:6])} "
                                + " ".join(f"--space '{s}'" for s in SPACE)}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    replace_section(DOC, "tune", render(out))
    print(render(out))
    return 0


def render(r: dict) -> str:
    from tunesmith.apps.tune import render_markdown

    c, best = r["counts"], r["best"]
    lines = [
        "| | accuracy | wall time (s) |", "|---|---:|---:|",
        f"| default LoRA run (lr 1e-3, r 8) | {r['default']['accuracy']:.4f} | {r['default']['process_wall_s']:.0f} "
        f"(process; train {r['default']['train_runtime_s']:.0f}) |",
        f"| best of {r['trials']} tune trials (trial {best['number']}: lr "
        f"{best['params']['training.learning_rate']:.2e}, r {best['params']['strategy.r']}) | {best['value']:.4f} | "
        f"tune total {r['tune_wall_s']:.0f} |",
        f"| 12 unpruned trials (estimate: {r['trials']} x {r['mean_complete_trial_wall_s']:.0f} s, the mean of the "
        f"{c['COMPLETE']} completed trials) | | {r['estimated_unpruned_wall_s']:.0f} |",
        "",
        f"{c['COMPLETE']} trials completed, {c['PRUNED']} pruned, {c['FAIL']} failed. Trials (the value of a pruned "
        f"trial, in brackets, is its last evaluation; wall = the trial's train + evaluations + save):",
        "",
        render_markdown({"space": {"training.learning_rate": "", "strategy.r": ""}, "metric": "accuracy",
                         "best": best, "trials": r["table"]}),
        "",
        f"Measured {r['date']} on 2 shared CPU cores (under the bench lock).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
