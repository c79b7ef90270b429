"""Pytest fixtures for the fake model server, and small builders for extractor inputs.

Use from a test module (or a conftest) with::

    from tests.support.fake_model_fixtures import fake_model_server, fake_model_server_session

One server runs per test session; `fake_model_server` resets it before and after each test, so
scripts, recorded requests, latency and fault settings never leak between tests.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from pipeline.domain import ExtractionRequest, PageContent
from pipeline.schemas import SchemaSpec, get_schema
from tests.support.fake_model_server import FakeModelServer


@pytest.fixture(scope="session")
def fake_model_server_session() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_model_server(fake_model_server_session: FakeModelServer) -> Iterator[FakeModelServer]:
    server = fake_model_server_session
    server.reset()
    yield server
    server.reset()


class NoRenderer:
    """A PageRenderer for requests whose extractor must not re-render pages."""

    def render(self, index: int, dpi: int) -> Image.Image:
        raise AssertionError(f"unexpected re-render of page {index} at {dpi} dpi")


def sample_jpeg(width: int = 240, height: int = 340, label: str = "INVOICE") -> bytes:
    """A small JPEG that looks vaguely like a page."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), label, fill="black")
    draw.rectangle((12, 60, width - 12, 120), outline="black")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    return out.getvalue()


def sample_page(
    index: int = 0,
    *,
    text: str = "",
    width: int = 240,
    height: int = 340,
    media_type: str = "image/jpeg",
) -> PageContent:
    image = sample_jpeg(width, height, label=f"INVOICE page {index + 1}")
    return PageContent(
        index=index,
        width_pt=595.0,
        height_pt=842.0,
        image=image,
        media_type=media_type,
        pixel_width=width,
        pixel_height=height,
        render_dpi=width * 72.0 / 595.0,
        image_sha256=hashlib.sha256(image).hexdigest(),
        text=text,
    )


def sample_request(
    pages: list[PageContent] | None = None,
    *,
    schema: SchemaSpec | None = None,
    feedback: str | None = None,
    max_tokens: int | None = None,
) -> ExtractionRequest:
    return ExtractionRequest(
        schema=schema or get_schema("invoice"),
        pages=pages if pages is not None else [sample_page(0, text="Invoice INV-2026-0042")],
        renderer=NoRenderer(),
        feedback=feedback,
        max_tokens=max_tokens,
    )
