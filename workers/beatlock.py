"""One beat at a time: a lock in Redis that a second `pagemill beat` waits on instead of
scheduling the sweep and reconciliation twice.

Deployments ask for one beat (compose: one service; Kubernetes: one replica, Recreate), but a
rollout, a partitioned node or an operator can still start a second. The lock is a Redis key
with a time-to-live that its holder renews; a beat that cannot renew it in time (Redis gone, or
the key taken over after it expired) stops at once, exit code 3, so that two schedulers never
run together; its supervisor restarts it, and it waits for the lock like any other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

log = logging.getLogger(__name__)

LOCK_KEY = "pagemill:beat:lock"
LOCK_TTL_S = 60.0
LOST_EXIT_CODE = 3


def _exit_now() -> None:
    log.error("lost the beat lock: stopping so that two beats never run together")
    os._exit(LOST_EXIT_CODE)


@dataclass
class BeatLock:
    """A held lock; `release()` gives it up (on a clean shutdown)."""

    lock: redis.lock.Lock
    stop: threading.Event
    thread: threading.Thread

    def release(self) -> None:
        self.stop.set()
        self.thread.join(5)
        try:
            self.lock.release()
        except (LockError, RedisError):
            log.warning("the beat lock was already gone at release")


def hold_beat_lock(
    redis_url: str,
    *,
    ttl_s: float = LOCK_TTL_S,
    key: str = LOCK_KEY,
    on_lost: Callable[[], None] = _exit_now,
    poll_s: float | None = None,
) -> BeatLock:
    """Block until this process holds the beat lock, then renew it in the background every
    ttl/4; `on_lost` runs (default: exit 3) when it was taken over or could not be renewed
    before its time-to-live ran out."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    lock = client.lock(key, timeout=ttl_s, sleep=min(1.0, ttl_s / 10), thread_local=False)
    wait_s = poll_s if poll_s is not None else ttl_s
    blocking = False  # the first attempt does not wait, so a waiting beat says so at once
    while True:
        try:
            if lock.acquire(blocking=blocking, blocking_timeout=wait_s):
                break
        except RedisError as exc:
            log.warning("cannot reach Redis for the beat lock (%s); retrying", type(exc).__name__)
            time.sleep(min(5.0, wait_s))
            continue
        if not blocking:
            log.info("another beat holds the lock (%s); waiting to take over", key)
            blocking = True
    log.info("holding the beat lock (%s, renewed every %.0f s)", key, ttl_s / 4)
    stop = threading.Event()
    thread = threading.Thread(
        target=_renew, args=(lock, ttl_s, stop, on_lost), name="beat-lock", daemon=True
    )
    thread.start()
    return BeatLock(lock, stop, thread)


def _renew(
    lock: redis.lock.Lock, ttl_s: float, stop: threading.Event, on_lost: Callable[[], None]
) -> None:
    renewed_at = time.monotonic()
    while not stop.wait(ttl_s / 4):
        try:
            lock.reacquire()
            renewed_at = time.monotonic()
        except LockNotOwnedError:
            on_lost()
            return
        except (LockError, RedisError) as exc:
            # Keep trying while the key may still be ours; stop before anyone could take it.
            if time.monotonic() - renewed_at > ttl_s * 0.75:
                log.error("could not renew the beat lock for %.0f s (%s)", ttl_s * 0.75, exc)
                on_lost()
                return
