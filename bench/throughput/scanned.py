"""The scanned workload: its document pool and answers, and the CPU per scanned page by step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import log
from bench.throughput.options import Options
from bench.throughput.uploads import PoolItem


def scanned_pool_and_answers(opts: Options) -> tuple[list[PoolItem], Path]:
    """The scanned documents, and the fake provider's answers keyed by first-page image."""
    import json

    from bench import scans

    log(f"generating {opts.scanned_pool} scanned documents")
    docs = scans.workload(opts.scanned_pool)
    pool = [PoolItem(d.data, d.content_type, d.extension, d.schema) for d in docs]
    answers = {scans.answer_key(d): d.fields for d in docs}
    if len(answers) < len(docs):
        raise RuntimeError("two scanned documents send the same first image")
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    path = opts.log_dir / "scanned-answers.json"
    path.write_text(json.dumps(answers))
    return pool, path


STEP_ORDER = ("model image", "decode", "preprocess", "detect", "recognise", "ground")


def scanned_steps(count: int) -> dict[str, Any]:
    """CPU per scanned page by step, measured in this process (this thread's CPU) on the
    scanned pool, as the pipeline runs them: the model's image (render + JPEG, `page()`), the
    OCR for grounding with the fast setting (decode, preprocess, detect, recognise), and
    grounding plus rules on the answer. Also the share of the answers' values grounded."""
    from bench import scans
    from pipeline import ocr
    from pipeline.pages import Limits, opened
    from pipeline.schemas import get_schema
    from pipeline.settings import Settings
    from pipeline.usecases.process import ensure_words
    from pipeline.usecases.verify import verify
    from pipeline.validation import validate

    settings = Settings()
    ocr.one_thread_per_call()  # as in a worker process: thread CPU is then all of it
    docs = scans.workload(count)
    with opened(docs[0].data, Limits()) as source:  # the engine's one-off model load
        ensure_words(source.page(0), source, settings, for_extraction=False)
    totals = dict.fromkeys(STEP_ORDER, 0.0)
    pages = values = grounded = 0
    for doc in docs:
        with opened(doc.data, Limits()) as source:
            start = time.thread_time()
            contents = [source.page(i) for i in range(source.page_count)]
            totals["model image"] += time.thread_time() - start
            ocr.step_cpu(reset=True)
            for page in contents:
                ensure_words(page, source, settings, for_extraction=False)
            for step, seconds in ocr.step_cpu(reset=True).items():
                totals[step] = totals.get(step, 0.0) + seconds
        schema = get_schema(doc.schema)
        checked = validate(schema, doc.fields)  # the pipeline grounds the validated answer
        start = time.thread_time()
        verdict = verify(schema, checked.data() if checked.ok else doc.fields, contents)
        totals["ground"] += time.thread_time() - start
        pages += len(contents)
        values += len(verdict.grounding)
        grounded += sum(1 for found in verdict.grounding.values() if isinstance(found, dict))
    return {
        "documents": len(docs),
        "pages": pages,
        "ms/page": {k: 1000 * v / max(pages, 1) for k, v in totals.items()},
        "total ms/page": 1000 * sum(totals.values()) / max(pages, 1),
        "values": values,
        "grounded": grounded,
    }
