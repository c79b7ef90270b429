"""Requests as the fake server recorded them, and what they hold: texts, images, tokens."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

Api = Literal["anthropic", "openai", "count_tokens", "batches", "batch_item", "unknown"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it."""

    seq: int
    api: Api
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; credentials redacted
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw_size: int
    request_id: str
    auth: Literal["bearer", "x-api-key"] | None
    received_at: float  # time.monotonic()

    @property
    def max_tokens(self) -> int | None:
        value = self.body.get("max_tokens") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) else None

    @property
    def model(self) -> str | None:
        value = self.body.get("model") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None

    def texts(self) -> list[str]:
        """Every text in the request: system prompt, text blocks, tool descriptions."""
        return [text for text, _ in _walk_texts(self.body)]

    def prompt_text(self) -> str:
        return "\n".join(self.texts())

    def images(self) -> list[tuple[str, int, int]]:
        """(media type, width, height) of every base64 image in the request."""
        return [(media, w, h) for media, w, h, _ in _walk_images(self.body)]

    def cache_control_markers(self) -> list[str]:
        """Where `cache_control` appears: "tools[0]", "system[0]", "messages[0].content[2]"…"""
        return list(_find_cache_control(self.body, ""))


def _walk_texts(node: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Yield (text, where) for prompt texts: `text` fields, string system prompts, descriptions."""
    if depth > 50:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("text", "description", "system", "content") and isinstance(value, str):
                yield value, key
            elif key in ("input_schema", "schema", "image_url", "source"):
                continue
            else:
                yield from _walk_texts(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_texts(item, depth + 1)


def _walk_images(node: Any, depth: int = 0) -> Iterator[tuple[str, int, int, int]]:
    """Yield (media type, width, height, bytes) for base64 images in either API's shape."""
    if depth > 50:
        return
    if isinstance(node, dict):
        source = node.get("source")
        if node.get("type") == "image" and isinstance(source, dict):
            if source.get("type") == "base64" and isinstance(source.get("data"), str):
                yield _describe_image(str(source.get("media_type", "")), source["data"])
            return
        image_url = node.get("image_url")
        if node.get("type") == "image_url" and isinstance(image_url, dict):
            url = image_url.get("url")
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                head, data = url[5:].split(";base64,", 1)
                yield _describe_image(head, data)
            return
        for value in node.values():
            yield from _walk_images(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_images(item, depth + 1)


def _describe_image(media_type: str, data: str) -> tuple[str, int, int, int]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return media_type, 0, 0, 0
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        width = height = 0
    return media_type, width, height, len(raw)


def _text_tokens(node: Any) -> int:
    chars = sum(len(text) for text, _ in _walk_texts(node))
    if isinstance(node, dict) and node.get("tools"):
        chars += len(json.dumps(node["tools"]))  # schemas count too
    return math.ceil(chars / 4)


def _image_tokens(node: Any, pixels_per_token: int) -> int:
    total = 0
    for _, raw_width, raw_height, size in _walk_images(node):
        if not raw_width:
            total += math.ceil(size / 100)
            continue
        width, height = raw_width, raw_height
        if pixels_per_token == 750:
            # Anthropic scales an image down (keeping its aspect ratio) to a long edge of at
            # most 1568 px and at most ~1,600 tokens before counting it.
            scale = min(1.0, 1568 / max(width, height), math.sqrt(1600 * 750 / (width * height)))
            width, height = int(width * scale), int(height * scale)
        total += math.ceil(width * height / pixels_per_token)
    return total


def _find_cache_control(node: Any, where: str, depth: int = 0) -> Iterator[str]:
    if depth > 50:
        return
    if isinstance(node, dict):
        if node.get("cache_control"):
            yield where or "."
        for key, value in node.items():
            if key in ("input_schema", "schema", "cache_control"):
                continue
            child = f"{where}.{key}" if where else key
            yield from _find_cache_control(value, child, depth + 1)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _find_cache_control(item, f"{where}[{i}]", depth + 1)
