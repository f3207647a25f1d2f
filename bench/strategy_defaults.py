"""Each built-in strategy's default learning rate against the best one `tunesmith tune` finds
(issue 17): SST-2 (2,000 rows, 1 epoch, MiniLM), one lr-only study per strategy.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/strategy_defaults.py [--strategies full,partial,frozen]

Per strategy: one `tunesmith train` at the strategy's default, then `tunesmith tune` with
--trials N over the learning rate (log-uniform over the strategy's range), median pruning
on an evaluation every --eval-steps steps. LoRA's rank and learning rate were searched by
bench/tune.py (bench/results/tune.json); its row here is read from there. Writes
bench/results/strategy_defaults.json and the strategy-defaults section of docs/benchmarks.md.
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

RESULTS = REPO / "bench" / "results" / "strategy_defaults.json"
RANGES = {"full": (1e-5, 5e-4), "partial": (1e-5, 2e-3), "frozen": (1e-4, 5e-2)}


def _run(cmd: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.time() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA if DATA.is_dir() else Path("/work/shared/data/classification"))
    p.add_argument("--strategies", default="full,partial,frozen")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--eval-steps", type=int, default=42)
    args = p.parse_args(argv)
    from tunesmith import load_plugins

    registry = load_plugins().registry
    common = ["--set", f"data.train={args.data / 'train.jsonl'}", "--set", f"data.validation={args.data / 'validation.jsonl'}",
              "--set", "training.max_train_samples=2000", "--set", "training.epochs=1"]
    cli = [sys.executable, "-m", "tunesmith"]
    out = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"strategies": {}}
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        tmp = Path(tmp)
        for name in args.strategies.split(","):
            lo, hi = RANGES[name]
            default_lr = registry.strategy(name).default_learning_rate
            opts = [*common, "--set", f"strategy.name={name}"]
            wall = _run([*cli, "train", str(REPO / "examples" / "sentiment.yaml"), "--quiet", *opts,
                         "--set", f"output_dir={tmp / name}"])
            default = json.loads((tmp / name / "metrics.json").read_text())["eval"]["accuracy"]
            space = f"training.learning_rate=loguniform({lo:g},{hi:g})"
            tune_wall = _run([*cli, "tune", str(REPO / "examples" / "sentiment.yaml"), *opts, "--quiet",
                              "--trials", str(args.trials), "--pruner", "median", "--eval-steps", str(args.eval_steps),
                              "--space", space, "--output", str(tmp / f"{name}-tune")])
            study = json.loads((tmp / f"{name}-tune" / "trials.json").read_text())
            trials = [{"number": t["number"], "state": t["state"], "lr": t["params"]["training.learning_rate"],
                       "value": t["value"]} for t in study["trials"]]
            out["strategies"][name] = {
                "default_lr": default_lr, "default_accuracy": default, "default_wall_s": round(wall, 1),
                "space": space, "best_lr": study["best"]["params"]["training.learning_rate"],
                "best_accuracy": study["best"]["value"], "counts": study["counts"],
                "tune_wall_s": round(tune_wall, 1), "trials": trials, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            print(json.dumps({name: out["strategies"][name]}), flush=True)
            RESULTS.write_text(json.dumps(out, indent=2) + "\n")   # after each strategy: a crash keeps the rest
    out["settings"] = {"trials": args.trials, "eval_steps": args.eval_steps,
                       "command": "flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/strategy_defaults.py"}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    replace_section(DOC, "strategy-defaults", render(out))
    print(render(out))
    return 0


def render(r: dict) -> str:
    lines = ["| strategy | searched | trials (pruned) | best lr | best accuracy | default lr | default accuracy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, s in r["strategies"].items():
        lines.append(f"| {name} | `{s['space']}` | {sum(s['counts'].values())} ({s['counts'].get('PRUNED', 0)}) | "
                     f"{s['best_lr']:.2e} | {s['best_accuracy']:.4f} | {s['default_lr']:g} | {s['default_accuracy']:.4f} |")
    lora = json.loads((REPO / "bench" / "results" / "tune.json").read_text())
    best = lora["best"]
    lines.append(f"| lora (bench/tune.py) | lr loguniform(1e-4,1e-2), r choice(4,8,16) | {lora['trials']} "
                 f"({lora['counts']['PRUNED']}) | {best['params']['training.learning_rate']:.2e} (r "
                 f"{best['params']['strategy.r']}) | {best['value']:.4f} | 0.001 (r 8) | {lora['default']['accuracy']:.4f} |")
    dates = sorted({s["date"] for s in r["strategies"].values()})
    lines += ["", f"Settings: 2,000 training rows, 1 epoch, validation = all 872 dev sentences, batch 16, seed 42, "
                  f"float32; TPE, median pruning on an evaluation every {r['settings']['eval_steps']} steps (3 per trial); "
                  f"the default lr is the one each strategy had when measured. Measured {', '.join(dates)} on 2 CPU "
                  f"cores. Command: `{r['settings']['command']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
