"""Run the ``tunesmith`` command in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args, env=None, input=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m tunesmith ARGS`` with this interpreter; ``env`` is added to os.environ.
    Returns the CompletedProcess (``returncode``, ``stdout``, ``stderr`` as text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tunesmith", *map(str, args)], capture_output=True,
                          text=True, env=full_env, input=input, cwd=cwd, timeout=timeout)
