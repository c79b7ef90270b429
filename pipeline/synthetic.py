"""Synthetic invoices with known answers, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pymupdf
from PIL import Image, ImageFilter

_CENT = Decimal("0.01")
_ITEMS = [
    "Paper A4, 80 g, box of 5 reams",
    "Toner cartridge, black",
    "Desk lamp LED",
    "Office chair, ergonomic",
    "USB-C docking station",
    "Monitor 27 inch",
    "Wireless keyboard",
    "Consulting, hourly",
    "Shipping and handling",
    "Whiteboard markers, set of 8",
    "Filing cabinet, 3 drawers",
    "Network cable, 5 m",
]
_VENDORS = [
    ("Northwind Supplies Ltd", "12 Harbour Road, Leeds LS1 4AB, United Kingdom"),
    ("Contoso Office GmbH", "Hauptstraße 5, 10115 Berlin, Germany"),
    ("Fabrikam Trading BV", "Keizersgracht 100, 1015 AA Amsterdam, Netherlands"),
]
_CUSTOMERS = ["Adventure Works Inc", "Tailspin Toys SA", "Wingtip Partners LLC"]


@dataclass(slots=True)
class SyntheticInvoice:
    invoice_number: str
    invoice_date: date
    due_date: date
    vendor_name: str
    vendor_address: str
    customer_name: str
    currency: str
    tax_rate: Decimal
    line_items: list[dict[str, Decimal | str]] = field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        return sum((Decimal(str(i["amount"])) for i in self.line_items), Decimal(0))

    @property
    def tax(self) -> Decimal:
        return (self.subtotal * self.tax_rate / 100).quantize(_CENT, ROUND_HALF_UP)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax

    def expected(self) -> dict[str, Any]:
        """The answer in the invoice schema's JSON shape."""
        return {
            "invoice_number": self.invoice_number,
            "invoice_date": self.invoice_date.isoformat(),
            "due_date": self.due_date.isoformat(),
            "vendor_name": self.vendor_name,
            "customer_name": self.customer_name,
            "currency": self.currency,
            "subtotal": f"{self.subtotal:.2f}",
            "tax": f"{self.tax:.2f}",
            "total": f"{self.total:.2f}",
            "line_items": [{k: str(v) for k, v in item.items()} for item in self.line_items],
        }


def make_invoice(seed: int, items: int = 4) -> SyntheticInvoice:
    rng = random.Random(seed)
    vendor, address = _VENDORS[seed % len(_VENDORS)]
    issued = date(2026, 1, 1) + timedelta(days=rng.randrange(300))
    invoice = SyntheticInvoice(
        invoice_number=f"INV-{issued.year}-{seed:05d}",
        invoice_date=issued,
        due_date=issued + timedelta(days=30),
        vendor_name=vendor,
        vendor_address=address,
        customer_name=_CUSTOMERS[seed % len(_CUSTOMERS)],
        currency="EUR",
        tax_rate=Decimal(19),
    )
    for n in range(items):
        quantity = Decimal(rng.randint(1, 12))
        price = (Decimal(rng.randint(150, 40000)) / 100).quantize(_CENT)
        invoice.line_items.append(
            {
                "description": _ITEMS[(seed + n) % len(_ITEMS)],
                "quantity": quantity,
                "unit_price": price,
                "amount": (quantity * price).quantize(_CENT),
            }
        )
    return invoice


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def render_pdf(invoice: SyntheticInvoice, rows_per_page: int = 25) -> bytes:
    """A digital (text-layer) PDF; line items flow over as many A4 pages as they need."""
    doc = pymupdf.open()
    items = invoice.line_items
    chunks = [items[i : i + rows_per_page] for i in range(0, len(items), rows_per_page)] or [[]]
    for page_no, chunk in enumerate(chunks, start=1):
        page = doc.new_page(width=595, height=842)
        y = 60.0
        page.insert_text((50, y), invoice.vendor_name, fontsize=16, fontname="hebo")
        page.insert_text((50, y + 18), invoice.vendor_address, fontsize=9)
        page.insert_text((400, y), "INVOICE", fontsize=20, fontname="hebo")
        y = 130.0
        for label, value in (
            ("Invoice No.:", invoice.invoice_number),
            ("Invoice Date:", invoice.invoice_date.isoformat()),
            ("Due Date:", invoice.due_date.isoformat()),
            ("Page:", f"{page_no} / {len(chunks)}"),
        ):
            page.insert_text((350, y), label, fontsize=10, fontname="hebo")
            page.insert_text((440, y), value, fontsize=10)
            y += 15
        page.insert_text((50, 130), "Bill to:", fontsize=10, fontname="hebo")
        page.insert_text((50, 145), invoice.customer_name, fontsize=10)
        y = 220.0
        columns = ((50, "Description"), (330, "Qty"), (390, "Unit Price"), (490, "Amount"))
        for x, title in columns:
            page.insert_text((x, y), title, fontsize=10, fontname="hebo")
        page.draw_line((50, y + 5), (545, y + 5))
        y += 20
        for item in chunk:
            page.insert_text((50, y), str(item["description"]), fontsize=10)
            page.insert_text((330, y), str(item["quantity"]), fontsize=10)
            page.insert_text((390, y), _money(Decimal(str(item["unit_price"]))), fontsize=10)
            page.insert_text((490, y), _money(Decimal(str(item["amount"]))), fontsize=10)
            y += 16
        if page_no == len(chunks):
            page.draw_line((330, y), (545, y))
            y += 16
            totals: tuple[tuple[str, Decimal], ...] = (
                ("Subtotal", invoice.subtotal),
                (f"VAT {invoice.tax_rate}%", invoice.tax),
                (f"Total {invoice.currency}", invoice.total),
            )
            for name, amount in totals:
                page.insert_text((390, y), name, fontsize=10, fontname="hebo")
                page.insert_text((490, y), _money(amount), fontsize=10)
                y += 16
            page.insert_text(
                (50, 800), f"Payment due by {invoice.due_date.isoformat()}.", fontsize=8
            )
        else:
            page.insert_text((390, y + 10), "continued on next page", fontsize=9)
    data: bytes = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def scanned_pdf(pdf: bytes, seed: int = 0, dpi: int = 200) -> bytes:
    """An image-only PDF that looks scanned: slightly rotated, blurred and noisy, no text layer."""
    rng = random.Random(seed)
    source = pymupdf.open(stream=pdf, filetype="pdf")
    out = pymupdf.open()
    for index in range(source.page_count):
        page = source[index]
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
        image = image.rotate(rng.uniform(-1.2, 1.2), expand=False, fillcolor=255)
        image = image.filter(ImageFilter.GaussianBlur(0.6))
        noise = Image.effect_noise(image.size, 18).point(lambda v: (v - 128) // 4 + 128)
        image = Image.blend(image, noise, 0.12)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=70)
        target = out.new_page(width=page.rect.width, height=page.rect.height)
        target.insert_image(target.rect, stream=buf.getvalue())
    data: bytes = out.tobytes(deflate=True)
    source.close()
    out.close()
    return data


def corrupt_pdf(pdf: bytes) -> bytes:
    """Bytes that claim to be a PDF and are not one: a header followed by garbage."""
    rng = random.Random(len(pdf))
    return b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(2048))


def demo_documents() -> list[tuple[str, bytes, dict[str, Any] | None]]:
    """(key, bytes, expected data or None when the document must fail)."""
    clean = make_invoice(1, items=4)
    scanned = make_invoice(2, items=3)
    multi = make_invoice(3, items=45)
    return [
        ("incoming/clean invoice.pdf", render_pdf(clean), clean.expected()),
        (
            "incoming/scanned-invoice.pdf",
            scanned_pdf(render_pdf(scanned), seed=2),
            scanned.expected(),
        ),
        ("incoming/multi-page+invoice.pdf", render_pdf(multi, rows_per_page=20), multi.expected()),
        ("incoming/corrupt.pdf", corrupt_pdf(render_pdf(clean)), None),
    ]
