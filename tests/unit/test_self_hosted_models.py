"""Current open-weight models behind vLLM: the request shapes for Qwen2-VL, Qwen2.5-VL and
Qwen3-VL, driven through the real `openai` SDK against the fake model server."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from pipeline.extractors.openai_compat import OpenAICompatExtractor
from pipeline.schemas import get_schema
from pipeline.settings import Settings, load_settings
from pipeline.vlm_images import vision_model
from tests.support.fake_model_fixtures import sample_page, sample_request
from tests.support.fake_model_server import FakeModelServer

A4_PAGE = (1109, 1568)  # an A4 page at the default 1568 px long edge
BUDGET = 1280 * 28 * 28  # 1,003,520 px: Qwen's suggested upper bound for a smaller GPU


def _extractor(server: FakeModelServer, model: str, **overrides: Any) -> OpenAICompatExtractor:
    settings = load_settings(
        openai_base_url=server.openai_base_url, openai_model=model, **overrides
    )
    return OpenAICompatExtractor(settings)


def _sent_images(server: FakeModelServer) -> list[Image.Image]:
    content = server.last_request.body["messages"][1]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    images = []
    for url in urls:
        header, _, payload = url.partition(",")
        assert header == "data:image/jpeg;base64"
        images.append(Image.open(io.BytesIO(base64.b64decode(payload))))
    return images


@pytest.mark.parametrize(
    ("model", "family", "side"),
    [
        ("Qwen/Qwen2-VL-7B-Instruct", "Qwen2-VL", 28),
        ("Qwen/Qwen2.5-VL-7B-Instruct-AWQ", "Qwen2.5-VL", 28),
        ("Qwen/Qwen3-VL-8B-Instruct-FP8", "Qwen3-VL", 32),
        ("Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen3-VL", 32),
        ("allenai/olmOCR-2-7B-1025", "Qwen2.5-VL", 28),
    ],
)
def test_model_families_are_recognised(model: str, family: str, side: int) -> None:
    found = vision_model(model)
    assert found is not None and found.family == family and found.token_side_px == side


def test_an_unknown_model_has_no_family() -> None:
    assert vision_model("llava-hf/llava-v1.6-mistral-7b-hf") is None


def test_tokens_per_a4_page() -> None:
    # Qwen2.5-VL: 40 x 56 tokens of 28 px; Qwen3-VL: 35 x 49 tokens of 32 px.
    qwen25, qwen3 = vision_model("Qwen/Qwen2.5-VL-7B-Instruct"), vision_model("Qwen/Qwen3-VL-8B")
    assert qwen25 is not None and qwen3 is not None
    assert qwen25.tokens(*A4_PAGE) == 2240 and qwen3.tokens(*A4_PAGE) == 1715


@pytest.mark.parametrize(
    ("model", "side"),
    [
        ("Qwen/Qwen2-VL-7B-Instruct", 28),
        ("Qwen/Qwen2.5-VL-7B-Instruct", 28),
        ("Qwen/Qwen3-VL-8B-Instruct", 32),
    ],
)
def test_request_shape_for_vllm_json_schema_decoding(
    fake_model_server: FakeModelServer, model: str, side: int
) -> None:
    extractor = _extractor(fake_model_server, model, openai_max_pixels=BUDGET)
    pages = [sample_page(i, width=A4_PAGE[0], height=A4_PAGE[1], text="Invoice") for i in range(2)]

    reply = extractor.call(sample_request(pages))

    assert reply.data is not None and reply.problem is None
    body = fake_model_server.last_request.body
    assert body["model"] == model
    # vLLM's structured outputs: the schema itself, strict, under a plain name.
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "invoice",
            "schema": get_schema("invoice").json_schema(),
            "strict": True,
        },
    }
    assert "max_tokens" not in body  # vLLM gives the reply the room the context leaves
    system, user = body["messages"]
    assert system["role"] == "system" and "JSON schema" in system["content"]
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["image_url", "text", "image_url", "text", "text"]
    for image in _sent_images(fake_model_server):
        # Sized as the model's processor sizes it: whole tokens, within the pixel budget, so
        # vLLM keeps the image as sent.
        assert image.width % side == 0 and image.height % side == 0
        assert image.width * image.height <= BUDGET
        assert abs(image.width / image.height - A4_PAGE[0] / A4_PAGE[1]) < 0.03


def test_within_budget_the_rendered_page_is_sent_as_it_is(
    fake_model_server: FakeModelServer,
) -> None:
    extractor = _extractor(fake_model_server, "Qwen/Qwen3-VL-8B-Instruct")
    page = sample_page(0, width=A4_PAGE[0], height=A4_PAGE[1])

    extractor.call(sample_request([page]))

    [image] = _sent_images(fake_model_server)
    assert image.size == A4_PAGE  # no budget set: the server only rounds the sides


def test_an_unknown_model_gets_the_rendered_page(fake_model_server: FakeModelServer) -> None:
    extractor = _extractor(fake_model_server, "some/vision-model", openai_max_pixels=BUDGET)
    page = sample_page(0, width=A4_PAGE[0], height=A4_PAGE[1])

    extractor.call(sample_request([page]))

    [image] = _sent_images(fake_model_server)
    assert image.size == A4_PAGE


def test_the_default_model_is_a_current_one() -> None:
    default = Settings.model_fields["openai_model"].default
    found = vision_model(default)
    assert found is not None and found.family == "Qwen3-VL"
