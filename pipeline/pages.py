"""Input handling: sniff the real type, refuse bad input, split into pages sized for a model."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pymupdf
from PIL import Image, ImageSequence

from pipeline.domain import PageContent, Word
from pipeline.errors import ErrorCategory, PermanentError

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
XML = "application/xml"  # an e-invoice (XRechnung, Peppol): structured data, no pages
SUPPORTED = (PDF, PNG, JPEG, TIFF, XML)

_JPEG_QUALITY = 85
_SERIAL_PIXELS = 1 << 16  # OpenCV's colour conversion runs serially up to this size


@dataclass(frozen=True, slots=True)
class Limits:
    max_pages: int = 200
    max_image_pixels: int = 60_000_000
    long_edge_px: int = 1568


def sniff(data: bytes) -> str:
    """The real media type from magic bytes; the file name and Content-Type are not trusted."""
    if not data:
        raise PermanentError(ErrorCategory.BAD_INPUT, "the file is empty (0 bytes)")
    head = data[:1024]
    if b"%PDF-" in head:
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    if _looks_like_xml(head):
        return XML
    raise PermanentError(
        ErrorCategory.UNSUPPORTED_TYPE,
        f"unsupported file type ({_describe(head)}); expected PDF, PNG, JPEG, TIFF or an "
        "e-invoice XML (CII, UBL)",
    )


def _looks_like_xml(head: bytes) -> bool:
    """An XML declaration, or a first element that is not HTML (HTML has its own answer)."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<?xml"):
        return True
    lowered = text.lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return False
    return len(text) > 1 and text[:1] == b"<" and (text[1:2].isalpha() or text[1:4] == b"!--")


def _describe(head: bytes) -> str:
    stripped = head.lstrip().lower()
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP container such as DOCX or XLSX"
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    return "unrecognised content"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_jpeg(image: Image.Image) -> bytes:
    # convert() copies even an image that is already RGB: a page-sized copy for nothing.
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=_JPEG_QUALITY, optimize=False)
    return buf.getvalue()


def encode_pixmap_jpeg(pix: Any) -> bytes:
    """An RGB pixmap as JPEG, at the quality and 4:2:0 chroma `encode_jpeg` writes.

    Pillow unpacks a pixmap into its own 4-byte pixel layout before it encodes; OpenCV's
    encoder reads the pixmap in place and only needs the channels swapped, which costs about
    half the unpack. Both are libjpeg-turbo: with today's wheels the bytes are identical."""
    rows = np.frombuffer(pix.samples_mv, np.uint8).reshape(pix.height, pix.stride)
    rgb = rows[:, : pix.width * 3].reshape(pix.height, pix.width, 3)
    bgr = np.empty_like(rgb)
    # OpenCV hands an image over 2^16 pixels to its thread pool, whose hand-offs cost more CPU
    # than the swap itself; strips below that size stay on this thread.
    step = max(1, _SERIAL_PIXELS // pix.width)
    for top in range(0, pix.height, step):
        cv2.cvtColor(rgb[top : top + step], cv2.COLOR_RGB2BGR, dst=bgr[top : top + step])
    ok, jpeg = cv2.imencode(
        ".jpg",
        bgr,
        [
            cv2.IMWRITE_JPEG_QUALITY,
            _JPEG_QUALITY,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        ],
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode the page as JPEG")
    return jpeg.tobytes()


def _fit(width: int, height: int, long_edge: int) -> float:
    return min(1.0, long_edge / max(width, height))


class LoadedDocument:
    """An opened input file; pages come out one at a time so memory stays flat."""

    media_type: str
    page_count: int
    repaired: bool = False

    def page(self, index: int) -> PageContent:
        raise NotImplementedError

    def render(self, index: int, dpi: int) -> Image.Image:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def pages(self) -> Iterator[PageContent]:
        for index in range(self.page_count):
            yield self.page(index)


class PdfDocument(LoadedDocument):
    def __init__(self, data: bytes, limits: Limits) -> None:
        self.media_type = PDF
        self.limits = limits
        try:
            doc = pymupdf.open(stream=data, filetype="pdf")
        except pymupdf.EmptyFileError:
            raise PermanentError(ErrorCategory.BAD_INPUT, "the PDF is empty") from None
        except (pymupdf.FileDataError, RuntimeError, ValueError) as exc:
            raise PermanentError(
                ErrorCategory.BAD_INPUT, f"not a readable PDF: {_one_line(exc)}"
            ) from None
        if not doc.is_pdf:
            doc.close()
            raise PermanentError(ErrorCategory.BAD_INPUT, "the file is not a PDF")
        if doc.needs_pass:
            doc.close()
            raise PermanentError(
                ErrorCategory.ENCRYPTED, "the PDF needs a password to open; upload it unlocked"
            )
        self.doc = doc
        self.repaired = bool(doc.is_repaired)
        self.page_count = doc.page_count
        if self.page_count == 0:
            doc.close()
            raise PermanentError(ErrorCategory.BAD_INPUT, "the PDF has no pages")
        if self.page_count > limits.max_pages:
            doc.close()
            raise PermanentError(
                ErrorCategory.TOO_LARGE,
                f"the PDF has {self.page_count} pages; the limit is {limits.max_pages} "
                "(PAGEMILL_MAX_PAGES)",
            )

    def close(self) -> None:
        self.doc.close()

    def page(self, index: int) -> PageContent:
        page = self.doc[index]
        rect = page.rect
        try:
            # One text page serves both extractions: building it is most of their cost. The two
            # options share their default flags, so the output is what two separate calls give.
            textpage = page.get_textpage(flags=pymupdf.TEXTFLAGS_TEXT)
            text = page.get_text(textpage=textpage)
            raw_words: list[Any] = page.get_text("words", textpage=textpage)
        except (RuntimeError, ValueError) as exc:
            raise PermanentError(
                ErrorCategory.BAD_INPUT, f"page {index + 1} cannot be read: {_one_line(exc)}"
            ) from None
        words = [
            Word(text=w[4], x0=w[0], y0=w[1], x1=w[2], y1=w[3], block=w[5], line=w[6])
            for w in raw_words
        ]
        passthrough = None if text.strip() else self._embedded_scan(page)
        if passthrough is not None:
            image, width, height = passthrough
            dpi = 72.0 * width / rect.width if rect.width else 0.0
        else:
            zoom = self.limits.long_edge_px / max(rect.width, rect.height)
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
            image, width, height = encode_pixmap_jpeg(pix), pix.width, pix.height
            dpi = 72.0 * zoom
        return PageContent(
            index=index,
            width_pt=rect.width,
            height_pt=rect.height,
            image=image,
            media_type=JPEG,
            pixel_width=width,
            pixel_height=height,
            render_dpi=round(dpi, 1),
            image_sha256=_sha256(image),
            text=text,
            words=words,
            image_passthrough=passthrough is not None,
        )

    def _embedded_scan(self, page: Any) -> tuple[bytes, int, int] | None:
        """A scanned page's own JPEG, when it is the whole page and already small enough."""
        images = page.get_images(full=True)
        if len(images) != 1:
            return None
        xref, width, height = images[0][0], images[0][2], images[0][3]
        if max(width, height) > self.limits.long_edge_px or page.rotation:
            return None
        info = self.doc.extract_image(xref)
        if (
            not info
            or info.get("ext") not in ("jpeg", "jpg")
            or info.get("cs-name") == "DeviceCMYK"
        ):
            return None
        bbox = page.get_image_bbox(images[0])
        if bbox.is_empty or bbox.get_area() < 0.9 * page.rect.get_area():
            return None
        return info["image"], width, height

    def render(self, index: int, dpi: int) -> Image.Image:
        pix = self.doc[index].get_pixmap(dpi=dpi, alpha=False)
        return Image.frombuffer(
            "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
        ).copy()


class ImageDocument(LoadedDocument):
    def __init__(self, data: bytes, media_type: str, limits: Limits) -> None:
        self.media_type = media_type
        self.limits = limits
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise PermanentError(
                        ErrorCategory.TOO_LARGE,
                        f"the image is {width}x{height} px; the limit is "
                        f"{limits.max_image_pixels:,} pixels (PAGEMILL_MAX_IMAGE_PIXELS)",
                    )
                frames = [frame.copy() for frame in ImageSequence.Iterator(image)]
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise PermanentError(
                    ErrorCategory.TOO_LARGE, f"the image is too large to decode safely: {exc}"
                ) from None
            except (OSError, SyntaxError, ValueError) as exc:
                raise PermanentError(
                    ErrorCategory.BAD_INPUT, f"the image cannot be decoded: {_one_line(exc)}"
                ) from None
        if len(frames) > limits.max_pages:
            raise PermanentError(
                ErrorCategory.TOO_LARGE,
                f"the image has {len(frames)} pages; the limit is {limits.max_pages}",
            )
        self.frames = frames
        self.page_count = len(frames)

    def page(self, index: int) -> PageContent:
        frame = self.frames[index].convert("RGB")
        scale = _fit(*frame.size, self.limits.long_edge_px)
        if scale < 1.0:
            frame = frame.resize(
                (round(frame.width * scale), round(frame.height * scale)), Image.Resampling.LANCZOS
            )
        image = encode_jpeg(frame)
        dpi = self._dpi(index) * scale
        return PageContent(
            index=index,
            width_pt=self.frames[index].width * 72.0 / self._dpi(index),
            height_pt=self.frames[index].height * 72.0 / self._dpi(index),
            image=image,
            media_type=JPEG,
            pixel_width=frame.width,
            pixel_height=frame.height,
            render_dpi=round(dpi, 1),
            image_sha256=_sha256(image),
        )

    def _dpi(self, index: int) -> float:
        dpi = self.frames[index].info.get("dpi")
        if isinstance(dpi, tuple) and dpi and float(dpi[0]) > 1:
            return float(dpi[0])
        return 200.0  # unknown: a typical scan resolution

    def render(self, index: int, dpi: int) -> Image.Image:
        # An image has the resolution it has: upsampling adds no detail for OCR.
        return self.frames[index].convert("RGB")


class XmlDocument(LoadedDocument):
    """An XML file (an XRechnung or Peppol e-invoice): its data is the document; there are no
    pages to render, OCR or send to a model."""

    def __init__(self, data: bytes) -> None:
        self.media_type = XML
        self.page_count = 0
        self.data = data

    def page(self, index: int) -> PageContent:
        raise PermanentError(ErrorCategory.BAD_INPUT, "an XML document has no pages")

    def render(self, index: int, dpi: int) -> Image.Image:
        raise PermanentError(ErrorCategory.BAD_INPUT, "an XML document has no pages to render")


def open_document(data: bytes, limits: Limits) -> LoadedDocument:
    media_type = sniff(data)
    if media_type == PDF:
        return PdfDocument(data, limits)
    if media_type == XML:
        return XmlDocument(data)
    return ImageDocument(data, media_type, limits)


@contextmanager
def opened(data: bytes, limits: Limits) -> Iterator[LoadedDocument]:
    doc = open_document(data, limits)
    try:
        yield doc
    finally:
        doc.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


_MIN_TEXT_WORDS = 5  # fewer words than this on a page is a stamp or a page number, not a layer


def usable_text_layer(words: Sequence[Word]) -> bool:
    """True when a page's own words can be read as they are; otherwise OCR reads it better."""
    if len(words) < _MIN_TEXT_WORDS:
        return False
    # Fonts without a Unicode map extract as U+FFFD or nothing readable.
    readable = sum(1 for w in words if "\ufffd" not in w.text and any(c.isalnum() for c in w.text))
    return readable >= 0.7 * len(words)
