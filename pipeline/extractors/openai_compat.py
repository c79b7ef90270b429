"""Extractor for OpenAI-compatible servers (vLLM, Ollama, …) through the `openai` SDK.

Page images go as base64 data URLs, structured output is requested with
`response_format={"type": "json_schema", …, "strict": True}` and the JSON is parsed from the
message content. As with the Anthropic extractor, `call()` is exactly one HTTP request
(`max_retries=0`) and SDK failures are mapped onto our taxonomy.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any

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
    import openai
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionContentPartImageParam,
        ChatCompletionContentPartTextParam,
        ChatCompletionMessageParam,
    )
    from openai.types.shared_params import ResponseFormatJSONSchema

    from pipeline.schemas import SchemaSpec

log = logging.getLogger(__name__)

PROVIDER = "openai_compat"
NO_API_KEY = "not-needed"  # local servers accept any key, but the SDK insists on one

SYSTEM_PREAMBLE = (
    "You read business documents for an automated data-extraction pipeline. You receive the "
    "document's page images in order and, for pages that have one, the page's embedded text "
    "layer. Answer with one JSON object that follows the JSON schema below, and nothing else. "
    "Where a text layer is given, prefer it for exact characters (numbers, names, codes) and "
    "use the image for layout and for anything the text layer lacks."
)

_FINISH_PROBLEMS = {
    "content_filter": "the server's content filter withheld the answer",
    "tool_calls": "the model called a tool instead of answering",
    "function_call": "the model called a function instead of answering",
}

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _schema_name(schema: SchemaSpec) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)[:64] or "output"


class OpenAICompatExtractor:
    """Extractor over an OpenAI-compatible Chat Completions endpoint."""

    provider = PROVIDER
    can_reask = True
    runs_locally = False

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        self.model = settings.openai_model
        # Sent only when a request asks: vLLM rejects prompt + max_tokens above its context.
        self.max_tokens: int | None = None
        self._api_key = key.strip() or NO_API_KEY
        self._base_url = settings.openai_base_url
        self._timeout_s = settings.openai_timeout_s
        self._lazy = LazyClient(self._build_client)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatExtractor(model={self.model!r}, base_url={self._base_url!r})"

    def _build_client(self) -> openai.OpenAI:
        import openai

        return openai.OpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,  # one retry policy: the caller's
            timeout=self._timeout_s,
        )

    @property
    def _client(self) -> openai.OpenAI | None:
        return self._lazy.built

    def _get_client(self) -> openai.OpenAI:
        return self._lazy.get()

    def close(self) -> None:
        self._lazy.close()

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        return (self._api_key,) if self._api_key != NO_API_KEY else ()

    # -- request ------------------------------------------------------------------------------

    def build_params(self, request: ExtractionRequest) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for this request (no I/O)."""
        if not request.pages:
            raise PermanentError(ErrorCategory.BAD_INPUT, "extraction request without pages")
        schema = request.schema
        json_schema = schema.json_schema()
        system_text = (
            f"{SYSTEM_PREAMBLE}\n\n{schema.instructions.strip()}\n\nJSON schema:\n"
            f"{json.dumps(json_schema, separators=(',', ':'))}"
        )
        content: list[ChatCompletionContentPartImageParam | ChatCompletionContentPartTextParam]
        content = []
        for page in request.pages:
            content.append(_image_part(page))
            if page.has_text_layer:
                content.append({"type": "text", "text": page_text_label(page)})
        action = "answer with the JSON object"
        content.append(
            {
                "type": "text",
                "text": instruction_text(schema, len(request.pages), action, request.feedback),
            }
        )
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system_text},
            {"role": "user", "content": content},
        ]
        response_format: ResponseFormatJSONSchema = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(schema), "schema": json_schema, "strict": True},
        }
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "response_format": response_format,
        }
        # Only when asked: vLLM rejects prompt + max_tokens above the model's context length,
        # and without a value it allows whatever room the prompt leaves.
        if request.max_tokens:
            params["max_tokens"] = request.max_tokens
        return params

    def call(self, request: ExtractionRequest) -> ProviderReply:
        params = self.build_params(request)
        client = self._get_client()
        try:
            completion = client.chat.completions.create(**params)
        except json.JSONDecodeError:
            return ProviderReply(
                data=None, usage=Usage(), problem="malformed response: body is not valid JSON"
            )
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return parse_completion(completion, params.get("max_tokens"))

    def _map_error(self, exc: Exception) -> PipelineError | None:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return connection_error(
                PROVIDER, exc, timed_out=True, timeout_s=self._timeout_s, secrets=self._secrets
            )
        if isinstance(exc, openai.APIConnectionError):
            return connection_error(
                PROVIDER, exc, timed_out=False, timeout_s=self._timeout_s, secrets=self._secrets
            )
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            detail = body.get("message") or exc.message
            error_type = body.get("type")
            headers = exc.response.headers
            return status_error(
                PROVIDER,
                exc.status_code,
                headers,
                detail=str(detail),
                request_id=exc.request_id or headers.get("x-request-id"),
                error_type=error_type if isinstance(error_type, str) else None,
                secrets=self._secrets,
            )
        if isinstance(exc, openai.OpenAIError):
            return PermanentError(
                ErrorCategory.INTERNAL,
                redact(f"{PROVIDER}: {type(exc).__name__}: {exc}", self._secrets),
            )
        return None


def _image_part(page: PageContent) -> ChatCompletionContentPartImageParam:
    media_type = page.media_type.lower()
    if not media_type.startswith("image/"):
        raise PermanentError(
            ErrorCategory.UNSUPPORTED_TYPE,
            f"page {page.index + 1}: {page.media_type!r} is not an image type",
        )
    data = base64.b64encode(page.image).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(raw: object) -> Usage | None:
    if raw is None:
        return None
    prompt = _count(getattr(raw, "prompt_tokens", None))
    completion = _count(getattr(raw, "completion_tokens", None))
    if prompt is None or completion is None:
        return None
    details = getattr(raw, "prompt_tokens_details", None)
    cached = min(_count(getattr(details, "cached_tokens", None)) or 0, prompt)
    return Usage(
        input_tokens=prompt - cached,  # prompt_tokens includes the cached ones
        output_tokens=completion,
        cache_read_input_tokens=cached,
    )


def parse_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, problem). Tolerates a ```json fence around the object."""
    fenced = _FENCE.match(text)
    candidate = fenced.group(1) if fenced else text
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        snippet = " ".join(text.split())[:80]
        return None, f"content is not valid JSON ({exc.msg} at char {exc.pos}): {snippet!r}"
    except ValueError as exc:  # e.g. an integer beyond the conversion limit
        return None, f"content is not usable JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"content is a JSON {type(value).__name__}, not an object"
    return value, None


def parse_completion(completion: ChatCompletion, max_tokens: int | None) -> ProviderReply:
    """Validate a Chat Completions reply ourselves: the SDK accepts malformed ones silently."""
    request_id = getattr(completion, "_request_id", None) or getattr(completion, "id", None)
    raw_usage = getattr(completion, "usage", None)
    usage = _usage(raw_usage)
    if usage is None:
        # Accounting only (local servers cost nothing): keep the answer, note the gap.
        log.warning("reply %s carried no usable usage block", request_id)
    choices = getattr(completion, "choices", None)

    data: dict[str, Any] | None = None
    truncated = False
    problem: str | None = None
    finish: str | None = None
    if not isinstance(choices, list) or not choices:
        problem = "malformed response: no choices"
    else:
        choice = choices[0]
        raw_finish = getattr(choice, "finish_reason", None)
        finish = raw_finish if isinstance(raw_finish, str) else None
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        refusal = getattr(message, "refusal", None)
        if finish == "length":
            truncated = True
            limit = f"max_tokens={max_tokens}" if max_tokens else "the server's token limit"
            problem = f"output truncated at {limit}"
        elif isinstance(refusal, str) and refusal.strip():
            problem = redact(f"the model refused: {refusal}", ())
        elif finish in _FINISH_PROBLEMS:
            problem = _FINISH_PROBLEMS[finish]
        elif not isinstance(content, str) or not content.strip():
            problem = "malformed response: message without content"
        else:
            data, problem = parse_json_object(content)

    return ProviderReply(
        data=data,
        usage=usage or Usage(),
        request_id=request_id if isinstance(request_id, str) else None,
        stop_reason=finish,
        truncated=truncated,
        problem=problem,
    )


@register(PROVIDER, sdk="openai")
def build(settings: Settings) -> OpenAICompatExtractor:
    return OpenAICompatExtractor(settings)
