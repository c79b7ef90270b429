"""Files embedded in a PDF (a Factur-X / ZUGFeRD invoice's XML), read with bounded memory.

PyMuPDF's own `embfile_*` API misses attachments filed under a name tree with /Kids (ZUGFeRD
1.0 files made by PDFlib do that), so the name tree and the catalog's /AF list are walked here.
A stream is decompressed with a hard cap, so a compression bomb costs nothing.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from pipeline.einvoice.safexml import MAX_XML_BYTES

_REF = re.compile(r"(\d+)\s+\d+\s+R")
_MAX_TREE_DEPTH = 8
_MAX_FILES = 64


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    data: bytes


def xml_attachments(doc: Any) -> list[Attachment]:
    """The PDF's embedded `.xml` files (or files typed text/xml), e-invoice names first."""
    found: list[Attachment] = []
    for name, stream in _embedded_files(doc):
        subtype = doc.xref_get_key(stream, "Subtype")[1].lower()
        if not name.lower().endswith(".xml") and "xml" not in subtype:
            continue
        data = _stream(doc, stream)
        if data is not None:
            found.append(Attachment(name=name, data=data))
    found.sort(key=lambda a: (not is_einvoice_name(a.name), a.name))
    return found


# The attachment names the standards prescribe (Factur-X 1.0, ZUGFeRD 1.0 / 2.x, XRechnung).
_EINVOICE_NAMES = frozenset({"factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml", "order-x.xml"})


def is_einvoice_name(name: str) -> bool:
    return name.strip().lower() in _EINVOICE_NAMES


def _embedded_files(doc: Any) -> list[tuple[str, int]]:
    """(file name, embedded stream xref) for every file the catalog lists, at most
    _MAX_FILES: the /EmbeddedFiles name tree (leaves and /Kids, indirect or inline) and the
    PDF/A-3 associated files (/AF)."""
    files: dict[int, str] = {}

    def add_filespec(xref: int) -> None:
        stream = _ref(doc, xref, "EF/F") or _ref(doc, xref, "EF/UF")
        if stream is not None and stream not in files and len(files) < _MAX_FILES:
            files[stream] = _string(doc, xref, "UF") or _string(doc, xref, "F") or ""

    def add_names(array: str) -> None:
        for key, value in _pairs(array):
            refs = _refs(value)
            if value.startswith("<<"):  # a filespec written inline in the name tree
                stream = _INLINE_EF.search(value)
                name = _INLINE_NAME.search(value)
                if stream and int(stream.group(1)) not in files and len(files) < _MAX_FILES:
                    files[int(stream.group(1))] = (name.group(1) or name.group(2)) if name else key
            elif refs:
                add_filespec(refs[0])

    catalog = doc.pdf_catalog()
    kind, value = doc.xref_get_key(catalog, "Names/EmbeddedFiles")
    if kind == "xref":
        _walk(doc, _refs(value)[0], "", 0, add_names, set())
    elif kind == "dict":
        _walk(doc, catalog, "Names/EmbeddedFiles/", 0, add_names, set())
    # PDF/A-3 lists the associated files on the catalog too (/AF); some writers only there.
    kind, value = doc.xref_get_key(catalog, "AF")
    if kind == "xref":
        value = doc.xref_object(_refs(value)[0])
    if kind in ("xref", "array"):
        for xref in _refs(value):
            add_filespec(xref)
    return [(name, stream) for stream, name in files.items()]


_INLINE_EF = re.compile(r"/EF\s*<<[^>]*?/U?F\s+(\d+)\s+\d+\s+R")
_INLINE_NAME = re.compile(r"/UF\s*\(([^)]*)\)|/F\s*\(([^)]*)\)")


def _walk(doc: Any, xref: int, prefix: str, depth: int, add_names: Any, visited: set[int]) -> None:
    """A name tree node: leaves list (name, filespec) pairs in /Names, inner nodes /Kids."""
    if depth > _MAX_TREE_DEPTH or (not prefix and xref in visited):
        return
    visited.add(xref)
    kind, names = doc.xref_get_key(xref, f"{prefix}Names")
    if kind == "array":
        add_names(names)
    kind, kids = doc.xref_get_key(xref, f"{prefix}Kids")
    if kind == "array":
        for kid in _refs(kids):
            _walk(doc, kid, "", depth + 1, add_names, visited)


def _pairs(array: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a name tree's /Names array as PDF source text: keys are
    strings, values an indirect reference or an inline dictionary."""
    items: list[str] = []
    i, text = 0, array.strip().removeprefix("[").removesuffix("]")
    while i < len(text):
        char = text[i]
        if char == "(":
            end = _string_end(text, i)
            items.append(text[i + 1 : end])
            i = end + 1
        elif text.startswith("<<", i):
            end = _dict_end(text, i)
            items.append(text[i:end])
            i = end
        elif (match := _REF.match(text, i)) is not None:
            items.append(match.group(0))
            i = match.end()
        else:
            i += 1
    return list(zip(items[0::2], items[1::2], strict=False))


def _string_end(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
        i += 1
    return len(text)


def _dict_end(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text[i] == "(":
            i = _string_end(text, i) + 1
            continue
        if text.startswith("<<", i):
            depth, i = depth + 1, i + 2
            continue
        if text.startswith(">>", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
            continue
        i += 1
    return len(text)


def _refs(value: str) -> list[int]:
    return [int(m.group(1)) for m in _REF.finditer(value)]


def _ref(doc: Any, xref: int, key: str) -> int | None:
    kind, value = doc.xref_get_key(xref, key)
    refs = _refs(value) if kind == "xref" else []
    return refs[0] if refs else None


def _string(doc: Any, xref: int, key: str) -> str | None:
    kind, value = doc.xref_get_key(xref, key)
    return value if kind == "string" and value else None


def _stream(doc: Any, xref: int) -> bytes | None:
    """The decoded stream, or None when it is larger than an e-invoice can be once decoded
    (or uses a filter other than none or Flate, which no e-invoice writer does)."""
    kind, value = doc.xref_get_key(xref, "Filter")
    filters = re.findall(r"/(\w+)", value) if kind in ("name", "array") else []
    raw: bytes = doc.xref_stream_raw(xref) or b""
    if not filters:
        return raw if len(raw) <= MAX_XML_BYTES else None
    if filters != ["FlateDecode"]:
        return None
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, MAX_XML_BYTES + 1)
    except zlib.error:
        return None
    if len(data) > MAX_XML_BYTES or inflater.unconsumed_tail:
        return None
    return data
