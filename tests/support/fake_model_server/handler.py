"""The fake server's HTTP side: routes each request to the server and writes its answer."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.support.fake_model_server.errors import _error_body
from tests.support.fake_model_server.recorded import Api
from tests.support.fake_model_server.scripting import error

if TYPE_CHECKING:
    from tests.support.fake_model_server.server import FakeModelServer


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
