"""Read an e-invoice's own XML first: where a document's extractor is decided, once it is open.

A Factur-X / ZUGFeRD PDF carries its invoice as CII XML and an XRechnung / Peppol file is the
XML itself: read exactly, that is the result whatever provider is configured, with no model
call and no cost. Every other document goes to the configured extractor.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.einvoice import EInvoice, einvoice_in_pdf, read_einvoice
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.extractors.base import Extractor
from pipeline.extractors.einvoice import SCHEMA, EInvoiceExtractor
from pipeline.pages import LoadedDocument, PdfDocument, XmlDocument
from pipeline.schemas import SchemaSpec
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def einvoice_of(source: LoadedDocument) -> EInvoice | None:
    """The structured invoice the document is or carries, if any. Raises PermanentError for
    XML that is hostile or malformed, and for an XML file that is no invoice."""
    if isinstance(source, XmlDocument):
        return read_einvoice(source.data, "the XML file")
    if isinstance(source, PdfDocument):
        return einvoice_in_pdf(source.doc)
    return None


def extractor_for_source(
    configured: Extractor, source: LoadedDocument, schema: SchemaSpec, settings: Settings
) -> Extractor:
    """The e-invoice reader when the document has invoice XML and the invoice schema is asked
    for; otherwise `configured`."""
    if schema.name != SCHEMA:
        if isinstance(source, XmlDocument):
            raise PermanentError(
                ErrorCategory.UNSUPPORTED_TYPE,
                f"an XML e-invoice is read with the {SCHEMA!r} schema, not {schema.name!r}: "
                "route XML files to it (PAGEMILL_SCHEMA_ROUTES)",
            )
        return configured
    invoice = einvoice_of(source)
    if invoice is None:
        return configured
    log.info(
        "reading the document's e-invoice XML (%s) instead of %s",
        invoice.standard,
        _name(configured),
    )
    return EInvoiceExtractor.for_invoice(invoice, settings)


def _name(extractor: Any) -> str:
    return f"{extractor.provider}/{extractor.model}"
