"""The shared text-and-value layer: what the rules and grounding both read from a page."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pipeline.domain import Word
from pipeline.text.amounts import amount_readings, parse_amount
from pipeline.text.dates import date_readings, find_dates
from pipeline.text.layer import trust_text_layer
from pipeline.text.lines import group_line_indexes
from pipeline.text.normalise import fold, latin


def test_look_alike_letters_of_other_scripts_fold_to_latin() -> None:
    assert latin("ΗΑ007") == "HA007"  # Greek capitals read for Latin ones
    assert fold("mOTEL ОПЕ").startswith("motel o")  # a Cyrillic O
    assert fold("Société Hôtelière") == "societe hoteliere"


def test_one_amount_reading_for_the_rules_every_reading_for_grounding() -> None:
    parsed = parse_amount("1.005")
    assert parsed is not None and parsed.value == Decimal("1005")
    assert set(amount_readings("1.005")) == {Decimal("1.005"), Decimal("1005")}
    assert amount_readings("€ 1.368,84") == (Decimal("1368.84"),)


def test_dates_in_several_languages_and_compact_form() -> None:
    assert [d.value for d in find_dates("3 agosto 2026")] == [date(2026, 8, 3)]
    assert [d.value for d in find_dates("15 de marzo de 2025")] == [date(2025, 3, 15)]
    assert [d.value for d in find_dates("Date : 20260815")] == [date(2026, 8, 15)]
    assert date(2014, 7, 11) in date_readings("11. Juli 2014")


def test_lines_are_grouped_by_overlap_and_stacked_words_kept_apart() -> None:
    words = [
        Word("Total", 10, 100, 40, 110),
        Word("119,00", 200, 101, 240, 111),
        Word("Shipment", 10, 80, 60, 90),
        Word("Date", 10, 91, 40, 99),  # overlaps the line below a little, but stacks on it
    ]
    lines = group_line_indexes(words)
    assert [sorted(words[i].text for i in line) for line in lines] == [
        ["Shipment"],
        ["Date"],
        ["119,00", "Total"],
    ]


def _page(texts: list[str]) -> list[Word]:
    return [
        Word(t, 10.0 + 50 * (i % 8), 10.0 * (i // 8), 50.0 + 50 * (i % 8), 10.0 * (i // 8) + 8)
        for i, t in enumerate(texts)
    ]


def test_a_scanners_text_layer_with_look_alikes_or_without_spaces_is_not_trusted() -> None:
    clean = _page(["Rechnung", "Nr.", "4711", "vom", "01.02.2024", "Summe", "19,00", "EUR"] * 8)
    assert trust_text_layer(clean)
    assert not trust_text_layer([*clean[:-4], *_page(["Rеchnung", "Ρage", "ΗΑ007", "Мotel"])])
    glued = _page(["FürIhreReservierungenbesuchenSieuns", "HamptonbyHiltonHamburgCity"] * 4)
    assert not trust_text_layer([*clean[:40], *glued])
    russian = _page(["Счёт", "номер", "4711", "от", "01.02.2024", "Итого", "19,00", "руб"] * 8)
    assert trust_text_layer(russian)  # a page in another script is read as it is
