"""A real HTTP server on 127.0.0.1 that speaks enough of two model APIs to drive the real SDKs.

* Anthropic Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``
  (point ``anthropic.Anthropic(base_url=server.anthropic_base_url)`` at it), and the Message
  Batches API: ``POST /v1/messages/batches``, ``GET /v1/messages/batches[/{id}[/results]]``,
  ``POST /v1/messages/batches/{id}/cancel``, shaped as the real API (results are JSONL in a
  shuffled order, matched by ``custom_id``; types ``succeeded|errored|canceled|expired``).
* OpenAI Chat Completions API: ``POST /v1/chat/completions``
  (point ``openai.OpenAI(base_url=server.openai_base_url)`` at it).

It accepts ``Authorization: Bearer …`` and ``x-api-key`` (checked only when ``expected_api_key``
is set), answers every Anthropic request with a unique ``request-id`` header and every OpenAI
request with a unique ``x-request-id``, counts and records every request, and is scriptable from
tests (all state changes are thread-safe):

* the default responder answers with a forced ``tool_use`` (Anthropic) or JSON message content
  (OpenAI) built from ``server.fields`` (default: an invoice that validates against
  ``pipeline.schemas.invoice``), with usage derived from the request: input tokens ≈ image
  pixels / 750 (784 for OpenAI-style servers, Qwen2-VL's 28 × 28 px) + text length / 4; output
  tokens ≈ len(json) / 4. Anthropic images are first scaled down as the API does (long edge at
  most 1568 px, at most ~1,600 tokens). A request that marks ``cache_control`` is split into a
  cache write the first time its prefix (tools + system) is seen and a cache read afterwards,
  when the prefix is at least ``server.cache_min_tokens`` (an int, or a mapping of model id
  prefix to minimum, as the real minimums differ by model); OpenAI-style requests get automatic
  prefix caching of their system messages (``cached_tokens``);
* batches end when ``server.batch_processing_s`` has passed since they were created (0: at the
  first retrieve), or at ``server.end_batches()`` while ``server.hold_batches`` is set; each
  request's outcome is the next of ``server.script_batch(...)`` (``batch_expired()``,
  ``batch_canceled()``, ``batch_errored(type)``, or any ``reply(...)``), else a normal answer
  with ``service_tier: "batch"``;
* ``server.script(...)`` queues responses consumed in order by model calls (not by
  ``count_tokens``): errors in each API's error JSON shape with any headers (``retry-after``,
  ``retry-after-ms``, ``x-should-retry``), ``max_tokens`` stops, malformed replies, dropped
  connections, custom bodies, per-response latency;
* ``server.latency`` (seconds, or a callable taking the recorded request) delays every answer;
* ``server.set_fault_rate(p, status=429, seed=…)`` fails a seeded random share of model calls;
* ``server.requests`` is the list of every received request (parsed JSON body, headers with
  credentials redacted, request id) for assertions.

Run it as a script for demos and benchmarks::

    python -m tests.support.fake_model_server --port 0 --latency 3.0

It prints its base URLs and serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import io
import json
import math
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from PIL import Image

Api = Literal["anthropic", "openai", "count_tokens", "batches", "batch_item", "unknown"]
ModelApi = Literal["anthropic", "openai"]

# What a scripted reply does. "ok" is a normal answer; the others inject one fault.
ReplyKind = Literal[
    "ok",
    "max_tokens",  # Anthropic stop_reason max_tokens / OpenAI finish_reason length
    "no_usage",  # a reply without `usage`
    "tool_use_without_input",  # Anthropic tool_use block with no `input` (OpenAI: content null)
    "tool_use_input_not_object",  # Anthropic tool_use input is a string (OpenAI: JSON array)
    "no_tool_use",  # Anthropic text block only (OpenAI: prose instead of JSON)
    "refusal",  # Anthropic stop_reason refusal / OpenAI message.refusal
    "pause_turn",  # Anthropic stop_reason pause_turn
    "context_window_exceeded",  # Anthropic stop_reason model_context_window_exceeded
    "invalid_json",  # OpenAI content that is not JSON (Anthropic: a body that is not JSON)
    "no_choices",  # OpenAI reply with an empty `choices` list
    "error",  # an HTTP error status with the API's error JSON
    "raw",  # send `body` as given
    "drop",  # close the connection without answering
    "batch_errored",  # a batch entry that errored (error_type says how)
    "batch_expired",  # a batch entry that expired before it was processed
    "batch_canceled",  # a batch entry canceled before it was processed
]

DEFAULT_INVOICE: dict[str, Any] = {
    "invoice_number": "INV-2026-0042",
    "invoice_date": "2026-11-02",
    "due_date": "2026-12-02",
    "vendor_name": "Acme Office Supplies GmbH",
    "vendor_address": "Hauptstrasse 1, 10115 Berlin, Germany",
    "customer_name": "Example Trading Ltd",
    "currency": "EUR",
    "subtotal": "150.00",
    "tax": "28.50",
    "total": "178.50",
    "line_items": [
        {
            "description": "Printer paper A4, 500 sheets",
            "quantity": "10",
            "unit_price": "5.00",
            "amount": "50.00",
        },
        {
            "description": "Toner cartridge, black",
            "quantity": "2",
            "unit_price": "50.00",
            "amount": "100.00",
        },
    ],
}

ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

OPENAI_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}

_REDACTED_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer. Build with `reply()`, `error()` or `drop_connection()`."""

    kind: ReplyKind = "ok"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # for "raw" (dict/list -> JSON, str/bytes as is) and "error" (overrides)
    fields: Mapping[str, Any] | None = None  # overrides server.fields for this answer
    message: str | None = None  # error message for "error"
    error_type: str | None = None  # error.type for "error" (default from the status)
    error_code: str | None = None  # Anthropic error.details.error_code for "error"
    latency: float | None = None  # overrides server.latency for this answer
    api: ModelApi | None = None  # only consumed by requests to this API (None: either)
    usage: Mapping[str, Any] | None = None  # overrides fields of the reply's usage


def reply(
    kind: ReplyKind = "ok",
    *,
    fields: Mapping[str, Any] | None = None,
    body: Any = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    latency: float | None = None,
    api: ModelApi | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Scripted:
    """A scripted answer of the given kind (see `ReplyKind`); `usage` overrides fields of the
    usage the server would report (e.g. cache tokens)."""
    return Scripted(
        kind=kind,
        status=status,
        headers=dict(headers or {}),
        body=body,
        fields=fields,
        latency=latency,
        api=api,
        usage=dict(usage) if usage is not None else None,
    )


def error(
    status: int,
    *,
    message: str | None = None,
    error_type: str | None = None,
    error_code: str | None = None,
    retry_after: float | str | None = None,
    retry_after_ms: float | str | None = None,
    should_retry: bool | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    latency: float | None = None,
    api: ModelApi | None = None,
) -> Scripted:
    """A scripted HTTP error in the API's error JSON shape, with retry headers when given."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["retry-after"] = _header_number(retry_after)
    if retry_after_ms is not None:
        all_headers["retry-after-ms"] = _header_number(retry_after_ms)
    if should_retry is not None:
        all_headers["x-should-retry"] = "true" if should_retry else "false"
    return Scripted(
        kind="error",
        status=status,
        headers=all_headers,
        body=body,
        message=message,
        error_type=error_type,
        error_code=error_code,
        latency=latency,
        api=api,
    )


def batch_errored(error_type: str = "overloaded_error", message: str | None = None) -> Scripted:
    """A batch entry's outcome: errored with this error type (e.g. invalid_request_error)."""
    return Scripted(kind="batch_errored", error_type=error_type, message=message)


def batch_expired() -> Scripted:
    """A batch entry's outcome: expired (the batch ran past its 24 hours)."""
    return Scripted(kind="batch_expired")


def batch_canceled() -> Scripted:
    """A batch entry's outcome: canceled before it was processed."""
    return Scripted(kind="batch_canceled")


def drop_connection(*, latency: float | None = None, api: ModelApi | None = None) -> Scripted:
    """Close the connection without sending a response (the SDK sees a connection error)."""
    return Scripted(kind="drop", latency=latency, api=api)


def _header_number(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it."""

    seq: int
    api: Api
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; credentials redacted
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw_size: int
    request_id: str
    auth: Literal["bearer", "x-api-key"] | None
    received_at: float  # time.monotonic()

    @property
    def max_tokens(self) -> int | None:
        value = self.body.get("max_tokens") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) else None

    @property
    def model(self) -> str | None:
        value = self.body.get("model") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None

    def texts(self) -> list[str]:
        """Every text in the request: system prompt, text blocks, tool descriptions."""
        return [text for text, _ in _walk_texts(self.body)]

    def prompt_text(self) -> str:
        return "\n".join(self.texts())

    def images(self) -> list[tuple[str, int, int]]:
        """(media type, width, height) of every base64 image in the request."""
        return [(media, w, h) for media, w, h, _ in _walk_images(self.body)]

    def cache_control_markers(self) -> list[str]:
        """Where `cache_control` appears: "tools[0]", "system[0]", "messages[0].content[2]"…"""
        return list(_find_cache_control(self.body, ""))


@dataclass(slots=True)
class _FakeBatch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: float  # time.time()
    results: list[dict[str, Any]] | None = None  # set when the batch ends
    ended_at: float | None = None
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class _Initial:
    latency: float | Callable[[RecordedRequest], float]
    fields: dict[str, Any] | None
    expected_api_key: str | None
    fault_rate: float
    fault_status: int
    fault_retry_after: float | None
    seed: int | None


class FakeModelServer:
    """The server; see the module docstring. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float | Callable[[RecordedRequest], float] = 0.0,
        fields: Mapping[str, Any] | None = None,
        expected_api_key: str | None = None,
        fault_rate: float = 0.0,
        fault_status: int = 429,
        fault_retry_after: float | None = None,
        seed: int | None = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._initial = _Initial(
            latency=latency,
            fields=dict(fields) if fields is not None else None,
            expected_api_key=expected_api_key,
            fault_rate=fault_rate,
            fault_status=fault_status,
            fault_retry_after=fault_retry_after,
            seed=seed,
        )
        self._apply_defaults()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeModelServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        httpd = _Server((self._host, self._port), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-model-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping out a latency
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url  # the SDK appends /v1/messages

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"  # the SDK appends /chat/completions

    # --- scripting -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, scripts and caches; restore the constructor's settings."""
        with self._lock:
            self._apply_defaults()

    def _apply_defaults(self) -> None:
        initial = self._initial
        self._queue: list[Scripted] = []
        self._requests: list[RecordedRequest] = []
        self._seq = 0
        self._counts: dict[str, int] = {}
        self._cache_seen: set[str] = set()
        self._latency: float | Callable[[RecordedRequest], float] = initial.latency
        self._fields: dict[str, Any] = json.loads(json.dumps(initial.fields or DEFAULT_INVOICE))
        self._expected_api_key: str | None = initial.expected_api_key
        self._fault_rate: float = initial.fault_rate
        self._fault_status: int = initial.fault_status
        self._fault_retry_after: float | None = initial.fault_retry_after
        self._rng = random.Random(initial.seed)
        self.responder: Callable[[RecordedRequest], Scripted | None] | None = None
        # Prefixes shorter than this are never cached: an int, or {model id prefix: minimum}.
        self.cache_min_tokens: int | Mapping[str, int] = 0
        self._batches: dict[str, _FakeBatch] = {}
        self._batch_script: list[Scripted] = []
        self.batch_processing_s = 0.0
        self.hold_batches = False

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next model calls, in order (each is used once)."""
        with self._lock:
            self._queue.extend(responses)

    def script_batch(self, *outcomes: Scripted) -> None:
        """Queue outcomes for the next batch entries, in submission order (each used once)."""
        with self._lock:
            self._batch_script.extend(outcomes)

    def end_batches(self) -> int:
        """End every batch still in progress now (with `hold_batches`); how many ended."""
        with self._lock:
            open_ = [b for b in self._batches.values() if b.results is None]
        for batch in open_:
            self._end_batch(batch)
        return len(open_)

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Every batch as the API shows it."""
        with self._lock:
            found = list(self._batches.values())
        return [self._batch_json(b) for b in found]

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def fields(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._fields))  # type: ignore[no-any-return]

    @fields.setter
    def fields(self, value: Mapping[str, Any]) -> None:
        with self._lock:
            self._fields = json.loads(json.dumps(dict(value)))

    def set_fields(self, **overrides: Any) -> None:
        """Change some of the default reply's field values."""
        with self._lock:
            self._fields.update(json.loads(json.dumps(overrides)))

    @property
    def latency(self) -> float | Callable[[RecordedRequest], float]:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, value: float | Callable[[RecordedRequest], float]) -> None:
        with self._lock:
            self._latency = value

    @property
    def expected_api_key(self) -> str | None:
        with self._lock:
            return self._expected_api_key

    @expected_api_key.setter
    def expected_api_key(self, value: str | None) -> None:
        with self._lock:
            self._expected_api_key = value

    def set_fault_rate(
        self,
        rate: float,
        *,
        status: int = 429,
        retry_after: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Fail this share of model calls (not scripted ones) with `status`, seeded."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self._fault_rate = rate
            self._fault_status = status
            self._fault_retry_after = retry_after
            if seed is not None:
                self._rng = random.Random(seed)

    # --- observations ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._seq

    def count(self, api: Api) -> int:
        with self._lock:
            return self._counts.get(api, 0)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    # --- request handling (called from handler threads) -------------------------------------

    def _record(
        self, api: Api, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> RecordedRequest:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth: Literal["bearer", "x-api-key"] | None = None
        if headers.get("x-api-key"):
            auth = "x-api-key"
        elif headers.get("authorization", "").lower().startswith("bearer "):
            auth = "bearer"
        redacted = {
            name: ("[redacted]" if name in _REDACTED_HEADERS else value)
            for name, value in headers.items()
        }
        with self._lock:
            self._seq += 1
            self._counts[api] = self._counts.get(api, 0) + 1
            prefix = "req_" if api != "openai" else "chatcmpl-req-"
            recorded = RecordedRequest(
                seq=self._seq,
                api=api,
                method=method,
                path=path,
                headers=redacted,
                body=body,
                raw_size=len(raw),
                request_id=f"{prefix}{self._seq:06d}{uuid.uuid4().hex[:20]}",
                auth=auth,
                received_at=time.monotonic(),
            )
            self._requests.append(recorded)
        return recorded

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        expected = self.expected_api_key
        if expected is None:
            return True
        bearer = headers.get("authorization", "")
        return headers.get("x-api-key") == expected or bearer == f"Bearer {expected}"

    def _choose(self, request: RecordedRequest) -> Scripted:
        """Pick the answer for a model call: script, then fault roll, then responder."""
        assert request.api in ("anthropic", "openai")
        with self._lock:
            for i, item in enumerate(self._queue):
                if item.api is None or item.api == request.api:
                    del self._queue[i]
                    return item
            fault = self._fault_rate > 0 and self._rng.random() < self._fault_rate
            status, retry_after = self._fault_status, self._fault_retry_after
            responder = self.responder
        if fault:
            return error(status, message="injected fault", retry_after=retry_after)
        if responder is not None:
            chosen = responder(request)
            if chosen is not None:
                return chosen
        return Scripted()

    def _latency_for(self, request: RecordedRequest, scripted: Scripted | None) -> float:
        if scripted is not None and scripted.latency is not None:
            return max(0.0, scripted.latency)
        latency = self.latency
        value = latency(request) if callable(latency) else latency
        return max(0.0, float(value))

    def _sleep(self, seconds: float) -> bool:
        """Sleep; False when the server is stopping."""
        if seconds <= 0:
            return True
        return not self._stopping.wait(seconds)

    def _cache_min(self, model: str | None) -> int:
        minimum = self.cache_min_tokens
        if isinstance(minimum, int):
            return minimum
        best = ""
        for prefix in minimum:
            if (model or "").startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return minimum.get(best, 0) if best else 0

    def _cache_split(self, key_material: Any, prefix_tokens: int, model: str | None) -> bool:
        """True when this prefix was seen before (a cache hit); remembers it either way."""
        if prefix_tokens < self._cache_min(model):
            return False
        key = hashlib.sha256(
            json.dumps(key_material, sort_keys=True, default=str).encode()
        ).hexdigest()
        with self._lock:
            hit = key in self._cache_seen
            self._cache_seen.add(key)
        return hit

    # --- Message Batches -------------------------------------------------------------------

    def _create_batch(self, request: RecordedRequest) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        entries = body.get("requests")
        if not isinstance(entries, list) or not entries:
            return 400, _error_body(
                "anthropic",
                error(400, message="requests: at least one request"),
                request.request_id,
            )
        requests: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for entry in entries:
            cid = entry.get("custom_id") if isinstance(entry, dict) else None
            params = entry.get("params") if isinstance(entry, dict) else None
            valid_id = isinstance(cid, str) and 0 < len(cid) <= 64
            valid_id = valid_id and all(c.isalnum() or c in "_-" for c in str(cid))
            if not valid_id or not isinstance(params, dict) or cid in seen:
                message = f"requests: bad or duplicate custom_id {cid!r}"
                return 400, _error_body(
                    "anthropic", error(400, message=message), request.request_id
                )
            seen.add(str(cid))
            requests.append((str(cid), params))
        batch = _FakeBatch(
            id=f"msgbatch_{uuid.uuid4().hex[:24]}", requests=requests, created_at=time.time()
        )
        with self._lock:
            self._batches[batch.id] = batch
        for cid, params in requests:
            # Each entry is recorded like a request, so tests can see what was sent.
            self._record(
                "batch_item", "POST", f"batch:{batch.id}:{cid}", {}, json.dumps(params).encode()
            )
        return 200, self._batch_json(batch)

    def _batch(self, batch_id: str) -> _FakeBatch | None:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            return None
        due = time.time() >= batch.created_at + self.batch_processing_s
        if batch.results is None and (batch.cancel_requested or (due and not self.hold_batches)):
            self._end_batch(batch)
        return batch

    def _end_batch(self, batch: _FakeBatch) -> None:
        results = []
        for cid, params in batch.requests:
            with self._lock:
                scripted = self._batch_script.pop(0) if self._batch_script else None
                responder = self.responder
            fake_request = RecordedRequest(
                seq=0,
                api="anthropic",
                method="POST",
                path="/v1/messages",
                headers={},
                body=params,
                raw_size=0,
                request_id=f"req_batch_{cid}",
                auth=None,
                received_at=time.monotonic(),
            )
            if scripted is None and batch.cancel_requested:
                scripted = batch_canceled()
            if scripted is None and responder is not None:
                scripted = responder(fake_request)
            scripted = scripted or Scripted()
            if scripted.kind == "batch_expired":
                result: dict[str, Any] = {"type": "expired"}
            elif scripted.kind == "batch_canceled":
                result = {"type": "canceled"}
            elif scripted.kind in ("batch_errored", "error"):
                error_type = scripted.error_type or ANTHROPIC_ERROR_TYPES.get(
                    scripted.status, "api_error"
                )
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": error_type, "message": scripted.message or "fake error"},
                        "request_id": None,
                    },
                }
            else:
                message = self._anthropic_body(fake_request, scripted)
                if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                    message["usage"]["service_tier"] = "batch"
                result = {"type": "succeeded", "message": message}
            results.append({"custom_id": cid, "result": result})
        with self._lock:
            self._rng.shuffle(results)  # the real API returns results in no particular order
            if batch.results is None:
                batch.results = results
                batch.ended_at = time.time()

    def _batch_json(self, batch: _FakeBatch) -> dict[str, Any]:
        def stamp(at: float | None) -> str | None:
            if at is None:
                return None
            return (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
            )

        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.results is None:
            counts["processing"] = len(batch.requests)
        else:
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        ended = batch.results is not None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended"
            if ended
            else ("canceling" if batch.cancel_requested else "in_progress"),
            "request_counts": counts,
            "created_at": stamp(batch.created_at),
            "expires_at": stamp(batch.created_at + 24 * 3600),
            "ended_at": stamp(batch.ended_at),
            "archived_at": None,
            "cancel_initiated_at": stamp(batch.created_at) if batch.cancel_requested else None,
            "results_url": (
                f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
            ),
        }

    def _batches_route(self, method: str, path: str, request: RecordedRequest) -> tuple[int, Any]:
        """(status, body) for a Message Batches request; body bytes for results (JSONL)."""
        parts = path.removeprefix("/v1/messages/batches").strip("/").split("/")
        parts = [p for p in parts if p]
        not_found = (
            404,
            _error_body("anthropic", error(404, message="no such batch"), request.request_id),
        )
        if method == "POST" and not parts:
            return self._create_batch(request)
        if method == "GET" and not parts:
            with self._lock:
                found = list(self._batches.values())
            data = [self._batch_json(b) for b in reversed(found)]
            return 200, {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        batch = self._batch(parts[0])
        if batch is None:
            return not_found
        if method == "GET" and len(parts) == 1:
            return 200, self._batch_json(batch)
        if method == "POST" and parts[1:] == ["cancel"]:
            batch.cancel_requested = True
            return 200, self._batch_json(self._batch(batch.id) or batch)
        if method == "GET" and parts[1:] == ["results"]:
            if batch.results is None:
                return 400, _error_body(
                    "anthropic",
                    error(400, message="batch has not ended; results are not available yet"),
                    request.request_id,
                )
            return 200, "".join(json.dumps(line) + "\n" for line in batch.results).encode()
        return not_found

    # --- Anthropic -------------------------------------------------------------------------

    def _anthropic_usage(self, body: dict[str, Any], output_text: str) -> dict[str, Any]:
        tools = body.get("tools") or []
        system = body.get("system") or ""
        prefix_tokens = _text_tokens({"tools": tools, "system": system})
        rest_tokens = _text_tokens(body.get("messages")) + _image_tokens(body.get("messages"), 750)
        marked = bool(list(_find_cache_control({"tools": tools, "system": system}, "")))
        model = body.get("model")
        model = model if isinstance(model, str) else None
        creation = read = 0
        key = {"model": model, "tools": tools, "system": system}
        if marked and self._cache_split(key, prefix_tokens, model):
            read = prefix_tokens
        elif marked and prefix_tokens >= self._cache_min(model):
            creation = prefix_tokens
        else:
            rest_tokens += prefix_tokens
        return {
            "input_tokens": max(1, rest_tokens),
            "output_tokens": max(1, math.ceil(len(output_text) / 4)),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "service_tier": "standard",
        }

    def _anthropic_body(self, request: RecordedRequest, scripted: Scripted) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        fields = dict(scripted.fields) if scripted.fields is not None else self.fields
        tool_name = _forced_tool_name(body)
        tool_input: Any = fields
        stop_reason = "tool_use"
        kind = scripted.kind
        if kind == "max_tokens":
            stop_reason = "max_tokens"
            cut = json.dumps(fields)[: max(1, len(json.dumps(fields)) // 3)]
            tool_input = {}
            content: list[dict[str, Any]] = [_tool_use_block(tool_name, tool_input)]
            usage = self._anthropic_usage(body, cut)
            usage["output_tokens"] = request.max_tokens or usage["output_tokens"]
        elif kind == "no_tool_use" or tool_name is None:
            text = json.dumps(fields) if tool_name is None else "I could not read this document."
            content = [{"type": "text", "text": text, "citations": None}]
            stop_reason = "end_turn"
            usage = self._anthropic_usage(body, text)
        elif kind == "refusal":
            content = []
            stop_reason = "refusal"
            usage = self._anthropic_usage(body, "")
        elif kind in ("pause_turn", "context_window_exceeded"):
            content = []
            stop_reason = "pause_turn" if kind == "pause_turn" else "model_context_window_exceeded"
            usage = self._anthropic_usage(body, "")
        else:
            block = _tool_use_block(tool_name, tool_input)
            if kind == "tool_use_without_input":
                del block["input"]
            elif kind == "tool_use_input_not_object":
                block["input"] = json.dumps(fields)
            content = [block]
            usage = self._anthropic_usage(body, json.dumps(fields))
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake-model"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if kind == "no_usage":
            del message["usage"]
        elif scripted.usage:
            message["usage"].update(scripted.usage)
        return message

    def _anthropic_count_tokens(self, request: RecordedRequest) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        tokens = (
            _text_tokens({"tools": body.get("tools"), "system": body.get("system")})
            + _text_tokens(body.get("messages"))
            + _image_tokens(body.get("messages"), 750)
        )
        return {"input_tokens": max(1, tokens)}

    # --- OpenAI ----------------------------------------------------------------------------

    def _openai_body(self, request: RecordedRequest, scripted: Scripted) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        fields = dict(scripted.fields) if scripted.fields is not None else self.fields
        messages = body.get("messages") or []
        system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
        others = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
        prefix_tokens = _text_tokens(system)
        prompt_tokens = max(1, prefix_tokens + _text_tokens(others) + _image_tokens(others, 784))
        model = body.get("model") if isinstance(body.get("model"), str) else None
        cached = prefix_tokens if system and self._cache_split(system, prefix_tokens, model) else 0

        text: str | None = json.dumps(fields)
        finish_reason = "stop"
        refusal: str | None = None
        kind = scripted.kind
        if kind == "max_tokens":
            assert text is not None
            text = text[: max(1, len(text) // 3)]
            finish_reason = "length"
        elif kind == "no_tool_use":
            text = "Here is the invoice: number INV-2026-0042, total 178.50 EUR."
        elif kind == "invalid_json":
            text = '{"invoice_number": "INV-2026-0042", "total": '
        elif kind == "tool_use_input_not_object":
            text = json.dumps([fields])
        elif kind == "tool_use_without_input":
            text = None
        elif kind == "refusal":
            text, refusal = None, "I can't help with that."
        completion_tokens = max(1, math.ceil(len(text or refusal or "") / 4))
        if kind == "max_tokens" and request.max_tokens:
            completion_tokens = request.max_tokens
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ]
        completion: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [] if kind == "no_choices" else choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }
        if kind == "no_usage":
            del completion["usage"]
        return completion


def _error_body(api: Api, scripted: Scripted, request_id: str) -> Any:
    if scripted.body is not None:
        return scripted.body
    status = scripted.status
    message = scripted.message or f"fake {status} error"
    if api == "openai":
        return {
            "error": {
                "message": message,
                "type": scripted.error_type or OPENAI_ERROR_TYPES.get(status, "server_error"),
                "param": None,
                "code": scripted.error_code,
            }
        }
    err: dict[str, Any] = {
        "type": scripted.error_type or ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
        "message": message,
    }
    if scripted.error_code is not None:
        err["details"] = {"error_code": scripted.error_code}
    return {"type": "error", "error": err, "request_id": request_id}


def _forced_tool_name(body: Mapping[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict) and tools[0].get("name"):
        return str(tools[0]["name"])
    return None


def _tool_use_block(name: str | None, tool_input: Any) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name or "record",
        "input": tool_input,
    }


def _walk_texts(node: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Yield (text, where) for prompt texts: `text` fields, string system prompts, descriptions."""
    if depth > 50:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("text", "description", "system", "content") and isinstance(value, str):
                yield value, key
            elif key in ("input_schema", "schema", "image_url", "source"):
                continue
            else:
                yield from _walk_texts(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_texts(item, depth + 1)


def _walk_images(node: Any, depth: int = 0) -> Iterator[tuple[str, int, int, int]]:
    """Yield (media type, width, height, bytes) for base64 images in either API's shape."""
    if depth > 50:
        return
    if isinstance(node, dict):
        source = node.get("source")
        if node.get("type") == "image" and isinstance(source, dict):
            if source.get("type") == "base64" and isinstance(source.get("data"), str):
                yield _describe_image(str(source.get("media_type", "")), source["data"])
            return
        image_url = node.get("image_url")
        if node.get("type") == "image_url" and isinstance(image_url, dict):
            url = image_url.get("url")
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                head, data = url[5:].split(";base64,", 1)
                yield _describe_image(head, data)
            return
        for value in node.values():
            yield from _walk_images(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_images(item, depth + 1)


def _describe_image(media_type: str, data: str) -> tuple[str, int, int, int]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return media_type, 0, 0, 0
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        width = height = 0
    return media_type, width, height, len(raw)


def _text_tokens(node: Any) -> int:
    chars = sum(len(text) for text, _ in _walk_texts(node))
    if isinstance(node, dict) and node.get("tools"):
        chars += len(json.dumps(node["tools"]))  # schemas count too
    return math.ceil(chars / 4)


def _image_tokens(node: Any, pixels_per_token: int) -> int:
    total = 0
    for _, raw_width, raw_height, size in _walk_images(node):
        if not raw_width:
            total += math.ceil(size / 100)
            continue
        width, height = raw_width, raw_height
        if pixels_per_token == 750:
            # Anthropic scales an image down (keeping its aspect ratio) to a long edge of at
            # most 1568 px and at most ~1,600 tokens before counting it.
            scale = min(1.0, 1568 / max(width, height), math.sqrt(1600 * 750 / (width * height)))
            width, height = int(width * scale), int(height * scale)
        total += math.ceil(width * height / pixels_per_token)
    return total


def _find_cache_control(node: Any, where: str, depth: int = 0) -> Iterator[str]:
    if depth > 50:
        return
    if isinstance(node, dict):
        if node.get("cache_control"):
            yield where or "."
        for key, value in node.items():
            if key in ("input_schema", "schema", "cache_control"):
                continue
            child = f"{where}.{key}" if where else key
            yield from _find_cache_control(value, child, depth + 1)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _find_cache_control(item, f"{where}[{i}]", depth + 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler sleeping out a latency never blocks shutdown
    request_queue_size = 1024  # the default backlog of 5 drops connects under load (1 s stalls)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeModelServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, so the SDKs' connection pools behave as usual
    server_version = "fake-model-server/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet; requests are recorded instead

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/v1/messages/batches"):
            self._batches("GET", path, b"")
            return
        if self.path.rstrip("/") in ("", "/health", "/healthz"):
            self._send_json(200, {"status": "ok"}, {})
        else:
            self._send_json(
                404,
                {"type": "error", "error": {"type": "not_found_error", "message": "not found"}},
                {},
            )

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/v1/messages/batches"):
            self._batches("POST", path, raw)
            return
        api: Api
        if path == "/v1/messages":
            api = "anthropic"
        elif path == "/v1/messages/count_tokens":
            api = "count_tokens"
        elif path == "/v1/chat/completions":
            api = "openai"
        else:
            api = "unknown"
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.fake
        request = fake._record(api, "POST", path, headers, raw)
        id_header = "x-request-id" if api == "openai" else "request-id"
        base_headers = {id_header: request.request_id}

        if api == "unknown":
            body = _error_body(
                "anthropic", error(404, message=f"no route {path}"), request.request_id
            )
            self._send_json(404, body, base_headers)
            return
        if not fake._authorised(headers):
            answer = error(401, message="invalid x-api-key")
            self._send_json(401, _error_body(api, answer, request.request_id), base_headers)
            return
        if api == "count_tokens":
            if not fake._sleep(fake._latency_for(request, None)):
                return
            self._send_json(200, fake._anthropic_count_tokens(request), base_headers)
            return

        scripted = fake._choose(request)
        if not fake._sleep(fake._latency_for(request, scripted)):
            return
        headers_out = {**base_headers, **dict(scripted.headers)}
        if scripted.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if scripted.kind == "error":
            body = _error_body(api, scripted, request.request_id)
            self._send_json(scripted.status, body, headers_out)
            return
        if scripted.kind == "raw":
            self._send_json(scripted.status, scripted.body, headers_out)
            return
        if scripted.kind == "invalid_json" and api == "anthropic":
            self._send_bytes(scripted.status, b'{"id": "msg_x", "content": [', headers_out)
            return
        if api == "anthropic":
            body = fake._anthropic_body(request, scripted)
        else:
            body = fake._openai_body(request, scripted)
        self._send_json(scripted.status, body, headers_out)

    def _batches(self, method: str, path: str, raw: bytes) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.fake
        request = fake._record("batches", method, path, headers, raw)
        base_headers = {"request-id": request.request_id}
        if not fake._authorised(headers):
            answer = error(401, message="invalid x-api-key")
            self._send_json(401, _error_body("anthropic", answer, request.request_id), base_headers)
            return
        status, body = fake._batches_route(method, path, request)
        if isinstance(body, bytes):
            self._send_bytes(status, body, base_headers, content_type="application/binary")
        else:
            self._send_json(status, body, base_headers)

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        self._send_bytes(status, data, headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        headers: Mapping[str, str],
        content_type: str = "application/json",
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)


# --- latency helpers --------------------------------------------------------------------------


def uniform_latency(low: float, high: float, *, seed: int | None = 0) -> Callable[[Any], float]:
    """A seeded latency distribution: uniform between `low` and `high` seconds."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def draw(_request: Any) -> float:
        with lock:
            return rng.uniform(low, high)

    return draw


def lognormal_latency(
    median: float, sigma: float = 0.35, *, cap: float | None = None, seed: int | None = 0
) -> Callable[[Any], float]:
    """A seeded long-tailed latency distribution (log-normal around `median` seconds)."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def draw(_request: Any) -> float:
        with lock:
            value = rng.lognormvariate(math.log(median), sigma)
        return min(value, cap) if cap is not None else value

    return draw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_model_server",
        description="Fake Anthropic Messages / OpenAI Chat Completions server for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per model call")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="spread latency uniformly by ± this many seconds"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of model calls that fail with --fault-status",
    )
    parser.add_argument("--fault-status", type=int, default=429)
    parser.add_argument("--fault-retry-after", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this key (default: any)")
    args = parser.parse_args(argv)

    latency: float | Callable[[Any], float] = args.latency
    if args.jitter > 0:
        latency = uniform_latency(
            max(0.0, args.latency - args.jitter), args.latency + args.jitter, seed=args.seed
        )
    server = FakeModelServer(
        args.host,
        args.port,
        latency=latency,
        expected_api_key=args.api_key,
        fault_rate=args.fault_rate,
        fault_status=args.fault_status,
        fault_retry_after=args.fault_retry_after,
        seed=args.seed,
    )

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    server.start()
    print(server.base_url, flush=True)
    print(f"anthropic base url: {server.anthropic_base_url}", flush=True)
    print(f"openai base url:    {server.openai_base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"served {server.request_count} requests", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
