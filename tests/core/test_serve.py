"""`tunesmith serve`: the real server in a subprocess on a free loopback port."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import tunesmith
from tests.conftest import SAMPLE, read_jsonl
from tests.core.deploy_runs import train_tiny

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

HOST = "127.0.0.1"
BODY_LIMIT = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw and resp.getheader("content-type", "").startswith(
            "application/json") else raw.decode())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def run_dir(tiny_bert, sst2_small, tmp_path_factory):
    return train_tiny(tiny_bert, sst2_small, tmp_path_factory.mktemp("serve") / "run", max_length=16)


@pytest.fixture(scope="module")
def server(run_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(run_dir), "--port", str(port),
                             "--max-body-bytes", str(BODY_LIMIT), "--max-wait-ms", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 180
    while True:
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.3)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_nan_or_infinity_in_a_body_is_a_422_not_a_500(server):
    for body in (b'{"inputs": NaN}', b'{"inputs": [Infinity]}', b'{"inputs": [{"text": -Infinity}]}'):
        status, answer = request(server, "POST", "/predict", body=body)
        assert status == 422, (body, status, answer)
        assert "inputs" in answer["detail"]


def test_binds_loopback_by_default():
    from tunesmith.cli import build_parser

    parser, commands = build_parser(tunesmith.load_plugins())
    assert parser.parse_args(["serve", "x"]).host == "127.0.0.1" and "serve" in commands


def test_500_requests_from_16_clients_no_errors_same_answers(server, run_dir):
    port = server
    texts = [r["text"] for r in read_jsonl(SAMPLE / "validation.jsonl", 100)]
    predictor = tunesmith.load(run_dir)
    expected = predictor.predict(texts, batch_size=1)

    def one(i):
        k = i % len(texts)
        body = {"inputs": texts[k]} if i % 2 else {"inputs": [{"text": texts[k]}, texts[(k + 1) % len(texts)]]}
        status, out = request(port, "POST", "/predict", body)
        return i, k, status, out

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(500)))
    errors = [r for r in results if r[2] != 200]
    assert not errors, errors[:3]
    for i, k, _, out in results:
        want = [expected[k]] if i % 2 else [expected[k], expected[(k + 1) % len(texts)]]
        assert [p["label"] for p in out["predictions"]] == [w["label"] for w in want]
        assert [p["score"] for p in out["predictions"]] == pytest.approx([w["score"] for w in want], abs=1e-4)
        assert len(out["truncated"]) == len(want)
    status, health = request(port, "GET", "/health")
    # concurrent requests were micro-batched: fewer model batches than requests
    assert status == 200 and health["requests"] >= 500 and health["batches"] < health["requests"]


def test_4xx_then_still_serving(server):
    port = server
    status, out = request(port, "POST", "/predict", b'{"inputs": [')
    assert status == 422 and "JSON decode error" in json.dumps(out)
    status, out = request(port, "POST", "/predict", {"input": ["x"]})
    assert status == 422 and "inputs" in json.dumps(out)
    status, out = request(port, "POST", "/predict", {"inputs": 5})
    assert status == 422
    status, out = request(port, "POST", "/predict", {"inputs": []})
    assert status == 422 and out["detail"] == "'inputs' is empty"
    status, out = request(port, "POST", "/predict", {"inputs": ["ok", {"txt": "x"}]})
    assert status == 422 and out["detail"] == "inputs[1]: field 'text': missing column 'text' (columns: 'txt')"
    status, out = request(port, "POST", "/predict", {"inputs": "x" * (BODY_LIMIT + 10)})
    assert status == 413 and f"{BODY_LIMIT:,} bytes" in out["detail"]
    # a chunked body without Content-Length is counted too
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("POST", "/predict", body=iter([b'{"inputs": "', b"y" * (BODY_LIMIT + 10), b'"}']),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    # ... and the server keeps serving
    status, out = request(port, "POST", "/predict", {"inputs": "a fine film"})
    assert status == 200 and len(out["predictions"]) == 1


def test_truncation_is_reported(server):
    status, out = request(server, "POST", "/predict", {"inputs": ["short", "word " * 40]})
    assert status == 200 and out["truncated"] == [False, True]


def test_metadata_health_and_openapi(server, run_dir):
    status, meta = request(server, "GET", "/metadata")
    metrics = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert status == 200
    assert meta["task"] == "text-classification" and meta["labels"] == ["0", "1"]
    assert meta["strategy"] == "full" and meta["metrics"] == metrics
    assert meta["model"] and meta["options"]["max_length"] == 16
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/metadata"} <= set(spec["paths"])
    assert request(server, "GET", "/docs")[0] == 200


def test_micro_batching_merges_concurrent_requests(run_dir):
    """The batcher in-process: requests queued together run as one model batch."""
    from tunesmith.apps.serve import Batcher

    predictor = tunesmith.load(run_dir)
    for micro, expect_batches in ((True, 1), (False, 6)):
        batcher = Batcher(predictor, max_batch_size=32, max_wait_ms=300, micro_batching=micro)
        answers, all_done = {}, threading.Event()

        def callback(i):
            def cb(a, t, e):
                answers[i] = (a, t, e)
                if len(answers) == 6:
                    all_done.set()
            return cb

        for i in range(6):   # queued within microseconds: well inside the 300 ms window
            batcher.submit([f"text number {i}", "another"], callback(i))
        assert all_done.wait(timeout=60)
        batcher.close()
        assert batcher.batches == expect_batches and batcher.requests == 6
        assert all(len(a[0]) == 2 and a[1] == [False, False] and a[2] is None for a in answers.values())


def test_one_bad_request_in_a_micro_batch_fails_alone(run_dir):
    """A real HTTP server (uvicorn, in this process) for a task without ``check_input`` (a
    declared optional member): a bad input is not refused up front, reaches the model
    batch with three good requests queued in the same window, and only its own request
    fails; the batch is rerun request by request."""
    import uvicorn

    from tunesmith.plugins.classification import TextClassification
    from tunesmith.apps.serve import create_app

    class Unchecked(TextClassification):
        aliases = ()
        check_input = None   # the declared default: predict alone finds the bad input

    class Plugin:
        @tunesmith.hookimpl
        def register_tasks(self, register):
            register(Unchecked())

    plugins = tunesmith.load_plugins(disable=["classification"])
    plugins.add(Plugin(), "unchecked-classification")
    predictor = tunesmith.load(run_dir, plugins=plugins)
    app = create_app(predictor, max_batch_size=32, max_wait_ms=400)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        bodies = [{"inputs": ["a fine film"]}, {"inputs": [{"text": 3}]}, {"inputs": ["dull"]},
                  {"inputs": ["good", "bad"]}]
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: request(port, "POST", "/predict", b), bodies))
        ok = [a for i, a in enumerate(answers) if i != 1]
        assert all(status == 200 for status, _ in ok), answers
        assert [len(body["predictions"]) for _, body in ok] == [1, 1, 2]
        status, body = answers[1]
        assert status == 422 and "text" in json.dumps(body), answers[1]
        expected = predictor.predict(["a fine film", "dull", "good", "bad"])
        assert [p for _, b in ok for p in b["predictions"]] == expected
    finally:
        server.should_exit = True
        thread.join(timeout=30)
