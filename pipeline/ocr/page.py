"""One page through OCR: prepared once (scaled, straightened, cleaned), read in parallel strips,
any region re-read alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache

import cv2
import numpy as np
from PIL import Image

from pipeline.domain import Word
from pipeline.ocr.engine import GrayImage, run_tesseract
from pipeline.ocr.options import OcrOptions
from pipeline.ocr.preprocess import (
    denoise,
    estimate_skew,
    flatten_background,
    glyph_height,
    remove_rulings,
    rotate,
    uneven_background,
)
from pipeline.ocr.timing import timed


@dataclass(slots=True)
class PreparedPage:
    """A page image straightened and cleaned for Tesseract, `dpi` pixels per inch. The same
    input always gives the same image, so word boxes from an earlier read still fit it."""

    image: GrayImage
    dpi: float
    options: OcrOptions
    steps: list[str] = field(default_factory=list)  # the clean-up steps that ran

    def read(self) -> list[Word]:
        """Every word on the page, in points."""
        if self.image.size == 0:
            return []
        words = _read_in_strips(self.image, self.dpi, self.options)
        factor = 72.0 / self.dpi
        return [
            Word(
                w.text, w.x0 * factor, w.y0 * factor, w.x1 * factor, w.y1 * factor, w.block, w.line
            )
            for w in words
        ]

    def reread(self, box: tuple[float, float, float, float], charset: str | None = None) -> str:
        """Text of the region `box` (x0, y0, x1, y1 in points) read as one line, optionally
        restricted to `charset`: a value garbled in the page read ("01 1 1 .2024") often
        reads right alone ("01.11.2024"). Empty when there is nothing to read."""
        x0, y0, x1, y1 = box
        factor = self.dpi / 72.0
        margin = 0.15 * (y1 - y0)
        top = max(int((y0 - margin) * factor), 0)
        bottom = min(int((y1 + margin) * factor) + 1, self.image.shape[0])
        left = max(int((x0 - margin) * factor), 0)
        right = min(int((x1 + margin) * factor) + 1, self.image.shape[1])
        if bottom - top < 4 or right - left < 4:
            return ""
        crop = cv2.copyMakeBorder(
            self.image[top:bottom, left:right], 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255
        )
        config = [f"tessedit_char_whitelist={charset}"] if charset else []
        line_options = replace(self.options, psm=7)
        if charset and not any(c.isalpha() for c in charset):
            # Digits read the same in every language: one model is enough.
            line_options = replace(line_options, languages="eng")
        words = run_tesseract(np.asarray(crop, dtype=np.uint8), self.dpi, line_options, config)
        return " ".join(w.text for w in words)


@dataclass(slots=True)
class OcrPage:
    """One page's OCR: its words in points, and the prepared image for re-reading."""

    words: list[Word]
    prepared: PreparedPage

    def reread(self, box: tuple[float, float, float, float], charset: str | None = None) -> str:
        return self.prepared.reread(box, charset)


def ocr_page(
    image: Image.Image, page_width_pt: float, options: OcrOptions | None = None
) -> list[Word]:
    """Words of one page image, in PDF points of a page `page_width_pt` wide."""
    return read_page(image, page_width_pt, options).words


def read_page(
    image: Image.Image, page_width_pt: float, options: OcrOptions | None = None
) -> OcrPage:
    """OCR one page image of a page `page_width_pt` wide; words in PDF points.

    Coordinates refer to the straightened page when the scan was rotated.
    """
    prepared = prepare_page(image, page_width_pt, options)
    return OcrPage(prepared.read(), prepared)


def prepare_page(
    image: Image.Image, page_width_pt: float, options: OcrOptions | None = None
) -> PreparedPage:
    """Scale to the target resolution, straighten, flatten the background, remove rulings,
    denoise: each step as `options` say."""
    options = options or OcrOptions()
    with timed("decode"):
        gray = np.asarray(image.convert("L"), dtype=np.uint8)
    if gray.size == 0 or page_width_pt <= 0:
        return PreparedPage(np.zeros((0, 0), dtype=np.uint8), 72.0, options)
    always = options.preprocess == "always"
    steps: list[str] = []
    with timed("preprocess"):
        dpi = gray.shape[1] * 72.0 / page_width_pt
        scale = 1.0
        if always and dpi < options.target_dpi * 0.8:
            # Low-resolution scans: upsampling gives Tesseract the glyph size it was trained on.
            scale = min(options.target_dpi / dpi, 2.5)
        elif not always:
            # By the text actually printed, not the resolution a file claims (a photo's is
            # meaningless): small print is enlarged, a 12-megapixel photo reduced. Tesseract
            # scales every line to one height for recognition, so the enlargement costs only
            # in the per-pixel steps.
            height = glyph_height(gray)
            if height is not None:
                wanted = min(max(options.glyph_px / height, 0.4), 2.5)
                scale = wanted if abs(wanted - 1.0) > 0.15 else 1.0
        interpolation = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_AREA
        if scale != 1.0:
            gray = np.asarray(
                cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interpolation),
                dtype=np.uint8,
            )
            steps.append(f"scale {scale:.2f}")
        work_dpi = dpi * scale
        if options.deskew:
            angle = estimate_skew(gray, size=1000 if always else 600)
            if abs(angle) >= (0.1 if always else 0.3):
                gray = rotate(gray, angle)
                steps.append(f"deskew {angle:.2f}")
        if options.flatten and (always or uneven_background(gray)):
            gray = flatten_background(gray, work_dpi)
            steps.append("flatten")
        if options.remove_lines:
            gray = remove_rulings(gray, work_dpi)
            steps.append("rulings")
        if options.denoise:
            gray = denoise(gray)
            steps.append("denoise")
    return PreparedPage(gray, work_dpi, options, steps)


def blank_row_cuts(gray: GrayImage, parts: int) -> list[int]:
    """Rows to cut the page at into `parts` strips: the middle of the blank band nearest each
    ideal cut, so no text line is split. Fewer cuts when there is no blank band near."""
    if parts <= 1:
        return []
    ink = (gray < 128).sum(axis=1)
    blank = ink <= max(2, int(0.0005 * gray.shape[1]))
    height = gray.shape[0]
    cuts: list[int] = []
    for k in range(1, parts):
        ideal = height * k // parts
        window = height // (4 * parts)
        best: tuple[int, int] | None = None  # (distance, row)
        row = max(ideal - window, 1)
        while row < min(ideal + window, height - 1):
            if blank[row]:
                start = row
                while row < height - 1 and blank[row]:
                    row += 1
                if row - start >= 6:  # a real gap between lines, not a gap inside a glyph
                    middle = (start + row) // 2
                    distance = abs(middle - ideal)
                    if best is None or distance < best[0]:
                        best = (distance, middle)
            row += 1
        if best is not None:
            cuts.append(best[1])
    return sorted(set(cuts))


@cache
def _pool() -> ThreadPoolExecutor:
    # Long-lived threads: each keeps its engines, so strips do not load the models again.
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="ocr-strip")


def _read_in_strips(gray: GrayImage, dpi: float, options: OcrOptions) -> list[Word]:
    cuts = blank_row_cuts(gray, options.strips)
    bounds = list(zip([0, *cuts], [*cuts, gray.shape[0]], strict=True))
    if len(bounds) == 1:
        return run_tesseract(gray, dpi, options)
    results = list(_pool().map(lambda b: run_tesseract(gray[b[0] : b[1]], dpi, options), bounds))
    words: list[Word] = []
    line_offset = 0
    for (top, _), strip in zip(bounds, results, strict=True):
        for w in strip:
            words.append(
                Word(w.text, w.x0, w.y0 + top, w.x1, w.y1 + top, w.block, w.line + line_offset)
            )
        line_offset += 1 + max((w.line for w in strip), default=0)
    return words
