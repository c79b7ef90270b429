"""The benchmarks' word-accuracy scorer: reading order, character and word error rates."""

from __future__ import annotations

import pytest

from bench.wordscore import reading_order, score, score_pages


def test_words_are_put_in_visual_lines_whatever_their_order() -> None:
    words = [
        (300.0, 101.0, 340.0, 111.0, "10,00"),
        (50.0, 60.0, 90.0, 70.0, "Invoice"),
        (50.0, 100.0, 80.0, 110.0, "Total"),
        (95.0, 61.0, 130.0, 71.0, "42"),
    ]
    assert reading_order(words) == "Invoice 42\nTotal 10,00"


def test_error_rates_count_edits_against_the_reference() -> None:
    result = score("Total 10,00 EUR", "Tota1 10,00")
    # Characters: one substitution (l -> 1) and " EUR" missing: 5 edits of 15.
    assert (result.char_edits, result.chars) == (5, 15)
    assert result.cer == pytest.approx(5 / 15)
    # Words: "Tota1" is wrong and "EUR" missing: 2 of 3.
    assert result.wer == pytest.approx(2 / 3)


def test_a_perfect_reading_scores_zero_and_an_empty_one_everything() -> None:
    assert score("a b\nc", "a  b c").cer == 0.0
    empty = score("Net 5,00", "")
    assert empty.wer == 1.0 and empty.cer == 1.0


def test_rules_and_lone_punctuation_do_not_count() -> None:
    assert score("TOTAL ------------------ 5,00", "TOTAL ———— 5,00 |").wer == 0.0


def test_pages_add_up_and_a_missing_page_reads_as_empty() -> None:
    page = [(0.0, 0.0, 10.0, 10.0, "one"), (20.0, 0.0, 30.0, 10.0, "two")]
    both = score_pages([page, page], [page])
    assert (both.word_edits, both.words) == (2, 4)
