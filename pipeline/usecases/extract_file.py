"""Extract a local file in-process (no broker, no database): the `pagemill extract` path."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.costing import PriceTable
from pipeline.domain import ExtractionResult
from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.extractors.base import Extractor
from pipeline.pages import opened
from pipeline.retry import RetryPolicy
from pipeline.schemas import SchemaSpec
from pipeline.settings import Settings
from pipeline.usecases.einvoice import extractor_for_source
from pipeline.usecases.extract import Meter, chunked, extract_pages
from pipeline.usecases.process import check_result, ensure_words, limits_from, options_from


def read_input(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PermanentError(
                ErrorCategory.TOO_LARGE,
                f"{path.name} is {size:,} bytes; the limit is {max_bytes:,} "
                "(PAGEMILL_MAX_FILE_BYTES)",
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise PermanentError(ErrorCategory.NOT_FOUND, f"no such file: {path}") from None
    except IsADirectoryError:
        raise PermanentError(ErrorCategory.BAD_INPUT, f"{path} is a directory") from None
    except PermissionError:
        raise PermanentError(
            ErrorCategory.BAD_INPUT, f"cannot read {path}: permission denied"
        ) from None


def extract_bytes(
    data: bytes,
    extractor: Extractor,
    schema: SchemaSpec,
    prices: PriceTable,
    settings: Settings,
    retry: RetryPolicy | None = None,
) -> tuple[ExtractionResult, Meter]:
    """The workers' path without the workers: split → (OCR) → extract → validate → check and
    ground, retrying transient provider errors with the workers' policy. Raises PipelineError
    when the document cannot be extracted."""
    policy = retry or RetryPolicy(
        max_retries=settings.task_max_retries,
        base_s=settings.retry_base_s,
        cap_s=settings.retry_cap_s,
    )
    options = options_from(settings)
    meter = Meter()
    with opened(data, limits_from(settings)) as source:
        extractor = extractor_for_source(extractor, source, schema, settings)
        pages = list(source.pages())
        if extractor.runs_locally or settings.ocr_scanned_pages:
            for page in pages:
                ensure_words(page, source, settings, for_extraction=extractor.runs_locally)
        size = len(pages) if extractor.runs_locally else settings.pages_per_call
        retries = 0
        while True:
            try:
                result = extract_pages(
                    extractor, schema, chunked(pages, size), source, prices, meter, options
                )
                break
            except TransientError as exc:
                if not policy.should_retry(exc, retries):
                    raise
                time.sleep(policy.delay_s(retries, exc.retry_after_s))
                retries += 1
        result = check_result(extractor, schema, result, pages, source, prices, meter, options)
    return result, meter
