"""The offline extractor never crashes: generated and mutated pages always give a valid record.

Property tests (hypothesis) feed the invoice and receipt rules pages of random words and real
pages damaged the ways scans and broken PDFs damage them. The suite runs the `suite` profile
(about 300 pages, ~15 CPU-seconds here); `pytest tests/unit/test_offline_robustness.py
--hypothesis-profile=long` feeds about 15,000 (a run of a few minutes per thousand pages).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.domain import Word
from pipeline.extractors.local import read_with_rules
from pipeline.pages import Limits, opened
from pipeline.rules import PageWords, extract_invoice, extract_receipt
from pipeline.schemas import get_schema
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.validation import validate
from tests.conftest import SAMPLES

settings.register_profile(
    "suite",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("suite")

RULES = {"invoice": extract_invoice, "receipt": extract_receipt}

# Words that steer the rules: labels in several languages, amounts, dates, currencies, noise.
_VOCABULARY = [
    *[
        "Invoice",
        "Rechnung",
        "Facture",
        "Factuur",
        "Fattura",
        "Total",
        "Summe",
        "Gesamtbetrag",
        "Brutto",
        "Netto",
        "MwSt",
        "VAT",
        "TVA",
        "BTW",
        "IVA",
        "Subtotal",
        "Zwischensumme",
        "Date",
        "Datum",
        "No.",
        "Nr.",
        "N°",
        "#",
        ":",
        "-",
        "/",
        "|",
        "Seller",
        "Verkäufer",
        "Bill",
        "to",
        "Kunde",
        "Client",
        "TTC",
        "HT",
        "EUR",
        "€",
        "$",
        "£",
        "CHF",
        "GmbH",
        "SARL",
        "Ltd",
        "AG",
        "Inc",
        "Tel",
        "IBAN",
        "www.example.com",
        "info@shop.de",
        "Balance",
        "Saldo",
        "Rechnungsbetrag",
        "Steuer",
        "19%",
        "7,00%",
        "x",
        "@",
        "Beleg-Nr.",
        "SUMME",
        "BAR",
        "RÜCKGELD",
        "Kassenbon",
    ],
    "1.234,56",
    "1,234.56",
    "0,00",
    "-5,00",
    "(12.00)",
    "99999999999999999,99",
    "12.03.2024",
    "2024-02-30",
    "31/12/99",
    "20260815",
    "1. März 2025",
    "ΗΑ007",
    "ОПЕ",
    "\ufffd",
    "",
    " ",
]

_finite = st.floats(min_value=-2000, max_value=4000, allow_nan=False, allow_infinity=False)
_token = st.one_of(
    st.sampled_from(_VOCABULARY),
    st.text(alphabet=string.ascii_letters + string.digits + ".,:-/%€$()", max_size=14),
    st.text(max_size=8),  # any unicode at all
)


@st.composite
def _word(draw: st.DrawFn, width: float = 595, height: float = 842) -> Word:
    x0 = draw(st.floats(min_value=-20, max_value=width + 20))
    y0 = draw(st.floats(min_value=-20, max_value=height + 20))
    w = draw(st.one_of(st.floats(min_value=0, max_value=200), st.just(0.0)))
    h = draw(st.one_of(st.floats(min_value=0, max_value=40), st.just(0.0)))
    return Word(draw(_token), x0, y0, x0 + w, y0 + h)


@st.composite
def _page(draw: st.DrawFn) -> PageWords:
    width = draw(st.sampled_from([595.0, 226.0, 612.0, 0.0, 1.0]))
    height = draw(st.sampled_from([842.0, 600.0, 792.0, 0.0, 1.0]))
    words = draw(st.lists(_word(), max_size=80))
    return (words, width, height)


@st.composite
def _tabular_page(draw: st.DrawFn) -> PageWords:
    """Words on a grid: lines and columns, as invoices and receipts print them."""
    rows = draw(st.integers(min_value=1, max_value=30))
    words = []
    for row in range(rows):
        for col in range(draw(st.integers(min_value=1, max_value=6))):
            text = draw(_token)
            x0 = 40.0 + col * draw(st.sampled_from([60.0, 90.0, 120.0]))
            y0 = 40.0 + row * draw(st.sampled_from([8.0, 12.0, 14.0]))
            words.append(Word(text, x0, y0, x0 + 6.0 * max(len(text), 1), y0 + 10.0))
    return (words, 595.0, 842.0)


def _checked(schema: str, pages: Sequence[PageWords]) -> None:
    """The rules' answer on these pages validates against the schema."""
    answer = RULES[schema](pages, None)
    data = answer.as_dict()
    checked = validate(get_schema(schema), data)
    assert checked.ok, (checked.errors, data)
    for name, value in answer.confidence.items():
        assert 0.0 <= value <= 1.0, (name, value)


@pytest.mark.parametrize("schema", sorted(RULES))
@given(pages=st.lists(st.one_of(_page(), _tabular_page()), min_size=1, max_size=3))
def test_random_pages_give_a_valid_record(schema: str, pages: list[PageWords]) -> None:
    _checked(schema, pages)


def _real_pages() -> list[list[PageWords]]:
    """Real text layers: the generated invoices, and the samples when they are beside us."""
    documents = [render_pdf(make_invoice(seed, items=3 + seed)) for seed in (1, 2)]
    if (SAMPLES / "docs").is_dir():
        documents += [p.read_bytes() for p in sorted((SAMPLES / "docs").glob("*.pdf"))[:3]]
    out = []
    for data in documents:
        with opened(data, Limits()) as doc:
            out.append([(list(p.words), p.width_pt, p.height_pt) for p in doc.pages()])
    return out


REAL = _real_pages()
_LOOK_ALIKES = {"0": "O", "1": "l", "5": "S", "8": "B", "a": "а", "e": "е", "o": "о", "H": "Η"}


@st.composite
def _mutated(draw: st.DrawFn) -> list[PageWords]:
    """A real document damaged: words dropped, duplicated, moved, glued, split, misread."""
    document = draw(st.sampled_from(REAL))
    pages = []
    for words, width, height in document:
        out: list[Word] = []
        for word in words:
            action = draw(
                st.sampled_from(["keep"] * 6 + ["drop", "twice", "move", "misread", "glue", "cut"])
            )
            if action == "drop":
                continue
            if action == "twice":
                out += [word, word]
            elif action == "move":
                dx, dy = draw(_finite), draw(st.floats(min_value=-30, max_value=30))
                out.append(Word(word.text, word.x0 + dx, word.y0 + dy, word.x1 + dx, word.y1 + dy))
            elif action == "misread":
                text = "".join(_LOOK_ALIKES.get(c, c) for c in word.text)
                out.append(Word(text, word.x0, word.y0, word.x1, word.y1))
            elif action == "glue" and out:
                last = out.pop()
                out.append(Word(last.text + word.text, last.x0, last.y0, word.x1, word.y1))
            elif action == "cut" and len(word.text) > 1:
                mid = (word.x0 + word.x1) / 2
                half = len(word.text) // 2
                out.append(Word(word.text[:half], word.x0, word.y0, mid, word.y1))
                out.append(Word(word.text[half:], mid, word.y0, word.x1, word.y1))
            else:
                out.append(word)
        pages.append((out, width, height))
    if draw(st.booleans()):
        pages = pages[::-1]  # pages out of order
    return pages


@pytest.mark.parametrize("schema", sorted(RULES))
@given(pages=_mutated())
def test_damaged_real_pages_give_a_valid_record(schema: str, pages: list[PageWords]) -> None:
    _checked(schema, pages)


@given(
    pages=st.lists(
        st.tuples(
            st.lists(
                st.builds(
                    Word,
                    _token,
                    st.floats(allow_nan=True),
                    st.floats(allow_nan=True),
                    st.floats(allow_nan=True),
                    st.floats(allow_nan=True),
                ),
                max_size=30,
            ),
            st.floats(allow_nan=True),
            st.floats(allow_nan=True),
        ),
        max_size=2,
    )
)
@settings(max_examples=30)
def test_even_impossible_geometry_ends_in_a_result(pages: list[PageWords]) -> None:
    """NaN and infinite coordinates never come out of PyMuPDF or Tesseract; if they ever did,
    the extractor still answers: a valid record, with a note when the rules gave up."""
    reply = read_with_rules(extract_invoice, pages)
    assert reply.data is not None
    assert validate(get_schema("invoice"), reply.data).ok


def _broken_rules(pages: Sequence[PageWords], reread: object) -> object:
    raise ValueError("max() arg is an empty sequence")


def test_a_failure_inside_the_rules_becomes_an_empty_record_with_the_reason() -> None:
    reply = read_with_rules(_broken_rules, [([], 595.0, 842.0)])  # type: ignore[arg-type]
    assert reply.data == {}
    assert validate(get_schema("invoice"), reply.data).ok
    assert reply.notes and "ValueError: max() arg is an empty sequence" in reply.notes[0]


def test_fuzz_inputs_are_finite_by_default() -> None:
    # The tabular and random pages use finite coordinates: failures there are rule bugs.
    assert all(math.isfinite(w.x0) for page in REAL for words, _, _ in page for w in words)
