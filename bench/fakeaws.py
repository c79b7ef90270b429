"""A small, fast S3 + SQS server for the throughput benchmark, in its own process.

Why not moto: on a 2-core machine moto cost more CPU than the pipeline it fed. Measured here,
its SQS took ~70 ms of CPU per message (receive + delete) with 1,000 messages waiting, and its
S3 ~10 ms per PUT or GET, so at 20 documents a second the harness alone needed more than one
core. This server speaks just enough of both APIs for boto3 and for the pipeline's own calls:

* S3 (REST, path-style URLs): HeadBucket, CreateBucket, Get/PutBucketNotificationConfiguration
  (queue configurations), PutObject, GetObject, HeadObject. A PutObject sends an AWS-format
  ``ObjectCreated:Put`` record (key URL-encoded, as AWS does) to every queue configured on the
  bucket.
* SQS (JSON protocol): CreateQueue, GetQueueUrl, GetQueueAttributes, SetQueueAttributes,
  SendMessage, ReceiveMessage (long polling, visibility timeout, ApproximateReceiveCount),
  DeleteMessage, DeleteMessageBatch.

No authentication, no persistence. `python -m bench.fakeaws` prints the endpoint URL on the
first line of stdout and serves until SIGTERM; `--moto` serves moto instead (for comparison).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit

ACCOUNT = "123456789012"
REGION = "us-east-1"
_QUEUE_ARN = re.compile(r"<Queue>\s*arn:aws:sqs:[^:]*:[^:]*:([^<\s]+)\s*</Queue>")
_CONFIG_ID = re.compile(r"<Id>([^<]*)</Id>")


class Queue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: collections.deque[dict[str, Any]] = collections.deque()
        self.in_flight: dict[str, tuple[float, dict[str, Any]]] = {}
        self.attributes: dict[str, str] = {"VisibilityTimeout": "30"}
        self.cond = threading.Condition()

    def send(self, body: str) -> str:
        message = {
            "MessageId": str(uuid.uuid4()),
            "Body": body,
            "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
            "receives": 0,
        }
        with self.cond:
            self.ready.append(message)
            self.cond.notify()
        return str(message["MessageId"])

    def _requeue_expired(self, now: float) -> None:
        if not self.in_flight:
            return
        expired = [h for h, (until, _) in self.in_flight.items() if until <= now]
        for handle in expired:
            self.ready.append(self.in_flight.pop(handle)[1])

    def receive(self, count: int, wait_s: float, visibility_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait_s
        out: list[dict[str, Any]] = []
        with self.cond:
            while True:
                now = time.monotonic()
                self._requeue_expired(now)
                while self.ready and len(out) < count:
                    message = self.ready.popleft()
                    message["receives"] += 1
                    handle = uuid.uuid4().hex
                    self.in_flight[handle] = (now + visibility_s, message)
                    out.append(
                        {
                            "MessageId": message["MessageId"],
                            "ReceiptHandle": handle,
                            "MD5OfBody": message["MD5OfBody"],
                            "Body": message["Body"],
                            "Attributes": {"ApproximateReceiveCount": str(message["receives"])},
                        }
                    )
                if out or now >= deadline:
                    return out
                self.cond.wait(min(deadline - now, 1.0))

    def delete(self, handle: str) -> None:
        with self.cond:
            self.in_flight.pop(handle, None)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, dict[str, tuple[bytes, str, str, float]]] = {}
        self.notifications: dict[str, list[tuple[str, str]]] = {}  # bucket -> [(id, queue)]
        self.queues: dict[str, Queue] = {}
        self.sequence = 0

    def event(self, bucket: str, key: str, size: int, etag: str, config_id: str) -> str:
        with self.lock:
            self.sequence += 1
            sequencer = f"{self.sequence:016X}"
        record = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": REGION,
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "bench"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": config_id,
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": {"principalId": "bench"},
                    "arn": f"arn:aws:s3:::{bucket}",
                },
                "object": {
                    "key": quote_plus(key, safe=""),
                    "size": size,
                    "eTag": etag,
                    "sequencer": sequencer,
                },
            },
        }
        return json.dumps({"Records": [record]})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench-fakeaws/1"
    disable_nagle_algorithm = True
    state: State  # set on the server's subclass

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing --

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        data = self.rfile.read(length) if length else b""
        if "aws-chunked" in (self.headers.get("content-encoding") or ""):
            data = _dechunk(data)
        return data

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/xml",
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16])
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _s3_error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        self._send(status, b"" if head else body, head=head)

    def _split(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query, keep_blank_values=True)

    # -- verbs --

    def do_POST(self) -> None:
        target = self.headers.get("x-amz-target", "")
        body = self._body()
        if target.startswith("AmazonSQS."):
            self._sqs(target.removeprefix("AmazonSQS."), json.loads(body or b"{}"))
        else:
            self._s3_error(405, "MethodNotAllowed", "not supported here")

    def do_HEAD(self) -> None:
        bucket, key, _ = self._split()
        state = self.state
        objects = state.buckets.get(bucket)
        if objects is None:
            self._s3_error(404, "NoSuchBucket", bucket, head=True)
        elif not key:
            self._send(200, head=True)
        elif key not in objects:
            self._s3_error(404, "NoSuchKey", key, head=True)
        else:
            data, etag, ctype, mtime = objects[key]
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.send_header("etag", f'"{etag}"')
            self.send_header("last-modified", formatdate(mtime, usegmt=True))
            self.end_headers()

    def do_GET(self) -> None:
        bucket, key, query = self._split()
        objects = self.state.buckets.get(bucket)
        if objects is None:
            self._s3_error(404, "NoSuchBucket", bucket)
            return
        if not key and "notification" in query:
            configs = "".join(
                f"<QueueConfiguration><Id>{cid}</Id><Queue>arn:aws:sqs:{REGION}:{ACCOUNT}:{q}"
                f"</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration>"
                for cid, q in self.state.notifications.get(bucket, [])
            )
            self._send(
                200,
                f'<?xml version="1.0" encoding="UTF-8"?><NotificationConfiguration>'
                f"{configs}</NotificationConfiguration>".encode(),
            )
            return
        if not key:
            self._s3_error(501, "NotImplemented", "listing is not implemented")
            return
        if key not in objects:
            self._s3_error(404, "NoSuchKey", key)
            return
        data, etag, ctype, mtime = objects[key]
        self._send(
            200, data, {"etag": f'"{etag}"', "last-modified": formatdate(mtime, usegmt=True)}, ctype
        )

    def do_PUT(self) -> None:
        bucket, key, query = self._split()
        body = self._body()
        state = self.state
        if not key:
            if "notification" in query:
                if bucket not in state.buckets:
                    self._s3_error(404, "NoSuchBucket", bucket)
                    return
                text = body.decode()
                ids = _CONFIG_ID.findall(text)
                queues = _QUEUE_ARN.findall(text)
                state.notifications[bucket] = [
                    (ids[i] if i < len(ids) else f"config-{i}", q) for i, q in enumerate(queues)
                ]
                self._send(200)
                return
            state.buckets.setdefault(bucket, {})
            self._send(200, headers={"location": f"/{bucket}"})
            return
        objects = state.buckets.get(bucket)
        if objects is None:
            self._s3_error(404, "NoSuchBucket", bucket)
            return
        etag = hashlib.md5(body).hexdigest()
        ctype = self.headers.get("content-type") or "binary/octet-stream"
        objects[key] = (body, etag, ctype, time.time())
        self._send(200, headers={"etag": f'"{etag}"'})
        for config_id, queue_name in state.notifications.get(bucket, []):
            queue = state.queues.get(queue_name)
            if queue is not None:
                queue.send(state.event(bucket, key, len(body), etag, config_id))

    # -- SQS --

    def _sqs_reply(self, body: dict[str, Any], status: int = 200) -> None:
        self._send(status, json.dumps(body).encode(), content_type="application/x-amz-json-1.0")

    def _queue(self, params: dict[str, Any]) -> Queue | None:
        name = str(params.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1]
        queue = self.state.queues.get(name)
        if queue is None:
            self._sqs_reply(
                {
                    "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                    "message": "The specified queue does not exist.",
                },
                400,
            )
        return queue

    def _sqs(self, action: str, params: dict[str, Any]) -> None:
        state = self.state
        host = self.headers.get("host", "127.0.0.1")
        if action in ("CreateQueue", "GetQueueUrl"):
            name = str(params["QueueName"])
            if action == "CreateQueue":
                with state.lock:
                    queue = state.queues.setdefault(name, Queue(name))
                queue.attributes.update(params.get("Attributes") or {})
            elif name not in state.queues:
                self._sqs_reply(
                    {
                        "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                        "message": "The specified queue does not exist.",
                    },
                    400,
                )
                return
            self._sqs_reply({"QueueUrl": f"http://{host}/{ACCOUNT}/{name}"})
            return
        queue = self._queue(params)
        if queue is None:
            return
        if action == "GetQueueAttributes":
            attrs = {
                **queue.attributes,
                "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue.name}",
                "ApproximateNumberOfMessages": str(len(queue.ready)),
                "ApproximateNumberOfMessagesNotVisible": str(len(queue.in_flight)),
            }
            names = params.get("AttributeNames") or ["All"]
            if "All" not in names:
                attrs = {k: v for k, v in attrs.items() if k in names}
            self._sqs_reply({"Attributes": attrs})
        elif action == "SetQueueAttributes":
            queue.attributes.update(params.get("Attributes") or {})
            self._sqs_reply({})
        elif action == "SendMessage":
            message_id = queue.send(str(params["MessageBody"]))
            self._sqs_reply(
                {
                    "MessageId": message_id,
                    "MD5OfMessageBody": hashlib.md5(
                        str(params["MessageBody"]).encode()
                    ).hexdigest(),
                }
            )
        elif action == "ReceiveMessage":
            visibility = float(
                params.get("VisibilityTimeout") or queue.attributes.get("VisibilityTimeout", 30)
            )
            messages = queue.receive(
                max(1, min(10, int(params.get("MaxNumberOfMessages", 1)))),
                max(0.0, min(20.0, float(params.get("WaitTimeSeconds", 0)))),
                visibility,
            )
            self._sqs_reply({"Messages": messages} if messages else {})
        elif action == "DeleteMessage":
            queue.delete(str(params["ReceiptHandle"]))
            self._sqs_reply({})
        elif action == "DeleteMessageBatch":
            entries = params.get("Entries") or []
            for entry in entries:
                queue.delete(str(entry["ReceiptHandle"]))
            self._sqs_reply({"Successful": [{"Id": str(e["Id"])} for e in entries], "Failed": []})
        else:
            self._sqs_reply(
                {
                    "__type": "com.amazonaws.sqs#UnsupportedOperation",
                    "message": f"{action} is not supported",
                },
                400,
            )


def _dechunk(data: bytes) -> bytes:
    """Decode an aws-chunked body (size;chunk-signature=…\\r\\n data \\r\\n … 0\\r\\n trailers)."""
    out, pos = bytearray(), 0
    while pos < len(data):
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def make_server(port: int = 0) -> Server:
    handler = type("BoundHandler", (Handler,), {"state": State()})
    return Server(("127.0.0.1", port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fakeaws", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--moto", action="store_true", help="serve moto instead")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.moto:
        import logging

        from workers.devstack import start_s3_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        moto = start_s3_server()
        print(moto.endpoint_url, flush=True)
        try:
            stop.wait()
        finally:
            moto.stop()
        return 0
    server = make_server(args.port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
