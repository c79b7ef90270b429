"""A real HTTP server on 127.0.0.1 that speaks enough of two model APIs to drive the real SDKs.

* Anthropic Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``
  (point ``anthropic.Anthropic(base_url=server.anthropic_base_url)`` at it), and the Message
  Batches API: ``POST /v1/messages/batches``, ``GET /v1/messages/batches[/{id}[/results]]``,
  ``POST /v1/messages/batches/{id}/cancel``, shaped as the real API (results are JSONL in a
  shuffled order, matched by ``custom_id``; types ``succeeded|errored|canceled|expired``).
* OpenAI Chat Completions API: ``POST /v1/chat/completions``
  (point ``openai.OpenAI(base_url=server.openai_base_url)`` at it).

It accepts ``Authorization: Bearer …`` and ``x-api-key`` (checked only when ``expected_api_key``
is set), answers every Anthropic request with a unique ``request-id`` header and every OpenAI
request with a unique ``x-request-id``, counts and records every request, and is scriptable from
tests (all state changes are thread-safe):

* the default responder answers with a forced ``tool_use`` (Anthropic) or JSON message content
  (OpenAI) built from ``server.fields`` (default: an invoice that validates against
  ``pipeline.schemas.invoice``), with usage derived from the request: input tokens ≈ image
  pixels / 750 (784 for OpenAI-style servers, Qwen2-VL's 28 × 28 px) + text length / 4; output
  tokens ≈ len(json) / 4. Anthropic images are first scaled down as the API does (long edge at
  most 1568 px, at most ~1,600 tokens). A request that marks ``cache_control`` is split into a
  cache write the first time its prefix (tools + system) is seen and a cache read afterwards,
  when the prefix is at least ``server.cache_min_tokens`` (an int, or a mapping of model id
  prefix to minimum, as the real minimums differ by model); OpenAI-style requests get automatic
  prefix caching of their system messages (``cached_tokens``);
* batches end when ``server.batch_processing_s`` has passed since they were created (0: at the
  first retrieve), or at ``server.end_batches()`` while ``server.hold_batches`` is set; each
  request's outcome is the next of ``server.script_batch(...)`` (``batch_expired()``,
  ``batch_canceled()``, ``batch_errored(type)``, or any ``reply(...)``), else a normal answer
  with ``service_tier: "batch"``;
* ``server.script(...)`` queues responses consumed in order by model calls (not by
  ``count_tokens``): errors in each API's error JSON shape with any headers (``retry-after``,
  ``retry-after-ms``, ``x-should-retry``), ``max_tokens`` stops, malformed replies, dropped
  connections, custom bodies, per-response latency;
* ``server.latency`` (seconds, or a callable taking the recorded request) delays every answer;
* ``server.set_fault_rate(p, status=429, seed=…)`` fails a seeded random share of model calls;
* ``server.requests`` is the list of every received request (parsed JSON body, headers with
  credentials redacted, request id) for assertions.

Run it as a script for demos and benchmarks::

    python -m tests.support.fake_model_server --port 0 --latency 3.0

It prints its base URLs and serves until interrupted.

Modules: `scripting` (what to answer: `Scripted`, `reply`, `error`, batch outcomes, latency
distributions), `recorded` (`RecordedRequest` and what a request holds), `errors` (each
API's error JSON), `state` (lifecycle, settings, scripts, recording), `replies` (model
answers), `batches` (the Message Batches API), `server` (`FakeModelServer`), `handler` (HTTP),
`cli` (the process).
"""

from __future__ import annotations

from tests.support.fake_model_server.cli import main
from tests.support.fake_model_server.errors import ANTHROPIC_ERROR_TYPES, OPENAI_ERROR_TYPES
from tests.support.fake_model_server.recorded import Api, RecordedRequest
from tests.support.fake_model_server.scripting import (
    ModelApi,
    ReplyKind,
    Scripted,
    batch_canceled,
    batch_errored,
    batch_expired,
    drop_connection,
    error,
    lognormal_latency,
    reply,
    uniform_latency,
)
from tests.support.fake_model_server.server import FakeModelServer
from tests.support.fake_model_server.state import DEFAULT_INVOICE

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "DEFAULT_INVOICE",
    "OPENAI_ERROR_TYPES",
    "Api",
    "FakeModelServer",
    "ModelApi",
    "RecordedRequest",
    "ReplyKind",
    "Scripted",
    "batch_canceled",
    "batch_errored",
    "batch_expired",
    "drop_connection",
    "error",
    "lognormal_latency",
    "main",
    "reply",
    "uniform_latency",
]
