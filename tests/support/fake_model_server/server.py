"""`FakeModelServer`: the core, the model answers and the batch API as one server."""

from __future__ import annotations

from tests.support.fake_model_server.batches import BatchingServer


class FakeModelServer(BatchingServer):
    """The server; see the package docstring. Use as a context manager or start()/stop()."""
