"""The offline extractor: layout rules over the text layer, or over Tesseract OCR for scans."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.domain import (
    ExtractionRequest,
    PageContent,
    PageRenderer,
    ProviderReply,
    Usage,
    Word,
)
from pipeline.errors import ErrorCategory, PermanentError, PipelineError
from pipeline.extractors import register
from pipeline.extractors.base import Extractor
from pipeline.ocr import THOROUGH, OcrOptions, PreparedPage, prepare_page, thorough_options
from pipeline.rules import Box, PageWords, Reread, RulesAnswer, extract_invoice, extract_receipt
from pipeline.settings import Settings
from pipeline.text.layer import trust_text_layer

log = logging.getLogger(__name__)

# Schema name -> the rules that read it.
_RULES: dict[str, Callable[[Sequence[PageWords], Reread | None], RulesAnswer]] = {
    "invoice": extract_invoice,
    "receipt": extract_receipt,
}
SUPPORTED_SCHEMAS = tuple(_RULES)


@dataclass(slots=True)
class _Scan:
    """A scanned page's OCR image, prepared only when a rule asks to re-read a region."""

    renderer: PageRenderer
    page: PageContent
    dpi: int
    options: OcrOptions
    prepared: PreparedPage | None = field(default=None)

    def image(self) -> PreparedPage:
        if self.prepared is None:
            rendered = self.renderer.render(self.page.index, self.dpi)
            self.prepared = prepare_page(rendered, self.page.width_pt, self.options)
        return self.prepared

    def reread(self, box: Box, charset: str | None) -> str:
        return self.image().reread(box, charset)


class LocalExtractor:
    """Deterministic and free: no network, no key, no usage to bill."""

    provider = "local"
    model = "local-rules-1"
    can_reask = False  # the same pages always give the same answer
    runs_locally = True  # OCR and rules are CPU work on this machine
    max_tokens: int | None = None  # no model: no output budget

    def __init__(self, ocr_dpi: int = 300, ocr_options: OcrOptions | None = None) -> None:
        self.ocr_dpi = ocr_dpi
        self.ocr_options = ocr_options or THOROUGH

    def call(self, request: ExtractionRequest) -> ProviderReply:
        rules = _RULES.get(request.schema.name)
        if rules is None:
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                f"the local extractor supports only the {', '.join(SUPPORTED_SCHEMAS)} schemas, "
                f"not {request.schema.name!r}; configure a model provider for other schemas",
            )
        pages: list[PageWords] = []
        scans: dict[int, _Scan] = {}  # position in request.pages -> its scan
        unread: list[str] = []
        for position, page in enumerate(request.pages):
            scan = _Scan(request.renderer, page, self.ocr_dpi, self.ocr_options)
            words: list[Word] = list(page.words)
            if not trust_text_layer(page.words):
                try:
                    words = scan.image().read()
                    scans[position] = scan
                except PipelineError:
                    raise  # Tesseract missing or timing out: the pipeline's to handle
                except Exception as exc:
                    log.exception("OCR failed on page %d", page.index + 1)
                    unread.append(f"page {page.index + 1} could not be read by OCR ({exc})")
            elif not page.has_text_layer:
                # Words an earlier stage read by OCR (same settings): re-readable too.
                scans[position] = scan
            pages.append((words, page.width_pt, page.height_pt))

        def reread(position: int, box: Box, charset: str | None) -> str:
            found = scans.get(position)
            return found.reread(box, charset) if found is not None else ""

        reply = read_with_rules(rules, pages, reread if scans else None)
        reply.notes[:0] = unread
        return reply


def read_with_rules(
    rules: Callable[[Sequence[PageWords], Reread | None], RulesAnswer],
    pages: Sequence[PageWords],
    reread: Reread | None = None,
) -> ProviderReply:
    """The rules' answer as a reply. Whatever a page holds, the rules never end a document
    with a traceback: a failure inside them becomes an empty record with the reason, which
    sends the document to review."""
    try:
        answer = rules(pages, reread)
    except PipelineError:
        raise  # an OCR outage or a bad page is the pipeline's to handle, not a rules failure
    except Exception as exc:
        log.exception("the offline rules failed; the document goes to review")
        reason = f"the offline rules failed ({type(exc).__name__}: {exc}); no field was read"
        return ProviderReply(data=_empty_record(), usage=Usage(), notes=[reason[:500]])
    return ProviderReply(
        data=answer.as_dict(), usage=Usage(), confidence=answer.confidence, notes=answer.notes
    )


def _empty_record() -> dict[str, Any]:
    return {}  # every schema field is optional: an empty record validates as all null


@register("local")
def build_local(settings: Settings) -> Extractor:
    return LocalExtractor(ocr_dpi=settings.ocr_dpi, ocr_options=thorough_options(settings))
