"""OCR engines and settings side by side: CPU per page, word accuracy, values grounded.

    python -m bench.ocr                    # generated scans, scanned samples, devset scans
    python -m bench.ocr --docs 4 --skip-devset

Three sets of pages:

* generated scans (`bench.scans`): invoice scans and receipt photos, scored against the words
  of the PDFs they were rendered from (CER, WER: `bench.wordscore`) and by the share of the
  answer's values that grounding finds in the words read;
* scanned variants of the shared samples (`tests.support.scanned_variants`: real invoices
  rendered, rotated, blurred, noisy, JPEG), scored the same way against the samples' own text
  layer, values from their ground truth;
* the development set's real scans (600 dpi office scans): values grounded only (there is no
  reference text: the scanner's own text layer is noisy).

CPU is the process's (all threads) plus reaped children (the tesseract command), per page,
excluding each engine's one-off model load (printed apart). Each setting runs the real code
path: `ensure_words` for the pipeline's settings (with the model's image reused where it is),
the tesseract command on the thorough setting's cleaned image for "before".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import common
from bench.common import log
from bench.scans import ScanDoc, workload
from bench.wordscore import Box, Score, score_pages

DEVSET_DIR = common.REPO_ROOT.parent / "shared" / "devset"
SAMPLES_ROOT = common.REPO_ROOT.parent / "shared" / "samples"
GT_KEYS = {"date": "invoice_date"}  # ground-truth name -> schema name


def cpu_now() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# --- what is read ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    corpus: str
    data: bytes
    fields: dict[str, Any]
    reference: Sequence[Sequence[Box]] | None  # per page; None: no reference text


def generated_cases(count: int) -> list[Case]:
    docs: tuple[ScanDoc, ...] = workload(max(count, 2))
    return [Case(d.name, "generated", d.data, d.fields, d.reference) for d in docs[:count]]


def _gt_fields(gt: dict[str, Any]) -> dict[str, Any]:
    return {GT_KEYS.get(k, k): v for k, v in (gt.get("fields") or {}).items() if v is not None}


def sample_cases(work: Path) -> list[Case]:
    from tests.support.scanned_variants import make_variants

    if not (SAMPLES_ROOT / "docs").is_dir():
        return []
    written = make_variants(SAMPLES_ROOT, work / "variants")
    cases = []
    for path in written:
        if not path.name.endswith("-scan.pdf"):
            continue
        stem = path.name.removesuffix("-scan.pdf")
        gt = json.loads((SAMPLES_ROOT / "gt" / f"{stem}.json").read_text("utf-8"))
        source = (SAMPLES_ROOT / "docs" / f"{stem}.pdf").read_bytes()
        from bench.scans import _pdf_words

        cases.append(
            Case(
                f"{stem} scanned",
                "samples, scanned",
                path.read_bytes(),
                _gt_fields(gt),
                _pdf_words(source),
            )
        )
    return cases


def devset_cases() -> list[Case]:
    if not (DEVSET_DIR / "gt").is_dir():
        return []
    cases = []
    for gt_path in sorted((DEVSET_DIR / "gt").glob("*.json")):
        gt = json.loads(gt_path.read_text("utf-8"))
        if gt.get("kind") != "scanned-pdf":
            continue
        data = (DEVSET_DIR / "docs" / gt["doc"]).read_bytes()
        cases.append(Case(gt["doc"], "devset scans", data, _gt_fields(gt), None))
    return cases


# --- settings --------------------------------------------------------------------------------

Reader = Callable[[Any, Any], list[Any]]  # (source document, page) -> words in points


def pipeline_reader(for_extraction: bool, **overrides: Any) -> Reader:
    from pipeline.settings import Settings
    from pipeline.usecases.process import ensure_words

    settings = Settings(**overrides)

    def read(source: Any, page: Any) -> list[Any]:
        page.words = []
        ensure_words(page, source, settings, for_extraction=for_extraction)
        return list(page.words)

    return read


def cli_before() -> Reader:
    """What the pipeline did before: the thorough clean-up at 300 dpi, then a `tesseract`
    process per page with four languages."""
    import cv2

    from pipeline import ocr
    from pipeline.domain import Word

    def read(source: Any, page: Any) -> list[Any]:
        image = source.render(page.index, 300)
        prepared = ocr.prepare_page(image, page.width_pt, ocr.THOROUGH)
        if prepared.image.size == 0:
            return []
        _, encoded = cv2.imencode(".png", prepared.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        done = subprocess.run(
            [
                "tesseract",
                "stdin",
                "stdout",
                "--psm",
                "6",
                "--dpi",
                str(round(prepared.dpi)),
                "-l",
                ocr.DEFAULT_LANGUAGES,
                "-c",
                "tessedit_do_invert=0",
                "tsv",
            ],
            input=encoded.tobytes(),
            capture_output=True,
            check=True,
            env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
        )
        factor = 72.0 / prepared.dpi
        return [
            Word(
                w.text, w.x0 * factor, w.y0 * factor, w.x1 * factor, w.y1 * factor, w.block, w.line
            )
            for w in ocr.parse_tsv(done.stdout.decode("utf-8", "replace"))
        ]

    return read


def rapidocr_reader(dpi: int = 150) -> Reader | None:
    """RapidOCR with the detection and recognition models its wheel bundles (no download), one
    thread, when it is installed (it is not a dependency of the pipeline)."""
    try:
        from rapidocr import RapidOCR
    except ImportError:
        return None
    import numpy as np

    from pipeline.domain import Word

    engine = RapidOCR(
        params={
            "Global.log_level": "warning",
            "Global.use_cls": False,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )

    def read(source: Any, page: Any) -> list[Any]:
        image = np.asarray(source.render(page.index, dpi).convert("RGB"))
        out = engine(image)
        factor = 72.0 / dpi
        words: list[Any] = []
        for line, (box, text) in enumerate(
            zip(out.boxes if out.boxes is not None else [], out.txts or (), strict=False)
        ):
            xs, ys = [p[0] for p in box], [p[1] for p in box]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            parts = text.split()
            chars = max(sum(len(p) for p in parts) + len(parts) - 1, 1)
            at = 0
            for part in parts:  # a line box split into words by character share
                a, b = x0 + (x1 - x0) * at / chars, x0 + (x1 - x0) * (at + len(part)) / chars
                words.append(Word(part, a * factor, y0 * factor, b * factor, y1 * factor, 0, line))
                at += len(part) + 1
        return words

    return read


def settings_table(include_before: bool) -> list[tuple[str, Reader]]:
    table: list[tuple[str, Reader]] = []
    if include_before:
        table.append(
            ("before: tesseract command, 4 languages, 300 dpi, every clean-up", cli_before())
        )
    table += [
        ("thorough (offline extractor): in process, 4 languages, 300 dpi", pipeline_reader(True)),
        (
            "fast (model path): 4 languages, text scaled to 18 px glyphs, clean-up when needed",
            pipeline_reader(False),
        ),
        ("fast, eng+deu", pipeline_reader(False, ocr_grounding_languages="eng+deu")),
        ("fast, eng only", pipeline_reader(False, ocr_grounding_languages="eng")),
    ]
    rapid = rapidocr_reader()
    if rapid is not None:
        table.append(("RapidOCR 3.10, bundled PP-OCRv6 small models, 150 dpi", rapid))
    return table


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Tally:
    pages: int = 0
    cpu_s: float = 0.0
    score: Score = field(default_factory=lambda: Score(0, 0, 0, 0))
    scored_pages: int = 0
    values: int = 0
    grounded: int = 0
    steps: dict[str, float] | None = None


def _grounded(fields: dict[str, Any], pages: list[Any]) -> tuple[int, int]:
    from pipeline.grounding import PageWords, ground

    result = ground(fields, [PageWords(i, words) for i, words in enumerate(pages)])
    return len(result.located()), len(result)


def measure(cases: list[Case], reader: Reader) -> Tally:
    from pipeline import ocr
    from pipeline.pages import Limits, opened

    tally = Tally(steps={})
    warmed = False
    for case in cases:
        with opened(case.data, Limits(max_pages=50)) as source:
            contents = [source.page(i) for i in range(source.page_count)]
            if not warmed:  # an engine's model load is paid once per worker, not per page
                reader(source, contents[0])
                warmed = True
            ocr.step_cpu(reset=True)
            start = cpu_now()
            read = [reader(source, page) for page in contents]
            tally.cpu_s += cpu_now() - start
            for step, seconds in ocr.step_cpu(reset=True).items():
                assert tally.steps is not None
                tally.steps[step] = tally.steps.get(step, 0.0) + seconds
        tally.pages += len(read)
        if case.reference is not None:
            boxes = [[(w.x0, w.y0, w.x1, w.y1, w.text) for w in words] for words in read]
            tally.score = tally.score + score_pages(case.reference, boxes)
            tally.scored_pages += len(case.reference)
        found, total = _grounded(case.fields, read)
        tally.grounded += found
        tally.values += total
    return tally


def engine_load_cpu() -> dict[str, float]:
    """One-off CPU of loading an engine (per worker thread): eng, and four languages."""
    import numpy as np

    from pipeline import ocr

    out = {}
    blank = np.full((64, 64), 255, np.uint8)
    for languages in ("eng", ocr.DEFAULT_LANGUAGES):
        start = time.process_time()
        ocr.run_tesseract(blank, 150, replace(ocr.FAST, languages=languages))
        out[languages] = time.process_time() - start
    return out


def compare(
    docs: int = 8, devset: bool = True, samples: bool = True, include_before: bool = True
) -> dict[str, Any]:
    """Every setting on every set of pages; returns the figures and prints the tables."""
    from pipeline import ocr

    ocr.one_thread_per_call()  # as in a worker process
    work = Path(tempfile.mkdtemp(prefix="pagemill-bench-ocr-"))
    corpora = {"generated": generated_cases(docs)}
    if samples:
        corpora["samples, scanned"] = sample_cases(work)
    if devset:
        corpora["devset scans"] = devset_cases()
    corpora = {k: v for k, v in corpora.items() if v}
    results: dict[str, Any] = {"engine load cpu s": engine_load_cpu(), "corpora": {}}
    for corpus, cases in corpora.items():
        rows = []
        for name, reader in settings_table(include_before):
            log(f"ocr: {corpus}: {name}")
            tally = measure(cases, reader)
            rows.append((name, tally))
        results["corpora"][corpus] = {
            name: {
                "pages": t.pages,
                "cpu ms/page": 1000 * t.cpu_s / max(t.pages, 1),
                "cer": t.score.cer if t.scored_pages else None,
                "wer": t.score.wer if t.scored_pages else None,
                "values": t.values,
                "grounded": t.grounded,
                "steps ms/page": {
                    k: 1000 * v / max(t.pages, 1) for k, v in (t.steps or {}).items()
                },
            }
            for name, t in rows
        }
        print()
        print(f"### OCR on {corpus}: {len(cases)} documents, {rows[0][1].pages} pages")
        print()
        print(
            common.table(
                ["engine, setting", "CPU ms/page", "CER %", "WER %", "values grounded", "share"],
                [
                    [
                        name,
                        1000 * t.cpu_s / max(t.pages, 1),
                        100 * t.score.cer if t.scored_pages else None,
                        100 * t.score.wer if t.scored_pages else None,
                        f"{t.grounded}/{t.values}",
                        t.grounded / max(t.values, 1),
                    ]
                    for name, t in rows
                ],
            )
        )
        steps = [(name, t.steps, t.pages) for name, t in rows if t.steps]
        if steps:
            print()
            print(
                common.table(
                    ["setting: CPU ms/page by step", "decode", "preprocess", "detect", "recognise"],
                    [
                        [
                            name.split(":")[0],
                            *(
                                1000 * s.get(k, 0.0) / max(p, 1)
                                for k in ("decode", "preprocess", "detect", "recognise")
                            ),
                        ]
                        for name, s, p in steps
                    ],
                )
            )
    loads = results["engine load cpu s"]
    print()
    print(
        "engine load (once per worker thread, not in the figures above): "
        + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in loads.items())
    )
    print(
        "CER/WER: edits ÷ reference characters/words, both sides in the same reading order "
        "(bench/wordscore.py); values grounded: the answer's values that grounding finds in "
        "the words read."
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ocr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=8, help="generated scanned documents")
    parser.add_argument("--skip-devset", action="store_true")
    parser.add_argument("--skip-samples", action="store_true")
    parser.add_argument(
        "--skip-before",
        action="store_true",
        help="leave out the tesseract-command baseline (the slowest)",
    )
    args = parser.parse_args(argv)
    results = compare(args.docs, not args.skip_devset, not args.skip_samples, not args.skip_before)
    path = common.write_results("ocr", results)
    print(f"figures saved to {path.relative_to(common.REPO_ROOT)}")
    print(common.reproduce_line("bench.ocr", list(argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
