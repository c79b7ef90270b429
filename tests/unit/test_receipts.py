"""Receipts offline: photographed thermal receipts read by the local extractor and rules."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from PIL import Image

from pipeline.costing import load_price_table
from pipeline.domain import Word
from pipeline.extractors import build_extractor
from pipeline.rules import extract_receipt
from pipeline.schemas import get_schema
from pipeline.settings import Settings
from pipeline.usecases.extract_file import extract_bytes
from tests.support.receipts import make_receipt, receipt_photo


def test_the_generator_prints_what_it_says() -> None:
    receipt = make_receipt(5)
    expected = receipt.expected()
    items = sum((Decimal(i["amount"]) for i in expected["line_items"]), Decimal(0))
    assert Decimal(expected["total"]) == items
    # Prices include the tax: the tax is the total's share at the rate.
    rate = receipt.tax_rate
    assert abs(Decimal(expected["tax"]) - receipt.total * rate / (100 + rate)) < Decimal("0.01")


def test_a_receipt_photo_is_a_narrow_image_on_a_table() -> None:
    data, _ = receipt_photo(3)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert image.width < image.height * 1.2  # a narrow roll, not an A4 page
    low, high = image.convert("L").getextrema()
    assert low > 0 and high < 255  # faded: low contrast, no pure black or white


# Seeds whose photos the bundled Tesseract reads in full; the others test the rules' limits
# in `pagemill eval` on the generated set (see the README).
@pytest.mark.parametrize("seed", [3, 5, 7])
def test_a_photographed_receipt_is_read_offline(seed: int) -> None:
    data, receipt = receipt_photo(seed)
    settings = Settings()
    result, meter = extract_bytes(
        data,
        build_extractor(settings, "local"),
        get_schema("receipt"),
        load_price_table(),
        settings,
    )
    got = result.data or {}
    assert got["merchant_name"] == receipt.merchant_name
    assert got["date"] == receipt.day.isoformat()
    assert Decimal(got["total"]) == receipt.total
    assert Decimal(got["tax"]) == receipt.tax
    assert got["currency"] == receipt.currency
    amounts = [Decimal(i["amount"]) for i in got["line_items"]]
    assert sum(amounts, Decimal(0)) == receipt.total
    assert meter.cost_usd == 0


def _line(y: float, *cells: tuple[float, str]) -> list[Word]:
    return [Word(text, x, y, x + 6.0 * len(text), y + 7.0) for x, text in cells]


def test_a_price_on_a_tilted_baseline_joins_its_label() -> None:
    """A photo taken at an angle puts the total's label and amount on two baselines."""
    words = [
        *_line(20, (60, "Bäckerei"), (120, "Sonnenkorn")),
        *_line(34, (70, "Lindenstraße"), (150, "14")),
        *_line(50, (20, "07.03.2025"), (90, "10:36:35")),
        *_line(64, (20, "Brötchen"), (180, "6,99")),
        *_line(74, (20, "Apfelsaft"), (180, "3,20")),
        *_line(90, (20, "SUMME"), (60, "EUR")),
        *_line(94.5, (178, "10,19")),
        *_line(106, (20, "MwSt"), (50, "19%"), (180, "1,63")),
    ]
    result = extract_receipt([(words, 220.0, 300.0)])
    assert result.merchant_name == "Bäckerei Sonnenkorn"
    assert result.total == Decimal("10.19")
    assert result.tax == Decimal("1.63")
    assert [i["amount"] for i in result.line_items] == ["6.99", "3.20"]
    assert result.confidence["total"] == 1.0  # labelled, and the items add up to it
