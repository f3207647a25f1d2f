#!/usr/bin/env python3
"""Run the README's "Using it" commands in order, as a user would after ``setup.sh``.

Each command must exit 0. Training commands get small row limits (``CHEAP``) and tune
fewer trials, so the whole list costs minutes, not an hour; nothing else is changed.
``serve`` runs until its port answers and is then stopped (Ctrl-C, as the README says).
``--list`` prints the commands (what tests/test_user_docs.py checks without running them).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHEAP = ["--set", "training.max_train_samples=64", "--set", "training.max_eval_samples=64"]
CHEAP_PY = '"training.max_train_samples=64", "training.max_eval_samples=64", '


def blocks(text: str | None = None) -> tuple[list[str], str]:
    """The commands of the first ``bash`` block after "## Using it" (continuations
    joined, comments dropped) and the ``python`` block after it."""
    text = text if text is not None else (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using it"):]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands, pending = [], ""
    for line in bash.splitlines():
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        code = _strip_comment(line).strip()
        if code:
            commands.append(code)
    return commands, python


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out)


def cheap(command: str) -> str:
    words = shlex.split(command.split("|")[-1])
    trains = "tunesmith" in " ".join(words) and any(w in ("train", "compare", "tune") for w in words)
    if trains:
        command += " " + " ".join(shlex.quote(w) for w in CHEAP)
    return re.sub(r"--trials \d+", "--trials 2", command)


def serve(command: str, env: dict) -> int:
    port = int(re.search(r"--port (\d+)", command).group(1))
    proc = subprocess.Popen(command, shell=True, cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                return proc.returncode or 1
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return 0
            except OSError:
                time.sleep(1)
        return 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)


def main(argv) -> int:
    commands, python = blocks()
    if "--list" in argv:
        print("\n".join(commands))
        return 0
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in commands:
        run = cheap(command)
        print(f"readme: {run}", file=sys.stderr, flush=True)
        rc = serve(run, env) if " serve " in f" {run} " else subprocess.run(run, shell=True, cwd=REPO, env=env).returncode
        if rc != 0:
            print(f"readme: FAILED (exit {rc}): {command}", file=sys.stderr)
            return 1
    code = python.replace("overrides=[", "overrides=[" + CHEAP_PY)
    print("readme: the Python example", file=sys.stderr, flush=True)
    rc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], cwd=REPO, env=env).returncode
    if rc != 0:
        print(f"readme: FAILED (exit {rc}): the Python example", file=sys.stderr)
        return 1
    print(f"readme: all {len(commands) + 1} examples ran", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
