"""The documents a set-up uploads and the uploader that puts them in the S3 bucket."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

UPLOAD_THREADS = 8


@dataclass(frozen=True)
class PoolItem:
    """One document the uploads cycle through."""

    data: bytes
    content_type: str = "application/pdf"
    extension: str = "pdf"
    schema: str | None = None  # sent as x-amz-meta-pagemill-schema


def pool_keys(prefix: str, count: int, pool: list[PoolItem]) -> list[str]:
    """Keys for `count` uploads; a document with its own schema goes under PREFIX/SCHEMA/, which
    the scanned set-up routes (the S3 server here keeps no object metadata)."""
    keys = []
    for i in range(count):
        item = pool[i % len(pool)]
        folder = f"{prefix}/{item.schema}" if item.schema else prefix
        keys.append(f"{folder}/{i:06d}.{item.extension}")
    return keys


SCANNED_ROUTES = ";".join(f"{p}/receipt/=receipt" for p in ("warmup", "latency", "load"))


class Uploader:
    def __init__(self, settings: Any, bucket: str, pool: list[PoolItem]) -> None:
        from pipeline import storage

        self.bucket = bucket
        self.pool = pool
        self._local = threading.local()
        self._settings = settings
        self._storage = storage

    def _client(self) -> Any:
        client = getattr(self._local, "s3", None)
        if client is None:
            client = self._local.s3 = self._storage.make_s3_client(self._settings)
        return client

    def put(self, key: str, index: int) -> float:
        from pipeline.routing import METADATA_KEY

        item = self.pool[index % len(self.pool)]
        self._client().put_object(
            Bucket=self.bucket,
            Key=key,
            Body=item.data,
            ContentType=item.content_type,
            Metadata={METADATA_KEY: item.schema} if item.schema else {},
        )
        return time.time()

    def bulk(self, keys: list[str]) -> dict[str, float]:
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            times = list(pool.map(self.put, keys, range(len(keys))))
        return dict(zip(keys, times, strict=True))

    def paced(self, keys: list[str], interval: float) -> dict[str, float]:
        times: dict[str, float] = {}
        start = time.monotonic()
        for n, key in enumerate(keys):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            times[key] = self.put(key, n)
        return times
