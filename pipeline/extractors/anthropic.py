"""Anthropic Messages API extractor: page images (+ text layer) in, forced tool use out.

One `call()` is exactly one HTTP request: the SDK's own retries are off (`max_retries=0`) so the
caller's retry policy is the only one, and every SDK failure is mapped onto our taxonomy
(`TransientError` / `PermanentError`, with the provider's request id and retry-after hint).

The SDK is imported lazily (it takes seconds to import) and the client is built on first use,
once per extractor instance.

Provider-neutral helpers (retry hints, status mapping, redaction) live in `common`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pipeline.cost.batch_api import BatchOutcome, BatchState
from pipeline.domain import ExtractionRequest, PageContent, ProviderReply, Usage
from pipeline.errors import ErrorCategory, PermanentError, PipelineError
from pipeline.extractors import register
from pipeline.extractors.common import (
    LazyClient,
    connection_error,
    instruction_text,
    page_text_label,
    redact,
    status_error,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import (
        ImageBlockParam,
        Message,
        MessageParam,
        TextBlockParam,
        ToolChoiceToolParam,
        ToolParam,
    )
    from anthropic.types.messages import MessageBatch

    from pipeline.schemas import SchemaSpec

log = logging.getLogger(__name__)

PROVIDER = "anthropic"

ImageMediaType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
_MEDIA_TYPES: dict[str, ImageMediaType] = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/png": "image/png",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
}

# stop_reason values that mean "no usable answer" (max_tokens is handled as truncation).
_UNUSABLE_STOPS = {
    "refusal": "the model refused to answer",
    "pause_turn": "the model paused its turn (pause_turn) without answering",
    "model_context_window_exceeded": "the request exceeded the model's context window",
}

SYSTEM_PREAMBLE = (
    "You read business documents for an automated data-extraction pipeline. You receive the "
    "document's page images in order and, for pages that have one, the page's embedded text "
    "layer. Record the data by calling the {tool} tool exactly once; its input schema is the "
    "output format. Where a text layer is given, prefer it for exact characters (numbers, "
    "names, codes) and use the image for layout and for anything the text layer lacks."
)


def tool_name(schema: SchemaSpec) -> str:
    """`record_<schema name>`, restricted to the characters tool names allow."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)
    return f"record_{safe}"[:64]


# --- the extractor -----------------------------------------------------------------------------


class AnthropicExtractor:
    """Extractor over the Anthropic Messages API (structured output by forced tool use)."""

    provider = PROVIDER
    can_reask = True
    runs_locally = False

    def __init__(self, settings: Settings) -> None:
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key.strip():
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                "the anthropic provider needs an API key: set PAGEMILL_ANTHROPIC_API_KEY",
            )
        self.model = settings.anthropic_model
        self._api_key = key.strip()
        self._base_url = settings.anthropic_base_url or None
        self._timeout_s = settings.anthropic_timeout_s
        self.max_tokens: int | None = settings.anthropic_max_tokens
        self._lazy = LazyClient(self._build_client)

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicExtractor(model={self.model!r}, base_url={self._base_url!r})"

    def _build_client(self) -> anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,  # one retry policy: the caller's
            timeout=self._timeout_s,
        )

    @property
    def _client(self) -> anthropic.Anthropic | None:
        return self._lazy.built

    def _get_client(self) -> anthropic.Anthropic:
        return self._lazy.get()

    def close(self) -> None:
        self._lazy.close()

    # -- request ------------------------------------------------------------------------------

    def build_params(self, request: ExtractionRequest) -> dict[str, Any]:
        """The keyword arguments of `messages.create` for this request (no I/O)."""
        if not request.pages:
            raise PermanentError(ErrorCategory.BAD_INPUT, "extraction request without pages")
        schema = request.schema
        name = tool_name(schema)
        system: list[TextBlockParam] = [
            {
                "type": "text",
                "text": SYSTEM_PREAMBLE.format(tool=name) + "\n\n" + schema.instructions.strip(),
            }
        ]
        tool: ToolParam = {
            "name": name,
            "description": (
                f"Record the data extracted from the document, following the {schema.name} "
                f"schema (version {schema.version}). Use null for values not in the document."
            ),
            "input_schema": schema.json_schema(),
        }
        if request.cache_prefix:
            # Tools come first in the prompt, then the system text: a breakpoint on each caches
            # the whole fixed prefix. Only when the cost policy says it pays (+25% to write).
            tool["cache_control"] = {"type": "ephemeral"}
            system[0]["cache_control"] = {"type": "ephemeral"}
        tool_choice: ToolChoiceToolParam = {"type": "tool", "name": name}
        content: list[ImageBlockParam | TextBlockParam] = []
        for page in request.pages:
            content.append(_image_block(page))
            if page.has_text_layer:
                content.append({"type": "text", "text": page_text_label(page)})
        action = f"record it with the {name} tool"
        content.append(
            {
                "type": "text",
                "text": instruction_text(schema, len(request.pages), action, request.feedback),
            }
        )
        messages: list[MessageParam] = [{"role": "user", "content": content}]
        return {
            "model": self.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "system": system,
            "messages": messages,
            "tools": [tool],
            "tool_choice": tool_choice,
        }

    def call(self, request: ExtractionRequest) -> ProviderReply:
        params = self.build_params(request)
        client = self._get_client()
        try:
            message = client.messages.create(**params)
        except json.JSONDecodeError:
            # A 2xx whose body is not JSON (a proxy's error page): the call completed, unusably.
            return ProviderReply(
                data=None, usage=Usage(), problem="malformed response: body is not valid JSON"
            )
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return parse_message(message, tool_name(request.schema), params["max_tokens"])

    # -- Message Batches (half price; see pipeline/cost/batch.py) --------------------------------

    def batch_params(self, request: ExtractionRequest) -> dict[str, Any]:
        params: dict[str, Any] = json.loads(json.dumps(self.build_params(request)))
        return params  # plain JSON: it is stored until submitted

    def submit_batch(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> BatchState:
        client = self._get_client()
        try:
            batch = client.messages.batches.create(
                requests=[
                    {"custom_id": cid, "params": params}  # type: ignore[typeddict-item]
                    for cid, params in requests
                ]
            )
        except Exception as exc:
            raise self._mapped(exc) from exc
        return _batch_state(batch)

    def batch_state(self, batch_id: str) -> BatchState:
        try:
            batch = self._get_client().messages.batches.retrieve(batch_id)
        except Exception as exc:
            raise self._mapped(exc) from exc
        return _batch_state(batch)

    def batch_results(
        self, batch_id: str, params: Mapping[str, dict[str, Any]]
    ) -> Iterator[BatchOutcome]:
        try:
            lines = self._get_client().messages.batches.results(batch_id)
            for line in lines:
                yield _batch_outcome(line.custom_id, line.result, params.get(line.custom_id))
        except Exception as exc:
            raise self._mapped(exc) from exc

    def _mapped(self, exc: Exception) -> Exception:
        mapped = self._map_error(exc) if not isinstance(exc, PipelineError) else exc
        return mapped if mapped is not None else exc

    def _map_error(self, exc: Exception) -> PipelineError | None:
        import anthropic

        secrets = (self._api_key,)
        if isinstance(exc, anthropic.APITimeoutError):
            return connection_error(
                PROVIDER, exc, timed_out=True, timeout_s=self._timeout_s, secrets=secrets
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return connection_error(
                PROVIDER, exc, timed_out=False, timeout_s=self._timeout_s, secrets=secrets
            )
        if isinstance(exc, anthropic.APIStatusError):
            headers = exc.response.headers
            detail = getattr(exc, "api_message", None) or exc.message
            error_type = getattr(exc, "type", None)
            error_code = getattr(exc, "error_code", None)
            return status_error(
                PROVIDER,
                exc.status_code,
                headers,
                detail=str(detail),
                request_id=exc.request_id or headers.get("request-id"),
                error_type=error_type if isinstance(error_type, str) else None,
                error_code=error_code if isinstance(error_code, str) else None,
                secrets=secrets,
            )
        if isinstance(exc, anthropic.AnthropicError):
            return PermanentError(
                ErrorCategory.INTERNAL,
                redact(f"{PROVIDER}: {type(exc).__name__}: {exc}", secrets),
            )
        return None  # not the SDK's: a bug of ours, let it propagate as is


def _batch_state(batch: MessageBatch) -> BatchState:
    return BatchState(
        id=batch.id,
        status=batch.processing_status,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
    )


# Batch error types worth submitting again, and how each maps onto our taxonomy.
_BATCH_ERRORS: dict[str, tuple[ErrorCategory, bool]] = {
    "rate_limit_error": (ErrorCategory.PROVIDER_RATE_LIMITED, True),
    "overloaded_error": (ErrorCategory.PROVIDER_UNAVAILABLE, True),
    "api_error": (ErrorCategory.PROVIDER_UNAVAILABLE, True),
    "timeout_error": (ErrorCategory.TIMEOUT, True),
    "authentication_error": (ErrorCategory.PROVIDER_AUTH, False),
    "permission_error": (ErrorCategory.PROVIDER_AUTH, False),
    "billing_error": (ErrorCategory.PROVIDER_AUTH, False),
}


def _batch_outcome(custom_id: str, result: Any, params: dict[str, Any] | None) -> BatchOutcome:
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        params = params or {}
        choice = params.get("tool_choice") or {}
        reply = parse_message(
            result.message, str(choice.get("name") or ""), int(params.get("max_tokens") or 0)
        )
        if reply.request_id is None:
            reply.request_id = getattr(result.message, "id", None)
        return BatchOutcome(custom_id, "succeeded", reply=reply)
    if kind == "errored":
        inner = getattr(getattr(result, "error", None), "error", None)
        error_type = str(getattr(inner, "type", "api_error"))
        category, transient = _BATCH_ERRORS.get(
            error_type, (ErrorCategory.PROVIDER_REJECTED, False)
        )
        message = f"{PROVIDER} batch request {error_type}: {getattr(inner, 'message', '')}"
        return BatchOutcome(
            custom_id,
            "errored",
            error_category=category,
            error_message=redact(message, ()),
            transient=transient,
        )
    if kind in ("expired", "canceled"):
        return BatchOutcome(
            custom_id,
            kind,
            error_category=ErrorCategory.TIMEOUT,
            error_message=f"{PROVIDER} batch request {kind} before it was processed",
            transient=True,
        )
    return BatchOutcome(
        custom_id,
        "errored",
        error_category=ErrorCategory.INTERNAL,
        error_message=f"{PROVIDER} batch result of unknown type {kind!r}",
    )


def _image_block(page: PageContent) -> ImageBlockParam:
    media_type = _MEDIA_TYPES.get(page.media_type.lower())
    if media_type is None:
        raise PermanentError(
            ErrorCategory.UNSUPPORTED_TYPE,
            f"page {page.index + 1}: image type {page.media_type!r} is not accepted by the "
            f"Messages API (use JPEG, PNG, GIF or WebP)",
        )
    return {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": media_type,
            "data": base64.b64encode(page.image).decode("ascii"),
        },
    }


def _usage(raw: object) -> Usage | None:
    """Our Usage from the SDK's, or None when it is missing or not numbers."""
    if raw is None:
        return None
    input_tokens = _count(getattr(raw, "input_tokens", None))
    output_tokens = _count(getattr(raw, "output_tokens", None))
    if input_tokens is None or output_tokens is None:
        return None
    tier = getattr(raw, "service_tier", None)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_creation_input_tokens=_count(getattr(raw, "cache_creation_input_tokens", None)) or 0,
        cache_read_input_tokens=_count(getattr(raw, "cache_read_input_tokens", None)) or 0,
        service_tier=tier if isinstance(tier, str) else None,
    )


def _count(value: object) -> int | None:
    """A token count, or None unless it is a non-negative int."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_message(message: Message, expected_tool: str, max_tokens: int) -> ProviderReply:
    """Validate a Messages API reply ourselves: the SDK accepts malformed ones silently."""
    request_id = getattr(message, "_request_id", None)
    stop_reason = getattr(message, "stop_reason", None)
    stop = stop_reason if isinstance(stop_reason, str) else None
    usage = _usage(getattr(message, "usage", None))
    content = getattr(message, "content", None)

    data: dict[str, Any] | None = None
    truncated = False
    problem: str | None = None
    if stop == "max_tokens":
        truncated = True
        problem = f"output truncated at max_tokens={max_tokens}"
    elif stop in _UNUSABLE_STOPS:
        problem = _UNUSABLE_STOPS[stop]
    elif not isinstance(content, list):
        problem = "malformed response: no content list"
    else:
        tool_uses = [b for b in content if getattr(b, "type", None) == "tool_use"]
        chosen = next((b for b in tool_uses if getattr(b, "name", None) == expected_tool), None)
        if chosen is None and tool_uses:
            chosen = tool_uses[0]
            log.warning(
                "reply used tool %r, expected %r", getattr(chosen, "name", None), expected_tool
            )
        if chosen is None:
            problem = f"no tool_use block in the reply (stop_reason={stop})"
        else:
            tool_input = getattr(chosen, "input", None)
            if isinstance(tool_input, dict):
                data = tool_input
            elif tool_input is None:
                problem = "malformed response: tool_use block without input"
            else:
                problem = f"tool_use input is a {type(tool_input).__name__}, not an object"

    if usage is None:
        data = None
        problem = "malformed response: no usage" + (f"; {problem}" if problem else "")
    return ProviderReply(
        data=data,
        usage=usage or Usage(),
        request_id=request_id if isinstance(request_id, str) else None,
        stop_reason=stop,
        truncated=truncated,
        problem=problem,
    )


@register(PROVIDER, sdk="anthropic")
def build(settings: Settings) -> AnthropicExtractor:
    return AnthropicExtractor(settings)
