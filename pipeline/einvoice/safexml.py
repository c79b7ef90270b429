"""Hardened XML parsing for e-invoices: no DTDs, no entities, nothing fetched, bounded size."""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as DefusedET

from pipeline.errors import ErrorCategory, PermanentError


class HostileXml(PermanentError):
    """XML refused for what it declares (a DTD, entities, external references), not for
    being broken: a document carrying it is refused as a whole."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCategory.BAD_INPUT, message)


# The largest e-invoice XML read; real ones are 2-100 kB, a few MB with thousands of lines.
MAX_XML_BYTES = 20 * 1024 * 1024


def parse_xml(data: bytes, what: str = "the XML") -> Element:
    """The root element of `data`, parsed with expat through defusedxml.

    E-invoice syntaxes (CII, UBL) never use a DTD, so any DOCTYPE is refused outright: that
    covers entity expansion ("billion laughs"), external entities (XXE) and external DTDs, and
    nothing is ever resolved or fetched. Raises PermanentError(BAD_INPUT) with a clear reason.
    """
    if len(data) > MAX_XML_BYTES:
        raise PermanentError(
            ErrorCategory.TOO_LARGE,
            f"{what} is {len(data):,} bytes; e-invoice XML is read up to {MAX_XML_BYTES:,}",
        )
    try:
        root: Element = DefusedET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DTDForbidden:
        raise HostileXml(
            f"{what} declares a DTD (<!DOCTYPE ...>); refused: e-invoices have none, and DTDs "
            "carry entity-expansion and external-entity attacks",
        ) from None
    except defusedxml.EntitiesForbidden:
        raise HostileXml(f"{what} declares entities; refused (entity expansion)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise HostileXml(f"{what} refers to an external resource; refused") from None
    except ParseError as exc:
        raise PermanentError(
            ErrorCategory.BAD_INPUT, f"{what} is not well-formed XML: {exc}"
        ) from None
    return root


def local_name(tag: str) -> str:
    """`{namespace}Name` -> `Name`."""
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    """`{namespace}Name` -> `namespace` ("" when the element has none)."""
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""
