"""E-invoices: the structured invoice inside a Factur-X / ZUGFeRD PDF or an XRechnung / Peppol
XML file (CII or UBL), read exactly and mapped onto the invoice schema."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.einvoice.cii import ROOTS as CII_ROOTS
from pipeline.einvoice.cii import read_cii
from pipeline.einvoice.model import EInvoice, EInvoiceLine
from pipeline.einvoice.pdf import Attachment, xml_attachments
from pipeline.einvoice.safexml import HostileXml, local_name, namespace, parse_xml
from pipeline.einvoice.ubl import ROOTS as UBL_ROOTS
from pipeline.einvoice.ubl import read_ubl
from pipeline.errors import ErrorCategory, PermanentError

__all__ = [
    "Attachment",
    "EInvoice",
    "EInvoiceLine",
    "HostileXml",
    "einvoice_in_pdf",
    "read_einvoice",
]

log = logging.getLogger(__name__)


def read_einvoice(data: bytes, what: str = "the XML") -> EInvoice:
    """Read CII (D16B or ZUGFeRD 1.0) or UBL 2.1 XML.

    Raises PermanentError: BAD_INPUT for XML that is hostile (DTD, entities) or not
    well-formed, UNSUPPORTED_TYPE for well-formed XML that is no invoice of these syntaxes.
    """
    root = parse_xml(data, what)
    if root.tag in CII_ROOTS:
        return read_cii(root)
    if root.tag in UBL_ROOTS:
        return read_ubl(root)
    ns = namespace(root.tag)
    raise PermanentError(
        ErrorCategory.UNSUPPORTED_TYPE,
        f"{what} is not an e-invoice: its root element is <{local_name(root.tag)}>"
        + (f" in namespace {ns}" if ns else "")
        + "; expected a CII CrossIndustryInvoice / CrossIndustryDocument or a UBL Invoice / "
        "CreditNote",
    )


def einvoice_in_pdf(doc: Any) -> EInvoice | None:
    """The invoice XML a PDF carries (Factur-X / ZUGFeRD), or None when it has none.

    Hostile XML (a DTD, entities) refuses the whole document (BAD_INPUT). XML attachments
    that are broken or no invoice (a placeholder, a delivery note) are passed over with a
    warning: the printed page is read instead."""
    for attachment in xml_attachments(doc):
        what = f"the embedded {attachment.name or 'XML file'}"
        try:
            return read_einvoice(attachment.data, what)
        except HostileXml:
            raise
        except PermanentError as exc:
            log.warning("%s is not a readable e-invoice, the page is read: %s", what, exc)
    return None
