"""The offline rules on the development set's digital invoices (the scanned ones need OCR and
are measured by `pagemill eval ../shared/devset`): a floor that catches regressions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.costing import load_price_table
from pipeline.evaluation import SCORED_FIELDS, evaluate, load_cases
from pipeline.extractors import build_extractor
from pipeline.schemas import get_schema
from pipeline.settings import Settings
from pipeline.usecases.extract_file import extract_bytes

DEVSET = Path(__file__).resolve().parents[2].parent / "shared" / "devset"


@pytest.fixture(scope="module")
def report() -> Any:
    if not (DEVSET / "docs").is_dir():
        pytest.skip("../shared/devset is not beside the repository")
    settings = Settings()
    extractor = build_extractor(settings, "local")
    schema, prices = get_schema("invoice"), load_price_table()

    def run(path: Path) -> tuple[dict[str, Any], Decimal, float]:
        result, meter = extract_bytes(path.read_bytes(), extractor, schema, prices, settings)
        return result.data or {}, meter.cost_usd, 0.0

    cases = [c for c in load_cases(DEVSET) if c.kind == "digital-pdf"]
    return evaluate(cases, run)


def test_digital_devset_invoices_are_read_by_the_rules(report: Any) -> None:
    assert not [d.name for d in report.docs if d.error]
    overall = report.accuracy()
    assert overall.scored >= 90
    assert overall.rate >= 0.95, overall
    for name in SCORED_FIELDS:
        assert report.accuracy(name).rate >= 0.85, (name, report.accuracy(name))


def test_the_report_breaks_accuracy_down_by_source(report: Any) -> None:
    assert len(report.sources) >= 5  # the digital invoices come from several repositories
    by_source = report.to_dict()["by_source"]
    assert sum(v["all"]["scored"] for v in by_source.values()) == report.accuracy().scored
