"""Offline OCR: read positioned words from a page image with Tesseract, in process.

Tesseract runs inside the worker (tesserocr, whose wheel carries its own libtesseract; the
language data is Debian's), one engine per thread and language set, loaded once: a page costs
its reading, not a process start and a model load (0.1-0.5 s each). Two settings: THOROUGH
(the offline extractor: 300 dpi, four languages, every clean-up step) and FAST (grounding a
model's answer: the page scaled by its printed text, deskewing and flattening only where a
page needs them). bench/README.md has the measurements behind both."""

from pipeline.ocr.engine import GrayImage, engine_version, parse_tsv, run_tesseract, tessdata_dir
from pipeline.ocr.options import (
    DEFAULT_LANGUAGES,
    FAST,
    THOROUGH,
    OcrOptions,
    Preprocess,
    fast_options,
    thorough_options,
)
from pipeline.ocr.page import (
    OcrPage,
    PreparedPage,
    blank_row_cuts,
    ocr_page,
    prepare_page,
    read_page,
)
from pipeline.ocr.preprocess import (
    denoise,
    estimate_skew,
    flatten_background,
    glyph_height,
    one_thread_per_call,
    remove_rulings,
    rotate,
    uneven_background,
)
from pipeline.ocr.timing import STEPS, step_cpu, timed

__all__ = [
    "DEFAULT_LANGUAGES",
    "FAST",
    "STEPS",
    "THOROUGH",
    "GrayImage",
    "OcrOptions",
    "OcrPage",
    "PreparedPage",
    "Preprocess",
    "blank_row_cuts",
    "denoise",
    "engine_version",
    "estimate_skew",
    "fast_options",
    "flatten_background",
    "glyph_height",
    "ocr_page",
    "one_thread_per_call",
    "parse_tsv",
    "prepare_page",
    "read_page",
    "remove_rulings",
    "rotate",
    "run_tesseract",
    "step_cpu",
    "tessdata_dir",
    "thorough_options",
    "timed",
    "uneven_background",
]
