"""The scanned workload the benchmarks share: generated invoice scans (one and several pages)
and receipt photos, each with the fields a model would answer and the words of the PDF it was
rendered from (the reference for word accuracy).

Invoices come from `pipeline.synthetic` (rendered, rotated, blurred, noisy, JPEG inside an
image-only PDF, at 150-300 dpi). Receipts are made here: an 80 mm till roll in a monospaced
font, photographed (rendered at 170-250 dpi, rotated up to 3 degrees, lit unevenly, blurred,
noisy, saved as a JPEG without a resolution, as a phone would).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Any

_CENT = Decimal("0.01")
_SHOPS = [
    ("BAECKEREI SONNENKORN", "Marktplatz 3, 69117 Heidelberg"),
    ("CORNER GROCERY LTD", "41 Mill Lane, Bristol BS1 5TT"),
    ("SUPERMARCHE DU PARC", "12 rue Lafayette, 75009 Paris"),
    ("DROGERIE KLEINMANN", "Bahnhofstr. 18, 80335 Muenchen"),
]
_GOODS = [
    "Whole milk 1L",
    "Rye bread",
    "Apples 1kg",
    "Coffee beans",
    "Butter 250g",
    "Orange juice",
    "Toothpaste",
    "Pasta 500g",
    "Tomatoes",
    "Dish soap",
    "Cheddar 200g",
    "Batteries AA",
    "Paper towels",
    "Sparkling water",
    "Yoghurt",
    "Bananas",
]


@dataclass(frozen=True, slots=True)
class ScanDoc:
    """One scanned document: its bytes as uploaded, the answer a model would give, and the
    words of each page of the PDF it was made from (x0, y0, x1, y1, text)."""

    name: str
    kind: str  # "invoice scan" or "receipt photo"
    schema: str
    data: bytes
    content_type: str
    extension: str
    fields: dict[str, Any]
    reference: tuple[tuple[tuple[float, float, float, float, str], ...], ...]

    @property
    def pages(self) -> int:
        return len(self.reference)


def _pdf_words(pdf: bytes) -> tuple[tuple[tuple[float, float, float, float, str], ...], ...]:
    import pymupdf

    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        return tuple(
            tuple((w[0], w[1], w[2], w[3], w[4]) for w in page.get_text("words")) for page in doc
        )


# --- invoices --------------------------------------------------------------------------------


def invoice_scan(seed: int, items: int, dpi: int) -> ScanDoc:
    from pipeline.synthetic import make_invoice, render_pdf, scanned_pdf

    invoice = make_invoice(seed, items=items)
    pdf = render_pdf(invoice, rows_per_page=20)
    words = _pdf_words(pdf)
    pages = len(words)
    return ScanDoc(
        name=f"invoice {seed}, {pages} page{'s' if pages > 1 else ''}, {dpi} dpi",
        kind="invoice scan",
        schema="invoice",
        data=scanned_pdf(pdf, seed=seed, dpi=dpi),
        content_type="application/pdf",
        extension="pdf",
        fields=invoice.expected(),
        reference=words,
    )


# --- receipts --------------------------------------------------------------------------------


def make_receipt(seed: int) -> dict[str, Any]:
    """A till receipt's fields in the receipt schema's shape; prices include 19% or 7% VAT."""
    rng = random.Random(seed)
    shop, address = _SHOPS[seed % len(_SHOPS)]
    rate = Decimal(19 if seed % 3 else 7)
    lines = []
    for n in range(3 + seed % 9):
        quantity = Decimal(rng.choice([1, 1, 1, 2, 3]))
        price = (Decimal(rng.randint(49, 1299)) / 100).quantize(_CENT)
        lines.append(
            {
                "description": _GOODS[(seed * 3 + n) % len(_GOODS)],
                # A till prints a quantity only when it is not one: nothing to read otherwise.
                "quantity": str(quantity) if quantity != 1 else None,
                "unit_price": f"{price:.2f}",
                "amount": f"{(quantity * price).quantize(_CENT):.2f}",
            }
        )
    total = sum((Decimal(i["amount"]) for i in lines), Decimal(0))
    tax = (total * rate / (100 + rate)).quantize(_CENT, ROUND_HALF_UP)
    when = date(2025, 1, 1) + timedelta(days=rng.randrange(330))
    return {
        "merchant_name": shop,
        "merchant_address": address,
        "receipt_number": f"{rng.randint(1000, 9999)}-{rng.randint(100000, 999999)}",
        "date": when.isoformat(),
        "time": f"{rng.randint(7, 20):02d}:{rng.randint(0, 59):02d}",
        "currency": "EUR",
        "subtotal": f"{total - tax:.2f}",
        "tax": f"{tax:.2f}",
        "tip": None,
        "total": f"{total:.2f}",
        "payment_method": "CASH" if seed % 2 else f"VISA ****{rng.randint(1000, 9999)}",
        "line_items": lines,
    }


def receipt_pdf(fields: dict[str, Any]) -> bytes:
    """An 80 mm till roll, Courier 8.5 pt, as tall as its lines."""
    import pymupdf

    rows: list[tuple[str, str]] = [
        (fields["merchant_name"], ""),
        (fields["merchant_address"], ""),
        ("", ""),
        (f"Receipt {fields['receipt_number']}", ""),
        (f"{_dmy(fields['date'])}  {fields['time']}", ""),
        ("-" * 38, ""),
    ]
    for item in fields["line_items"]:
        if item["quantity"] is not None:
            rows.append((item["description"], ""))
            rows.append((f"  {item['quantity']} x {_comma(item['unit_price'])}", item["amount"]))
        else:
            rows.append((item["description"], item["amount"]))
    rows += [
        ("-" * 38, ""),
        ("TOTAL EUR", fields["total"]),
        (f"Net {_comma(fields['subtotal'])}  VAT {_comma(fields['tax'])}", ""),
        (fields["payment_method"], fields["total"]),
        ("", ""),
        ("Thank you for your visit", ""),
    ]
    width, size, lead = 227.0, 8.5, 12.0
    doc = pymupdf.open()
    page = doc.new_page(width=width, height=40 + lead * len(rows))
    y = 24.0
    for left, right in rows:
        if left:
            page.insert_text((12, y), left, fontsize=size, fontname="cour")
        if right:
            text = _comma(right)
            x = width - 12 - pymupdf.get_text_length(text, fontname="cour", fontsize=size)
            page.insert_text((x, y), text, fontsize=size, fontname="cour")
        y += lead
    data: bytes = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def _comma(amount: str) -> str:
    return amount.replace(".", ",")  # German tills print decimal commas


def _dmy(iso: str) -> str:
    year, month, day = iso.split("-")
    return f"{day}.{month}.{year}"


def photograph(pdf: bytes, seed: int) -> bytes:
    """A phone photo of a one-page PDF: rendered at 170-250 dpi, rotated, unevenly lit,
    blurred, noisy, JPEG without a resolution."""
    import numpy as np
    import pymupdf
    from PIL import Image, ImageFilter

    rng = random.Random(seed)
    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        pix = doc[0].get_pixmap(dpi=rng.randint(170, 250), colorspace=pymupdf.csGRAY)
        image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    pad = 40
    canvas = Image.new("L", (image.width + 2 * pad, image.height + 2 * pad), 150)
    canvas.paste(image, (pad, pad))
    canvas = canvas.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BICUBIC, fillcolor=150)
    pixels = np.asarray(canvas, dtype=np.float32)
    height, width = pixels.shape
    # Light falls off towards one corner: 0.75-1.0 of full brightness.
    yy, xx = np.mgrid[0:height, 0:width]
    fall = 1.0 - 0.25 * ((xx / width) * rng.random() + (yy / height) * rng.random()) / 2
    lit = pixels * fall
    blurred = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.6, 1.1))
    )
    noisy = np.asarray(blurred, dtype=np.float32) + np.random.default_rng(seed).normal(
        0, rng.uniform(4, 9), (height, width)
    )
    tint = np.stack([noisy, noisy - 3, noisy - 8], axis=-1)  # warm indoor light
    buf = io.BytesIO()
    Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8), "RGB").save(
        buf, format="JPEG", quality=rng.randint(70, 85)
    )
    return buf.getvalue()


def receipt_photo(seed: int) -> ScanDoc:
    fields = make_receipt(seed)
    pdf = receipt_pdf(fields)
    return ScanDoc(
        name=f"receipt {seed}, photo",
        kind="receipt photo",
        schema="receipt",
        data=photograph(pdf, seed),
        content_type="image/jpeg",
        extension="jpg",
        fields=fields,
        reference=_pdf_words(pdf),
    )


# --- the workload ----------------------------------------------------------------------------


@cache
def workload(size: int = 24) -> tuple[ScanDoc, ...]:
    """`size` distinct scanned documents: half one-page invoice scans at 150, 200 and 300 dpi
    (every sixth of several pages), half receipt photos."""
    docs: list[ScanDoc] = []
    for n in range(size):
        seed = 500 + n
        if n % 2:
            docs.append(receipt_photo(seed))
        else:
            multi = n % 6 == 0
            docs.append(
                invoice_scan(seed, items=30 if multi else 3 + seed % 10, dpi=(150, 200, 300)[n % 3])
            )
    return tuple(docs)


def answer_key(doc: ScanDoc, long_edge_px: int = 1568) -> str:
    """The sha256 of the first page's image as the pipeline sends it to the model: how the
    fake provider recognises a scan (it has no text layer to read an invoice number from)."""
    from pipeline.pages import Limits, opened

    with opened(doc.data, Limits(long_edge_px=long_edge_px)) as source:
        return source.page(0).image_sha256
