"""Input handling on real files: sniffing, splitting, sizing, and every kind of bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile, get_sampling

from pipeline.errors import ErrorCategory, PermanentError
from pipeline.pages import (
    JPEG,
    Limits,
    PdfDocument,
    encode_jpeg,
    open_document,
    opened,
    sniff,
)
from pipeline.synthetic import make_invoice, render_pdf, scanned_pdf


def _category(data: bytes, limits: Limits | None = None) -> ErrorCategory:
    with pytest.raises(PermanentError) as info, opened(data, limits or Limits()) as doc:
        list(doc.pages())
    return info.value.category


def test_samples_split_into_model_sized_pages(samples_dir: Path) -> None:
    for path in sorted((samples_dir / "docs").glob("*.pdf")):
        with opened(path.read_bytes(), Limits()) as doc:
            assert doc.page_count >= 1
            page = doc.page(0)
        assert max(page.pixel_width, page.pixel_height) == 1568
        assert page.media_type == JPEG and page.image[:3] == b"\xff\xd8\xff"
        assert page.has_text_layer and page.words, path.name
        assert 130 < page.render_dpi < 140  # A4 at 1568 px is ~134 dpi


def test_multi_page_pdf_yields_every_page() -> None:
    pdf = render_pdf(make_invoice(7, items=50), rows_per_page=20)
    with opened(pdf, Limits()) as doc:
        pages = list(doc.pages())
    assert [p.index for p in pages] == [0, 1, 2]
    assert "continued on next page" in pages[0].text


def test_scanned_page_passes_its_own_jpeg_through() -> None:
    scan = scanned_pdf(render_pdf(make_invoice(3)), dpi=130)
    with opened(scan, Limits()) as doc:
        page = doc.page(0)
    assert not page.has_text_layer
    assert page.image_passthrough
    assert max(page.pixel_width, page.pixel_height) <= 1568


def test_large_scan_is_rendered_down_to_the_long_edge() -> None:
    scan = scanned_pdf(render_pdf(make_invoice(3)), dpi=200)
    with opened(scan, Limits()) as doc:
        page = doc.page(0)
    assert not page.image_passthrough
    assert max(page.pixel_width, page.pixel_height) == 1568


def test_images_are_pages() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (2480, 3508), "white").save(buf, format="PNG", dpi=(300, 300))
    with opened(buf.getvalue(), Limits()) as doc:
        page = doc.page(0)
        assert doc.page_count == 1
    assert (page.pixel_width, page.pixel_height) == (1109, 1568)
    assert round(page.width_pt) == 595


def test_multi_frame_tiff_is_one_page_per_frame() -> None:
    buf = io.BytesIO()
    frames = [Image.new("L", (300, 400), shade) for shade in (255, 200, 150)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    with opened(buf.getvalue(), Limits()) as doc:
        assert doc.page_count == 3


def test_zero_byte_file() -> None:
    assert _category(b"") is ErrorCategory.BAD_INPUT


def test_html_named_pdf() -> None:
    assert _category(b"<!DOCTYPE html><html><body>invoice</body></html>") is (
        ErrorCategory.UNSUPPORTED_TYPE
    )


def test_docx_and_zip_are_unsupported() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    with pytest.raises(PermanentError) as info:
        sniff(buf.getvalue())
    assert info.value.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "ZIP" in info.value.message


def test_garbage_after_pdf_header() -> None:
    assert _category(b"%PDF-1.7\n" + bytes(range(256)) * 8) is ErrorCategory.BAD_INPUT


def test_truncated_pdf_is_repaired_and_flagged() -> None:
    pdf = render_pdf(make_invoice(5))
    cut = pdf[: int(len(pdf) * 0.9)]
    with opened(cut, Limits()) as doc:
        assert doc.repaired
        page = doc.page(0)
    assert page.pixel_width > 0


def _encrypted(owner: str, user: str) -> bytes:
    doc = pymupdf.open(stream=render_pdf(make_invoice(6)), filetype="pdf")
    data: bytes = doc.tobytes(
        encryption=pymupdf.PDF_ENCRYPT_AES_256,
        owner_pw=owner,
        user_pw=user,
        permissions=pymupdf.PDF_PERM_PRINT,
    )
    return data


def test_user_password_pdf_is_a_permanent_encrypted_error() -> None:
    assert _category(_encrypted("owner-secret", "user-secret")) is ErrorCategory.ENCRYPTED


def test_owner_password_only_pdf_is_processed() -> None:
    with opened(_encrypted("owner-secret", ""), Limits()) as doc:
        page = doc.page(0)
    assert "INVOICE" in page.text


def test_page_limit() -> None:
    pdf = render_pdf(make_invoice(8, items=60), rows_per_page=10)
    assert _category(pdf, Limits(max_pages=3)) is ErrorCategory.TOO_LARGE


def test_decompression_bomb_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 Mpx, a few KB on disk
    assert len(buf.getvalue()) < 200_000
    assert _category(buf.getvalue()) is ErrorCategory.TOO_LARGE


def test_pdf_without_pages() -> None:
    # PyMuPDF refuses to save an empty document, so write the smallest valid one by hand.
    body = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    )
    xref = len(body)
    pdf = body + (
        b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000052 00000 n \n"
        b"trailer<</Size 3/Root 1 0 R>>\nstartxref\n" + str(xref).encode() + b"\n%%EOF\n"
    )
    assert _category(pdf) is ErrorCategory.BAD_INPUT


def test_open_document_rejects_non_pdf_png_named_anything() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="GIF")
    with pytest.raises(PermanentError) as info:
        open_document(buf.getvalue(), Limits())
    assert "GIF" in info.value.message


def _two_call_text(data: bytes) -> list[tuple[str, list[tuple[object, ...]]]]:
    """What a page's text and words were when each came from its own `get_text` call."""
    doc = pymupdf.open(stream=data, filetype="pdf")
    try:
        pages = [doc[index] for index in range(doc.page_count)]
        return [(page.get_text(), [tuple(w) for w in page.get_text("words")]) for page in pages]
    finally:
        doc.close()


def _page_text(data: bytes) -> list[tuple[str, list[tuple[object, ...]]]]:
    with opened(data, Limits()) as doc:
        return [
            (p.text, [(w.x0, w.y0, w.x1, w.y1, w.text, w.block, w.line) for w in p.words])
            for p in doc.pages()
        ]


def _assert_text_as_two_extractions(data: bytes) -> None:
    expected = _two_call_text(data)
    assert _page_text(data) == [(text, [w[:7] for w in words]) for text, words in expected]
    assert any(words for _, words in expected)


def test_one_text_page_gives_what_two_extractions_gave_on_a_generated_invoice() -> None:
    # The shared text page is built with the "text" flags; "words" must not want other ones.
    assert pymupdf.TEXTFLAGS_TEXT == pymupdf.TEXTFLAGS_WORDS
    _assert_text_as_two_extractions(render_pdf(make_invoice(11, items=40), rows_per_page=20))


def test_one_text_page_gives_what_two_extractions_gave_on_the_samples(samples_dir: Path) -> None:
    for path in sorted((samples_dir / "docs").glob("*.pdf")):
        _assert_text_as_two_extractions(path.read_bytes())


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_encode_jpeg_writes_rgb_whatever_the_mode(mode: str) -> None:
    image = Image.new("RGB", (64, 48), (200, 40, 90)).convert(mode)
    decoded = Image.open(io.BytesIO(encode_jpeg(image)))
    assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (64, 48)
    assert image.mode == mode


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255.0**2 / max(float(np.mean((x - y) ** 2)), 1e-12)))


def _assert_jpeg_as_pillow_writes_it(data: bytes) -> None:
    with opened(data, Limits()) as doc:
        page = doc.page(0)
        assert isinstance(doc, PdfDocument) and not page.image_passthrough
        zoom = 1568 / max(page.width_pt, page.height_pt)
        pix = doc.doc[0].get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    pixels = Image.frombuffer(
        "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
    ).copy()
    pillow_bytes = encode_jpeg(pixels)
    ours = Image.open(io.BytesIO(page.image))
    pillow = Image.open(io.BytesIO(pillow_bytes))
    assert isinstance(ours, JpegImageFile) and isinstance(pillow, JpegImageFile)
    assert ours.size == pillow.size == (page.pixel_width, page.pixel_height)
    assert ours.mode == "RGB"
    assert ours.quantization == pillow.quantization  # the same quality setting
    assert get_sampling(ours) == get_sampling(pillow) == 2  # 4:2:0
    assert abs(_psnr(ours, pixels) - _psnr(pillow, pixels)) < 0.5
    assert abs(len(page.image) - len(pillow_bytes)) < 0.05 * len(pillow_bytes)


def test_rendered_page_jpeg_is_what_pillow_writes_on_a_generated_invoice() -> None:
    # A coloured band, so that swapped channels cannot pass on black text on white.
    doc = pymupdf.open(stream=render_pdf(make_invoice(12, items=8)), filetype="pdf")
    doc[0].draw_rect(pymupdf.Rect(50, 700, 545, 780), color=(0.9, 0.2, 0.1), fill=(0.1, 0.3, 0.9))
    data: bytes = doc.tobytes()
    doc.close()
    _assert_jpeg_as_pillow_writes_it(data)


def test_rendered_page_jpeg_is_what_pillow_writes_on_the_samples(samples_dir: Path) -> None:
    for path in sorted((samples_dir / "docs").glob("*.pdf")):
        _assert_jpeg_as_pillow_writes_it(path.read_bytes())
