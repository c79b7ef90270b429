"""The fake server's core: lifecycle, settings, scripts, recorded requests, answer choice."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from tests.support.fake_model_server.handler import _Handler, _Server
from tests.support.fake_model_server.recorded import Api, RecordedRequest
from tests.support.fake_model_server.scripting import Scripted, error

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

_REDACTED_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


@dataclass(frozen=True, slots=True)
class _Initial:
    latency: float | Callable[[RecordedRequest], float]
    fields: dict[str, Any] | None
    expected_api_key: str | None
    fault_rate: float
    fault_status: int
    fault_retry_after: float | None
    seed: int | None


class ServerState:
    """What `FakeModelServer` keeps and how it picks an answer; see the package docstring."""

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

    def start(self) -> Self:
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

    def __enter__(self) -> Self:
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

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next model calls, in order (each is used once)."""
        with self._lock:
            self._queue.extend(responses)

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
