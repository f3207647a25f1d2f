"""``tunesmith serve``: a run as an HTTP JSON API (FastAPI + uvicorn, extra ``serve``).

Endpoints: ``POST /predict`` (``{"inputs": [row, ...]}``, or a bare string / one row),
``GET /health``, ``GET /metadata``, and FastAPI's OpenAPI docs at ``/docs``.

The model runs in ONE worker thread fed by a queue. With micro-batching on, the worker
takes the first waiting request, then keeps collecting requests for up to
``max_wait_ms`` (or until ``max_batch_size`` inputs) and runs them as one batch, so
throughput grows with concurrent load; request handlers only wait on a future.
fastapi and uvicorn are imported inside functions, so ``tunesmith --help`` stays light.
"""

# no `from __future__ import annotations`: FastAPI resolves the request models defined
# inside create_app from their runtime annotations
import queue
import sys
import threading
import time
from typing import Any

from .errors import RowError, TunesmithError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Batcher:
    """One worker thread that runs the predictor on (micro-)batches of queued requests."""

    def __init__(self, predictor, max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 micro_batching: bool = True):
        self.predictor = predictor
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max_wait_ms / 1000.0
        self.micro_batching = micro_batching
        self.queue: queue.Queue = queue.Queue()
        self.batches = 0          # how many model batches ran (micro-batching merges requests)
        self.requests = 0
        self._thread = threading.Thread(target=self._run, name="tunesmith-batcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: list, done) -> None:
        """Queue ``inputs``; ``done(answers, truncated, error)`` is called from the worker."""
        self.queue.put((inputs, done))

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first) -> list:
        jobs, size = [first], len(first[0])
        if not self.micro_batching:
            return jobs
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                job = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if job is None:               # shutting down: finish what we hold first
                self.queue.put(None)
                break
            jobs.append(job)
            size += len(job[0])
        return jobs

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            inputs = [item for job in jobs for item in job[0]]
            try:
                answers = self.predictor.predict(inputs, batch_size=self.max_batch_size)
                truncated = self.predictor.truncated(inputs)
                error = None
            except Exception as exc:   # reported to each waiting request as a 500
                answers, truncated, error = None, None, exc
            self.batches += 1
            self.requests += len(jobs)
            start = 0
            for job_inputs, done in jobs:
                end = start + len(job_inputs)
                done(answers[start:end] if answers is not None else None,
                     truncated[start:end] if truncated is not None else None, error)
                start = end


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


def create_app(predictor, max_batch_size: int = 32, max_wait_ms: float = 5.0,
               micro_batching: bool = True, max_body_bytes: int = 1_000_000):
    """The FastAPI application for a loaded :class:`~tunesmith.predictor.Predictor`."""
    import asyncio
    from contextlib import asynccontextmanager
    from typing import Union

    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    meta = predictor.metadata()
    batcher_box: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        batcher_box["b"] = Batcher(predictor, max_batch_size, max_wait_ms, micro_batching)
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

    @app.get("/health")
    async def health() -> dict:
        b = batcher_box.get("b")
        return {"status": "ok", "requests": b.requests if b else 0, "batches": b.batches if b else 0}

    @app.get("/metadata")
    async def metadata() -> dict:
        return {**meta, "serving": {"micro_batching": micro_batching, "max_batch_size": max_batch_size,
                                    "max_wait_ms": max_wait_ms, "max_body_bytes": max_body_bytes}}

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> dict:
        inputs = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        if not inputs:
            raise HTTPException(422, detail="'inputs' is empty")
        for i, item in enumerate(inputs):
            try:
                predictor.check_input(item)
            except RowError as exc:
                field = f" field {exc.field!r}:" if exc.field else ""
                raise HTTPException(422, detail=f"inputs[{i}]:{field} {exc}") from None
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(answers, truncated, error):
            def settle():
                if not future.done():
                    future.set_result((answers, truncated, error))
            loop.call_soon_threadsafe(settle)

        batcher_box["b"].submit(inputs, done)
        answers, truncated, error = await future
        if error is not None:
            status = 422 if isinstance(error, (RowError, TunesmithError)) else 500
            raise HTTPException(status, detail=f"{type(error).__name__}: {error}")
        return {"predictions": answers, "truncated": truncated or [False] * len(answers)}

    return _BodyLimit(app, max_body_bytes) if max_body_bytes else app


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, plugins=None, max_batch_size: int = 32,
          max_wait_ms: float = 5.0, micro_batching: bool = True, max_body_bytes: int = 1_000_000,
          precision: str = "auto") -> None:
    """Load ``run_dir`` and serve it until interrupted (the model under ``precision``:
    auto | fp32 | bf16 | fp16, see tunesmith.precision)."""
    try:
        import uvicorn
    except ImportError:
        raise TunesmithError("serving needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from .predictor import Predictor

    predictor = Predictor(run_dir, plugins=plugins, precision=precision)
    app = create_app(predictor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                     micro_batching=micro_batching, max_body_bytes=max_body_bytes)
    if host not in LOOPBACK:
        print(f"tunesmith: warning: serving on {host!r} is reachable from other machines; "
              "there is no authentication", file=sys.stderr)
    print(f"tunesmith: serving {run_dir} on http://{host}:{port} (docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
