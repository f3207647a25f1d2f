"""``tunesmith serve``: a run as an HTTP JSON API (FastAPI + uvicorn, extra ``serve``).

Endpoints: ``POST /predict`` (``{"inputs": [row, ...]}``, or a bare string / one row),
``GET /health``, ``GET /metrics`` (Prometheus), ``GET /metadata``, and FastAPI's OpenAPI
docs at ``/docs``.

The model runs in ONE worker thread fed by a bounded queue. With micro-batching on, the
worker takes the first waiting request, then keeps collecting requests for up to
``max_wait_ms`` (or until ``max_batch_size`` inputs or ``max_batch_tokens`` tokens) and
runs them as one batch, so throughput grows with concurrent load; request handlers only
wait on a future. What keeps one request from stalling everyone: a cap on inputs per
request and on tokens per batch (checked before queueing), a queue bound (503 with
``Retry-After`` when full), a per-request timeout (504), cancellation of queued work whose
client went away, a ``/health`` that says "stalled" when a batch runs too long, and a
graceful drain on SIGTERM. fastapi and uvicorn are imported inside functions, so
``tunesmith --help`` stays light.
"""

# no `from __future__ import annotations`: FastAPI resolves the request models defined
# inside create_app from their runtime annotations
import collections
import sys
import threading
import time
from typing import Any

from ..errors import RowError, TunesmithError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` inputs already: answer 503."""


class Job:
    __slots__ = ("inputs", "done", "tokens", "cancelled", "queued_at")

    def __init__(self, inputs, done, tokens):
        self.inputs, self.done, self.tokens = inputs, done, tokens
        self.cancelled = False
        self.queued_at = time.monotonic()


class Batcher:
    """One worker thread that runs the predictor on (micro-)batches of queued requests.

    The queue is bounded by the number of waiting *inputs* (``max_queue``): ``submit``
    raises :class:`QueueFull` rather than let waiting work grow without limit."""

    def __init__(self, predictor, max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 micro_batching: bool = True, max_queue: int = 1024, max_batch_tokens: int | None = None):
        self.predictor = predictor
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max_wait_ms / 1000.0
        self.micro_batching = micro_batching
        self.max_queue = max(1, max_queue)
        self.max_batch_tokens = max_batch_tokens
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self.pending_inputs = 0   # inputs waiting in the queue
        self.batches = 0          # how many model batches ran (micro-batching merges requests)
        self.requests = 0
        self.cancelled = 0        # queued jobs dropped because their client went away / timed out
        self.busy_since = None    # monotonic start of the batch now running (None: idle)
        self.on_batch = None      # optional callback(n_inputs, seconds) for metrics
        self.seconds_per_input = None   # moving average over batches: the queue's expected drain rate
        self.running_inputs = 0
        self._thread = threading.Thread(target=self._run, name="tunesmith-batcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: list, done, tokens: int = 0, budget_s: float | None = None) -> Job:
        """Queue ``inputs``; ``done(answers, truncated, error)`` is called from the worker.
        Raises QueueFull when the queue already holds ``max_queue`` inputs, or when the work
        ahead would take longer than ``budget_s`` (the request's time left): such a request
        would only time out, so it is refused at once (503) while its client can retry."""
        job = Job(inputs, done, tokens)
        with self._cond:
            if self._closing:
                raise QueueFull("shutting down")
            if self.pending_inputs and self.pending_inputs + len(inputs) > self.max_queue:
                raise QueueFull(f"{self.pending_inputs} inputs are waiting (limit {self.max_queue})")
            spi = self.seconds_per_input
            if budget_s is not None and spi is not None:
                # what is left of the batch now running, plus everything queued, plus this request
                running = max(0.0, self.running_inputs * spi - self.stalled_for())
                ahead = running + (self.pending_inputs + len(inputs)) * spi
                if ahead > budget_s:
                    raise QueueFull(f"about {ahead:.1f} s of queued work, more than the {max(budget_s, 0):.1f} s "
                                    "left of this request's timeout")
            self._jobs.append(job)
            self.pending_inputs += len(inputs)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop ``job`` if it has not started (its client is gone); a running batch finishes."""
        job.cancelled = True

    def stalled_for(self) -> float:
        """Seconds the current batch has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, timeout: float = 10) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

    def _pop(self, timeout: float | None):
        """The next live job, or None (timeout, or closing with nothing left)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                while self._jobs:
                    job = self._jobs.popleft()
                    self.pending_inputs -= len(job.inputs)
                    if job.cancelled:
                        self.cancelled += 1
                        continue
                    return job
                if self._closing:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def _fits(self, jobs, job) -> bool:
        size = sum(len(j.inputs) for j in jobs) + len(job.inputs)
        tokens = sum(j.tokens for j in jobs) + job.tokens
        return size <= self.max_batch_size and (self.max_batch_tokens is None or tokens <= self.max_batch_tokens)

    def _collect(self, first) -> list:
        jobs = [first]
        if not self.micro_batching:
            return jobs
        deadline = time.monotonic() + self.max_wait
        while sum(len(j.inputs) for j in jobs) < self.max_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._cond:
                if self._jobs and not self._jobs[0].cancelled and not self._fits(jobs, self._jobs[0]):
                    break   # the next request would overflow the batch: it starts the next one
            job = self._pop(left)
            if job is None:
                break
            jobs.append(job)
        return jobs

    def _predict(self, jobs) -> list:
        """``(answers, truncated, error)`` per job. A batch that fails is rerun job by job,
        so one bad request fails alone, never the others in its micro-batch."""
        inputs = [item for job in jobs for item in job.inputs]
        try:
            answers = self.predictor.predict(inputs, batch_size=self.max_batch_size)
            truncated = self.predictor.truncated(inputs)
        except Exception as exc:
            if len(jobs) > 1:
                return [r for job in jobs for r in self._predict([job])]
            return [(None, None, exc)]
        out, start = [], 0
        for job in jobs:
            end = start + len(job.inputs)
            out.append((answers[start:end], truncated[start:end] if truncated is not None else None, None))
            start = end
        return out

    def _run(self) -> None:
        while True:
            first = self._pop(None)
            if first is None:
                return
            jobs = self._collect(first)
            self.running_inputs = sum(len(j.inputs) for j in jobs)
            self.busy_since = started = time.monotonic()
            try:
                results = self._predict(jobs)
                self.batches += 1
                self.requests += len(jobs)
                n, secs = sum(len(j.inputs) for j in jobs), time.monotonic() - started
                spi = secs / max(n, 1)
                self.seconds_per_input = spi if self.seconds_per_input is None else \
                    0.8 * self.seconds_per_input + 0.2 * spi
                if self.on_batch is not None:
                    self.on_batch(n, secs)
                for job, (answers, truncated, error) in zip(jobs, results):
                    job.done(answers, truncated, error)
            finally:   # busy until every waiting request has its answer
                self.busy_since = None


class _BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by Content-Length or by
    counting a streamed (chunked) body, before the app parses any of it. The body is
    buffered here (at most ``limit`` bytes) and replayed to the app."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False
        if scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
            # the body is JSON whatever the client labelled it (curl -d says form-urlencoded)
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send):
        import json

        body = json.dumps({"detail": f"request body larger than {self.limit:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _metrics(registry):
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "requests": Counter("tunesmith_requests", "Finished /predict requests by HTTP status.", ["status"],
                            registry=registry),
        "latency": Histogram("tunesmith_request_seconds", "Time from receiving a /predict body to answering it.",
                             registry=registry, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)),
        "batch_size": Histogram("tunesmith_batch_inputs", "Inputs per model batch.", registry=registry,
                                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
        "batch_seconds": Histogram("tunesmith_batch_seconds", "Model time per batch.", registry=registry),
        "queue": Gauge("tunesmith_queue_inputs", "Inputs waiting for the model.", registry=registry),
        "cancelled": Counter("tunesmith_cancelled_jobs", "Queued requests dropped: client gone or timed out.",
                             registry=registry),
    }


def create_app(predictor, max_batch_size: int = 32, max_wait_ms: float = 5.0,
               micro_batching: bool = True, max_body_bytes: int = 1_000_000, max_inputs: int = 256,
               max_batch_tokens: int = 16384, max_queue: int = 1024, timeout_s: float = 30.0,
               stall_s: float | None = None):
    """The FastAPI application for a loaded :class:`~tunesmith.apps.predict.Predictor`."""
    import asyncio
    from contextlib import asynccontextmanager
    from typing import Union

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from pydantic import BaseModel, Field

    meta = predictor.metadata()
    batcher_box: dict = {}
    state = {"draining": False}
    registry = CollectorRegistry()
    metrics = _metrics(registry)
    stall_s = stall_s if stall_s is not None else max(timeout_s, 10.0)
    from ..protocols import member
    max_length = member(predictor.options, "max_length") or member(predictor.options, "max_source_length")

    @asynccontextmanager
    async def lifespan(app):
        b = Batcher(predictor, max_batch_size, max_wait_ms, micro_batching, max_queue=max_queue,
                    max_batch_tokens=max_batch_tokens)
        b.on_batch = lambda n, secs: (metrics["batch_size"].observe(n), metrics["batch_seconds"].observe(secs))
        metrics["queue"].set_function(lambda: b.pending_inputs)
        batcher_box["b"] = state["batcher"] = b
        yield
        batcher_box.pop("b").close()

    class PredictRequest(BaseModel):
        inputs: Union[str, dict[str, Any], list[Union[str, dict[str, Any]]]] = Field(
            description="A list of inputs, each the same object as a line of `tunesmith predict`'s "
                        "JSONL input (e.g. {\"text\": ...}); a bare string for single-text tasks.",
            examples=[["a gripping, beautifully acted film", {"text": "a dull mess"}]])

    class PredictResponse(BaseModel):
        predictions: list[Any] = Field(description="One answer per input, in input order.")
        truncated: list[bool] = Field(
            description="Per input: longer than the model takes, so cut as in training "
                        "(data.max_length tokens).")

    app = FastAPI(title=f"tunesmith: {meta['task']}", version=meta.get("tunesmith_version") or "unknown",
                  description=f"Model `{meta['model']}` fine-tuned with strategy "
                              f"`{meta['strategy']}` for `{meta['task']}`.", lifespan=lifespan)
    app.state.tunesmith = state

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request, exc):
        # FastAPI's own 422 echoes the offending input, and a NaN or Infinity in it cannot be
        # rendered as JSON (a 500): name where it is, not what it is
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()[:5]]
        metrics["requests"].labels("422").inc()
        return JSONResponse({"detail": "; ".join(parts)[:1000]}, status_code=422)

    def fail(status: int, detail: str, headers=None):
        metrics["requests"].labels(str(status)).inc()
        raise HTTPException(status, detail=detail, headers=headers)

    @app.get("/health")
    async def health():
        b = batcher_box.get("b")
        stalled = b.stalled_for() if b else 0.0
        status = "draining" if state["draining"] else ("stalled" if stalled > stall_s else "ok")
        body = {"status": status, "requests": b.requests if b else 0, "batches": b.batches if b else 0,
                "queue_inputs": b.pending_inputs if b else 0, "batch_running_s": round(stalled, 3),
                "backend": getattr(predictor, "backend", "torch")}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metadata")
    async def metadata() -> dict:
        return {**meta, "serving": {"micro_batching": micro_batching, "max_batch_size": max_batch_size,
                                    "max_wait_ms": max_wait_ms, "max_body_bytes": max_body_bytes,
                                    "max_inputs": max_inputs, "max_batch_tokens": max_batch_tokens,
                                    "max_queue": max_queue, "timeout_s": timeout_s,
                                    "backend": getattr(predictor, "backend", "torch")}}

    import copy

    # a fast tokenizer must not be called from two threads with different truncation
    # settings ("Already borrowed"): the handlers count with their own copy, one at a time
    counter = copy.deepcopy(predictor.tokenizer)
    counter_lock = threading.Lock()

    def token_cost(inputs) -> int:
        """Tokens the inputs take in a batch: each as tokenized, cut at the training length."""
        texts = [" ".join(v for v in (item.values() if isinstance(item, dict) else [item]) if isinstance(v, str))
                 for item in inputs]
        with counter_lock:
            ids = counter(texts, truncation=bool(max_length), max_length=max_length)["input_ids"]
        return sum(len(x) for x in ids)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest, http_request: Request):
        started = time.monotonic()
        if state["draining"]:
            fail(503, "the server is shutting down", {"Retry-After": "5", "Connection": "close"})
        inputs = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        if not inputs:
            fail(422, "'inputs' is empty")
        if len(inputs) > max_inputs:
            fail(413, f"{len(inputs):,} inputs in one request; the limit is {max_inputs:,} (--max-inputs): "
                      "split the request")
        for i, item in enumerate(inputs):
            try:
                predictor.check_input(item)
            except RowError as exc:
                field = f" field {exc.field!r}:" if exc.field else ""
                fail(422, f"inputs[{i}]:{field} {exc}")
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(None, token_cost, inputs)
        if max_batch_tokens and tokens > max_batch_tokens:
            fail(413, f"the inputs take {tokens:,} tokens; the limit per batch is {max_batch_tokens:,} "
                      "(--max-batch-tokens): split the request")
        future = loop.create_future()

        def done(answers, truncated, error):
            def settle():
                if not future.done():
                    future.set_result((answers, truncated, error))
            loop.call_soon_threadsafe(settle)

        try:
            job = batcher_box["b"].submit(inputs, done, tokens, budget_s=started + timeout_s - time.monotonic())
        except QueueFull as exc:
            fail(503, f"server busy: {exc}; retry later", {"Retry-After": "1"})
        deadline = started + timeout_s
        while not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                batcher_box["b"].cancel(job)
                metrics["cancelled"].inc()
                fail(504, f"no answer within {timeout_s:g} s (--timeout-s); the request was cancelled")
            await asyncio.wait({future}, timeout=min(left, 0.25))
            if not future.done() and await http_request.is_disconnected():
                batcher_box["b"].cancel(job)   # nobody is waiting for it: do not compute it
                metrics["cancelled"].inc()
                metrics["requests"].labels("499").inc()
                return Response(status_code=499)
        answers, truncated, error = future.result()
        if error is not None:
            status = 422 if isinstance(error, (RowError, TunesmithError)) else 500
            fail(status, f"{type(error).__name__}: {error}")
        metrics["requests"].labels("200").inc()
        metrics["latency"].observe(time.monotonic() - started)
        return {"predictions": answers, "truncated": truncated or [False] * len(answers)}

    return _BodyLimit(app, max_body_bytes) if max_body_bytes else app


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, plugins=None, max_batch_size: int = 32,
          max_wait_ms: float = 5.0, micro_batching: bool = True, max_body_bytes: int = 1_000_000,
          precision: str = "fp32", backend: str = "torch", **limits) -> None:
    """Load ``run_dir`` and serve it until interrupted (the model under ``precision``: auto |
    fp32 | bf16 | fp16, see tunesmith.precision). SIGTERM / Ctrl-C drain: new requests get 503
    (and new connections are refused), requests in flight are answered, then it exits."""
    try:
        import uvicorn
        import prometheus_client  # noqa: F401
    except ImportError:
        raise TunesmithError("serving needs FastAPI, uvicorn and prometheus-client: "
                             "pip install 'tunesmith[serve]'") from None
    from .predict import Predictor

    check_port(host, port)   # a busy port is a user mistake, said before the model loads
    predictor = Predictor(run_dir, plugins=plugins, precision=precision, backend=backend)
    app = create_app(predictor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                     micro_batching=micro_batching, max_body_bytes=max_body_bytes, **limits)
    inner = app.app if isinstance(app, _BodyLimit) else app
    if host not in LOOPBACK:
        print(f"tunesmith: warning: serving on {host!r} is reachable from other machines; "
              "there is no authentication", file=sys.stderr)
    timeout = limits.get("timeout_s", 30.0)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # refuse new work at once; uvicorn then closes the socket and waits for the
            # requests in flight (each ends within the request timeout)
            inner.state.tunesmith["draining"] = True
            super().handle_exit(sig, frame)
            # a drained shutdown is a clean exit (0), not death by the signal, which
            # uvicorn would otherwise re-raise once it has finished
            self._captured_signals.clear()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(timeout) + 5)
    print(f"tunesmith: serving {run_dir} on http://{host}:{port} (docs at /docs)", file=sys.stderr, flush=True)
    Server(config).run()
    print("tunesmith: server stopped (requests in flight were answered)", file=sys.stderr, flush=True)


def check_port(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will (SO_REUSEADDR), so that a busy port is one
    error line instead of a start message followed by uvicorn's exit."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except (OSError, OverflowError) as exc:   # EADDRINUSE, EACCES, a bad host, a port > 65535
        raise TunesmithError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None


# ---------------------------------------------------------------- the `serve` command

from ..manager import hookimpl  # noqa: E402  (pluggy only: cheap)


def _arguments(s) -> None:
    from .predict import add_precision

    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    add_precision(s)
    s.add_argument("--max-batch-size", type=int, default=32,
                   help="most inputs the model runs at once when batching requests (default 32)")
    s.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long to collect concurrent requests into one batch (default 5)")
    s.add_argument("--no-micro-batching", dest="micro_batching", action="store_false",
                   help="run each request on its own")
    s.add_argument("--max-body-bytes", type=int, default=1_000_000,
                   help="reject larger request bodies with 413 (default 1,000,000)")
    s.add_argument("--max-inputs", type=int, default=256,
                   help="reject requests with more inputs with 413 (default 256)")
    s.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="most tokens in one model batch; a request needing more gets 413 (default 16384)")
    s.add_argument("--max-queue", type=int, default=1024,
                   help="most inputs waiting for the model; beyond it 503 with Retry-After (default 1024)")
    s.add_argument("--timeout-s", type=float, default=30.0,
                   help="answer 504 and drop the work when a request waits longer (default 30)")
    s.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: serve an ONNX export (tunesmith export --format onnx) with onnxruntime")


def _run(args, plugins) -> int:
    from ..errors import DataError

    limits = ("max_batch_size", "max_inputs", "max_batch_tokens", "max_queue", "timeout_s")
    for name in limits:
        if getattr(args, name) <= 0:
            raise DataError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    serve(args.run_dir, host=args.host, port=args.port, plugins=plugins, max_batch_size=args.max_batch_size,
          max_wait_ms=args.max_wait_ms, micro_batching=args.micro_batching, max_body_bytes=args.max_body_bytes,
          backend=args.backend, precision=args.precision, **{k: getattr(args, k) for k in limits[1:]})
    return 0


@hookimpl
def register_commands(register):
    register("serve", help="serve a run over HTTP (JSON API; needs tunesmith[serve])",
             arguments=_arguments, run=_run)
