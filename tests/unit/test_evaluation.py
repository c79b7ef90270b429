"""Scoring rules and the evaluation report."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.evaluation import (
    Case,
    evaluate,
    format_report,
    load_cases,
    score_field,
    score_fields,
    vendor_matches,
)

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"


# --- scoring rules -------------------------------------------------------------------------


def test_null_ground_truth_is_not_scored() -> None:
    assert score_fields({"total": "1.00"}, {"total": None, "tax": "0.19"}) == {
        "total": None,
        "tax": False,
    }


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        ("110.00", "110.00", True),
        ("110", "110.00", True),
        (110, "110.00", True),
        (Decimal("1005.550"), "1005.55", True),
        ("1005.56", "1005.55", False),
        ("100.00", "110.00", False),
        (None, "110.00", False),
        ("1.005,55", "1005.55", False),  # predictions must already be normalised
    ],
)
def test_amounts_compare_numerically(got: Any, want: str, ok: bool) -> None:
    assert score_field("total", got, want) is ok


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        ("F20180027", "F20180027", True),
        ("f20180027", "F20180027", True),
        ("#103767", "103767", True),
        ("RE 2017 0509", "RE20170509", True),
        ("RE-20170509/505", "RE-20170509/505", True),
        ("RE-20170509-505", "RE-20170509/505", False),
        ("2014-3", "2014-03", False),
    ],
)
def test_invoice_numbers_ignore_spaces_hash_and_case(got: str, want: str, ok: bool) -> None:
    assert score_field("invoice_number", got, want) is ok


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        ("Kraxi GmbH", "Kraxi GmbH", True),
        ("KRAXI", "Kraxi GmbH", True),
        ("Alphabet", "Alphabet Fuhrparkmanagement GmbH", True),
        ("Alphabet Fuhrparkmanagement GmbH, München", "Alphabet Fuhrparkmanagement GmbH", True),
        ("Le Fournisseur S.A.R.L.", "LE FOURNISSEUR", True),
        ("Société Générale", "Societe Generale SA", True),
        ("Bei-Spiel GmbH", "Bei Spiel GmbH", True),
        ("GmbH", "Bei Spiel GmbH", False),
        ("Adatum Corporation", "CRONUS DE", False),
        ("Spielwaren", "Bei Spiel GmbH", False),
        ("", "Kraxi GmbH", False),
    ],
)
def test_vendor_names_match_loosely(got: str, want: str, ok: bool) -> None:
    assert vendor_matches(got, want) is ok


def test_date_field_is_our_invoice_date() -> None:
    assert score_fields({"invoice_date": "2018-12-31"}, {"date": "2018-12-31"}) == {"date": True}
    assert score_fields({"invoice_date": date(2018, 12, 31)}, {"date": "2018-12-31"}) == {
        "date": True
    }
    assert score_fields({"invoice_date": "2018-12-30"}, {"date": "2018-12-31"}) == {"date": False}
    assert score_fields({"invoice_date": "31/12/2018"}, {"date": "2018-12-31"}) == {"date": False}


def test_currency_is_exact() -> None:
    assert score_field("currency", "EUR", "EUR") is True
    assert score_field("currency", "€", "EUR") is False
    assert score_field("currency", "USD", "EUR") is False


# --- loading and running -------------------------------------------------------------------


def _write_case(root: Path, name: str, kind: str, fields: dict[str, Any]) -> None:
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "docs" / f"{name}.pdf").write_bytes(b"%PDF-1.7\n")
    gt = {"doc": f"{name}.pdf", "kind": kind, "pages": 2, "fields": fields}
    (root / "gt" / f"{name}.json").write_text(json.dumps(gt), encoding="utf-8")


def test_load_cases_reads_docs_and_gt(tmp_path: Path) -> None:
    _write_case(tmp_path, "a", "digital-pdf", {"total": "1.00"})
    _write_case(tmp_path, "b", "scanned-pdf", {"total": "2.00"})
    cases = load_cases(tmp_path)
    assert [(c.name, c.kind, c.pages, c.fields) for c in cases] == [
        ("a.pdf", "digital-pdf", 2, {"total": "1.00"}),
        ("b.pdf", "scanned-pdf", 2, {"total": "2.00"}),
    ]
    assert cases[0].path == tmp_path / "docs" / "a.pdf"


def test_load_cases_names_missing_documents(tmp_path: Path) -> None:
    _write_case(tmp_path, "a", "digital-pdf", {})
    (tmp_path / "docs" / "a.pdf").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.pdf"):
        load_cases(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_cases(tmp_path / "nowhere")


@pytest.mark.skipif(not (SAMPLES / "gt").is_dir(), reason="../shared/samples is not present")
def test_load_the_shared_samples() -> None:
    cases = load_cases(SAMPLES)
    assert len(cases) == 5 and {c.kind for c in cases} == {"digital-pdf"}
    assert all(c.path.is_file() for c in cases)


def _cases() -> list[Case]:
    return [
        Case("one.pdf", Path("one.pdf"), "digital-pdf", 1,
             {"total": "10.00", "currency": "EUR", "date": "2024-01-02", "tax": None}),
        Case("two.pdf", Path("two.pdf"), "scanned-pdf", 2,
             {"total": "20.00", "currency": "EUR", "date": "2024-01-03", "tax": "3.19"}),
        Case("bad.pdf", Path("bad.pdf"), "scanned-pdf", 1,
             {"total": "5.00", "currency": "USD", "date": None, "tax": "1.00"}),
    ]  # fmt: skip


def _fake_extract(path: Path) -> tuple[dict[str, Any], Decimal, float]:
    if path.name == "bad.pdf":
        raise RuntimeError("boom")
    answers = {
        "one.pdf": {"total": "10.00", "currency": "EUR", "invoice_date": "2024-01-02"},
        "two.pdf": {"total": "20", "currency": "USD", "invoice_date": "2024-01-03", "tax": "3.19"},
    }
    return answers[path.name], Decimal("0.0125"), 1.5


def test_evaluate_scores_per_field_and_kind() -> None:
    report = evaluate(_cases(), _fake_extract, fields=("total", "currency", "date", "tax"))
    assert (report.accuracy("total").correct, report.accuracy("total").scored) == (2, 3)
    assert report.accuracy("currency").rate == pytest.approx(1 / 3)
    assert report.accuracy("date").scored == 2  # null ground truth left out
    assert report.accuracy("tax", "scanned-pdf").scored == 2
    assert report.accuracy(None, "digital-pdf").rate == 1.0
    assert report.total_cost_usd == Decimal("0.0250")
    failed = report.docs[2]
    assert failed.error == "RuntimeError: boom"
    assert failed.scores == {"total": False, "currency": False, "date": None, "tax": False}
    # seconds per page: 1.5 s for one page and 1.5 s for two pages
    assert report.seconds_per_page("digital-pdf") == pytest.approx(1.5)
    assert report.seconds_per_page("scanned-pdf") is not None


def test_report_formats_and_serialises() -> None:
    report = evaluate(_cases(), _fake_extract, fields=("total", "currency", "date", "tax"))
    text = format_report(report)
    assert "digital-pdf" in text and "scanned-pdf" in text
    assert "total" in text and "2/3" in text
    assert "RuntimeError: boom" in text
    assert "currency: got 'USD', want 'EUR'" in text
    data = report.to_dict()
    json.dumps(data)  # JSON-ready as it stands
    assert data["overall"]["total"] == {"correct": 2, "scored": 3, "rate": pytest.approx(2 / 3)}
    assert data["by_kind"]["scanned-pdf"]["currency"]["correct"] == 0
    assert data["docs"][1]["wrong"] == {"currency": {"expected": "EUR", "got": "USD"}}
