"""The offline extractor: layout rules over the text layer, or over Tesseract OCR for scans."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.domain import ExtractionRequest, PageContent, PageRenderer, ProviderReply, Usage
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.extractors import register
from pipeline.extractors.base import Extractor
from pipeline.ocr import OcrOptions, PreparedPage, prepare_page
from pipeline.pages import usable_text_layer
from pipeline.rules import Box, PageWords, extract_invoice
from pipeline.settings import Settings

SUPPORTED_SCHEMAS = ("invoice",)


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
        self.ocr_options = ocr_options or OcrOptions()

    def call(self, request: ExtractionRequest) -> ProviderReply:
        if request.schema.name not in SUPPORTED_SCHEMAS:
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                f"the local extractor supports only the {', '.join(SUPPORTED_SCHEMAS)} schema, "
                f"not {request.schema.name!r}; configure a model provider for other schemas",
            )
        pages: list[PageWords] = []
        scans: dict[int, _Scan] = {}  # position in request.pages -> its scan
        for position, page in enumerate(request.pages):
            scan = _Scan(request.renderer, page, self.ocr_dpi, self.ocr_options)
            if usable_text_layer(page.words):
                words = list(page.words)
                if not page.has_text_layer:
                    # Words an earlier stage read by OCR (same settings): re-readable too.
                    scans[position] = scan
            else:
                words = scan.image().read()
                scans[position] = scan
            pages.append((words, page.width_pt, page.height_pt))

        def reread(position: int, box: Box, charset: str | None) -> str:
            found = scans.get(position)
            return found.reread(box, charset) if found is not None else ""

        fields = extract_invoice(pages, reread if scans else None)
        return ProviderReply(data=fields.as_dict(), usage=Usage(), request_id=None)


@register("local")
def build_local(settings: Settings) -> Extractor:
    return LocalExtractor(
        ocr_dpi=settings.ocr_dpi, ocr_options=OcrOptions(strips=settings.ocr_strips)
    )
