"""Offline OCR: clean a page image (deskew, remove table rulings) and read positioned words."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.domain import Word
from pipeline.errors import ErrorCategory, PermanentError, TransientError

DEFAULT_LANGUAGES = "eng+deu+fra+nld"
_TARGET_DPI = 300  # Tesseract is most accurate with a capital height of ~20-30 px

GrayImage = npt.NDArray[np.uint8]


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
    # Tesseract runs single-threaded: read a page as this many strips in parallel processes
    # (wall time about halves on 2 cores; use 1 when every core already has a worker).
    strips: int = 2


def tesseract_binary() -> str:
    found = shutil.which("tesseract")
    if found is None:
        raise PermanentError(
            ErrorCategory.CONFIGURATION, "tesseract not installed: apt-get install tesseract-ocr"
        )
    return found


@dataclass(slots=True)
class PreparedPage:
    """A page image straightened and cleaned for Tesseract, `dpi` pixels per inch. The same
    input always gives the same image, so word boxes from an earlier read still fit it."""

    image: GrayImage
    dpi: float
    options: OcrOptions

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
            # Digits read the same in every language; loading one model is ~0.3 s cheaper.
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
    """Scale to ~300 dpi, straighten, flatten the background, remove rulings, denoise."""
    options = options or OcrOptions()
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    if gray.size == 0 or page_width_pt <= 0:
        return PreparedPage(np.zeros((0, 0), dtype=np.uint8), 72.0, options)
    dpi = gray.shape[1] * 72.0 / page_width_pt
    scale = 1.0
    if dpi < _TARGET_DPI * 0.8:
        # Low-resolution scans: upsampling gives Tesseract the glyph size it was trained on.
        scale = min(_TARGET_DPI / dpi, 2.5)
        gray = np.asarray(
            cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC),
            dtype=np.uint8,
        )
    work_dpi = dpi * scale
    if options.deskew:
        angle = estimate_skew(gray)
        if abs(angle) >= 0.1:
            gray = rotate(gray, angle)
    if options.flatten:
        gray = flatten_background(gray, work_dpi)
    if options.remove_lines:
        gray = remove_rulings(gray, work_dpi)
    if options.denoise:
        gray = denoise(gray)
    return PreparedPage(gray, work_dpi, options)


def _binarize(gray: GrayImage) -> GrayImage:
    """Ink as 255 on 0, Otsu threshold after a light blur against scanner noise."""
    smoothed = cv2.GaussianBlur(gray, (3, 3), 0)
    _, ink = cv2.threshold(smoothed, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return np.asarray(ink, dtype=np.uint8)


def estimate_skew(gray: GrayImage, max_angle: float = 5.0) -> float:
    """Angle in degrees (counter-clockwise positive) that the page content is rotated by.

    Text lines give the sharpest row profile when horizontal: search the angle that maximises
    the variance of row sums, coarse then fine, on a reduced image.
    """
    height, width = gray.shape
    reduce = min(1.0, 1000.0 / max(height, width))
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


def _read_in_strips(gray: GrayImage, dpi: float, options: OcrOptions) -> list[Word]:
    cuts = blank_row_cuts(gray, options.strips)
    bounds = list(zip([0, *cuts], [*cuts, gray.shape[0]], strict=True))
    if len(bounds) == 1:
        return run_tesseract(gray, dpi, options)
    # Threads are enough: each waits on its own tesseract process.
    with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
        results = list(pool.map(lambda b: run_tesseract(gray[b[0] : b[1]], dpi, options), bounds))
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
    """Run the tesseract CLI on one image; word boxes in pixels of that image. `config` adds
    `-c name=value` settings."""
    binary = tesseract_binary()
    ok, encoded = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise PermanentError(ErrorCategory.INTERNAL, "could not encode the page for OCR")
    # One thread per process: tesseract's OpenMP threads made it 2.5-4x slower on a 2-core box
    # (FIELD-NOTES); parallelism comes from strips and from the workers instead.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    command = [
        binary, "stdin", "stdout",
        "--psm", str(options.psm),
        "--dpi", str(round(dpi)),
        "-l", options.languages,
        # Light-on-dark text was inverted in preprocessing; skipping the inverted retry per
        # line saves ~15% of the time.
        "-c", "tessedit_do_invert=0",
        *(part for setting in config for part in ("-c", setting)),
        "tsv",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            input=encoded.tobytes(),
            capture_output=True,
            env=env,
            timeout=options.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransientError(
            ErrorCategory.TIMEOUT, f"OCR took longer than {options.timeout_s:.0f} s"
        ) from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit status {done.returncode}"
        if "Failed loading language" in done.stderr.decode("utf-8", "replace"):
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                f"tesseract language data missing for {options.languages!r}: {detail}",
            )
        raise PermanentError(ErrorCategory.INTERNAL, f"tesseract failed: {detail}")
    return parse_tsv(done.stdout.decode("utf-8", "replace"), options.min_confidence)


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
