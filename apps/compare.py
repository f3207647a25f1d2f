"""``tunesmith compare``: the same task, data, model and seed under several strategies.

Each strategy trains in its own ``python -m tunesmith.apps.compare --child`` process, one
after the other, so peak memory (``ru_maxrss`` from ``os.wait4``) belongs to that run
alone and a crash of one strategy cannot take the others down. Each run keeps its own
run directory under ``OUT/runs/STRATEGY``; the comparison lands in ``OUT/comparison.md``,
``OUT/comparison.json`` and ``OUT/comparison.png``.

Per-strategy overrides: ``--set lora:training.learning_rate=5e-4`` applies to the lora
run only; ``--set training.epochs=2`` applies to all. Each strategy otherwise uses its
own default learning rate (``training.learning_rate`` left unset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError, RunDirError
from ..util import split_list

RUNS = "runs"


def split_overrides(overrides, strategies) -> tuple[list[str], dict[str, list[str]]]:
    """``["a=1", "lora:b=2"]`` → (shared, {"lora": ["b=2"]}); unknown prefixes are errors."""
    shared: list[str] = []
    per: dict[str, list[str]] = {s: [] for s in strategies}
    problems = []
    for text in overrides or ():
        key = text.split("=", 1)[0]
        if ":" in key:
            name, _, rest = text.partition(":")
            if name not in per:
                problems.append(f"--set {text!r}: {name!r} is not one of the compared strategies "
                                f"({', '.join(strategies)})")
                continue
            per[name].append(rest)
        else:
            shared.append(text)
    if problems:
        raise ConfigError(problems)
    return shared, per


def plan(config, strategies, overrides, out_dir, plugins) -> list[dict]:
    """Validate every strategy's config up front (no training starts on a typo)."""
    if not strategies:
        raise ConfigError(["--strategies: give at least one strategy, e.g. full,lora"])
    if len(set(strategies)) != len(strategies):
        raise ConfigError([f"--strategies: {','.join(strategies)!r} names a strategy twice"])
    shared, per = split_overrides(overrides, strategies)
    runs = []
    problems: list[str] = []
    for name in strategies:
        ovr = [*shared, f"strategy.name={name}", *per[name], f"output_dir={Path(out_dir) / RUNS / name}"]
        try:
            cfg = load_config(config, ovr, registry=plugins.registry)
        except ConfigError as exc:
            problems.extend(f"{name}: {p}" for p in exc.problems)
            continue
        runs.append({"strategy": name, "overrides": ovr, "config": cfg})
    if problems:
        raise ConfigError(problems, source=str(config))
    return runs


def compare(config, strategies, overrides=(), out_dir=None, plugins=None, overwrite=False,
            plugin_args=(), echo=None) -> dict:
    """Train ``config`` under each strategy; write and return the comparison (in
    ``out_dir``, by default the config's ``output_dir`` + ``-compare``)."""
    from ..manager import load_plugins

    plugins = plugins or load_plugins()
    if out_dir is None:
        shared, _ = split_overrides(overrides, strategies)
        out_dir = load_config(config, shared, registry=plugins.registry).output_dir.rstrip("/\\") + "-compare"
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"output folder {str(out)!r} already exists; choose another or pass --overwrite")
    runs = plan(config, strategies, overrides, out, plugins)
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    rows = []
    for run in runs:
        if echo:
            echo(f"compare: training with strategy {run['strategy']!r} ...")
        row = run_child(config, run, out, overwrite, plugin_args)
        rows.append(row)
        if echo:
            echo(f"compare: {run['strategy']}: " + (f"failed: {row['error']}" if "error" in row else
                 f"{row['metric']}={row['value']:.4f} in {row['train_runtime_s']:.1f} s"))
    result = {"config": str(config) if not isinstance(config, dict) else None,
              "overrides": list(overrides or ()), "strategies": list(strategies),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "output": str(out), "runs": rows}
    write(result, out)
    return result


def run_child(config, run: dict, out: Path, overwrite: bool, plugin_args=()) -> dict:
    stats = out / RUNS / f".{run['strategy']}.stats.json"
    stats.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tunesmith.apps.compare", "--child", str(stats), str(config),
           *plugin_args, *(a for o in run["overrides"] for a in ("--set", o))]
    if overwrite:
        cmd.append("--overwrite")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()   # read before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"strategy": run["strategy"], "run_dir": run["config"].output_dir,
           "process_wall_s": round(time.time() - started, 2),
           # ru_maxrss is KiB on Linux: the peak resident memory of this run's process
           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if proc.returncode != 0 or not stats.is_file():
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        row["error"] = (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
        return row
    row.update(json.loads(stats.read_text()))
    stats.unlink()
    return row


# ----------------------------------------------------------------------------- the child

def _child(argv) -> int:
    """One strategy's run: train, then record what the comparison needs."""
    import argparse

    ap = argparse.ArgumentParser(prog="tunesmith.apps.compare --child")
    ap.add_argument("stats")
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--disable-plugins", default="")
    ap.add_argument("--plugins", dest="allow_plugins", default="")
    args = ap.parse_args(argv)

    from .. import hookimpl
    from ..manager import load_plugins
    from ..runner import main_metric, train

    plugins = load_plugins(disable=split_list(args.disable_plugins), allow=split_list(args.allow_plugins))
    seen: dict = {}

    class Capture:   # sees the Trainer through the public hook, like any plugin would
        @hookimpl
        def configure_trainer(self, trainer, run):
            seen["trainer"], seen["run"] = trainer, run

    plugins.add(Capture(), "tunesmith-compare")
    result = train(args.config, args.overrides, plugins=plugins, overwrite=args.overwrite, quiet=True)
    trainer, run = seen["trainer"], seen["run"]
    metric = main_metric(run.task, run.state)
    stats = {"metric": metric, "value": result.metrics.get(metric), "metrics": result.metrics,
             "trainable_parameters": result.trainable_parameters,
             "total_parameters": result.total_parameters,
             "trainable_percent": round(100 * result.trainable_parameters / max(result.total_parameters, 1), 4),
             "train_runtime_s": result.train_runtime_s,
             "learning_rate": trainer.args.learning_rate, "epochs": trainer.args.num_train_epochs,
             "precision": run.precision.get("used", "fp32")}
    stats.update(throughput(trainer, result, run))
    import torch

    if torch.cuda.is_available():
        stats["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    Path(args.stats).write_text(json.dumps(stats, indent=2))   # typed: a stray non-JSON value fails here
    return 0


def _lengths(dataset) -> list[int]:
    cols = getattr(dataset, "column_names", None) or []
    if "length" in cols:
        return [int(n) for n in dataset["length"]]
    if "input_ids" in cols:
        return [len(x) for x in dataset["input_ids"]]
    return []


def throughput(trainer, result, run) -> dict:
    """Examples/s, non-padding tokens/s and an estimate of the training FLOPs.

    FLOPs per token (matmuls only; attention scores and embeddings ignored, which is
    small for ~25-token sentences): forward ``2·N`` over all non-embedding parameters;
    backward ``2·N_through`` for the activation gradients of every parameter from the
    first trainable one upward, plus ``2·N_trainable`` for the weight gradients. With
    cached features (frozen) the backbone forward happens once, not once per epoch.
    """
    epochs = float(trainer.args.num_train_epochs)
    train_len = _lengths(trainer.train_dataset)
    eval_len = _lengths(trainer.eval_dataset)
    # plain ints: an Arrow column sums to a numpy integer, which JSON would write as a string
    n_train, tokens = int(len(trainer.train_dataset)), int(sum(int(n) for n in train_len))
    evals = sum(1 for h in result.history)
    model = result.model
    params = [(n, p) for n, p in model.named_parameters() if "embeddings" not in n and "embed_tokens" not in n]
    n_all = sum(p.numel() for _, p in params)
    first = next((i for i, (_, p) in enumerate(params) if p.requires_grad), len(params))
    n_through = sum(p.numel() for _, p in params[first:])
    n_trainable = sum(p.numel() for _, p in params if p.requires_grad)
    cached = type(trainer.model).__name__ == "CachedHead"
    if cached:   # the backbone ran once over train + eval; the head's work per example is negligible
        flops = 2 * n_all * (tokens + sum(eval_len))
    else:
        flops = (2 * n_all * (tokens * epochs + sum(eval_len) * evals)
                 + 2 * (n_through + n_trainable) * tokens * epochs)
    seconds = max(result.train_runtime_s, 1e-9)
    return {"train_examples": n_train, "train_tokens": tokens, "feature_cache": cached,
            "examples_per_s": round(n_train * epochs / seconds, 2),
            "tokens_per_s": round(tokens * epochs / seconds, 1),
            "train_flops": float(flops), "train_flops_per_s": round(flops / seconds, 1)}


# ----------------------------------------------------------------------------- outputs

def _fmt_int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "—"


def render_markdown(result: dict) -> str:
    metric = next((r["metric"] for r in result["runs"] if "metric" in r), "metric")
    lines = [f"| strategy | {metric} | learning rate | trainable params | % trained | precision | train time (s) | "
             f"examples/s | peak RSS (MB) | peak CUDA (MB) |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['strategy']} | failed: {r['error'].replace('|', '/')} | | | | | | | "
                         f"{r['peak_rss_mb']:,.0f} | |")
            continue
        cuda = f"{r['peak_cuda_mb']:,.0f}" if "peak_cuda_mb" in r else "—"
        value = f"{r['value']:.4f}" if isinstance(r.get("value"), (int, float)) else "—"
        lr = f"{r['learning_rate']:g}" if isinstance(r.get("learning_rate"), (int, float)) else "—"
        lines.append(f"| {r['strategy']} | {value} | {lr} | {_fmt_int(r['trainable_parameters'])} | "
                     f"{r['trainable_percent']:.2f} | {r.get('precision', 'fp32')} | {r['train_runtime_s']:.1f} | {r['examples_per_s']:.1f} | "
                     f"{r['peak_rss_mb']:,.0f} | {cuda} |")
    return "\n".join(lines)


def write(result: dict, out: Path) -> None:
    from ..rundir import write_json

    write_json(out / "comparison.json", result)
    shared = " ".join(f"--set {o}" for o in result["overrides"])
    text = (f"# Strategy comparison\n\n`tunesmith compare {result['config']} --strategies "
            f"{','.join(result['strategies'])}{' ' + shared if shared else ''}` — {result['date']}\n\n"
            + render_markdown(result) +
            "\n\nTrain time: training with evaluation after each epoch (and, for a cached `frozen` run, the "
            "one-off feature extraction). Precision: what trained the run (`training.precision`; fp32, or bf16 / fp16 "
            "mixed precision). Examples/s: training examples × epochs / train time. Peak RSS: "
            "the whole run's process. Run directories: `runs/STRATEGY/`.\n")
    (out / "comparison.md").write_text(text, encoding="utf-8")
    plot(result, out / "comparison.png")


def plot(result: dict, path: Path) -> None:
    ok = [r for r in result["runs"] if "error" not in r and isinstance(r.get("value"), (int, float))]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # plots are an optional extra
        return
    metric = ok[0]["metric"] if ok else "metric"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for i, r in enumerate(ok):
        for ax, x in ((ax1, r["trainable_parameters"]), (ax2, r["train_runtime_s"])):
            ax.scatter([x], [r["value"]], s=40)
            # alternate label offsets so close points stay readable
            ax.annotate(r["strategy"], (x, r["value"]), textcoords="offset points",
                        xytext=(6, 4 if i % 2 == 0 else -12))
    ax1.set_xscale("log")
    ax1.set_xlabel("trainable parameters (log scale)")
    ax1.set_ylabel(f"validation {metric}")
    ax2.set_xlabel("train wall time (s)")
    failed = [r["strategy"] for r in result["runs"] if "error" in r]
    fig.suptitle("tunesmith compare" + (f" (failed: {', '.join(failed)})" if failed else ""))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.margins(0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the `compare` command

from ..manager import hookimpl  # noqa: E402  (pluggy only: cheap)
from ..progress import add_result_options  # noqa: E402
from . import echo  # noqa: E402


def _arguments(c) -> None:
    c.add_argument("config", help="YAML or JSON run configuration")
    c.add_argument("--strategies", default="full,partial,frozen,lora", metavar="A,B",
                   help="strategies to compare (default: full,partial,frozen,lora)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="[STRATEGY:]KEY=VALUE",
                   help="override a config value for every run, or for one strategy with a prefix, "
                        "e.g. --set lora:training.learning_rate=5e-4 (repeatable)")
    c.add_argument("--output", help="output folder (default: the config's output_dir + '-compare')")
    add_result_options(c, output=False)
    c.add_argument("--overwrite", action="store_true", help="replace existing runs in the output folder")


def _run(args, plugins) -> int:
    strategies = split_list(args.strategies)
    plugin_args = [f"--disable-plugins={args.disable_plugins}", f"--plugins={args.allow_plugins}"]
    result = compare(args.config, strategies, args.overrides, args.output, plugins=plugins,
                     overwrite=args.overwrite, plugin_args=plugin_args, echo=echo(args.quiet))
    print(render_markdown(result))
    echo(args.quiet)(f"written: {os.path.join(result['output'], 'comparison.md')}, comparison.json, comparison.png")
    return 0 if any("error" not in r for r in result["runs"]) else 1


@hookimpl
def register_commands(register):
    register("compare", help="train one config under several strategies; table + chart",
             arguments=_arguments, run=_run)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise SystemExit(_child(sys.argv[2:]))
    raise SystemExit("usage: tunesmith compare CONFIG --strategies A,B (python -m tunesmith.apps.compare is internal)")
