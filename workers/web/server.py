"""Serving the ASGI app with uvicorn: in the foreground (`pagemill web`, `pagemill ingest
--webhook`) or on a background thread (the demo, the tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from pipeline.errors import ErrorCategory, PermanentError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), bound before the server starts so that a
    taken port fails at once with a clear error and the chosen port is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise PermanentError(
            ErrorCategory.CONFIGURATION, f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


class Served:
    """An app served by uvicorn on a bound socket; `serve_forever()` in the foreground (it
    handles SIGINT/SIGTERM with a graceful shutdown), or `start()` on a thread and `stop()`."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        config = uvicorn.Config(
            app,
            log_level="warning",
            log_config=None,  # uvicorn's lines go through our handler (PAGEMILL_LOG_FORMAT)
            access_log=False,
            lifespan="on",
            server_header=False,
            # Connections idle this long are closed; a stuck client cannot hold a slot forever.
            timeout_keep_alive=15,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, timeout_s: float = 10.0) -> Served:
        self._thread = threading.Thread(target=self.serve_forever, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
