"""The beat lock in a real Redis: a second beat waits, takes over when the first is gone, and a
holder that loses the lock is told at once."""

from __future__ import annotations

import threading

import pytest
import redis

from workers.beatlock import hold_beat_lock

pytestmark = pytest.mark.integration

KEY = "pagemill:test:beat-lock"


def test_a_second_beat_waits_until_the_first_is_gone(redis_broker: str) -> None:
    lost: list[str] = []
    first = hold_beat_lock(redis_broker, ttl_s=2.0, key=KEY, on_lost=lambda: lost.append("1"))
    second_holds = threading.Event()

    def second() -> None:
        lock = hold_beat_lock(
            redis_broker, ttl_s=2.0, key=KEY, on_lost=lambda: lost.append("2"), poll_s=0.2
        )
        second_holds.set()
        lock.release()

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    # Several renewals of the first holder's 2 s lock: the second never gets it meanwhile.
    assert not second_holds.wait(5.0)
    first.release()
    assert second_holds.wait(10.0)
    waiter.join(5)
    assert lost == []


def test_a_holder_whose_lock_was_taken_stops(redis_broker: str) -> None:
    lost = threading.Event()
    held = hold_beat_lock(redis_broker, ttl_s=1.0, key=KEY, on_lost=lost.set)
    client = redis.Redis.from_url(redis_broker)
    client.set(KEY, b"someone-else", px=60_000)  # as if it had expired and another took it
    try:
        assert lost.wait(5.0)
    finally:
        held.stop.set()
        client.delete(KEY)
        client.close()
