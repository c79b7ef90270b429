"""How open-weight vision models see a page: per model family, the pixels one image token
covers and the limits of its image processor; page images sized to a model's pixel budget.

Qwen-style processors cut an image into patches and merge 2 x 2 of them into one token:
Qwen2-VL and Qwen2.5-VL use 14 px patches (one token per 28 x 28 px), Qwen3-VL 16 px patches
(32 x 32 px). The server resizes every image to multiples of that side within its processor's
[min_pixels, max_pixels]; an image sent larger than the budget wastes bandwidth and is scaled
down there anyway, so the client scales it down first, to a size the server keeps as it is.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

from PIL import Image

from pipeline.pages import encode_jpeg


@dataclass(frozen=True, slots=True)
class VisionModel:
    family: str
    token_side_px: int  # one image token covers token_side_px x token_side_px pixels
    min_pixels: int  # the processor's own bounds (its preprocessor_config.json)
    max_pixels: int

    def tokens(self, width: int, height: int) -> int:
        """Image tokens for an image of this size once the processor has sized it."""
        w, h = self.fit(width, height, self.max_pixels)
        return (w // self.token_side_px) * (h // self.token_side_px)

    def fit(self, width: int, height: int, budget: int | None = None) -> tuple[int, int]:
        """The processor's resize (Qwen's `smart_resize`): sides rounded to multiples of the
        token side, the area kept within [min_pixels, min(budget, max_pixels)]."""
        side = self.token_side_px
        limit = min(budget or self.max_pixels, self.max_pixels)
        h = max(side, round(height / side) * side)
        w = max(side, round(width / side) * side)
        if h * w > limit:
            beta = math.sqrt(height * width / limit)
            h = max(side, math.floor(height / beta / side) * side)
            w = max(side, math.floor(width / beta / side) * side)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h = math.ceil(height * beta / side) * side
            w = math.ceil(width * beta / side) * side
        return w, h


_QWEN_MAX = 16384 * 28 * 28  # 12,845,056: Qwen2/2.5-VL's default max_pixels
# Most specific first: "qwen2.5-vl" must not be taken for "qwen2-vl".
_FAMILIES: tuple[tuple[re.Pattern[str], VisionModel], ...] = (
    (
        re.compile(r"qwen3[-_.]?vl", re.IGNORECASE),
        VisionModel("Qwen3-VL", token_side_px=32, min_pixels=65_536, max_pixels=16_777_216),
    ),
    (
        re.compile(r"qwen2\.5[-_.]?vl|olmocr", re.IGNORECASE),
        VisionModel("Qwen2.5-VL", token_side_px=28, min_pixels=3_136, max_pixels=_QWEN_MAX),
    ),
    (
        re.compile(r"qwen2[-_.]?vl", re.IGNORECASE),
        VisionModel("Qwen2-VL", token_side_px=28, min_pixels=3_136, max_pixels=_QWEN_MAX),
    ),
)


def vision_model(model_id: str) -> VisionModel | None:
    """The family of a served model id ("Qwen/Qwen3-VL-8B-Instruct-FP8" is Qwen3-VL); None
    for a model whose image processing is not known here (its images go as rendered)."""
    for pattern, model in _FAMILIES:
        if pattern.search(model_id):
            return model
    return None


def fit_image(
    image: bytes, width: int, height: int, model: VisionModel, budget: int | None
) -> tuple[bytes, int, int]:
    """The page image as the model should get it: unchanged when the server would keep it as
    it is, else scaled down (never up) to the size the server's processor would make of it
    within `budget` pixels. Returns (JPEG bytes, width, height)."""
    target_w, target_h = model.fit(width, height, budget)
    if target_w * target_h >= width * height:
        return image, width, height  # within budget: the server only rounds the sides
    with Image.open(io.BytesIO(image)) as opened:
        resized = opened.convert("RGB").resize((target_w, target_h), Image.Resampling.LANCZOS)
    return encode_jpeg(resized), target_w, target_h
