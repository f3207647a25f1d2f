"""`tunesmith serve` under load and abuse (issues 15 and 16 class 6), through real HTTP on
127.0.0.1: input and token caps, a bounded queue (503 + Retry-After), timeouts (504),
cancellation of abandoned work, /health that sees a stalled worker, /metrics, one bad
request not failing its micro-batch, and a graceful drain on SIGTERM."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import tunesmith
from tests.core.deploy_runs import train_tiny
from tests.core.test_serve import HOST, _free_port, request

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module")
def run_dir(tiny_bert, sst2_small, tmp_path_factory):
    return train_tiny(tiny_bert, sst2_small, tmp_path_factory.mktemp("serve-load") / "run", max_length=16)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return tunesmith.load(run_dir)


class InProcessServer:
    """uvicorn in a thread on a free loopback port: the real HTTP stack, the model loaded once."""

    def __init__(self, predictor, **limits):
        import uvicorn

        from tunesmith.apps.serve import create_app

        self.app = create_app(predictor, **limits)
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=HOST, port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def state(self):
        return self.app.app.state.tunesmith

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def block_worker(batcher):
    """Occupy the model worker until the returned event is set: a queued job whose
    completion callback waits (the worker calls it)."""
    release, entered = threading.Event(), threading.Event()

    def done(*_):
        entered.set()
        release.wait(30)

    batcher.submit(["occupy the worker"], done, tokens=4)
    assert entered.wait(10)
    return release


def test_100k_inputs_refused_fast_while_others_are_served(predictor):
    body = json.dumps({"inputs": ["x y"] * 100_000}).encode()
    assert 500_000 < len(body) < 1_000_000
    with InProcessServer(predictor) as srv:
        start = time.monotonic()
        status, out = request(srv.port, "POST", "/predict", body)
        assert status == 413 and "100,000 inputs" in out["detail"] and "--max-inputs" in out["detail"]
        assert time.monotonic() - start < 5
        status, out = request(srv.port, "POST", "/predict", {"inputs": "still serving"})
        assert status == 200 and len(out["predictions"]) == 1


def test_token_cap_per_batch(predictor):
    with InProcessServer(predictor, max_batch_tokens=100) as srv:
        status, out = request(srv.port, "POST", "/predict", {"inputs": ["one two three four five six"] * 30})
        assert status == 413 and "--max-batch-tokens" in out["detail"]
        assert request(srv.port, "POST", "/predict", {"inputs": ["short"] * 5})[0] == 200


def test_full_queue_answers_503_with_retry_after(predictor):
    with InProcessServer(predictor, max_queue=4) as srv:
        release = block_worker(srv.state["batcher"])
        try:
            first = ThreadPoolExecutor(1).submit(request, srv.port, "POST", "/predict", {"inputs": ["a", "b", "c"]})
            deadline = time.monotonic() + 10
            while srv.state["batcher"].pending_inputs < 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
            conn.request("POST", "/predict", body=json.dumps({"inputs": ["d", "e"]}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 503 and resp.getheader("Retry-After") == "1"
            assert "server busy" in json.loads(resp.read())["detail"]
            status, health = request(srv.port, "GET", "/health")
            assert health["queue_inputs"] == 3
        finally:
            release.set()
        assert first.result(timeout=30)[0] == 200   # the queued one is answered


def test_timeout_504_and_abandoned_work_is_not_computed(predictor):
    with InProcessServer(predictor, timeout_s=0.5, stall_s=0.3) as srv:
        batcher = srv.state["batcher"]
        release = block_worker(batcher)
        try:
            status, out = request(srv.port, "POST", "/predict", {"inputs": ["waits too long"]})
            assert status == 504 and "cancelled" in out["detail"]
            # a client that goes away: its queued work is dropped
            sock = socket.create_connection((HOST, srv.port))
            body = json.dumps({"inputs": ["nobody waits for me"]}).encode()
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.1)
            sock.close()
            time.sleep(0.5)
            # the worker is stuck: /health says so (503) instead of "ok"
            status, health = request(srv.port, "GET", "/health")
            assert status == 503 and health["status"] == "stalled" and health["batch_running_s"] > 0.3
        finally:
            release.set()
        deadline = time.monotonic() + 10
        while batcher.cancelled < 2:   # both dropped, neither computed
            assert time.monotonic() < deadline, batcher.cancelled
            time.sleep(0.05)
        assert request(srv.port, "GET", "/health")[1]["status"] == "ok"
        metrics = request(srv.port, "GET", "/metrics")[1]
        assert "tunesmith_cancelled_jobs_total 2.0" in metrics
        assert 'tunesmith_requests_total{status="504"} 1.0' in metrics


def test_one_bad_request_does_not_fail_its_micro_batch(predictor):
    """Requests batched together: one whose input breaks the model fails alone."""
    from tunesmith.apps.serve import Batcher

    class Fussy:   # the real predictor; one input makes the task's predict raise
        def __init__(self, inner):
            self.inner = inner

        def predict(self, inputs, batch_size=32):
            if "boom" in inputs:
                raise ValueError("this input breaks the model")
            return self.inner.predict(inputs, batch_size)

        def truncated(self, inputs):
            return self.inner.truncated(inputs)

    batcher = Batcher(Fussy(predictor), max_batch_size=32, max_wait_ms=300)
    results, all_done = {}, threading.Event()
    for i, inputs in enumerate([["fine one"], ["boom"], ["fine two", "fine three"]]):
        def cb(a, t, e, i=i):
            results[i] = (a, e)
            if len(results) == 3:
                all_done.set()
        batcher.submit(inputs, cb)
    assert all_done.wait(30)
    batcher.close()
    assert results[0][1] is None and len(results[0][0]) == 1
    assert isinstance(results[1][1], ValueError) and results[1][0] is None
    assert results[2][1] is None and len(results[2][0]) == 2


def test_metrics_endpoint(predictor):
    with InProcessServer(predictor) as srv:
        for _ in range(3):
            assert request(srv.port, "POST", "/predict", {"inputs": ["a fine film"]})[0] == 200
        status, text = request(srv.port, "GET", "/metrics")
        assert status == 200
        assert 'tunesmith_requests_total{status="200"} 3.0' in text
        assert "tunesmith_request_seconds_count 3.0" in text and "tunesmith_queue_inputs 0.0" in text


def test_sigterm_drains_in_flight_requests(run_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(run_dir), "--port", str(port),
                             "--max-wait-ms", "1500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(port, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.2)
        # requests held by the 1.5 s batching window are in flight when SIGTERM arrives
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(request, port, "POST", "/predict", {"inputs": [f"review {i}"]}, None, 30)
                       for i in range(8)]
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:   # new work is refused: connection refused, or 503 on a connection still open
                late = request(port, "POST", "/predict", {"inputs": ["too late"]}, timeout=5)[0]
            except OSError:
                late = "refused"
            answers = [f.result(timeout=30) for f in futures]
        assert [s for s, _ in answers] == [200] * 8
        assert late in ("refused", 503)
        assert proc.wait(timeout=30) == 0
        assert "server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_busy_port_is_one_error_line(tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tunesmith", "serve", str(tmp_path), "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"tunesmith: error: cannot listen on {HOST}:{port}") and "\n" not in line
    assert "serving" not in proc.stderr


class _SlowPredictor:
    """0.02 s per input: a drain rate the batcher can learn."""

    def predict(self, inputs, batch_size):
        time.sleep(0.02 * len(inputs))
        return [{"label": "x"} for _ in inputs]

    def truncated(self, inputs):
        return None


def test_work_that_would_outlast_the_timeout_is_refused_at_once():
    from tunesmith.apps.serve import Batcher, QueueFull

    batcher = Batcher(_SlowPredictor(), max_batch_size=4, max_wait_ms=1, max_queue=1000)
    try:
        answered = threading.Event()
        batcher.submit(["a", "b", "c", "d"], lambda *_: answered.set())
        assert answered.wait(10) and batcher.seconds_per_input > 0.01   # learnt from one batch
        release = block_worker(batcher)
        try:
            batcher.submit(["q"] * 40, lambda *_: None, budget_s=30)   # ~1 s ahead: fits 30 s
            with pytest.raises(QueueFull, match="queued work"):
                batcher.submit(["late"], lambda *_: None, budget_s=0.5)
            batcher.submit(["patient"], lambda *_: None)   # no budget given: only max_queue applies
        finally:
            release.set()
    finally:
        batcher.close()
