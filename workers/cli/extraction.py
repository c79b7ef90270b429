"""Commands that extract in this process, without broker or database: one file (extract) or
a folder scored against its ground truth (eval)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.errors import PipelineError
from pipeline.money import usd
from workers.cli.shared import die, load_user_schemas, settings_or_exit


def extract(
    file: Annotated[Path, typer.Argument(help="A PDF, PNG, JPEG or TIFF file.")],
    schema: Annotated[str, typer.Option(help="Schema name.")] = "invoice",
    provider: Annotated[
        str | None, typer.Option(help="Extractor: local, anthropic, openai_compat.")
    ] = None,
) -> None:
    """Extract one file in-process (no broker, no database) and print the result as JSON."""
    from pipeline.costing import load_price_table
    from pipeline.extractors import build_extractor
    from pipeline.schemas import get_schema
    from pipeline.usecases.extract_file import extract_bytes, read_input

    settings = settings_or_exit()
    try:
        load_user_schemas(settings)
        spec = get_schema(schema)
        extractor = build_extractor(settings, provider)
        data = read_input(file, settings.max_file_bytes)
        result, meter = extract_bytes(
            data, extractor, spec, load_price_table(settings.price_table), settings
        )
    except PipelineError as exc:
        die(f"{file}: {exc}")
    output = {
        "file": str(file),
        "schema": spec.name,
        "schema_version": spec.version,
        "provider": result.provider,
        "model": result.model,
        "status": "needs_review" if result.needs_review else "done",
        "data": result.data,
        "review_reasons": result.review_reasons,
        "grounding": result.grounding,
        "cost_usd": usd(meter.cost_usd),
        "calls": len(meter.calls),
        "input_tokens": sum(c.usage.total_input_tokens for c in meter.calls),
        "output_tokens": sum(c.usage.output_tokens for c in meter.calls),
    }
    typer.echo(json.dumps(output, indent=2, ensure_ascii=False))


def evaluate_dir(
    directory: Annotated[
        Path, typer.Argument(help="A folder with docs/ and gt/ (samples layout).")
    ],
    provider: Annotated[str | None, typer.Option(help="Extractor to evaluate.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
    schema: Annotated[str, typer.Option(help="Schema name.")] = "invoice",
) -> None:
    """Score extraction against ground truth, per field, per document kind and per source."""
    import time

    from pipeline.costing import load_price_table
    from pipeline.evaluation import evaluate, format_report, load_cases
    from pipeline.extractors import build_extractor
    from pipeline.schemas import get_schema
    from pipeline.usecases.extract_file import extract_bytes, read_input

    settings = settings_or_exit()
    try:
        load_user_schemas(settings)
        cases = load_cases(directory)
        spec = get_schema(schema)
        extractor = build_extractor(settings, provider)
    except (OSError, PipelineError) as exc:
        die(str(exc))
    prices = load_price_table(settings.price_table)

    readers: dict[Path, str] = {}  # e-invoices are read from their XML, whatever the provider

    def run(path: Path) -> tuple[dict[str, Any], Decimal, float]:
        started = time.perf_counter()
        result, meter = extract_bytes(
            read_input(path, settings.max_file_bytes), extractor, spec, prices, settings
        )
        readers[path] = result.provider
        return result.data or {}, meter.cost_usd, time.perf_counter() - started

    from rich.progress import track

    report = evaluate(
        track(cases, description="evaluating", transient=True), run, read_by=readers.get
    )
    typer.echo(format_report(report))
    if out is not None:
        out.write_text(json.dumps(report.to_dict(), indent=2, default=str, ensure_ascii=False))
        typer.echo(f"report written to {out}")
