"""Intake: bucket events in, one `handle(ObjectRef)` call per newly created object out.

Two transports, both plain code with the work injected as `handle` (no Celery here):

* `consume_sqs` long-polls an SQS queue that S3 (or moto/LocalStack, or SNS/EventBridge) fills
  with bucket events. A message is deleted only after `handle` returned for every object it
  names; a failure leaves it for redelivery after the queue's visibility timeout. A malformed
  message can never succeed, so it is logged and deleted. The messages of one receive are
  deleted together, in one DeleteMessageBatch call, once each of them is finished with.
* `make_webhook_server` serves ``POST /events`` for S3-compatible servers that push events over
  HTTP (MinIO's webhook target, Ceph's HTTP push endpoint): 200 once handled, 503 when `handle`
  failed so the sender retries, 400 for a body that is not a bucket event, 401 without the
  shared secret.

Deliveries are at least once on both paths (SQS redelivers, servers retry, a message can be
handled and then fail to be deleted), so `handle` must be idempotent for a given ObjectRef; it
must also be thread-safe for the webhook, which serves requests on several threads.

Logs name message ids, buckets and keys, never object contents or secrets.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from pipeline import health
from pipeline.db.session import UNAVAILABLE
from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.events import parse_bucket_event
from pipeline.health import HEALTH
from pipeline.storage import SQSClient, storage_error

__all__ = [
    "EVENTS_PATH",
    "HEALTH_PATH",
    "Handle",
    "IntakeStats",
    "WebhookServer",
    "consume_sqs",
    "make_webhook_server",
]

log = logging.getLogger(__name__)

Handle = Callable[[ObjectRef], None]

EVENTS_PATH = "/events"
HEALTH_PATH = "/healthz"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # S3 event messages are at most 256 KB; MinIO's are small.

_BACKOFF_START_S = 1.0
_BACKOFF_CAP_S = 30.0


@dataclass(slots=True)
class IntakeStats:
    """Counters of one `consume_sqs` run (updated in place while it runs)."""

    messages: int = 0  # received
    refs_handled: int = 0  # handle() calls that returned
    deleted: int = 0  # messages deleted after success, or as malformed
    ignored: int = 0  # well-formed messages without created objects (test events, removals)
    malformed: int = 0  # bodies that are not bucket events (deleted)
    failed: int = 0  # messages left for redelivery because handle() raised
    receive_errors: int = 0  # transient ReceiveMessage failures (retried after a pause)
    delete_errors: int = 0  # messages whose deletion failed (they will come back)
    delete_calls: int = 0  # DeleteMessageBatch / DeleteMessage requests sent


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _printable(text: str) -> str:
    """`text` with control characters escaped, so an object key cannot forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _where(ref: ObjectRef) -> str:
    return f"s3://{_printable(ref.bucket)}/{_printable(ref.key)}"


def _describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_printable(_one_line(str(exc)))}"


# --- SQS ---------------------------------------------------------------------------------------


def consume_sqs(
    sqs: SQSClient,
    queue_url: str,
    handle: Handle,
    *,
    wait_seconds: int,
    stop: threading.Event,
    max_messages: int = 10,
    stats: IntakeStats | None = None,
) -> IntakeStats:
    """Long-poll `queue_url` until `stop` is set, calling `handle` for each created object.

    Returns the counters (also updated in `stats` while running, when given). A batch already
    received is finished before stopping; its finished messages are deleted with one request
    after the whole batch was processed (a message left undeleted only comes back as a
    duplicate). Transient SQS errors are retried with a capped pause;
    a permanent one (queue missing, access denied) raises `PermanentError(CONFIGURATION)`.
    """
    stats = stats if stats is not None else IntakeStats()
    batch = max(1, min(10, max_messages))
    wait = max(0, min(20, wait_seconds))
    backoff = _BACKOFF_START_S
    deleter = _Deleter(sqs, queue_url, stats)
    log.info("consuming bucket events from %s", queue_url)
    while not stop.is_set():
        try:
            response = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except (ClientError, BotoCoreError) as exc:
            error = storage_error(exc, "ReceiveMessage", queue_url)
            if not error.transient:
                raise PermanentError(ErrorCategory.CONFIGURATION, error.message) from exc
            stats.receive_errors += 1
            log.warning("%s; retrying in %.0f s", error.message, backoff)
            stop.wait(backoff)
            backoff = min(_BACKOFF_CAP_S, backoff * 2)
            continue
        backoff = _BACKOFF_START_S
        finished: list[dict[str, Any]] = []
        try:
            for message in response.get("Messages", []):
                stats.messages += 1
                if _process_message(message, handle, stats):
                    finished.append(message)
        finally:
            # Also on an interrupt: what was handled need not be handled again.
            deleter.delete(finished)
    log.info(
        "stopped consuming %s: %d messages, %d objects handled, %d ignored, %d malformed, "
        "%d failed, %d not deleted",
        queue_url,
        stats.messages,
        stats.refs_handled,
        stats.ignored,
        stats.malformed,
        stats.failed,
        stats.delete_errors,
    )
    return stats


def _process_message(message: dict[str, Any], handle: Handle, stats: IntakeStats) -> bool:
    """Handle every object `message` names; True when the message may be deleted (all of them
    were handled, or it can never succeed), False to leave it for redelivery."""
    message_id = str(message.get("MessageId", "?"))
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    try:
        refs = parse_bucket_event(message.get("Body", ""))
    except PermanentError as exc:
        stats.malformed += 1
        log.warning("deleting malformed message %s: %s", message_id, _printable(exc.message))
        return True

    if not refs:
        stats.ignored += 1
        log.info("message %s names no created object; deleting", message_id)
        return True

    for ref in refs:
        try:
            handle(ref)
        except Exception as exc:  # noqa: BLE001 -- any failure means "deliver again later"
            stats.failed += 1
            # While the database is down every event fails the same way: one line when it
            # goes (pipeline/health.py), not one per message and redelivery.
            quiet = isinstance(exc, UNAVAILABLE) and not HEALTH.down(
                health.DATABASE, _describe_failure(exc)
            )
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "message %s (receive %s) left for redelivery: handling %s failed: %s",
                message_id,
                receives,
                _where(ref),
                _describe_failure(exc),
            )
            return False
        HEALTH.up(health.DATABASE)
        stats.refs_handled += 1
        log.info(
            "message %s: %s %s version=%s size=%s",
            message_id,
            _printable(ref.event_name),
            _where(ref),
            _printable(ref.version) or "-",
            ref.size if ref.size is not None else "-",
        )
    return True


# Error codes of a server that has no DeleteMessageBatch (some SQS look-alikes).
_BATCH_UNSUPPORTED_CODES = frozenset(
    {
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "InvalidAction",
        "NotImplemented",
    }
)


class _Deleter:
    """Deletes finished messages, one DeleteMessageBatch request per receive.

    A message that is not deleted comes back after the visibility timeout and is handled again,
    which `handle` tolerates; so every failure here is logged and counted, never raised.
    """

    def __init__(self, sqs: SQSClient, queue_url: str, stats: IntakeStats) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.stats = stats
        self.batch = True

    def delete(self, messages: list[dict[str, Any]]) -> None:
        entries: list[tuple[str, str]] = []  # (message id, receipt handle)
        for message in messages:
            message_id = str(message.get("MessageId", "?"))
            receipt = message.get("ReceiptHandle")
            if isinstance(receipt, str):
                entries.append((message_id, receipt))
            else:
                log.warning("message %s has no receipt handle; cannot delete it", message_id)
                self.stats.delete_errors += 1
        if not entries:
            return
        if not self.batch:
            for message_id, receipt in entries:
                self._delete_one(message_id, receipt)
            return
        for start in range(0, len(entries), 10):  # the API's limit per request
            self._delete_batch(entries[start : start + 10])

    def _delete_batch(self, entries: list[tuple[str, str]]) -> None:
        # Batch entry ids only need to be unique within the request; message ids may not be.
        by_id = {str(i): entry for i, entry in enumerate(entries)}
        self.stats.delete_calls += 1
        try:
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": i, "ReceiptHandle": receipt} for i, (_, receipt) in by_id.items()],
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _BATCH_UNSUPPORTED_CODES:
                log.warning(
                    "%s has no DeleteMessageBatch; deleting messages one by one", self.queue_url
                )
                self.batch = False
                for message_id, receipt in entries:
                    self._delete_one(message_id, receipt)
                return
            self._batch_failed(entries, exc)
            return
        except BotoCoreError as exc:
            self._batch_failed(entries, exc)
            return
        successful = {str(e.get("Id")) for e in response.get("Successful", [])}
        self.stats.deleted += sum(1 for i in by_id if i in successful)
        failures = {str(e.get("Id")): e for e in response.get("Failed", [])}
        for i, (message_id, _) in by_id.items():
            if i in successful:
                continue
            self.stats.delete_errors += 1
            # The code only: the entry's message may quote the receipt handle.
            code = failures.get(i, {}).get("Code") or "no result for this entry"
            log.warning(
                "message %s not deleted (it will be delivered again): %s",
                message_id,
                _printable(str(code)),
            )

    def _batch_failed(self, entries: list[tuple[str, str]], exc: Exception) -> None:
        self.stats.delete_errors += len(entries)
        error = storage_error(exc, "DeleteMessageBatch", self.queue_url)
        log.warning(
            "messages %s not deleted (they will be delivered again): %s",
            ", ".join(message_id for message_id, _ in entries),
            error.message,
        )

    def _delete_one(self, message_id: str, receipt: str) -> None:
        self.stats.delete_calls += 1
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except (ClientError, BotoCoreError) as exc:
            self.stats.delete_errors += 1
            error = storage_error(exc, "DeleteMessage", self.queue_url)
            log.warning(
                "message %s not deleted (it will be delivered again): %s",
                message_id,
                error.message,
            )
            return
        self.stats.deleted += 1


# --- webhook -----------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class WebhookServer(ThreadingHTTPServer):
    """HTTP server for bucket-event posts; see `make_webhook_server`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        secret: str | None,
        handle: Handle,
        max_body_bytes: int,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.secret = secret.encode("utf-8") if secret else None
        self.handle = handle
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _WebhookHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _WebhookHandler(BaseHTTPRequestHandler):
    server_version = "pagemill-intake"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    @property
    def _server(self) -> WebhookServer:
        return cast(WebhookServer, self.server)

    # Route http.server's stderr logging to our logger (request lines only, no headers).
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _authorized(self) -> bool:
        expected = self._server.secret
        if expected is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # http.server decodes header bytes as latin-1; undo that to compare the raw bytes.
        return hmac.compare_digest(token.strip().encode("latin-1"), expected)

    def _reply(self, status: HTTPStatus, payload: dict[str, Any] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="pagemill"')
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", "5")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        # MinIO probes its webhook target with HEAD (with the token) before sending events.
        path = self._path()
        if path == HEALTH_PATH:
            self._reply(HTTPStatus.OK)
        elif path == EVENTS_PATH:
            self._reply(HTTPStatus.OK if self._authorized() else HTTPStatus.UNAUTHORIZED)
        else:
            self._reply(HTTPStatus.NOT_FOUND)

    def do_GET(self) -> None:
        if self._path() == HEALTH_PATH:
            self._reply(HTTPStatus.OK, {"status": "ok"})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        if self._path() != EVENTS_PATH:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        if not self._authorized():
            log.info("rejected event post from %s: missing or wrong token", self.client_address[0])
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized"})
            return
        body = self._read_body()
        if body is None:
            return
        try:
            refs = parse_bucket_event(body)
        except PermanentError as exc:
            log.warning("rejected malformed event post: %s", _printable(exc.message))
            self._reply(HTTPStatus.BAD_REQUEST, {"error": exc.message})
            return
        for ref in refs:
            try:
                self._server.handle(ref)
            except Exception as exc:  # noqa: BLE001 -- any failure means "send it again"
                log.warning(
                    "event post for %s not handled (sender will retry): %s",
                    _where(ref),
                    _describe_failure(exc),
                )
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "try again later"})
                return
            log.info(
                "webhook: %s %s version=%s size=%s",
                _printable(ref.event_name),
                _where(ref),
                _printable(ref.version) or "-",
                ref.size if ref.size is not None else "-",
            )
        self._reply(HTTPStatus.OK, {"accepted": len(refs)})

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return None
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        if length > self._server.max_body_bytes:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "body shorter than Content-Length"})
            return None
        return body


def make_webhook_server(
    host: str,
    port: int,
    secret: str | SecretStr | None,
    handle: Handle,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> WebhookServer:
    """A bound, not yet serving, HTTP server for bucket-event posts (call `serve_forever()`).

    ``POST /events`` needs ``Authorization: Bearer <secret>`` whenever a secret is set (MinIO
    sends its ``auth_token`` that way). Without a secret the server only starts on a loopback
    address; anywhere else that raises `PermanentError(CONFIGURATION)`. ``GET /healthz`` answers
    200 without authentication. Port 0 picks a free port (see ``server.server_address``).
    """
    token = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if token and any(ch.isspace() for ch in token):
        # MinIO sends a token containing whitespace verbatim instead of as "Bearer <token>".
        raise PermanentError(
            ErrorCategory.CONFIGURATION, "PAGEMILL_WEBHOOK_SECRET must not contain whitespace"
        )
    if not token and not _is_loopback(host):
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            f"refusing to serve bucket events on {host} without a secret: set "
            "PAGEMILL_WEBHOOK_SECRET, or listen on 127.0.0.1",
        )
    server = WebhookServer(
        (host, port), secret=token or None, handle=handle, max_body_bytes=max_body_bytes
    )
    log.info(
        "webhook intake listening on %s%s (%s)",
        server.url,
        EVENTS_PATH,
        "token required" if token else "no token: loopback only",
    )
    return server
