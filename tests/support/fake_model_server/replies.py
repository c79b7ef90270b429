"""The fake server's model answers: Anthropic messages and token counts, OpenAI completions."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tests.support.fake_model_server.recorded import (
    RecordedRequest,
    _find_cache_control,
    _image_tokens,
    _text_tokens,
)
from tests.support.fake_model_server.scripting import Scripted
from tests.support.fake_model_server.state import ServerState


class ReplyingServer(ServerState):
    """The server's state, answering model calls in each API's shape."""

    # --- Anthropic -------------------------------------------------------------------------

    def _anthropic_usage(self, body: dict[str, Any], output_text: str) -> dict[str, Any]:
        tools = body.get("tools") or []
        system = body.get("system") or ""
        prefix_tokens = _text_tokens({"tools": tools, "system": system})
        rest_tokens = _text_tokens(body.get("messages")) + _image_tokens(body.get("messages"), 750)
        marked = bool(list(_find_cache_control({"tools": tools, "system": system}, "")))
        model = body.get("model")
        model = model if isinstance(model, str) else None
        creation = read = 0
        key = {"model": model, "tools": tools, "system": system}
        if marked and self._cache_split(key, prefix_tokens, model):
            read = prefix_tokens
        elif marked and prefix_tokens >= self._cache_min(model):
            creation = prefix_tokens
        else:
            rest_tokens += prefix_tokens
        return {
            "input_tokens": max(1, rest_tokens),
            "output_tokens": max(1, math.ceil(len(output_text) / 4)),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "service_tier": "standard",
        }

    def _anthropic_body(self, request: RecordedRequest, scripted: Scripted) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        fields = dict(scripted.fields) if scripted.fields is not None else self.fields
        tool_name = _forced_tool_name(body)
        tool_input: Any = fields
        stop_reason = "tool_use"
        kind = scripted.kind
        if kind == "max_tokens":
            stop_reason = "max_tokens"
            cut = json.dumps(fields)[: max(1, len(json.dumps(fields)) // 3)]
            tool_input = {}
            content: list[dict[str, Any]] = [_tool_use_block(tool_name, tool_input)]
            usage = self._anthropic_usage(body, cut)
            usage["output_tokens"] = request.max_tokens or usage["output_tokens"]
        elif kind == "no_tool_use" or tool_name is None:
            text = json.dumps(fields) if tool_name is None else "I could not read this document."
            content = [{"type": "text", "text": text, "citations": None}]
            stop_reason = "end_turn"
            usage = self._anthropic_usage(body, text)
        elif kind == "refusal":
            content = []
            stop_reason = "refusal"
            usage = self._anthropic_usage(body, "")
        elif kind in ("pause_turn", "context_window_exceeded"):
            content = []
            stop_reason = "pause_turn" if kind == "pause_turn" else "model_context_window_exceeded"
            usage = self._anthropic_usage(body, "")
        else:
            block = _tool_use_block(tool_name, tool_input)
            if kind == "tool_use_without_input":
                del block["input"]
            elif kind == "tool_use_input_not_object":
                block["input"] = json.dumps(fields)
            content = [block]
            usage = self._anthropic_usage(body, json.dumps(fields))
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake-model"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if kind == "no_usage":
            del message["usage"]
        elif scripted.usage:
            message["usage"].update(scripted.usage)
        return message

    def _anthropic_count_tokens(self, request: RecordedRequest) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        tokens = (
            _text_tokens({"tools": body.get("tools"), "system": body.get("system")})
            + _text_tokens(body.get("messages"))
            + _image_tokens(body.get("messages"), 750)
        )
        return {"input_tokens": max(1, tokens)}

    # --- OpenAI ----------------------------------------------------------------------------

    def _openai_body(self, request: RecordedRequest, scripted: Scripted) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        fields = dict(scripted.fields) if scripted.fields is not None else self.fields
        messages = body.get("messages") or []
        system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
        others = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
        prefix_tokens = _text_tokens(system)
        prompt_tokens = max(1, prefix_tokens + _text_tokens(others) + _image_tokens(others, 784))
        model = body.get("model") if isinstance(body.get("model"), str) else None
        cached = prefix_tokens if system and self._cache_split(system, prefix_tokens, model) else 0

        text: str | None = json.dumps(fields)
        finish_reason = "stop"
        refusal: str | None = None
        kind = scripted.kind
        if kind == "max_tokens":
            assert text is not None
            text = text[: max(1, len(text) // 3)]
            finish_reason = "length"
        elif kind == "no_tool_use":
            text = "Here is the invoice: number INV-2026-0042, total 178.50 EUR."
        elif kind == "invalid_json":
            text = '{"invoice_number": "INV-2026-0042", "total": '
        elif kind == "tool_use_input_not_object":
            text = json.dumps([fields])
        elif kind == "tool_use_without_input":
            text = None
        elif kind == "refusal":
            text, refusal = None, "I can't help with that."
        completion_tokens = max(1, math.ceil(len(text or refusal or "") / 4))
        if kind == "max_tokens" and request.max_tokens:
            completion_tokens = request.max_tokens
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ]
        completion: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [] if kind == "no_choices" else choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }
        if kind == "no_usage":
            del completion["usage"]
        return completion


def _forced_tool_name(body: Mapping[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict) and tools[0].get("name"):
        return str(tools[0]["name"])
    return None


def _tool_use_block(name: str | None, tool_input: Any) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name or "record",
        "input": tool_input,
    }
