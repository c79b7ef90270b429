"""Offline OCR: read positioned words from a page image with Tesseract, in process.

Tesseract runs inside the worker (Debian's libtesseract, the library the `tesseract` command
uses, through its C API), one engine per thread and language set, loaded once: a page costs
its reading, not a process start and a model load (0.1-0.5 s each). Two settings: THOROUGH
(the offline extractor: 300 dpi, four languages, every clean-up step) and FAST (grounding a
model's answer: the page scaled by its printed text, deskewing and flattening only where a
page needs them). bench/README.md has the measurements behind both."""

from __future__ import annotations

import atexit
import csv
import ctypes
import ctypes.util
import io
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.domain import Word
from pipeline.errors import ErrorCategory, PermanentError, TransientError

if TYPE_CHECKING:
    from pipeline.settings import Settings

DEFAULT_LANGUAGES = "eng+deu+fra+nld"
_TARGET_DPI = 300  # Tesseract is most accurate with a capital height of ~20-30 px
# Where Debian and most distributions put the language data (tesseract-ocr-<lang> packages).
_TESSDATA_GLOBS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata")
_TESSDATA_DIRS = ("/usr/local/share/tessdata",)

GrayImage = npt.NDArray[np.uint8]
# The column names the tesseract CLI prints; the API's TSV comes without them.
_TSV_HEADER = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num"
    "\tleft\ttop\twidth\theight\tconf\ttext\n"
)
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


# --- CPU per step --------------------------------------------------------------------------

STEPS = ("decode", "preprocess", "detect", "recognise")


class _StepClock(threading.local):
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}


_clock = _StepClock()


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Add this thread's CPU time inside the block to `step` (see `step_cpu`)."""
    start = time.thread_time()
    try:
        yield
    finally:
        _clock.totals[step] = _clock.totals.get(step, 0.0) + time.thread_time() - start


def step_cpu(reset: bool = False) -> dict[str, float]:
    """CPU seconds this thread spent per OCR step (decode, preprocess, detect, recognise)."""
    totals = dict(_clock.totals)
    if reset:
        _clock.totals.clear()
    return totals


# --- the engine ----------------------------------------------------------------------------


@cache
def _tessdata_candidates() -> tuple[Path, ...]:
    found: list[Path] = []
    for pattern in _TESSDATA_GLOBS:
        root, _, rest = pattern.partition("*")
        if rest:
            base = Path(root)
            found.extend(sorted(base.glob("*" + rest), reverse=True) if base.is_dir() else [])
        elif Path(pattern).is_dir():
            found.append(Path(pattern))
    found.extend(Path(d) for d in _TESSDATA_DIRS if Path(d).is_dir())
    return tuple(found)


def tessdata_dir(languages: str, explicit: str | None = None) -> str:
    """The folder holding every language of `languages` ("eng+deu"); a configuration error
    naming the missing Debian packages otherwise."""
    wanted = [lang for lang in languages.split("+") if lang]
    candidates = (Path(explicit),) if explicit else _tessdata_candidates()
    for folder in candidates:
        if all((folder / f"{lang}.traineddata").is_file() for lang in wanted):
            return str(folder)
    packages = " ".join(f"tesseract-ocr-{lang}" for lang in wanted)
    where = explicit or "the tessdata folders"
    raise PermanentError(
        ErrorCategory.CONFIGURATION,
        f"Tesseract language data for {languages!r} not found in {where}: "
        f"apt-get install tesseract-ocr {packages}",
    )


class _Library:
    """Debian's libtesseract (the library the `tesseract` command runs on), through its C API.

    ctypes releases the GIL for each call, so threads read pages in parallel."""

    def __init__(self) -> None:
        # The library parallelises its LSTM with OpenMP: on a busy 2-core worker that made it
        # 2.5-4x slower for the same output (FIELD-NOTES). The limit is read once, when
        # libgomp loads, so it must be in the environment before the library is.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        name = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                "libtesseract not installed: apt-get install tesseract-ocr",
            ) from None
        handle, text = ctypes.c_void_p, ctypes.c_char_p
        for fn, args, result in (
            ("TessVersion", [], text),
            ("TessBaseAPICreate", [], handle),
            ("TessBaseAPIDelete", [handle], None),
            ("TessBaseAPIInit2", [handle, text, text, ctypes.c_int], ctypes.c_int),
            ("TessBaseAPISetVariable", [handle, text, text], ctypes.c_int),
            ("TessBaseAPIGetStringVariable", [handle, text], text),
            ("TessBaseAPISetPageSegMode", [handle, ctypes.c_int], None),
            ("TessBaseAPISetImage", [handle, handle] + [ctypes.c_int] * 4, None),
            ("TessBaseAPISetSourceResolution", [handle, ctypes.c_int], None),
            ("TessBaseAPIAnalyseLayout", [handle], handle),
            ("TessPageIteratorDelete", [handle], None),
            ("TessBaseAPIRecognize", [handle, handle], ctypes.c_int),
            ("TessBaseAPIGetTsvText", [handle, ctypes.c_int], handle),
            ("TessDeleteText", [handle], None),
            ("TessBaseAPIClear", [handle], None),
            ("TessMonitorCreate", [], handle),
            ("TessMonitorDelete", [handle], None),
            ("TessMonitorSetDeadlineMSecs", [handle, ctypes.c_int], None),
        ):
            function = getattr(lib, fn)
            function.argtypes, function.restype = args, result
        self.lib = lib
        self.version = (lib.TessVersion() or b"?").decode()


@cache
def _library() -> _Library:
    return _Library()


class _Engine:
    """One initialised Tesseract (models loaded once); not thread-safe: one per thread."""

    def __init__(self, folder: str, languages: str) -> None:
        self.lib = _library().lib
        self.handle = self.lib.TessBaseAPICreate()
        if self.lib.TessBaseAPIInit2(self.handle, folder.encode(), languages.encode(), 1) != 0:
            self.lib.TessBaseAPIDelete(self.handle)
            raise PermanentError(
                ErrorCategory.CONFIGURATION, f"Tesseract could not load {languages!r} from {folder}"
            )
        # Light-on-dark text is inverted in preprocessing; skipping Tesseract's inverted retry
        # of every doubtful line saves 5-15%.
        self.set("tessedit_do_invert", "0")

    def set(self, name: str, value: str) -> None:
        self.lib.TessBaseAPISetVariable(self.handle, name.encode(), value.encode())

    def get(self, name: str) -> str:
        value = self.lib.TessBaseAPIGetStringVariable(self.handle, name.encode())
        return value.decode() if value else ""

    def read_tsv(self, image: GrayImage, dpi: float, psm: int, timeout_s: float) -> str:
        """Tesseract's TSV rows (without the header line) for one grey image."""
        lib, handle = self.lib, self.handle
        height, width = image.shape
        lib.TessBaseAPISetPageSegMode(handle, psm)
        try:
            with timed("detect"):
                lib.TessBaseAPISetImage(handle, image.ctypes.data, width, height, 1, width)
                lib.TessBaseAPISetSourceResolution(handle, max(round(dpi), 70))
                layout = lib.TessBaseAPIAnalyseLayout(handle)  # the recognition reuses it
                if layout:
                    lib.TessPageIteratorDelete(layout)
            with timed("recognise"):
                monitor = lib.TessMonitorCreate()
                try:
                    lib.TessMonitorSetDeadlineMSecs(monitor, round(timeout_s * 1000))
                    failed = lib.TessBaseAPIRecognize(handle, monitor) != 0
                finally:
                    lib.TessMonitorDelete(monitor)
                if failed:
                    raise TransientError(
                        ErrorCategory.TIMEOUT, f"OCR took longer than {timeout_s:.0f} s"
                    )
                raw = lib.TessBaseAPIGetTsvText(handle, 0)
                try:
                    return ctypes.string_at(raw).decode("utf-8", "replace") if raw else ""
                finally:
                    if raw:
                        lib.TessDeleteText(raw)
        finally:
            lib.TessBaseAPIClear(handle)  # the page and its results; the models stay

    def close(self) -> None:
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self.lib.TessBaseAPIDelete(handle)

    def __del__(self) -> None:
        self.close()


_live: weakref.WeakSet[_Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    # Before the library's own static destructors run: an engine still open then makes it
    # print a "LEAK!" warning per model.
    for engine in list(_live):
        engine.close()


class _Engines(threading.local):
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], _Engine] = {}


_engines = _Engines()


def _engine(languages: str, tessdata: str | None) -> _Engine:
    folder = tessdata_dir(languages, tessdata)
    engine = _engines.by_key.get((folder, languages))
    if engine is None:
        engine = _engines.by_key[(folder, languages)] = _Engine(folder, languages)
        _live.add(engine)
    return engine


def engine_version() -> str:
    """The Tesseract library's version, e.g. "5.3.0"."""
    return _library().version


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


def glyph_height(gray: GrayImage) -> float | None:
    """Median height in pixels of the character-sized ink blobs on the page (a mix of x-height
    and capital height), or None when there is too little text to tell. Measured on at most
    1,500 pixels a side."""
    reduce = min(1.0, 1500.0 / max(gray.shape))
    small = (
        cv2.resize(gray, None, fx=reduce, fy=reduce, interpolation=cv2.INTER_AREA)
        if reduce < 1.0
        else gray
    )
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        _binarize(np.asarray(small, dtype=np.uint8)), connectivity=8
    )
    if count < 2:
        return None
    height = stats[1:, cv2.CC_STAT_HEIGHT]
    width = stats[1:, cv2.CC_STAT_WIDTH]
    area = stats[1:, cv2.CC_STAT_AREA]
    # Letters: taller than speckle, not rulings or boxes, not photos.
    glyphs = height[(height >= 4) & (height <= 120) & (width <= 3 * height) & (area >= 8)]
    if glyphs.size < 20:
        return None
    return float(np.median(glyphs) / reduce)


def uneven_background(gray: GrayImage) -> bool:
    """Whether the paper is not plain: dark bars, shaded cells, a grey or unevenly lit scan.
    Looked at on a 1/8 image, with the text closed over so only the paper is left."""
    small = cv2.resize(gray, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    if small.size == 0:
        return False
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    low, high = np.percentile(paper, (1, 99))
    return bool(paper.min() < 110 or high - low > 60 or high < 200)


def _binarize(gray: GrayImage) -> GrayImage:
    """Ink as 255 on 0, Otsu threshold after a light blur against scanner noise."""
    smoothed = cv2.GaussianBlur(gray, (3, 3), 0)
    _, ink = cv2.threshold(smoothed, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return np.asarray(ink, dtype=np.uint8)


def estimate_skew(gray: GrayImage, max_angle: float = 5.0, size: int = 1000) -> float:
    """Angle in degrees (counter-clockwise positive) that the page content is rotated by.

    Text lines give the sharpest row profile when horizontal: search the angle that maximises
    the variance of row sums, coarse then fine, on a reduced image.
    """
    height, width = gray.shape
    reduce = min(1.0, size / max(height, width))
    small = np.asarray(
        cv2.resize(gray, None, fx=reduce, fy=reduce, interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    ink = _binarize(small)
    if int(np.count_nonzero(ink)) < 0.001 * ink.size:
        return 0.0

    def sharpness(angle: float) -> float:
        rotated = _rotate_raw(ink, angle, 0)
        rows = rotated.sum(axis=1, dtype=np.float64)
        return float(np.var(np.diff(rows)))

    best = max(np.arange(-max_angle, max_angle + 1e-9, 0.5), key=sharpness)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.05)
    return -float(max(fine, key=sharpness))


def _rotate_raw(image: GrayImage, angle: float, border: int) -> GrayImage:
    height, width = image.shape
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0)
    rotated = cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )
    return np.asarray(rotated, dtype=np.uint8)


def rotate(gray: GrayImage, skew: float) -> GrayImage:
    """Undo a measured skew, filling the uncovered corners with paper white."""
    return _rotate_raw(gray, -skew, 255)


def flatten_background(gray: GrayImage, dpi: float) -> GrayImage:
    """Divide out the paper: shaded cells, a grey scan and uneven light all become white, so
    the text is the only dark thing left (Tesseract thresholds the page globally).

    Light text on a dark bar (a coloured table header) is inverted first; dividing by the
    bar's colour would otherwise wash the text out with it.
    """
    size = max(int(dpi / 12), 15)  # wider than a glyph stroke, narrower than a table cell
    reduce = 0.25
    kernel = cv2.getStructuringElement(
        cv2.MORPH_RECT, (max(int(size * reduce), 3), max(int(size * reduce), 3))
    )

    def background(image: GrayImage) -> GrayImage:
        small = cv2.resize(image, None, fx=reduce, fy=reduce, interpolation=cv2.INTER_AREA)
        closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
        full = cv2.resize(closed, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.asarray(full, dtype=np.uint8)

    paper = background(gray)
    dark = paper < 110
    if dark.any():
        gray = gray.copy()
        gray[dark] = 255 - gray[dark]
        paper = background(gray)
    flat = cv2.divide(gray, np.maximum(paper, 1), scale=255)
    return np.asarray(flat, dtype=np.uint8)


def remove_rulings(gray: GrayImage, dpi: float) -> GrayImage:
    """Paint table rulings and boxes white.

    Tesseract's layout analysis treats a bordered table as a picture and drops its text; with
    the lines gone the cells read as ordinary text.
    """
    # Local threshold: a blurred hairline is only a little darker than the paper around it.
    ink = np.asarray(
        cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 12),
        dtype=np.uint8,
    )
    # Longer than any glyph stroke at this resolution, shorter than a narrow table column.
    horizontal = max(int(dpi * 0.35), 15)
    vertical = max(int(dpi * 0.25), 15)
    h_lines = cv2.morphologyEx(
        ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (horizontal, 1))
    )
    v_lines = cv2.morphologyEx(
        ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, vertical))
    )
    # Blur spreads a ruling beyond its thresholded core: widen the mask over the halo.
    grow = max(int(dpi / 100) * 2 + 1, 3)
    mask = cv2.dilate(
        cv2.bitwise_or(h_lines, v_lines), cv2.getStructuringElement(cv2.MORPH_RECT, (grow, grow))
    )
    cleaned = gray.copy()
    cleaned[mask > 0] = 255
    return cleaned


def denoise(gray: GrayImage) -> GrayImage:
    """Soften sensor noise and clip the near-white speckle: fewer stray blobs for Tesseract to
    try as characters (faster, and fewer junk words), glyph edges kept."""
    smoothed = cv2.GaussianBlur(gray, (0, 0), 0.6)
    smoothed[smoothed > 200] = 255
    return np.asarray(smoothed, dtype=np.uint8)


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


def run_tesseract(
    gray: GrayImage, dpi: float, options: OcrOptions, config: Sequence[str] = ()
) -> list[Word]:
    """Read one image with this thread's engine; word boxes in pixels of that image. `config`
    adds `name=value` Tesseract settings for this read only."""
    engine = _engine(options.languages, options.tessdata)
    image = np.ascontiguousarray(gray, dtype=np.uint8)
    if image.size == 0:
        return []
    settings = dict(item.split("=", 1) for item in config)
    previous = {name: engine.get(name) for name in settings}
    try:
        for name, value in settings.items():
            engine.set(name, value)
        tsv = _TSV_HEADER + engine.read_tsv(image, dpi, options.psm, options.timeout_s)
    finally:
        for name, value in previous.items():
            engine.set(name, value)
    return parse_tsv(tsv, options.min_confidence)


def parse_tsv(tsv: str, min_confidence: float = 0.0) -> list[Word]:
    """Word rows of Tesseract's TSV output; `line` numbers are unique per page.

    Word boxes hug the glyphs ("ecke" is half as tall as "Bei") while the layout rules measure
    gaps in line heights: each word keeps its own bottom but is at least as tall as the
    tallest word of its Tesseract line. Whole line boxes are not used: with --psm 6 a line
    can span two columns printed at different heights.
    """
    rows: list[tuple[tuple[int, int, int], str, int, int, int, int]] = []
    tallest: dict[tuple[int, int, int], int] = {}
    reader = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        try:
            if int(row["level"]) != 5:
                continue
            confidence = float(row["conf"])
            left, top = int(row["left"]), int(row["top"])
            width, height = int(row["width"]), int(row["height"])
            key = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        except (KeyError, TypeError, ValueError):
            continue
        text = (row.get("text") or "").strip()
        if not text or confidence < min_confidence:
            continue
        rows.append((key, text, left, top, width, height))
        if any(c.isalnum() for c in text):
            tallest[key] = max(tallest.get(key, 0), height)
    words: list[Word] = []
    line_ids: dict[tuple[int, int, int], int] = {}
    for key, text, left, top, width, height in rows:
        line = line_ids.setdefault(key, len(line_ids))
        bottom = top + height
        words.append(
            Word(
                text=text,
                x0=float(left),
                y0=float(min(top, bottom - tallest.get(key, height))),
                x1=float(left + width),
                y1=float(bottom),
                block=key[0],
                line=line,
            )
        )
    return words
