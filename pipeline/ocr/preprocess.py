"""Page clean-up before Tesseract reads it: glyph size, skew, shaded background, table
rulings and sensor noise."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pipeline.ocr.engine import GrayImage


def one_thread_per_call() -> None:
    """Run OpenCV's image operations in the calling thread (process-wide).

    By default OpenCV splits each operation over a thread per core. A worker process already
    has a core to itself (prefork) or many threads of its own, so the split only adds
    hand-over and waiting: the same clean-up cost 44 ms of CPU per scanned page instead of 35
    (bench/README.md, scanned pages).
    """
    cv2.setNumThreads(1)


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
    # A blob's outline, not its labelled pixels: tracing outlines costs half of labelling
    # every pixel, for the same blobs. Outlines inside a hole (a letter in a ruled box) are
    # blobs of their own; holes (the inside of an "o") are not.
    outlines, hierarchy = cv2.findContours(
        _binarize(np.asarray(small, dtype=np.uint8)), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return None
    blobs = [outline for outline, (*_, parent) in zip(outlines, hierarchy[0], strict=True)
             if parent < 0]  # fmt: skip
    if len(blobs) < 20:
        return None
    boxes = np.array([cv2.boundingRect(blob) for blob in blobs])
    width, height = boxes[:, 2], boxes[:, 3]
    # Pixels covered, from the outline through their centres (Pick's theorem).
    area = np.array([cv2.contourArea(b) + cv2.arcLength(b, True) / 2 + 1 for b in blobs])
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
    the variance of row sums, coarse (0.5° steps, on half the pixels: a coarse step moves a
    line end by several pixels even there) then fine (0.05°), on a reduced image.
    """
    height, width = gray.shape
    reduce = min(1.0, size / max(height, width))
    small = np.asarray(
        cv2.resize(gray, None, fx=reduce, fy=reduce, interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    ink = _binarize(small)
    if int(np.count_nonzero(ink)) < 0.001 * ink.size:
        return 0.0
    half = np.asarray(
        cv2.resize(small, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    coarse = np.arange(-max_angle, max_angle + 1e-9, 0.5)
    best = max(coarse, key=_row_sharpness(_binarize(half)))
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.05)
    return -float(max(fine, key=_row_sharpness(ink)))


def _row_sharpness(ink: GrayImage) -> Callable[[float], float]:
    """How sharply the ink's rows separate when the image is rotated by an angle: the
    variance of the change in row sums from one row to the next."""

    def sharpness(angle: float) -> float:
        rotated = _rotate_raw(ink, angle, 0)
        rows = cv2.reduce(rotated, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        return float(np.var(np.diff(rows.astype(np.float64))))

    return sharpness


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
