"""document_events (written by the trigger on documents) and the ops_* views, on real Postgres.

Documents are moved through their states with the repository's own statements, the ones the
workers run, so the events recorded are the ones production records.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import CallOutcome, CallRecord, DocumentStatus, ObjectRef, Stage, Usage
from pipeline.errors import ErrorCategory, PermanentError, TransientError

pytestmark = pytest.mark.integration

LEASE = timedelta(minutes=5)


def register(sessions: sessionmaker[Session], key: str, schema: str = "invoice") -> int:
    with transaction(sessions) as session:
        document_id, created = repo.register_document(
            session, ObjectRef(bucket="ops", key=key, version="v1"), schema, "anthropic"
        )
    assert created
    return document_id


def claim(sessions: sessionmaker[Session], document_id: int, stage: Stage, owner: str) -> None:
    with transaction(sessions) as session:
        assert repo.claim_document(session, document_id, LEASE, stage, owner) is not None


def events(sessions: sessionmaker[Session], document_id: int) -> list[dict[str, Any]]:
    with sessions() as session:
        rows = session.execute(
            text(
                "SELECT stage, from_stage, from_status, to_status, attempt, worker,"
                " error_category, error_message, duration_s"
                " FROM document_events WHERE document_id = :id ORDER BY id"
            ),
            {"id": document_id},
        ).mappings()
        return [dict(r) for r in rows]


def view(sessions: sessionmaker[Session], name: str, order: str = "1") -> list[dict[str, Any]]:
    with sessions() as session:
        return [
            dict(r)
            for r in session.execute(text(f"SELECT * FROM {name} ORDER BY {order}")).mappings()
        ]


def call(cost: str | None, outcome: CallOutcome = CallOutcome.OK, latency_ms: int = 1500) -> Any:
    return CallRecord(
        provider="anthropic",
        model="claude-sonnet-4-6",
        attempt=1,
        outcome=outcome,
        latency_ms=latency_ms,
        usage=Usage(input_tokens=1000, output_tokens=200, cache_read_input_tokens=50),
        cost_usd=None if cost is None else Decimal(cost),
        call_id=uuid.uuid4(),
    )


def test_every_state_change_of_a_document_is_an_event(
    sessions: sessionmaker[Session],
) -> None:
    doc = register(sessions, "in/a.pdf")
    claim(sessions, doc, Stage.PREPARE, "task-prepare")
    with transaction(sessions) as session:
        assert repo.advance_stage(session, doc, Stage.EXTRACT)
    claim(sessions, doc, Stage.EXTRACT, "task-extract")
    with transaction(sessions) as session:
        repo.release_for_retry(
            session, doc, TransientError(ErrorCategory.PROVIDER_UNAVAILABLE, "529 overloaded")
        )
    claim(sessions, doc, Stage.EXTRACT, "task-extract")
    with transaction(sessions) as session:
        assert repo.finish_document(session, doc, DocumentStatus.NEEDS_REVIEW)

    got = [
        (e["stage"], e["from_status"], e["to_status"], e["attempt"], e["worker"])
        for e in events(sessions, doc)
    ]
    assert got == [
        ("prepare", None, "pending", 0, None),
        ("prepare", "pending", "processing", 1, "task-prepare"),
        ("extract", "processing", "pending", 1, "task-prepare"),
        ("extract", "pending", "processing", 2, "task-extract"),
        ("extract", "processing", "pending", 2, "task-extract"),
        ("extract", "pending", "processing", 3, "task-extract"),
        ("extract", "processing", "needs_review", 3, "task-extract"),
    ]
    recorded = events(sessions, doc)
    assert recorded[2]["from_stage"] == "prepare"
    # The error belongs to the change that ended the attempt, not to the claim after it.
    assert [(e["error_category"], e["error_message"]) for e in recorded][4:6] == [
        ("provider_unavailable", "529 overloaded"),
        (None, None),
    ]
    assert recorded[0]["duration_s"] is None
    assert all(e["duration_s"] is not None and e["duration_s"] >= 0 for e in recorded[1:])


def test_a_change_that_fails_is_rolled_back_with_its_event(
    sessions: sessionmaker[Session],
) -> None:
    doc = register(sessions, "in/rollback.pdf")
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        repo.claim_document(session, doc, LEASE, Stage.PREPARE, "task")
        raise RuntimeError("worker crashed before commit")
    assert [e["to_status"] for e in events(sessions, doc)] == ["pending"]


def test_a_named_actor_is_recorded_when_no_worker_holds_the_document(
    sessions: sessionmaker[Session],
) -> None:
    doc = register(sessions, "in/actor.pdf")
    claim(sessions, doc, Stage.PREPARE, "task")
    with transaction(sessions) as session:
        repo.finish_document(
            session, doc, DocumentStatus.FAILED, PermanentError(ErrorCategory.BAD_INPUT, "junk")
        )
    with transaction(sessions) as session:
        session.execute(text("SELECT set_config('pagemill.actor', 'replay:alice', true)"))
        session.execute(text("UPDATE documents SET status = 'pending' WHERE id = :id"), {"id": doc})
    last = events(sessions, doc)[-1]
    assert (last["from_status"], last["to_status"], last["worker"]) == (
        "failed",
        "pending",
        "replay:alice",
    )
    assert events(sessions, doc)[-2]["error_category"] == "bad_input"


def test_ops_views_count_what_happened(sessions: sessionmaker[Session]) -> None:
    done = register(sessions, "in/done.pdf")
    claim(sessions, done, Stage.PREPARE, "t1")
    with transaction(sessions) as session:
        repo.record_source(session, done, repo.SourceFacts(10, "x", "application/pdf", 3, False))
        repo.advance_stage(session, done, Stage.EXTRACT)
    claim(sessions, done, Stage.EXTRACT, "t2")
    with transaction(sessions) as session:
        repo.record_calls(session, done, [call("0.0125"), call(None)])
        repo.finish_document(session, done, DocumentStatus.DONE)

    failed = register(sessions, "in/failed.pdf", schema="receipt")
    claim(sessions, failed, Stage.PREPARE, "t3")
    with transaction(sessions) as session:
        error = PermanentError(ErrorCategory.ENCRYPTED, "password protected")
        repo.finish_document(session, failed, DocumentStatus.FAILED, error)
        repo.add_dead_letter(session, failed, "prepare", error, 1)

    waiting = register(sessions, "in/waiting.pdf")
    stale = register(sessions, "in/stale.pdf")
    expired = register(sessions, "in/expired.pdf")
    claim(sessions, expired, Stage.PREPARE, "t4")
    with transaction(sessions) as session:
        session.execute(
            text("UPDATE documents SET updated_at = now() - interval '2 hours' WHERE id = :id"),
            {"id": stale},
        )
        session.execute(
            text("UPDATE documents SET lease_until = now() - interval '1 minute' WHERE id = :id"),
            {"id": expired},
        )

    throughput = view(sessions, "ops_throughput_hourly", "status")
    assert [(r["schema_name"], r["status"], r["documents"], r["pages"]) for r in throughput] == [
        ("invoice", "done", 1, 3),
        ("receipt", "failed", 1, 0),
    ]

    backlog = {(r["stage"], r["status"]): r for r in view(sessions, "ops_backlog")}
    assert {k: r["documents"] for k, r in backlog.items()} == {
        ("prepare", "pending"): 2,
        ("prepare", "processing"): 1,
    }
    assert backlog[("prepare", "pending")]["oldest_age_s"] >= 7000

    stuck = {r["document_id"]: r for r in view(sessions, "ops_stuck")}
    assert {k: r["reason"] for k, r in stuck.items()} == {
        stale: "pending_too_long",
        expired: "lease_expired",
    }
    assert waiting not in stuck
    assert stuck[stale]["key"] == "in/stale.pdf" and stuck[stale]["age_s"] >= 7000

    letters = view(sessions, "ops_dead_letters")
    assert [(r["error_category"], r["open_letters"]) for r in letters] == [("encrypted", 1)]

    failures = view(sessions, "ops_failures_hourly")
    assert [(r["error_category"], r["failures"]) for r in failures] == [("encrypted", 1)]

    (cost,) = view(sessions, "ops_cost_daily")
    assert (cost["provider"], cost["model"], cost["schema_name"]) == (
        "anthropic",
        "claude-sonnet-4-6",
        "invoice",
    )
    assert (cost["calls"], cost["unpriced_calls"], cost["cost_usd"]) == (2, 1, Decimal("0.0125"))
    assert (cost["input_tokens"], cost["output_tokens"], cost["cache_read_input_tokens"]) == (
        2000,
        400,
        100,
    )

    latency = {r["stage"]: r for r in view(sessions, "ops_stage_latency", "stage")}
    assert set(latency) == {"queue_wait", "prepare", "model_call", "extract", "upload_to_result"}
    # Claims of done, failed and expired, plus done's extract claim; the calls; two finished.
    assert {s: r["samples"] for s, r in latency.items()} == {
        "queue_wait": 4,
        "prepare": 2,
        "model_call": 2,
        "extract": 1,
        "upload_to_result": 2,
    }
    # Latencies are kept as histograms: exact to within a bucket (9 %).
    assert latency["model_call"]["p50_s"] == pytest.approx(1.5, rel=0.09)
    hourly = view(sessions, "ops_stage_latency_hourly", "stage")
    assert sum(r["samples"] for r in hourly) == 11


def _snapshot(sessions: sessionmaker[Session]) -> dict[str, list[dict[str, Any]]]:
    return {
        "throughput": view(sessions, "ops_throughput_hourly", "1, 2, 3"),
        "failures": view(sessions, "ops_failures_hourly", "1, 2"),
        "latency": view(sessions, "ops_stage_latency", "stage"),
        "latency_hourly": view(sessions, "ops_stage_latency_hourly", "1, 2"),
        "cost": view(sessions, "ops_cost_daily", "1, 2, 3, 4"),
    }


def _finish_one(sessions: sessionmaker[Session], key: str, cost: str | None) -> None:
    doc = register(sessions, key)
    claim(sessions, doc, Stage.PREPARE, "t")
    with transaction(sessions) as session:
        repo.advance_stage(session, doc, Stage.EXTRACT)
    claim(sessions, doc, Stage.EXTRACT, "t")
    with transaction(sessions) as session:
        repo.release_for_retry(session, doc, TransientError(ErrorCategory.TIMEOUT, "slow"))
    claim(sessions, doc, Stage.EXTRACT, "t")
    with transaction(sessions) as session:
        repo.record_calls(session, doc, [call(cost, latency_ms=400), call(cost)])
        repo.finish_document(session, doc, DocumentStatus.DONE)


def test_the_roll_up_changes_no_number_and_the_views_add_what_came_after_it(
    sessions: sessionmaker[Session],
) -> None:
    from pipeline.usecases.rollup import roll_up

    _finish_one(sessions, "in/one.pdf", "0.5")
    _finish_one(sessions, "in/two.pdf", None)
    before = _snapshot(sessions)

    run = roll_up(sessions, margins=(timedelta(0), timedelta(0)))
    assert run is not None and set(run.rolled_until) == {"events", "calls"}
    with sessions() as session:
        rolled = {
            name: session.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
            for name in ("ops_rollup_finished", "ops_rollup_latency", "ops_rollup_cost")
        }
    assert all(rolled.values()), rolled  # the numbers now come from the roll-up
    assert _snapshot(sessions) == before
    assert roll_up(sessions, margins=(timedelta(0), timedelta(0))) is not None
    assert _snapshot(sessions) == before  # a second run adds nothing twice

    _finish_one(sessions, "in/three.pdf", "0.25")  # after the watermark: read raw
    after = _snapshot(sessions)
    assert sum(r["documents"] for r in after["throughput"]) == 3
    assert sum(r["failures"] for r in after["failures"]) == 3
    (cost,) = after["cost"]
    assert (cost["calls"], cost["unpriced_calls"], cost["cost_usd"]) == (6, 2, Decimal("1.50"))
    roll_up(sessions, margins=(timedelta(0), timedelta(0)))
    assert _snapshot(sessions) == after
