"""Tesseract in process: tesserocr, one engine per thread and language set, and its TSV output
turned into words."""

from __future__ import annotations

import atexit
import csv
import io
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.domain import Word
from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.ocr.options import OcrOptions
from pipeline.ocr.timing import timed

# Where Debian and most distributions put the language data (tesseract-ocr-<lang> packages).
_TESSDATA_GLOBS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata")
_TESSDATA_DIRS = ("/usr/local/share/tessdata",)

# What the clean-up steps work on and Tesseract reads: 8-bit grey, one byte a pixel.
GrayImage = npt.NDArray[np.uint8]
# The column names the tesseract CLI prints; the API's TSV comes without them.
_TSV_HEADER = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num"
    "\tleft\ttop\twidth\theight\tconf\ttext\n"
)


@cache
def _tessdata_candidates() -> tuple[Path, ...]:
    found: list[Path] = []
    for pattern in _TESSDATA_GLOBS:
        root, _, rest = pattern.partition("*")
        if rest:
            base = Path(root)
            found.extend(sorted(base.glob("*" + rest), reverse=True) if base.is_dir() else [])
        elif Path(pattern).is_dir():
            found.append(Path(pattern))
    found.extend(Path(d) for d in _TESSDATA_DIRS if Path(d).is_dir())
    return tuple(found)


def tessdata_dir(languages: str, explicit: str | None = None) -> str:
    """The folder holding every language of `languages` ("eng+deu"); a configuration error
    naming the missing Debian packages otherwise."""
    wanted = [lang for lang in languages.split("+") if lang]
    candidates = (Path(explicit),) if explicit else _tessdata_candidates()
    for folder in candidates:
        if all((folder / f"{lang}.traineddata").is_file() for lang in wanted):
            return str(folder)
    packages = " ".join(f"tesseract-ocr-{lang}" for lang in wanted)
    where = explicit or "the tessdata folders"
    raise PermanentError(
        ErrorCategory.CONFIGURATION,
        f"Tesseract language data for {languages!r} not found in {where}: "
        f"apt-get install tesseract-ocr {packages}",
    )


def _tesserocr() -> Any:
    """The tesserocr module, imported on first use: a process that never reads a scan never
    loads Tesseract."""
    try:
        import tesserocr
    except ImportError:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            "tesserocr is not installed: it is a dependency of pagemill (make setup installs it)",
        ) from None
    return tesserocr


class _Engine:
    """One initialised Tesseract (models loaded once); not thread-safe: one per thread.

    tesserocr's wheel carries its own libtesseract (5.3.4, built without OpenMP). It reads the
    same words as Debian's 5.3.0 with 20-25% less CPU for recognition: Debian's build enters an
    OpenMP region at every step of its LSTM, even with one thread allowed. Later wheels carry
    5.5, whose layout analysis loses whole text lines that 5.3 finds (bench/README.md). The
    long calls release the GIL, so threads read pages in parallel."""

    def __init__(self, folder: str, languages: str) -> None:
        tesserocr = _tesserocr()
        try:
            self.api: Any = tesserocr.PyTessBaseAPI(
                path=folder, lang=languages, oem=tesserocr.OEM.LSTM_ONLY
            )
        except RuntimeError:
            raise PermanentError(
                ErrorCategory.CONFIGURATION, f"Tesseract could not load {languages!r} from {folder}"
            ) from None
        # Light-on-dark text is inverted in preprocessing; skipping Tesseract's inverted retry
        # of every doubtful line saves 5-15%.
        self.set("tessedit_do_invert", "0")
        # Every row proportional: the search for fixed-pitch (typewriter, till-roll) rows is an
        # aid to cutting characters for the old classifier. The LSTM reads monospaced rows as
        # well without it, and skipping it saves ~5% of a page (bench/README.md).
        self.set("textord_all_prop", "1")

    def set(self, name: str, value: str) -> None:
        self.api.SetVariable(name, value)

    def get(self, name: str) -> str:
        value = self.api.GetVariableAsString(name)
        return str(value) if value is not None else ""

    def read_tsv(self, image: GrayImage, dpi: float, psm: int, timeout_s: float) -> str:
        """Tesseract's TSV rows (without the header line) for one grey image."""
        api = self.api
        height, width = image.shape
        api.SetPageSegMode(psm)
        try:
            with timed("detect"):
                api.SetImageBytes(image.tobytes(), width, height, 1, width)
                api.SetSourceResolution(max(round(dpi), 70))
                api.AnalyseLayout()  # the recognition reuses it
            with timed("recognise"):
                if not api.Recognize(timeout=max(round(timeout_s * 1000), 1)):
                    raise TransientError(
                        ErrorCategory.TIMEOUT, f"OCR took longer than {timeout_s:.0f} s"
                    )
                return str(api.GetTSVText(0) or "")
        finally:
            api.Clear()  # the page and its results; the models stay

    def close(self) -> None:
        api, self.api = getattr(self, "api", None), None
        if api is not None:
            api.End()

    def __del__(self) -> None:
        self.close()


_live: weakref.WeakSet[_Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    # Before the library's own static destructors run: an engine still open then makes it
    # print a "LEAK!" warning per model.
    for engine in list(_live):
        engine.close()


class _Engines(threading.local):
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], _Engine] = {}


_engines = _Engines()


def _engine(languages: str, tessdata: str | None) -> _Engine:
    folder = tessdata_dir(languages, tessdata)
    engine = _engines.by_key.get((folder, languages))
    if engine is None:
        engine = _engines.by_key[(folder, languages)] = _Engine(folder, languages)
        _live.add(engine)
    return engine


def engine_version() -> str:
    """The Tesseract library's version, e.g. "5.3.4"."""
    return str(_tesserocr().PyTessBaseAPI.Version())


def run_tesseract(
    gray: GrayImage, dpi: float, options: OcrOptions, config: Sequence[str] = ()
) -> list[Word]:
    """Read one image with this thread's engine; word boxes in pixels of that image. `config`
    adds `name=value` Tesseract settings for this read only."""
    engine = _engine(options.languages, options.tessdata)
    image = np.ascontiguousarray(gray, dtype=np.uint8)
    if image.size == 0:
        return []
    settings = dict(item.split("=", 1) for item in config)
    previous = {name: engine.get(name) for name in settings}
    try:
        for name, value in settings.items():
            engine.set(name, value)
        tsv = _TSV_HEADER + engine.read_tsv(image, dpi, options.psm, options.timeout_s)
    finally:
        for name, value in previous.items():
            engine.set(name, value)
    return parse_tsv(tsv, options.min_confidence)


def parse_tsv(tsv: str, min_confidence: float = 0.0) -> list[Word]:
    """Word rows of Tesseract's TSV output; `line` numbers are unique per page.

    Word boxes hug the glyphs ("ecke" is half as tall as "Bei") while the layout rules measure
    gaps in line heights: each word keeps its own bottom but is at least as tall as the
    tallest word of its Tesseract line. Whole line boxes are not used: with --psm 6 a line
    can span two columns printed at different heights.
    """
    rows: list[tuple[tuple[int, int, int], str, int, int, int, int]] = []
    tallest: dict[tuple[int, int, int], int] = {}
    reader = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        try:
            if int(row["level"]) != 5:
                continue
            confidence = float(row["conf"])
            left, top = int(row["left"]), int(row["top"])
            width, height = int(row["width"]), int(row["height"])
            key = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        except (KeyError, TypeError, ValueError):
            continue
        text = (row.get("text") or "").strip()
        if not text or confidence < min_confidence:
            continue
        rows.append((key, text, left, top, width, height))
        if any(c.isalnum() for c in text):
            tallest[key] = max(tallest.get(key, 0), height)
    words: list[Word] = []
    line_ids: dict[tuple[int, int, int], int] = {}
    for key, text, left, top, width, height in rows:
        line = line_ids.setdefault(key, len(line_ids))
        bottom = top + height
        words.append(
            Word(
                text=text,
                x0=float(left),
                y0=float(min(top, bottom - tallest.get(key, height))),
                x1=float(left + width),
                y1=float(bottom),
                block=key[0],
                line=line,
            )
        )
    return words
