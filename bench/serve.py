"""``tunesmith serve`` under load, on 127.0.0.1 from a bounded load generator.

1. Closed loop: 2,000 one-sentence requests at concurrency 32; errors, p50/p99 latency,
   requests/s (the sustainable rate R).
2. Overload: an open loop offering 4×R requests/s for ``--overload-s`` seconds (at most
   ``4·R·overload_s`` requests, each with a client timeout) against a server with a small
   queue: counts of 200 / 503 (with Retry-After) / 504 / client timeouts / other errors,
   and whether the server still answers /health afterwards.
3. Drain: closed-loop load at concurrency 16, SIGTERM after 2 s: every request that was
   accepted is answered (200, or 503 once draining), the server exits 0.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/serve.py [--run-dir RUN]

Trains MiniLM on 300 SST-2 rows first unless ``--run-dir`` is given (latency does not
depend on the weights). Writes bench/results/serve.json and the ``serve`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOC, REPO, replace_section  # noqa: E402
from predict import DATA, train  # noqa: E402

RESULTS = REPO / "bench" / "results" / "serve.json"
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def post(port: int, text: str, timeout: float = 30) -> tuple:
    """(outcome, seconds, retry_after): outcome is the HTTP status or an error kind."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=json.dumps({"inputs": text}), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - start, resp.getheader("Retry-After")
    except socket.timeout:
        return "client-timeout", time.perf_counter() - start, None
    except ConnectionRefusedError:
        return "refused", time.perf_counter() - start, None
    except OSError as exc:
        return f"error:{type(exc).__name__}", time.perf_counter() - start, None
    finally:
        conn.close()


def start_server(run_dir, *extra) -> tuple:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(run_dir), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 180
    while post(port, "warm up", timeout=5)[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.3)
    return proc, port


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def closed_loop(port, sentences, n, concurrency) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(lambda i: post(port, sentences[i % len(sentences)]), range(n)))
    wall = time.perf_counter() - start
    lat = [s for o, s, _ in out if o == 200]
    return {"requests": n, "concurrency": concurrency, "ok": len(lat), "errors": n - len(lat),
            "requests_per_s": round(n / wall, 1), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * pct(lat, 0.99), 1)}


def open_loop(port, sentences, rate, seconds, client_timeout) -> dict:
    """Offer ``rate`` requests/s for ``seconds`` (bounded: rate*seconds requests)."""
    n = int(rate * seconds)
    results, lock = [], threading.Lock()
    pool = ThreadPoolExecutor(256)
    start = time.perf_counter()

    def one(i):
        r = post(port, sentences[i % len(sentences)], timeout=client_timeout)
        with lock:
            results.append(r)

    for i in range(n):   # fixed arrival schedule, whatever the server does
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pool.submit(one, i)
    offered = n / max(time.perf_counter() - start, 1e-9)   # what the generator really managed
    pool.shutdown(wait=True)
    counts: dict = {}
    for o, _, _ in results:
        counts[str(o)] = counts.get(str(o), 0) + 1
    ok = [s for o, s, _ in results if o == 200]
    return {"offered_per_s": round(rate, 1), "achieved_offered_per_s": round(offered, 1), "seconds": seconds, "requests": n, "outcomes": counts,
            "retry_after_on_every_503": all(ra is not None for o, _, ra in results if o == 503),
            "ok_p50_ms": round(1000 * statistics.median(ok), 1) if ok else None,
            "ok_p99_ms": round(1000 * pct(ok, 0.99), 1) if ok else None}


def drain(run_dir, sentences) -> dict:
    proc, port = start_server(run_dir)
    results, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            sent = time.perf_counter()
            r = post(port, sentences[int(sent * 1000) % len(sentences)], timeout=30)
            results.append((sent, r[0]))
            if r[0] == "refused":
                return

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(2)
    term_at = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    counts: dict = {}
    for _, o in results:
        counts[str(o)] = counts.get(str(o), 0) + 1
    before = [o for s, o in results if s < term_at]
    return {"exit_code": code, "outcomes": counts, "sent_before_sigterm": len(before),
            "answered_200_of_those": sum(o == 200 for o in before),
            "broken": sum(str(o).startswith("error") or o == "client-timeout" for _, o in results),
            "stderr_tail": proc.stderr.read().strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--overload-s", type=float, default=10)
    args = ap.parse_args()
    sentences = [json.loads(line)["text"] for line in open(DATA / "validation.jsonl", encoding="utf-8")]
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as tmp:
        run_dir = args.run_dir or train(Path(tmp) / "run", 300)
        proc, port = start_server(run_dir)
        try:
            steady = closed_loop(port, sentences, args.requests, args.concurrency)
            print(steady, file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        # overload: a small queue (64 inputs ≈ a few batches) and a 5 s request timeout
        proc, port = start_server(run_dir, "--max-queue", "64", "--timeout-s", "5")
        try:
            over = open_loop(port, sentences, 4 * steady["requests_per_s"], args.overload_s, client_timeout=20)
            over["health_after"] = post(port, "still alive?")[0]
            over["server_alive"] = proc.poll() is None
            print(over, file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        drained = drain(run_dir, sentences)
        print(drained, file=sys.stderr, flush=True)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_cores": len(os.sched_getaffinity(0)),
               "steady": steady, "overload": over, "drain": drained}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "serve", render(results))
    print(render(results))


def render(r: dict) -> str:
    s, o, d = r["steady"], r["overload"], r["drain"]
    return "\n".join([
        "| load | requests | outcome | requests/s | p50 (ms) | p99 (ms) |", "|---|---:|---|---:|---:|---:|",
        f"| closed loop, concurrency {s['concurrency']} | {s['requests']} | {s['ok']} × 200, {s['errors']} errors "
        f"| {s['requests_per_s']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} |",
        f"| open loop at 4× that ({o['offered_per_s']:.0f}/s asked, {o['achieved_offered_per_s']:.0f}/s sent, for "
        f"{o['seconds']:g} s), `--max-queue 64 --timeout-s 5` "
        f"| {o['requests']} | {', '.join(f'{v} × {k}' for k, v in sorted(o['outcomes'].items()))} | "
        f"| {o['ok_p50_ms']} | {o['ok_p99_ms']} |",
        "", f"Overload: every 503 carried Retry-After: {o['retry_after_on_every_503']}; afterwards the server "
            f"answered {o['health_after']} and was alive: {o['server_alive']}. SIGTERM under load (16 clients): "
            f"exit code {d['exit_code']}; {d['answered_200_of_those']} of the {d['sent_before_sigterm']} requests "
            f"sent before the signal answered 200; outcomes {d['outcomes']} (refused = new connections after the "
            f"socket closed); broken responses: {d['broken']}.", "",
        f"One-sentence requests, MiniLM torch backend, micro-batching on (defaults); load generator and server "
        f"share {r['cpu_cores']} CPU cores; measured {r['date']} under the CPU lock. Command: "
        "`flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/serve.py`."])


if __name__ == "__main__":
    main()
