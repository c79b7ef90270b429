"""OCR settings: which languages, how to clean a page up, at what resolution; THOROUGH and
FAST, and both with the deployment's own values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pipeline.settings import Settings


DEFAULT_LANGUAGES = "eng+deu+fra+nld"
_TARGET_DPI = 300  # Tesseract is most accurate with a capital height of ~20-30 px
Preprocess = Literal["always", "when-needed"]


@dataclass(frozen=True, slots=True)
class OcrOptions:
    languages: str = DEFAULT_LANGUAGES
    psm: int = 6  # one uniform block: keeps table rows on one line; the rules do the layout
    timeout_s: float = 120.0
    deskew: bool = True
    remove_lines: bool = True
    flatten: bool = True
    denoise: bool = True
    min_confidence: float = 0.0
    # Read a page as this many strips in parallel threads (wall time about halves on 2 cores;
    # use 1 when every core already has a worker).
    strips: int = 1
    # Pages scanned below 0.8 x this are upsampled to it (glyph size Tesseract was trained on).
    target_dpi: float = _TARGET_DPI
    # "when-needed": each clean-up step runs only when a cheap test says the page needs it
    # (skewed, shaded background); "always": every enabled step runs.
    preprocess: Preprocess = "always"
    # "when-needed": the median glyph height (pixels) the page is scaled to, whatever its dpi.
    glyph_px: float = 18.0
    tessdata: str | None = None  # None: the distribution's language data folder


# The offline extractor reads every value off the page: accuracy first.
THOROUGH = OcrOptions()
# Grounding a model's answer: the values are known, the words only have to be found. The
# page scaled by its printed text to ~18 px glyphs (about 200 dpi for 10 pt print) instead of
# always 300 dpi, deskewing and background flattening only where the page needs them. The
# four languages stay: Tesseract consults the others only on doubtful words, so they cost
# ~3% on invoices and read them better (bench/README.md has the settings compared).
FAST = OcrOptions(target_dpi=150, preprocess="when-needed")


def thorough_options(settings: Settings) -> OcrOptions:
    """The offline extractor's setting, with the deployment's languages and threads."""
    return replace(
        THOROUGH,
        languages=settings.ocr_languages,
        target_dpi=settings.ocr_dpi,
        strips=settings.ocr_strips,
        tessdata=settings.ocr_tessdata_dir,
    )


def fast_options(settings: Settings) -> OcrOptions:
    """The setting for grounding a model's answer."""
    return replace(
        FAST,
        languages=settings.ocr_grounding_languages,
        target_dpi=settings.ocr_grounding_dpi,
        strips=settings.ocr_strips,
        tessdata=settings.ocr_tessdata_dir,
    )
