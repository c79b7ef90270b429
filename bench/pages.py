"""Per-page cost of the prepare work, and memory on a 1,000-page PDF.

    python -m bench.pages
    python -m bench.pages --repeat 5 --big-pages 1000 --samples ../shared/samples/docs

1. Per page, on the shared sample PDFs (when present) and on generated invoices (digital one-page,
   five-page, and a scanned one-page): the text layer (one text page, read for the text and for
   the words, as the pipeline does), rendering at the size the model needs (long edge 1568 px) in
   RGB and in grey, JPEG quality 85 (the pipeline's, OpenCV straight from the pixmap; and Pillow
   from the same pixmap, for comparison) and PNG at the same pixel size (time and bytes, and
   how far the JPEG is from the lossless image in PSNR), and the pipeline's own
   `PdfDocument.page()` (text + words + render + JPEG + hash). The median of `--repeat` runs; CPU
   time of this thread, and for `page()` also of the process, which shows any work handed to
   other threads (OpenCV's pool would take a page-sized colour conversion).
2. Validate (the schema's pydantic model), verify (business rules + grounding) and the database
   write of page rows + payloads (16 pages per transaction, as the prepare stage does, and one
   page per transaction), per page.
3. OCR of scanned pages, every engine and setting side by side (`bench.ocr`): CPU per page,
   word accuracy (CER, WER) against the PDFs the scans were rendered from, and the share of
   values grounded, on generated scans, scanned samples and the development set's scans.
4. Peak memory of the two stages on a 10-page and a 1,000-page PDF (the same 10 pages
   concatenated 100 times), each stage in a fresh process running the real use case
   (`prepare_document`, then `extract_document` against a fake provider): the process's peak
   RSS (VmHWM; ru_maxrss is printed too, but after fork + exec Linux reports the parent's peak
   in it), RSS after imports, and the 1,000 ÷ 10 ratio.

Uses the database `pagemill_bench` (dropped and created here) and an in-process S3 server.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import common
from bench.common import log

DATABASE = "pagemill_bench"
LONG_EDGE = 1568
JPEG_QUALITY = 85


def cpu_ms(
    fn: Callable[[], Any], repeat: int, clock: Callable[[], float] = time.thread_time
) -> tuple[float, Any]:
    """Median CPU of `fn` in ms over `repeat` runs (this thread's unless `clock`), last result."""
    times, result = [], None
    for _ in range(repeat):
        start = clock()
        result = fn()
        times.append((clock() - start) * 1000)
    return statistics.median(times), result


def psnr(a: Any, b: Any) -> float:
    import numpy as np

    x = np.asarray(a, dtype=np.float32)
    y = np.asarray(b, dtype=np.float32)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# --- 1. per-page render and encode -------------------------------------------------------------


def documents(samples: Path | None) -> list[tuple[str, bytes]]:
    from pipeline.synthetic import make_invoice, render_pdf, scanned_pdf

    docs: list[tuple[str, bytes]] = []
    if samples is not None and samples.is_dir():
        docs += [(f"sample {p.stem}", p.read_bytes()) for p in sorted(samples.glob("*.pdf"))]
    one = make_invoice(101, items=8)
    docs.append(("generated invoice, 1 page", render_pdf(one)))
    docs.append(("generated invoice, 5 pages", render_pdf(make_invoice(102, items=120))))
    docs.append(("generated scan 200 dpi, 1 page", scanned_pdf(render_pdf(one), seed=3)))
    # At 130 dpi an A4 scan (1075 x 1520 px) already fits the model: its JPEG passes through.
    docs.append(("generated scan 130 dpi, 1 page", scanned_pdf(render_pdf(one), seed=3, dpi=130)))
    return docs


def text_layer(page: Any) -> tuple[str, list[Any]]:
    """The page's text and words from one text page, as `PdfDocument.page()` reads them."""
    import pymupdf

    textpage = page.get_textpage(flags=pymupdf.TEXTFLAGS_TEXT)
    return page.get_text(textpage=textpage), page.get_text("words", textpage=textpage)


def page_costs(name: str, data: bytes, repeat: int) -> dict[str, Any]:
    import pymupdf
    from PIL import Image

    from pipeline.pages import Limits, PdfDocument, encode_pixmap_jpeg

    doc = pymupdf.open(stream=data, filetype="pdf")
    pipeline_doc = PdfDocument(data, Limits(max_pages=10_000, long_edge_px=LONG_EDGE))
    rows = []
    for index in range(doc.page_count):
        page = doc[index]
        zoom = LONG_EDGE / max(page.rect.width, page.rect.height)
        matrix = pymupdf.Matrix(zoom, zoom)
        out: dict[str, float] = {}
        out["text ms"], _ = cpu_ms(lambda p=page: text_layer(p), repeat)
        out["render RGB ms"], pix = cpu_ms(
            lambda p=page, m=matrix: p.get_pixmap(matrix=m, alpha=False), repeat
        )
        out["render grey ms"], gray_pix = cpu_ms(
            lambda p=page, m=matrix: p.get_pixmap(matrix=m, alpha=False, colorspace=pymupdf.csGRAY),
            repeat,
        )
        # Copies: an image that borrows a pixmap's buffer must not outlive the pixmap.
        rgb = Image.frombuffer(
            "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
        ).copy()
        grey = Image.frombuffer(
            "L",
            (gray_pix.width, gray_pix.height),
            gray_pix.samples_mv,
            "raw",
            "L",
            gray_pix.stride,
            1,
        ).copy()

        def save(image: Any, fmt: str, **kw: Any) -> bytes:
            buf = io.BytesIO()
            image.save(buf, format=fmt, **kw)
            return buf.getvalue()

        out["JPEG RGB ms"], jpeg = cpu_ms(lambda pix=pix: encode_pixmap_jpeg(pix), repeat)
        out["JPEG Pillow ms"], _ = cpu_ms(
            lambda pix=pix: save(
                Image.frombuffer(
                    "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
                ),
                "JPEG",
                quality=JPEG_QUALITY,
                optimize=False,
            ),
            repeat,
        )
        out["JPEG grey ms"], jpeg_grey = cpu_ms(
            lambda im=grey: save(im, "JPEG", quality=JPEG_QUALITY, optimize=False), repeat
        )
        out["PNG ms"], png = cpu_ms(lambda im=rgb: save(im, "PNG"), repeat)
        out["PNG (PyMuPDF) ms"], png_mu = cpu_ms(lambda pix=pix: pix.tobytes("png"), repeat)
        out["JPEG KB"] = len(jpeg) / 1024
        out["JPEG grey KB"] = len(jpeg_grey) / 1024
        out["PNG KB"] = len(png) / 1024
        out["PNG (PyMuPDF) KB"] = len(png_mu) / 1024
        out["JPEG PSNR dB"] = psnr(Image.open(io.BytesIO(jpeg)).convert("RGB"), rgb)
        out["pixels"] = pix.width * pix.height
        out["page() ms"], content = cpu_ms(lambda i=index: pipeline_doc.page(i), repeat)
        out["page() process ms"], _ = cpu_ms(
            lambda i=index: pipeline_doc.page(i), repeat, time.process_time
        )
        out["passthrough"] = float(content.image_passthrough)
        rows.append(out)
    doc.close()
    pipeline_doc.close()
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    mean["pages"] = len(rows)
    mean["name"] = name
    return mean


# --- 2. validate, verify, database write -------------------------------------------------------


def other_costs(database_url: str, repeat: int) -> dict[str, Any]:
    from sqlalchemy import text

    from pipeline.db import repository as repo
    from pipeline.db.session import make_engine, make_session_factory, transaction
    from pipeline.domain import ObjectRef
    from pipeline.pages import Limits, open_document
    from pipeline.schemas import get_schema
    from pipeline.synthetic import make_invoice, render_pdf
    from pipeline.usecases.verify import verify
    from pipeline.validation import validate

    schema = get_schema("invoice")
    out: dict[str, Any] = {}
    for label, items in (("8 line items, 1 page", 8), ("40 line items, 2 pages", 40)):
        invoice = make_invoice(200 + items, items=items)
        source = open_document(render_pdf(invoice), Limits())
        pages = [source.page(i) for i in range(source.page_count)]
        source.close()
        expected = invoice.expected()
        out[f"validate ms/doc ({label})"], _ = cpu_ms(
            lambda e=expected: validate(schema, e), repeat * 4
        )
        out[f"verify ms/doc ({label})"], verdict = cpu_ms(
            lambda e=expected, p=pages: verify(schema, e, p), repeat
        )
        out[f"verify reasons ({label})"] = len(verdict.reasons)

    # Database: page rows + payloads for 64 one-page images, as the prepare stage writes them.
    source = open_document(render_pdf(make_invoice(300, items=8)), Limits())
    page = source.page(0)
    source.close()
    engine = make_engine(database_url, pool_size=2)
    sessions = make_session_factory(engine)
    try:
        for per_tx in (16, 1):
            with transaction(sessions) as session:
                doc_id, _ = repo.register_document(
                    session, ObjectRef("bench-pages", f"db-{per_tx}-{time.time()}", "v"), "invoice"
                )
            batch = []
            for i in range(64):
                p = page.__class__(
                    **{**{f: getattr(page, f) for f in page.__dataclass_fields__}, "index": i}
                )
                batch.append(p)
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            for i in range(0, len(batch), per_tx):
                with transaction(sessions) as session:
                    repo.record_pages(session, doc_id, batch[i : i + per_tx])
                    repo.store_payloads(session, doc_id, batch[i : i + per_tx])
            cpu_spent = time.thread_time() - start_cpu
            out[f"db write ms/page CPU ({per_tx}/tx)"] = cpu_spent * 1000 / 64
            out[f"db write ms/page wall ({per_tx}/tx)"] = (
                (time.perf_counter() - start_wall) * 1000 / 64
            )
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM documents WHERE bucket = 'bench-pages'"))
    finally:
        engine.dispose()
    out["payload KB/page"] = (
        len(page.image)
        + len(page.text)
        + len(json.dumps([[w.text, w.x0, w.y0, w.x1, w.y1, w.block, w.line] for w in page.words]))
    ) / 1024
    return out


# --- 3. memory: 10 pages vs 1,000 pages --------------------------------------------------------


def big_pdfs(copies: int) -> tuple[bytes, bytes]:
    """A 10-page invoice, and the same 10 pages repeated `copies` times."""
    import pymupdf

    from pipeline.synthetic import make_invoice, render_pdf

    ten = render_pdf(make_invoice(7, items=250), rows_per_page=25)
    src = pymupdf.open(stream=ten, filetype="pdf")
    big = pymupdf.open()
    for _ in range(copies):
        big.insert_pdf(src)
    data: bytes = big.tobytes(garbage=1, deflate=True)
    big.close()
    src.close()
    return ten, data


def child_env(database_url: str, endpoint: str, provider_url: str) -> dict[str, str]:
    return {
        "PAGEMILL_DATABASE_URL": database_url,
        "PAGEMILL_S3_ENDPOINT_URL": endpoint,
        "PAGEMILL_S3_ACCESS_KEY_ID": "test",
        "PAGEMILL_S3_SECRET_ACCESS_KEY": "test",
        "PAGEMILL_PROVIDER": "anthropic",
        "PAGEMILL_ANTHROPIC_API_KEY": "bench-not-a-real-key",
        "PAGEMILL_ANTHROPIC_BASE_URL": provider_url,
        "PAGEMILL_RATE_LIMITS": "",
        "PAGEMILL_OCR_SCANNED_PAGES": "false",
        "PAGEMILL_MAX_PAGES": "100000",  # the default (200) refuses a 1,000-page PDF
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vm_rss_kb() -> int:
    return _status_kb("VmRSS")


def _peak_kb() -> int:
    """This process's peak RSS. ru_maxrss would do on its own, but Linux carries the parent's
    high-water mark over a fork + exec, so a child of a big parent reports the parent's peak;
    VmHWM belongs to this process image only. Both are printed; the lower is the honest one."""
    return min(_status_kb("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child(stage: str, document_id: int) -> int:
    """Runs in a fresh process: one stage of one document; prints JSON figures."""
    import logging

    logging.disable(logging.WARNING)
    from pipeline.usecases import process
    from workers.runtime import collaborators

    deps = collaborators()
    deps.s3.head_bucket(Bucket="bench-memory")  # open the S3 connection pool first
    with deps.sessions() as session:
        session.connection()
    baseline = _vm_rss_kb()  # resident now, after imports and connection set-up
    start_cpu, start = time.process_time(), time.perf_counter()
    fn = process.prepare_document if stage == "prepare" else process.extract_document
    outcome = fn(deps, document_id)
    print(
        json.dumps(
            {
                "baseline MB": baseline / 1024,
                "peak MB": _peak_kb() / 1024,
                "ru_maxrss MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": time.perf_counter() - start,
                "cpu s": time.process_time() - start_cpu,
                "outcome": str(getattr(outcome, "value", outcome)),
            }
        )
    )
    return 0


def memory(database_url: str, copies: int) -> dict[str, Any]:
    from bench.fakeaws import make_server
    from pipeline import storage
    from pipeline.db import repository as repo
    from pipeline.db.session import make_engine, make_session_factory, transaction
    from pipeline.domain import ObjectRef
    from tests.support.fake_model_server import FakeModelServer
    from tests.support.s3_server import settings_for

    log(f"generating a 10-page and a {10 * copies}-page PDF")
    ten, big = big_pdfs(copies)
    aws = make_server()
    threading.Thread(target=aws.serve_forever, daemon=True).start()
    provider = FakeModelServer(latency=0.0).start()
    endpoint = f"http://127.0.0.1:{aws.server_address[1]}"
    engine = make_engine(database_url, pool_size=1)
    sessions = make_session_factory(engine)
    results: dict[str, Any] = {}
    try:
        s3 = storage.make_s3_client(settings_for(endpoint))
        s3.create_bucket(Bucket="bench-memory")
        env = {**os.environ, **child_env(database_url, endpoint, provider.anthropic_base_url)}
        for label, data in (("10 pages", ten), (f"{10 * copies} pages", big)):
            key = f"{label.replace(' ', '-')}.pdf"
            s3.put_object(Bucket="bench-memory", Key=key, Body=data)
            ref = storage.head_object(s3, ObjectRef("bench-memory", key, ""))
            with transaction(sessions) as session:
                document_id, _ = repo.register_document(session, ref, "invoice", "anthropic")
            for stage in ("prepare", "extract"):
                log(f"memory: {stage} stage, {label} ({len(data) / 1024:.0f} KB), fresh process")
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.pages",
                        "--child",
                        stage,
                        "--document-id",
                        str(document_id),
                    ],
                    cwd=common.REPO_ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"{stage} child failed:\n{done.stderr[-3000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                figures["file KB"] = len(data) / 1024
                results[f"{stage}, {label}"] = figures
        provider_calls = provider.request_count
    finally:
        provider.stop()
        aws.shutdown()
        engine.dispose()
    results["provider calls"] = provider_calls
    return results


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument(
        "--samples",
        type=Path,
        default=common.SAMPLES_DIR,
        help="folder of sample PDFs (default: ../shared/samples/docs)",
    )
    parser.add_argument(
        "--big-pages", type=int, default=1000, help="pages of the big PDF (a multiple of 10)"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-ocr", action="store_true")
    parser.add_argument(
        "--ocr-docs", type=int, default=8, help="generated scanned documents in the OCR comparison"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--child", choices=("prepare", "extract"), help=argparse.SUPPRESS)
    parser.add_argument("--document-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.document_id)
    argv_list = list(argv if argv is not None else sys.argv[1:])

    from sqlalchemy.engine import make_url

    from bench.throughput import reset_database
    from pipeline.settings import load_settings

    database_url = args.database_url or make_url(load_settings().database_url).set(
        database=DATABASE
    ).render_as_string(hide_password=False)
    results: dict[str, Any] = {"cores": common.cores()}

    log("per-page render and encode")
    per_doc = [page_costs(name, data, args.repeat) for name, data in documents(args.samples)]
    results["pages"] = per_doc
    print()
    print(
        f"## pages: cost per page (median of {args.repeat}, CPU ms of one thread; "
        f"images at a long edge of {LONG_EDGE} px)"
    )
    print()
    print(
        common.table(
            [
                "document",
                "pages",
                "text (1 text page)",
                "render RGB",
                "render grey",
                "JPEG q85",
                "JPEG q85 (Pillow)",
                "JPEG grey",
                "PNG",
                "PNG (PyMuPDF)",
                "JPEG KB",
                "JPEG grey KB",
                "PNG KB",
                "JPEG PSNR dB",
                "page() total",
                "page() process",
                "passthrough",
            ],
            [
                [
                    d["name"],
                    d["pages"],
                    d["text ms"],
                    d["render RGB ms"],
                    d["render grey ms"],
                    d["JPEG RGB ms"],
                    d["JPEG Pillow ms"],
                    d["JPEG grey ms"],
                    d["PNG ms"],
                    d["PNG (PyMuPDF) ms"],
                    d["JPEG KB"],
                    d["JPEG grey KB"],
                    d["PNG KB"],
                    d["JPEG PSNR dB"],
                    d["page() ms"],
                    d["page() process ms"],
                    "yes" if d["passthrough"] >= 0.5 else "no",
                ]
                for d in per_doc
            ],
        )
    )
    digital = [d for d in per_doc if "scan" not in d["name"]]
    if digital:
        jpeg = statistics.fmean(d["JPEG RGB ms"] for d in digital)
        png = statistics.fmean(d["PNG ms"] for d in digital)
        render = statistics.fmean(d["render RGB ms"] for d in digital)
        kb_j = statistics.fmean(d["JPEG KB"] for d in digital)
        kb_p = statistics.fmean(d["PNG KB"] for d in digital)
        print()
        print(
            f"digital pages: PNG costs {png / jpeg:.1f}x the JPEG's CPU ({png:.1f} vs "
            f"{jpeg:.1f} ms, {png / render:.1f}x the render) and {kb_p / kb_j:.1f}x its bytes "
            f"({kb_p:.0f} vs {kb_j:.0f} KB); same pixels, so the same image tokens "
            f"(~{statistics.fmean(d['pixels'] for d in digital) / 750:.0f})."
        )

    log("validate, verify, database write")
    reset_database(database_url)
    results["other"] = other_costs(database_url, args.repeat)
    print()
    print(common.table(["step", "value"], [[k, v] for k, v in results["other"].items()]))

    if not args.skip_ocr:
        from bench import ocr

        log("OCR engines and settings")
        print()
        print("## OCR of scanned pages: engines and settings side by side")
        results["ocr"] = ocr.compare(args.ocr_docs)

    if not args.skip_memory:
        copies = max(1, args.big_pages // 10)
        mem = memory(database_url, copies)
        results["memory"] = mem
        big = f"{10 * copies} pages"
        print()
        print(f"## memory: peak RSS per stage process, 10 pages vs {big}")
        print()
        rows = []
        for key, fig in mem.items():
            if not isinstance(fig, dict):
                continue
            rows.append(
                [
                    key,
                    fig["file KB"],
                    fig["baseline MB"],
                    fig["peak MB"],
                    fig["peak MB"] - fig["baseline MB"],
                    fig["ru_maxrss MB"],
                    fig["seconds"],
                    1000 * fig["cpu s"] / (10 if key.endswith("10 pages") else 10 * copies),
                    fig["outcome"],
                ]
            )
        print(
            common.table(
                [
                    "stage, document",
                    "file KB",
                    "RSS after imports MB",
                    "peak RSS (VmHWM) MB",
                    "growth MB",
                    "ru_maxrss MB",
                    "seconds",
                    "CPU ms/page",
                    "outcome",
                ],
                rows,
            )
        )
        print()
        for stage in ("prepare", "extract"):
            small, large = mem.get(f"{stage}, 10 pages"), mem.get(f"{stage}, {big}")
            if small and large:
                ratio = large["peak MB"] / small["peak MB"]
                results[f"{stage} memory ratio"] = ratio
                print(
                    f"{stage}: peak RSS {big} ÷ 10 pages = {ratio:.2f} "
                    f"({'within' if ratio <= 2 else 'OVER'} the 2x target)"
                )
        print("(PAGEMILL_MAX_PAGES was raised for this: the default of 200 refuses the big PDF.)")
    print()
    path = common.write_results("pages", results)
    print(f"figures saved to {path.relative_to(common.REPO_ROOT)}")
    print(common.reproduce_line("bench.pages", argv_list))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
