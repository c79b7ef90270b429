"""Input handling: sniff the real type, refuse bad input, split into pages sized for a model."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pymupdf
from PIL import Image

from pipeline.domain import PageContent, Word
from pipeline.errors import ErrorCategory, PermanentError

log = logging.getLogger(__name__)

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
SUPPORTED = (PDF, PNG, JPEG, TIFF)

_JPEG_QUALITY = 85
_SERIAL_PIXELS = 1 << 16  # OpenCV's colour conversion runs serially up to this size


@dataclass(frozen=True, slots=True)
class Limits:
    max_pages: int = 200
    # Every render (the model's image, OCR, a re-check at high resolution) and every image a
    # page holds stays within this many pixels, checked before any pixel is decoded.
    max_image_pixels: int = 60_000_000
    long_edge_px: int = 1568
    # A render may be made coarser than asked to fit max_image_pixels, but not below this:
    # text needs about this much to be read at all.
    min_render_dpi: int = 100


def _pixels(width_pt: float, height_pt: float, dpi: float) -> int:
    return math.ceil(width_pt * dpi / 72.0) * math.ceil(height_pt * dpi / 72.0)


def bounded_dpi(width_pt: float, height_pt: float, dpi: float, limits: Limits, what: str) -> float:
    """`dpi`, lowered if a render of this page at `dpi` would exceed the pixel limit; a
    `too_large` error, before anything is rendered, when even `min_render_dpi` would."""
    if width_pt <= 0 or height_pt <= 0:
        raise PermanentError(ErrorCategory.BAD_INPUT, f"{what} has no size")
    if _pixels(width_pt, height_pt, dpi) <= limits.max_image_pixels:
        return dpi
    fitted = math.sqrt(limits.max_image_pixels / ((width_pt / 72.0) * (height_pt / 72.0)))
    while fitted > 1 and _pixels(width_pt, height_pt, fitted) > limits.max_image_pixels:
        fitted *= 0.998  # a renderer rounds each side up to whole pixels
    if fitted < min(limits.min_render_dpi, dpi):
        raise PermanentError(
            ErrorCategory.TOO_LARGE,
            f"{what} is {width_pt:,.0f} x {height_pt:,.0f} pt: reading it needs over "
            f"{limits.max_image_pixels:,} pixels (PAGEMILL_MAX_IMAGE_PIXELS)",
        )
    return fitted


# Archives and other containers, by their magic bytes at offset 0. A file that starts as one
# of these is not a document we read, whatever else it holds (a stored ZIP shows the %PDF-
# header of a PDF inside it in its first kilobyte).
_CONTAINERS: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP container such as DOCX or XLSX"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"PK\x07\x08", "a ZIP archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE container such as DOC, XLS or MSG"),
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "an ELF executable"),
)
# What may precede %PDF- (readers tolerate a few bytes): whitespace and a UTF-8 byte-order mark.
_PDF_PREAMBLE = b" \t\r\n\x0c\x00\xef\xbb\xbf"
_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22
_ZIP_MAX_COMMENT = 0xFFFF


def sniff(data: bytes) -> str:
    """The real media type from magic bytes; the file name and Content-Type are not trusted.

    Containers (ZIP, RAR, 7z, gzip, OLE, executables) are refused even when a PDF header shows
    within their first kilobyte, as are files that are two formats at once (polyglots: content
    other than whitespace before %PDF-, or a ZIP archive appended to a PDF or an image), before
    any page is rendered or any model called."""
    if not data:
        raise PermanentError(ErrorCategory.BAD_INPUT, "the file is empty (0 bytes)")
    head = data[:1024]
    for magic, what in _CONTAINERS:
        if head.startswith(magic):
            raise PermanentError(
                ErrorCategory.UNSUPPORTED_TYPE,
                f"unsupported file type ({what}); expected PDF, PNG, JPEG or TIFF",
            )
    media_type = _media_type(head)
    if _has_zip_archive(data):
        raise PermanentError(
            ErrorCategory.UNSUPPORTED_TYPE,
            f"the file is a {media_type.split('/')[-1].upper()} with a ZIP archive appended (a "
            "file that is two formats at once); upload the document on its own",
        )
    return media_type


def _media_type(head: bytes) -> str:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    at = head.find(b"%PDF-")
    if at == 0 or (at > 0 and not head[:at].strip(_PDF_PREAMBLE)):
        return PDF
    if at > 0:
        raise PermanentError(
            ErrorCategory.UNSUPPORTED_TYPE,
            f"{_describe(head)} with a PDF header {at} bytes in; a file that is two formats at "
            "once is refused: upload the PDF on its own",
        )
    raise PermanentError(
        ErrorCategory.UNSUPPORTED_TYPE,
        f"unsupported file type ({_describe(head)}); expected PDF, PNG, JPEG or TIFF",
    )


def _has_zip_archive(data: bytes) -> bool:
    """True when the file ends with a ZIP archive's end record whose central directory is
    where the record says: what `unzip` needs to open it, whatever comes before."""
    tail_start = max(0, len(data) - _ZIP_END_SIZE - _ZIP_MAX_COMMENT)
    at = data.rfind(_ZIP_END, tail_start)
    while at >= 0:
        record = data[at : at + _ZIP_END_SIZE]
        if len(record) == _ZIP_END_SIZE:
            directory_size = int.from_bytes(record[12:16], "little")
            comment = int.from_bytes(record[20:22], "little")
            ends_file = not data[at + _ZIP_END_SIZE + comment :].strip()
            directory = at - directory_size
            if (
                ends_file
                and 0 <= directory < at
                and data[directory : directory + 4] == b"PK\x01\x02"
            ):
                return True
        at = data.rfind(_ZIP_END, tail_start, at)
    return False


def _describe(head: bytes) -> str:
    stripped = head.lstrip().lower()
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
        self._check_images(page, index)
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
            # Sized for the model: the long edge is long_edge_px whatever the page's size.
            longest = max(rect.width, rect.height)
            if longest <= 0:
                raise PermanentError(ErrorCategory.BAD_INPUT, f"page {index + 1} has no size")
            dpi = bounded_dpi(
                rect.width,
                rect.height,
                72.0 * self.limits.long_edge_px / longest,
                self.limits,
                f"page {index + 1}",
            )
            zoom = dpi / 72.0
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
            image, width, height = encode_pixmap_jpeg(pix), pix.width, pix.height
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

    def _check_images(self, page: Any, index: int) -> None:
        """Rendering decodes every image a page holds at its full size: refuse one over the
        pixel limit before MuPDF allocates it."""
        for info in page.get_images(full=True):
            width, height = int(info[2]), int(info[3])
            if width * height > self.limits.max_image_pixels:
                raise PermanentError(
                    ErrorCategory.TOO_LARGE,
                    f"page {index + 1} holds a {width:,} x {height:,} px image; the limit is "
                    f"{self.limits.max_image_pixels:,} pixels (PAGEMILL_MAX_IMAGE_PIXELS)",
                )

    def render(self, index: int, dpi: int) -> Image.Image:
        """The page at `dpi` for OCR or a re-check, made coarser if that would exceed the pixel
        limit (a poster-sized page), `too_large` when even min_render_dpi would."""
        page = self.doc[index]
        self._check_images(page, index)
        rect = page.rect
        fitted = bounded_dpi(rect.width, rect.height, dpi, self.limits, f"page {index + 1}")
        if fitted < dpi:
            log.info(
                "page %d rendered at %.0f dpi instead of %d to stay within %s pixels",
                index + 1,
                fitted,
                dpi,
                f"{self.limits.max_image_pixels:,}",
            )
        zoom = fitted / 72.0
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        # frombuffer then copy: the image owns its pixels once the pixmap is released.
        return Image.frombuffer(
            "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
        ).copy()


class ImageDocument(LoadedDocument):
    """An image file; a multi-page TIFF's frames are decoded one at a time, when asked for."""

    def __init__(self, data: bytes, media_type: str, limits: Limits) -> None:
        self.media_type = media_type
        self.limits = limits
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
                count = int(getattr(image, "n_frames", 1))
                if count > limits.max_pages:
                    raise PermanentError(
                        ErrorCategory.TOO_LARGE,
                        f"the image has {count} pages; the limit is {limits.max_pages}",
                    )
                # Each frame's size is in its header: check them all before decoding any.
                for index in range(count):
                    image.seek(index)
                    width, height = image.size
                    if width * height > limits.max_image_pixels:
                        raise PermanentError(
                            ErrorCategory.TOO_LARGE,
                            f"the image is {width}x{height} px; the limit is "
                            f"{limits.max_image_pixels:,} pixels (PAGEMILL_MAX_IMAGE_PIXELS)",
                        )
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise PermanentError(
                    ErrorCategory.TOO_LARGE, f"the image is too large to decode safely: {exc}"
                ) from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise PermanentError(
                    ErrorCategory.BAD_INPUT, f"the image cannot be decoded: {_one_line(exc)}"
                ) from None
        self.image = image
        self.page_count = count

    def _frame(self, index: int) -> Image.Image:
        try:
            self.image.seek(index)
            return self.image.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PermanentError(
                ErrorCategory.BAD_INPUT,
                f"page {index + 1} of the image cannot be decoded: {_one_line(exc)}",
            ) from None

    def close(self) -> None:
        self.image.close()

    def page(self, index: int) -> PageContent:
        frame = original = self._frame(index)
        dpi_in = self._dpi(index)
        scale = _fit(*frame.size, self.limits.long_edge_px)
        if scale < 1.0:
            frame = frame.resize(
                (round(frame.width * scale), round(frame.height * scale)), Image.Resampling.LANCZOS
            )
        image = encode_jpeg(frame)
        return PageContent(
            index=index,
            width_pt=original.width * 72.0 / dpi_in,
            height_pt=original.height * 72.0 / dpi_in,
            image=image,
            media_type=JPEG,
            pixel_width=frame.width,
            pixel_height=frame.height,
            render_dpi=round(dpi_in * scale, 1),
            image_sha256=_sha256(image),
        )

    def _dpi(self, index: int) -> float:
        self.image.seek(index)
        dpi = self.image.info.get("dpi")
        if isinstance(dpi, tuple) and dpi and float(dpi[0]) > 1:
            return float(dpi[0])
        return 200.0  # unknown: a typical scan resolution

    def render(self, index: int, dpi: int) -> Image.Image:
        # An image has the resolution it has (within the pixel limit, checked at open):
        # upsampling adds no detail for OCR.
        return self._frame(index)


def open_document(data: bytes, limits: Limits) -> LoadedDocument:
    media_type = sniff(data)
    if media_type == PDF:
        return PdfDocument(data, limits)
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
