"""Hostile or odd inputs are refused before they cost memory or a model call: giant pages and
images (every render bounded by PAGEMILL_MAX_IMAGE_PIXELS), containers and polyglots."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile

import pymupdf
import pytest
from PIL import Image
from pydantic import SecretStr

from pipeline.costing import load_price_table
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.extractors import build_extractor
from pipeline.pages import PDF, Limits, open_document, opened, sniff
from pipeline.schemas import get_schema
from pipeline.settings import load_settings
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.extract_file import extract_bytes
from tests.conftest import REPO
from tests.support.fake_model_server import FakeModelServer


def _refused(data: bytes) -> PermanentError:
    with pytest.raises(PermanentError) as info, opened(data, Limits()) as doc:
        list(doc.pages())
    return info.value


def _zip(members: dict[str, bytes], *, stored: bool = True) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="JPEG")
    return buf.getvalue()


# --- containers and polyglots ---------------------------------------------------------------


def test_a_stored_zip_with_a_pdf_inside_is_a_zip() -> None:
    # Stored (not compressed), the inner PDF's %PDF- header is in the first kilobyte.
    body = _zip({"invoice.pdf": render_pdf(make_invoice(81))})
    assert b"%PDF-" in body[:1024]
    error = _refused(body)
    assert error.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "ZIP" in error.message


@pytest.mark.parametrize("kind", ["pdf", "jpeg"])
def test_a_document_with_a_zip_archive_appended_is_refused(kind: str) -> None:
    document = render_pdf(make_invoice(82)) if kind == "pdf" else _jpeg()
    polyglot = document + _zip({"payload.exe": b"MZ" + bytes(300)})
    error = _refused(polyglot)
    assert error.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "two formats" in error.message


def test_content_before_the_pdf_header_is_refused() -> None:
    html = b"<html><body>pay here</body></html>\n" + render_pdf(make_invoice(83))
    error = _refused(html)
    assert error.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "HTML" in error.message


@pytest.mark.parametrize("preamble", [b"", b"\n\r\n  ", b"\xef\xbb\xbf"])
def test_real_pdfs_are_still_pdfs(preamble: bytes) -> None:
    # Readers tolerate whitespace (and a byte-order mark) before the header; so do we, and a
    # PDF whose compressed streams happen to hold ZIP-like bytes is no archive.
    pdf = render_pdf(make_invoice(84, items=30), rows_per_page=10)
    assert sniff(preamble + pdf) == PDF
    with opened(preamble + pdf, Limits()) as doc:
        assert len(list(doc.pages())) == 3


def test_a_refused_container_never_reaches_the_model(fake_model_server: FakeModelServer) -> None:
    settings = load_settings(
        anthropic_api_key=SecretStr("sk-test"),
        anthropic_base_url=fake_model_server.anthropic_base_url,
    )
    body = _zip({"invoice.pdf": render_pdf(make_invoice(85))})
    with pytest.raises(PermanentError) as info:
        extract_bytes(
            body,
            build_extractor(settings, "anthropic"),
            get_schema("invoice"),
            load_price_table(),
            settings,
        )
    assert info.value.category is ErrorCategory.UNSUPPORTED_TYPE
    assert fake_model_server.request_count == 0


# --- every render bounded ---------------------------------------------------------------------


def _blank_page_pdf(width_pt: float, height_pt: float) -> bytes:
    doc = pymupdf.open()
    page = doc.new_page(width=width_pt, height=height_pt)
    page.draw_rect(pymupdf.Rect(10, 10, width_pt - 10, height_pt - 10), width=4)
    data: bytes = doc.tobytes()
    doc.close()
    return data


_GIANT_PAGE = textwrap.dedent(
    """
    import json, resource, sys
    from pipeline.errors import PipelineError
    from pipeline.pages import open_document
    from pipeline.settings import load_settings
    from pipeline.usecases.process import ensure_words, limits_from

    settings = load_settings()
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = "no error"
    try:
        # What the prepare stage does with each page: the model's image, then OCR (no text).
        source = open_document(data, limits_from(settings))
        page = source.page(0)
        ensure_words(page, source, settings)
    except PipelineError as exc:
        outcome = exc.category.value
    except Exception as exc:
        outcome = type(exc).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "imports_kb": before, "peak_kb": peak}))
    """
)


def test_a_20000_pt_page_is_too_large_and_costs_little_memory(tmp_path: object) -> None:
    # A page 7 m wide without text: OCR at 300 dpi would need 6.9 Gpx (20 GB as RGB). Measured in
    # a process of its own, with the default settings: what the page adds to the peak resident
    # memory the imports reached (PyMuPDF 2 pulls in onnxruntime: 130-330 MB depending on the
    # machine, which is not what this test is about).
    path = f"{tmp_path}/giant.pdf"
    with open(path, "wb") as out:
        out.write(_blank_page_pdf(20_000, 20_000))
    done = subprocess.run(
        [sys.executable, "-c", _GIANT_PAGE, path],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"giant page: {result}")
    assert result["outcome"] == "too_large"
    assert result["peak_kb"] - result["imports_kb"] < 200 * 1024


def test_an_ocr_render_of_a_poster_page_is_made_coarser_to_fit() -> None:
    limits = Limits(max_image_pixels=8_000_000)
    with opened(_blank_page_pdf(1500, 1500), limits) as doc:
        image = doc.render(0, 300)  # 300 dpi would be 39 Mpx
    assert image.width * image.height <= limits.max_image_pixels
    assert image.width * 72 / 1500 >= limits.min_render_dpi  # still readable


def test_an_image_inside_a_page_over_the_limit_is_refused_before_it_is_decoded() -> None:
    buf = io.BytesIO()
    Image.new("L", (3000, 3000), 255).save(buf, format="PNG")
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(page.rect, stream=buf.getvalue())
    pdf: bytes = doc.tobytes()
    with pytest.raises(PermanentError) as info:
        open_document(pdf, Limits(max_image_pixels=4_000_000)).page(0)
    assert info.value.category is ErrorCategory.TOO_LARGE
    assert "3,000 x 3,000 px image" in info.value.message


def test_each_frame_of_a_tiff_is_checked_before_any_is_decoded() -> None:
    frames = [Image.new("1", (100, 100)), Image.new("1", (5000, 5000))]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    with pytest.raises(PermanentError) as info:
        open_document(buf.getvalue(), Limits(max_image_pixels=1_000_000))
    assert info.value.category is ErrorCategory.TOO_LARGE
