"""The offline extractor: real sample invoices (text layer and scanned), parsing, rules on made-up
layouts. OCR pieces are in test_ocr_preprocess.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image

from pipeline import ocr
from pipeline.domain import ExtractionRequest, Word
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.evaluation import score_fields
from pipeline.extractors import build_extractor
from pipeline.extractors.local import LocalExtractor
from pipeline.pages import Limits, opened
from pipeline.rules import extract_invoice
from pipeline.schemas import SchemaSpec, get_schema
from pipeline.schemas.invoice import Invoice
from pipeline.settings import Settings
from pipeline.text.amounts import parse_amount
from pipeline.text.dates import find_dates, parse_date
from tests.support.scanned_variants import make_variants

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
SCORED = ("invoice_number", "date", "total", "currency", "tax", "vendor_name")
needs_samples = pytest.mark.skipif(
    not (SAMPLES / "docs").is_dir(), reason="../shared/samples is not present"
)
_open_pdf: Callable[..., Any] = pymupdf.open


def extract_bytes(data: bytes) -> dict[str, Any]:
    with opened(data, Limits()) as doc:
        request = ExtractionRequest(
            schema=get_schema("invoice"), pages=list(doc.pages()), renderer=doc
        )
        reply = LocalExtractor().call(request)
    assert reply.data is not None
    assert reply.usage.total_input_tokens == 0 and reply.request_id is None
    # Whatever the rules return must be a valid invoice as it stands.
    Invoice.model_validate(reply.data)
    return reply.data


def ground_truth(name: str) -> dict[str, Any]:
    gt: dict[str, Any] = json.loads((SAMPLES / "gt" / f"{name}.json").read_text("utf-8"))
    return gt


def assert_matches(data: dict[str, Any], gt: dict[str, Any]) -> None:
    fields = {k: v for k, v in gt["fields"].items() if k in SCORED}
    scores = score_fields(data, fields)
    wrong = {
        k: (data.get("invoice_date" if k == "date" else k), fields[k])
        for k, ok in scores.items()
        if ok is False
    }
    assert not wrong, f"{gt['doc']}: (got, want) {wrong}"


# --- the five real invoices ----------------------------------------------------------------

SAMPLE_NAMES = [f"sample-0{i}" for i in range(1, 6)]


@needs_samples
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_invoices_from_text_layer(name: str) -> None:
    data = extract_bytes((SAMPLES / "docs" / f"{name}.pdf").read_bytes())
    assert_matches(data, ground_truth(name))


@needs_samples
def test_sample_line_items_add_up() -> None:
    data = extract_bytes((SAMPLES / "docs" / "sample-05.pdf").read_bytes())
    gt = ground_truth("sample-05")
    assert [i["description"] for i in data["line_items"]] == [
        i["description"] for i in gt["line_items"]
    ]
    for item, want in zip(data["line_items"], gt["line_items"], strict=True):
        assert Decimal(item["amount"]) == Decimal(want["amount"])
        assert Decimal(item["quantity"]) == Decimal(want["quantity"])


@needs_samples
def test_prepaid_invoice_reports_the_gross_total() -> None:
    """sample-02 prints "NET A PAYER 100,00" after a 10,00 prepayment; the total is 110,00."""
    data = extract_bytes((SAMPLES / "docs" / "sample-02.pdf").read_bytes())
    assert data["total"] == "110.00" and data["subtotal"] == "100.00" and data["tax"] == "10.00"
    assert data["due_date"] == "2019-01-30"


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scanned")
    make_variants(SAMPLES, out, names=["sample-02", "sample-03"])
    return out


@needs_samples
@pytest.mark.parametrize(
    "doc",
    ["sample-02-image.png", "sample-02-scan.pdf", "sample-03-image.png", "sample-03-scan.pdf"],
)
def test_scanned_variants(scanned: Path, doc: str) -> None:
    gt = json.loads((scanned / "gt" / f"{Path(doc).stem}.json").read_text("utf-8"))
    assert gt["kind"] in {"scanned-image", "scanned-pdf"}
    data = extract_bytes((scanned / "docs" / doc).read_bytes())
    assert_matches(data, gt)


@needs_samples
def test_scanned_variants_are_deterministic_and_image_only(tmp_path: Path) -> None:
    first = make_variants(SAMPLES, tmp_path / "a", names=["sample-05"], seed=3)
    second = make_variants(SAMPLES, tmp_path / "b", names=["sample-05"], seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    pdf = next(p for p in first if p.suffix == ".pdf")
    with _open_pdf(pdf) as doc:
        assert doc[0].get_text().strip() == ""
        assert len(doc[0].get_images()) == 1
    gt = json.loads((tmp_path / "a" / "gt" / f"{pdf.stem}.json").read_text("utf-8"))
    assert gt["kind"] == "scanned-pdf" and gt["doc"] == pdf.name
    assert gt["fields"] == ground_truth("sample-05")["fields"]


# --- documents without an invoice ----------------------------------------------------------


def _text_pdf(lines: Sequence[str]) -> bytes:
    with _open_pdf() as doc:
        page = doc.new_page(width=595, height=842)
        for n, text in enumerate(lines):
            page.insert_text((60, 80 + 16 * n), text, fontsize=11)
        data: bytes = doc.tobytes()
    return data


def test_a_letter_without_invoice_content_gives_nulls() -> None:
    data = extract_bytes(
        _text_pdf(
            [
                "Minutes of the garden committee",
                "We met on the usual evening and talked about the roses.",
                "The hedge along the north side needs cutting before summer.",
                "Everyone agreed to bring tools next time. Tea was served.",
                "Thanks to all volunteers for their help this season.",
            ]
        )
    )
    assert {k: v for k, v in data.items() if v not in (None, [])} == {}


def test_a_blank_scan_gives_nulls() -> None:
    buf = Image.new("RGB", (1654, 2339), "white")
    path_bytes = _png_bytes(buf)
    data = extract_bytes(path_bytes)
    assert {k: v for k, v in data.items() if v not in (None, [])} == {}


def _png_bytes(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(200, 200))
    return out.getvalue()


# --- extractor contract --------------------------------------------------------------------


def test_registered_as_local_and_deterministic() -> None:
    extractor = build_extractor(Settings(), "local")
    assert isinstance(extractor, LocalExtractor)
    assert (extractor.provider, extractor.model) == ("local", "local-rules-1")
    assert extractor.can_reask is False and extractor.runs_locally is True


def test_other_schemas_are_a_configuration_error() -> None:
    other = SchemaSpec(name="purchase_order", version="1", model=Invoice, instructions="")
    request = ExtractionRequest(schema=other, pages=[], renderer=_NoRenderer())
    with pytest.raises(PermanentError) as caught:
        LocalExtractor().call(request)
    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "local extractor supports" in caught.value.message


class _NoRenderer:
    def render(self, index: int, dpi: int) -> Image.Image:
        raise AssertionError("not expected to render")


def test_missing_language_data_is_a_configuration_error(tmp_path: Path) -> None:
    options = ocr.OcrOptions(languages="eng+deu", tessdata=str(tmp_path))
    with pytest.raises(PermanentError) as caught:
        ocr.ocr_page(Image.new("RGB", (200, 280), "white"), 595.0, options)
    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu" in (
        caught.value.message
    )


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "value"),
    [
        ("1.005,55", "1005.55"),
        ("1,005.55", "1005.55"),
        ("1 005,55", "1005.55"),
        ("1\u202f005,55", "1005.55"),
        ("€ 681.87", "681.87"),
        ("681,87 €", "681.87"),
        ("EUR 100,00", "100.00"),
        ("100,00EUR", "100.00"),
        ("$2,820.46", "2820.46"),
        ("CHF 1'250.00", "1250.00"),
        ("-5,00", "-5.00"),
        ("5,00-", "-5.00"),
        ("(12.50)", "-12.50"),
        ("1.000.000", "1000000"),
        ("0,79", "0.79"),
        ("3,5", "3.5"),
    ],
)
def test_amounts_in_any_style(printed: str, value: str) -> None:
    parsed = parse_amount(printed)
    assert parsed is not None and parsed.value == Decimal(value)


@pytest.mark.parametrize("printed", ["19%", "10,00%", "DE123456789", "12/03", "1.2.3", "abc"])
def test_not_amounts(printed: str) -> None:
    assert parse_amount(printed) is None


def test_amount_keeps_the_currency_it_was_printed_with() -> None:
    euro, pound = parse_amount("€ 5,00"), parse_amount("£12.00")
    assert euro is not None and euro.currency == "EUR"
    assert pound is not None and pound.currency == "GBP"


@pytest.mark.parametrize(
    ("text", "month_first", "expected"),
    [
        ("2017-05-09", False, date(2017, 5, 9)),
        ("09.05.2017", False, date(2017, 5, 9)),
        ("31/12/2018", False, date(2018, 12, 31)),
        ("03/04/2025", False, date(2025, 4, 3)),
        ("03/04/2025", True, date(2025, 3, 4)),
        ("02/17/26", False, date(2026, 2, 17)),  # only valid month first
        ("February 17, 2026", False, date(2026, 2, 17)),
        ("17 Feb 2026", False, date(2026, 2, 17)),
        ("11. Juli 2014", False, date(2014, 7, 11)),
        ("3. März 2024", False, date(2024, 3, 3)),
        ("31 décembre 2018", False, date(2018, 12, 31)),
        ("1er août 2021", False, date(2021, 8, 1)),
        ("5 mei 2023", False, date(2023, 5, 5)),
        ("14 maart 2022", False, date(2022, 3, 14)),
        ("Paris, le 31 décembre 2018", False, date(2018, 12, 31)),
        ("München, den 01 11.2024", False, date(2024, 11, 1)),  # OCR lost a dot
    ],
)
def test_dates_in_four_languages(text: str, month_first: bool, expected: date) -> None:
    assert parse_date(text, month_first=month_first) == expected


def test_not_dates() -> None:
    assert find_dates("Tel. 089/99822-0, IBAN DE34 7007 0010") == []
    assert parse_date("31.02.2024") is None
    assert parse_date("Seite 1/1") is None


# --- rules on made-up layouts --------------------------------------------------------------

Chunk = tuple[float, float, str] | tuple[float, float, str, float]


def layout(*chunks: Chunk) -> list[Word]:
    """Words of text chunks placed at (x, y) with an optional font size; roughly Helvetica."""
    words: list[Word] = []
    for chunk in chunks:
        x, y, text = chunk[0], chunk[1], chunk[2]
        size = chunk[3] if len(chunk) == 4 else 10.0
        for token in text.split():
            width = 0.52 * size * len(token)
            words.append(Word(token, x, y, x + width, y + 1.2 * size))
            x += width + 0.28 * size
    return words


def rules(*pages: list[Word]) -> dict[str, Any]:
    data = extract_invoice([(words, 595.0, 842.0) for words in pages]).as_dict()
    Invoice.model_validate(data)
    return data


# fmt: off
US_INVOICE: list[Chunk] = [
    (50, 40, "Acme Widgets Inc.", 16),
    (50, 62, "500 Market Street, San Francisco, CA 94105"),
    (400, 40, "INVOICE", 18),
    (350, 100, "Invoice #:"), (450, 100, "A-1042"),
    (350, 115, "Date:"), (450, 115, "03/04/2025"),
    (350, 130, "Due Date:"), (450, 130, "04/03/2025"),
    (50, 100, "Bill To:"), (50, 115, "Globex Corporation"),
    (50, 130, "1 Main Street, Springfield, IL 62701"),
    (50, 200, "Description"), (300, 200, "Qty"), (380, 200, "Unit Price"),
    (480, 200, "Amount"),
    (50, 220, "Widget, large"), (300, 220, "2"), (380, 220, "$1,250.00"),
    (480, 220, "$2,500.00"),
    (50, 236, "Service fee"), (300, 236, "1"), (380, 236, "$99.50"),
    (480, 236, "$99.50"),
    (380, 270, "Subtotal"), (480, 270, "$2,599.50"),
    (380, 286, "Sales Tax (8.5%)"), (480, 286, "$220.96"),
    (380, 302, "Total Due"), (480, 302, "$2,820.46"),
]

GERMAN_INVOICE: list[Chunk] = [
    (50, 40, "Müller & Söhne GmbH", 16),
    (50, 66, "Müller & Söhne GmbH · Lindenstraße 4 · 80331 München", 6),
    (50, 80, "Beispiel AG"), (50, 94, "Herrn Max Beispiel"),
    (50, 108, "Ringstraße 9"), (50, 122, "10115 Berlin"),
    (350, 80, "Rechnungsnummer:"), (460, 80, "R-2024-0815"),
    (350, 94, "Rechnungsdatum:"), (460, 94, "3. März 2024"),
    (350, 108, "Zahlbar bis:"), (460, 108, "17.03.2024"),
    (50, 180, "Pos. Bezeichnung"), (300, 180, "Menge"), (380, 180, "Einzelpreis"),
    (480, 180, "Gesamtpreis"),
    (50, 200, "1 Beratung"), (300, 200, "10"), (380, 200, "120,00 €"),
    (480, 200, "1.200,00 €"),
    (50, 216, "2 Reisekosten"), (300, 216, "1"), (380, 216, "80,00 €"),
    (480, 216, "80,00 €"),
    (380, 250, "Nettobetrag"), (480, 250, "1.280,00 €"),
    (380, 266, "zzgl. 19% MwSt."), (480, 266, "243,20 €"),
    (380, 282, "Gesamtbetrag"), (480, 282, "1.523,20 €"),
    (50, 780, "Müller & Söhne GmbH · Geschäftsführer: Hans Müller", 7),
    (50, 790, "USt-IdNr. DE123456789 · IBAN DE02 1203 0000 0000 2020 51", 7),
]

FRENCH_INVOICE: list[Chunk] = [
    (50, 40, "Boulangerie Dupont SARL", 16),
    (50, 60, "12 rue de la Paix"), (50, 72, "75002 Paris"),
    (350, 40, "FACTURE", 18),
    (350, 100, "Facture n°"), (440, 100, "FA-2018-112"),
    (350, 115, "Paris, le 31 décembre 2018"),
    (350, 130, "Échéance :"), (440, 130, "31/01/2019"),
    (50, 100, "Client :"), (50, 115, "Restaurant Le Gourmet"),
    (50, 180, "Désignation"), (300, 180, "Qté"), (380, 180, "Prix unitaire HT"),
    (480, 180, "Montant HT"),
    (50, 200, "Pain de campagne"), (300, 200, "20"), (380, 200, "3,50"),
    (480, 200, "70,00"),
    (50, 216, "Croissants"), (300, 216, "50"), (380, 216, "1,20"), (480, 216, "60,00"),
    (380, 250, "Total HT"), (480, 250, "130,00 €"),
    (380, 266, "TVA 5,5 %"), (480, 266, "7,15 €"),
    (380, 282, "Total TTC"), (480, 282, "137,15 €"),
    (380, 298, "Acompte versé"), (480, 298, "37,15 €"),
    (380, 314, "Net à payer"), (480, 314, "100,00 €"),
    (50, 790, "Boulangerie Dupont SARL - SIRET 123 456 789 00012", 7),
]

DUTCH_INVOICE: list[Chunk] = [
    (50, 40, "Bakkerij Jansen B.V.", 16),
    (50, 60, "Dorpsstraat 1, 1234 AB Utrecht"),
    (50, 72, "KvK 12345678 · BTW NL123456789B01", 8),
    (350, 100, "Factuurnummer:"), (460, 100, "2023-0042"),
    (350, 115, "Factuurdatum:"), (460, 115, "5 mei 2023"),
    (350, 130, "Vervaldatum:"), (460, 130, "4 juni 2023"),
    (50, 100, "Factuuradres:"), (50, 115, "Café De Hoek"),
    (50, 180, "Omschrijving"), (300, 180, "Aantal"), (380, 180, "Prijs"),
    (480, 180, "Bedrag"),
    (50, 200, "Brood volkoren"), (300, 200, "40"), (380, 200, "€ 2,75"),
    (480, 200, "€ 110,00"),
    (380, 250, "Subtotaal"), (480, 250, "€ 110,00"),
    (380, 266, "BTW 9%"), (480, 266, "€ 9,90"),
    (380, 282, "Totaal"), (480, 282, "€ 119,90"),
]
STACKED_US_INVOICE: list[Chunk] = [
    (50, 40, "Globex Supplies LLC", 16), (50, 60, "42 Elm Street, Austin, TX 78701"),
    (50, 100, "Invoice Number"), (200, 100, "Invoice Date"), (350, 100, "Due Date"),
    (50, 114, "INV-0001"), (200, 114, "Jan 5, 2024"), (350, 114, "Feb 4, 2024"),
    (50, 150, "Bill To"), (50, 164, "Initech Corp."),
    (50, 200, "Item"), (300, 200, "Quantity"), (380, 200, "Rate"), (480, 200, "Total"),
    (50, 220, "Total care package"), (300, 220, "3"), (380, 220, "40.00"), (480, 220, "120.00"),
    (380, 260, "Subtotal"), (480, 260, "120.00"),
    (380, 276, "Shipping"), (480, 276, "15.00"),
    (380, 292, "Tax"), (480, 292, "9.90"),
    (380, 308, "Total"), (480, 308, "144.90"),
    (380, 324, "Amount Paid"), (480, 324, "0.00"),
    (380, 340, "Balance Due"), (480, 340, "$144.90"),
]

GERMAN_DATED_AFTER_NUMBER: list[Chunk] = [
    (50, 40, "Schmidt Elektro KG", 14),
    (50, 56, "Schmidt Elektro KG, Bahnhofstr. 3, 04109 Leipzig", 6),
    (50, 70, "Stadtwerke Halle GmbH"), (50, 84, "Am Markt 1"), (50, 98, "06108 Halle"),
    (50, 150, "Rechnung Nr. 2024-117 vom 12.03.2024"),
    (50, 200, "Pos."), (80, 200, "Artikel"), (300, 200, "Anzahl"), (380, 200, "E-Preis"),
    (480, 200, "Summe"),
    (50, 216, "1"), (80, 216, "Kabel NYM 3x1,5"), (300, 216, "100"), (380, 216, "1,20"),
    (480, 216, "120,00"),
    (50, 232, "2"), (80, 232, "Montage"), (300, 232, "2"), (380, 232, "55,00"),
    (480, 232, "110,00"),
    (380, 260, "Zwischensumme"), (480, 260, "230,00"),
    (380, 276, "MwSt. 19 %"), (480, 276, "43,70"),
    (380, 292, "Rechnungsbetrag"), (480, 292, "273,70 EUR"),
    (50, 330, "Zahlbar innerhalb von 14 Tagen bis zum 26.03.2024 ohne Abzug."),
]

SWISS_REVERSE_CHARGE: list[Chunk] = [
    (50, 40, "Alpenblick AG", 14), (50, 56, "Seestrasse 10, 8002 Zürich"),
    (350, 100, "Rechnung"), (350, 114, "Nummer: 5501"), (350, 128, "Datum: 01.02.2025"),
    (330, 260, "Total exkl. MWST"), (480, 260, "CHF 1'000.00"),
    (330, 276, "MWST 0% (Reverse Charge)"), (480, 276, "CHF 0.00"),
    (330, 292, "Total inkl. MWST"), (480, 292, "CHF 1'000.00"),
]
# fmt: on


def test_english_us_invoice() -> None:
    data = rules(layout(*US_INVOICE))
    assert data["invoice_number"] == "A-1042"
    assert (data["invoice_date"], data["due_date"]) == ("2025-03-04", "2025-04-03")
    assert (data["subtotal"], data["tax"], data["total"]) == ("2599.50", "220.96", "2820.46")
    assert data["currency"] == "USD"
    assert data["vendor_name"] == "Acme Widgets Inc."
    assert data["customer_name"] == "Globex Corporation"
    assert [(i["description"], i["quantity"], i["unit_price"], i["amount"])
            for i in data["line_items"]] == [
        ("Widget, large", "2", "1250.00", "2500.00"),
        ("Service fee", "1", "99.50", "99.50"),
    ]  # fmt: skip


def test_german_invoice() -> None:
    data = rules(layout(*GERMAN_INVOICE))
    assert data["invoice_number"] == "R-2024-0815"
    assert (data["invoice_date"], data["due_date"]) == ("2024-03-03", "2024-03-17")
    assert (data["subtotal"], data["tax"], data["total"]) == ("1280.00", "243.20", "1523.20")
    assert data["currency"] == "EUR"
    assert data["vendor_name"] == "Müller & Söhne GmbH"
    assert data["customer_name"] == "Beispiel AG"
    assert [i["description"] for i in data["line_items"]] == ["Beratung", "Reisekosten"]


def test_french_invoice_with_prepayment() -> None:
    data = rules(layout(*FRENCH_INVOICE))
    assert data["invoice_number"] == "FA-2018-112"
    assert (data["invoice_date"], data["due_date"]) == ("2018-12-31", "2019-01-31")
    assert (data["subtotal"], data["tax"], data["total"]) == ("130.00", "7.15", "137.15")
    assert data["currency"] == "EUR"
    assert data["vendor_name"] == "Boulangerie Dupont SARL"
    assert data["customer_name"] == "Restaurant Le Gourmet"
    assert len(data["line_items"]) == 2


def test_dutch_invoice() -> None:
    data = rules(layout(*DUTCH_INVOICE))
    assert data["invoice_number"] == "2023-0042"
    assert (data["invoice_date"], data["due_date"]) == ("2023-05-05", "2023-06-04")
    assert (data["subtotal"], data["tax"], data["total"]) == ("110.00", "9.90", "119.90")
    assert data["currency"] == "EUR"
    assert data["vendor_name"] == "Bakkerij Jansen B.V."
    assert data["customer_name"] == "Café De Hoek"
    assert data["line_items"] == [
        {"description": "Brood volkoren", "quantity": "40", "unit_price": "2.75",
         "amount": "110.00"}
    ]  # fmt: skip


def test_labels_stacked_over_values_and_an_item_named_total() -> None:
    data = rules(layout(*STACKED_US_INVOICE))
    assert data["invoice_number"] == "INV-0001"
    assert (data["invoice_date"], data["due_date"]) == ("2024-01-05", "2024-02-04")
    # Shipping breaks subtotal + tax = total: the labelled total still wins over the due line.
    assert (data["subtotal"], data["tax"], data["total"]) == ("120.00", "9.90", "144.90")
    assert data["vendor_name"] == "Globex Supplies LLC"
    assert data["customer_name"] == "Initech Corp."
    assert [i["description"] for i in data["line_items"]] == ["Total care package"]


def test_german_invoice_dated_after_its_number() -> None:
    data = rules(layout(*GERMAN_DATED_AFTER_NUMBER))
    assert data["invoice_number"] == "2024-117"
    assert (data["invoice_date"], data["due_date"]) == ("2024-03-12", "2024-03-26")
    assert (data["subtotal"], data["tax"], data["total"]) == ("230.00", "43.70", "273.70")
    assert data["vendor_name"] == "Schmidt Elektro KG"
    assert data["vendor_address"] == "Bahnhofstr. 3, 04109 Leipzig"
    assert data["customer_name"] == "Stadtwerke Halle GmbH"
    assert [i["description"] for i in data["line_items"]] == ["Kabel NYM 3x1,5", "Montage"]


def test_number_under_the_title_and_zero_tax() -> None:
    data = rules(layout(*SWISS_REVERSE_CHARGE))
    assert data["invoice_number"] == "5501"
    assert data["invoice_date"] == "2025-02-01"
    assert (data["subtotal"], data["tax"], data["total"]) == ("1000.00", "0.00", "1000.00")
    assert data["currency"] == "CHF"
    assert data["vendor_name"] == "Alpenblick AG"


def test_two_pages_give_one_invoice_with_every_line_item() -> None:
    header: list[Chunk] = [
        (50, 40, "Northwind Traders Ltd", 16),
        (350, 100, "Invoice No.:"), (450, 100, "NW-77"),
        (350, 115, "Invoice Date:"), (450, 115, "2024-06-30"),
        (50, 200, "Description"), (300, 200, "Qty"), (380, 200, "Price"), (480, 200, "Amount"),
    ]  # fmt: skip
    rows: list[Chunk] = []
    for n in range(3):
        y = 220.0 + 16 * n
        rows += [(50, y, f"Item {n + 1}"), (300, y, "1"), (380, y, "10.00"), (480, y, "10.00")]
    first = layout(*header, *rows, (380, 300, "continued on next page"))
    second = layout(
        (50, 200, "Description"), (300, 200, "Qty"), (380, 200, "Price"), (480, 200, "Amount"),
        (50, 220, "Item 4"), (300, 220, "2"), (380, 220, "5.00"), (480, 220, "10.00"),
        (380, 260, "Subtotal"), (480, 260, "40.00"),
        (380, 276, "VAT 20%"), (480, 276, "8.00"),
        (380, 292, "Total GBP"), (480, 292, "48.00"),
    )  # fmt: skip
    data = rules(first, second)
    assert [i["description"] for i in data["line_items"]] == [
        "Item 1", "Item 2", "Item 3", "Item 4"
    ]  # fmt: skip
    assert (data["subtotal"], data["tax"], data["total"]) == ("40.00", "8.00", "48.00")
    assert data["currency"] == "GBP" and data["invoice_number"] == "NW-77"


def test_labels_that_name_other_numbers_are_not_the_invoice_number() -> None:
    data = rules(
        layout(
            (50, 100, "Customer No.: 4711"),
            (50, 115, "Order No.: PO-9912"),
            (50, 130, "N° de facture associée : F2020-001"),
            (50, 145, "VAT Reg. No. DE777777777"),
            (50, 160, "Facture N° : F2020-002"),
        )
    )
    assert data["invoice_number"] == "F2020-002"
    assert data["tax"] is None and data["total"] is None


def test_amounts_without_labels_are_not_invented() -> None:
    data = rules(layout((50, 100, "Some numbers 12,00 and 14.50"), (50, 120, "Page 1 / 2")))
    assert (data["total"], data["tax"], data["subtotal"]) == (None, None, None)
    assert data["currency"] is None
