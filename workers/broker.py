"""The Redis broker transport: kombu's own, with the one fix a broker restart needs.

When Redis goes away while a worker holds unacknowledged messages, Celery's consumer handles
the connection error by collecting the connection (which forgets the transport's connection
info) and then closing it; closing the channel tries to put the unacked messages back, builds a
new Redis pool from the forgotten info, and kombu 5.7 fails with `AttributeError: 'NoneType'
object has no attribute 'hostname'`. That is not a connection error, so Celery stops the worker
("Unrecoverable error") instead of reconnecting. Reproduced with the fault harness: the bare
`pagemill worker` (threads extract pool) while Redis was killed under load.

Here that case is a connection error like any other: the messages cannot be put back now (Redis
is down), the consumer reconnects, and the documents are Postgres's to resume (the sweep, and
the broker marker of workers/tasks/maintenance.py when Redis came back empty).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError(
                "the broker connection is closed; unacknowledged messages stay with the broker"
            )
        parent: Any = super()  # kombu's stubs do not declare this private method
        params: dict[str, Any] = parent._connparams(asynchronous)
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:{Transport.__name__}"
