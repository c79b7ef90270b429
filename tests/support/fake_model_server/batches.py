"""The fake Message Batches API: create, list, retrieve, cancel batches, and their results."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.fake_model_server.errors import ANTHROPIC_ERROR_TYPES, _error_body
from tests.support.fake_model_server.recorded import RecordedRequest
from tests.support.fake_model_server.replies import ReplyingServer
from tests.support.fake_model_server.scripting import Scripted, batch_canceled, error


@dataclass(slots=True)
class _FakeBatch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: float  # time.time()
    results: list[dict[str, Any]] | None = None  # set when the batch ends
    ended_at: float | None = None
    cancel_requested: bool = False


class BatchingServer(ReplyingServer):
    """The answering server with the Message Batches API on top."""

    def _apply_defaults(self) -> None:
        super()._apply_defaults()
        self._batches: dict[str, _FakeBatch] = {}
        self._batch_script: list[Scripted] = []
        self.batch_processing_s = 0.0
        self.hold_batches = False

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
