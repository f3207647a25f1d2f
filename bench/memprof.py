"""Where a large run's memory goes: peak RSS split into anonymous and file-backed pages.

Runs bench/scale.py's tunesmith command on a generated N-row file (3 optimizer steps) and
samples ``/proc/PID/status`` once a second beside its stderr phase lines:

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/memprof.py [ROWS] [--work /tmp/tunesmith-memprof]

Writes WORK/prof-ROWS.txt (time, RssAnon, RssFile, stderr lines) and prints the peak.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=int, nargs="?", default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunesmith-memprof"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = scale.generate(args.work / f"rows-{args.rows}.jsonl", args.rows)
    cache = args.work / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    env = {**scale.env(), "HF_DATASETS_CACHE": str(cache), "TUNESMITH_CACHE": "off"}
    start = time.time()
    proc = subprocess.Popen(scale.tunesmith_cmd(data, args.work / "run"), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env, text=True)
    log = open(args.work / f"prof-{args.rows}.txt", "w", encoding="utf-8")

    def stderr_lines():
        for line in proc.stderr:
            log.write(f"{time.time() - start:7.1f} ERR {line.rstrip()[:160]}\n")

    threading.Thread(target=stderr_lines, daemon=True).start()
    peak = (0.0, 0.0, 0.0, 0.0)
    by_file: dict = {}
    while proc.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status"))
            anon, filed = (int(fields[k].split()[0]) / 2**20 for k in ("RssAnon", "RssFile"))
        except (OSError, KeyError, ValueError):
            break
        now = time.time() - start
        log.write(f"{now:7.1f} RSS anon {anon:.2f} file {filed:.2f} GB\n")
        if anon + filed > peak[0]:
            peak = (anon + filed, anon, filed, now)
            by_file = mapped_files(proc.pid) or by_file
        time.sleep(1)
    log.write(f"rc {proc.wait()} peak {peak}\n")
    for path, gb in sorted(by_file.items(), key=lambda kv: -kv[1])[:12]:
        log.write(f"at peak: {gb:.3f} GB resident from {path}\n")
    log.close()
    for path, gb in sorted(by_file.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  at peak: {gb:.3f} GB resident from {path}")
    print(f"{args.rows:,} rows: peak RSS {peak[0]:.2f} GB (anonymous {peak[1]:.2f}, file-backed {peak[2]:.2f}) "
          f"at {peak[3]:.0f} s; rc {proc.returncode}")


def mapped_files(pid: int) -> dict:
    """Resident GB per mapped file (``/proc/PID/smaps``): which files the file-backed RSS is."""
    out: dict = {}
    current = None
    try:
        for line in open(f"/proc/{pid}/smaps"):
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                current = head[5] if len(head) > 5 else "[anon]"
            elif head and head[0] == "Rss:" and current is not None:
                out[current] = out.get(current, 0.0) + int(head[1]) / 2**20
    except OSError:
        return {}
    return out


if __name__ == "__main__":
    main()
