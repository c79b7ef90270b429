"""Finding the parties: the vendor's name and address and the customer's name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from pipeline.rules.invoice.document import Doc
from pipeline.rules.layout import below_words, is_header
from pipeline.schemas import invoice_labels as L
from pipeline.text.amounts import parse_amount
from pipeline.text.dates import find_dates
from pipeline.text.labels import LabelHit, is_filler
from pipeline.text.lines import Line
from pipeline.text.normalise import norm

_LEGAL = re.compile(L.LEGAL_FORM)
# German/French/US five digits, Dutch/Belgian/Swiss four (plus letters), UK "EC1A 1BB".
_POSTCODE = re.compile(
    r"(?<![\d])(?:\d{4,5}|[a-z]{1,2}\d[a-z\d]?\s*\d[a-z]{2}|\d{4}\s?[a-z]{2})(?![\d])"
)
_SEPARATORS = re.compile(r"\s[·•●|–-]\s|·|•|●|\|")
_EMAIL_OR_WEB = re.compile(
    r"[\w.+-]+@([\w-]+\.)*([\w-]+)\.[a-z]{2,}|(?:https?://|www\.)([\w-]+\.)*?([\w-]+)\.[a-z]{2,}"
    # A bare web address ("hampton.com"), under the common top-level domains only.
    r"|(?<![\w@.])()([a-z][\w-]{2,})\.(?:com|net|org|eu|de|fr|nl|be|at|ch|it|es|co\.uk|io)(?![\w.])"
)
_NOT_A_NAME = re.compile(
    r"@|www\.|https?:|(?<![a-z])(?:tel|fax|phone|fon|telefon|iban|bic|swift|page|seite|email"
    r"|e-mail|mail|hrb|hra|kvk|siret|siren|rcs|ust-?id|vat|tva|btw|geschaftsfuhrer|sitz"
    r"|registergericht|amtsgericht|bank|konto|blz|postbank|sparkasse|capital|kapital)(?![a-z])"
)


@dataclass(slots=True)
class _Segment:
    line: Line
    start: int
    end: int
    text: str
    ntext: str
    score: float = 0.0

    @property
    def x0(self) -> float:
        return self.line.words[self.start].x0

    @property
    def x1(self) -> float:
        return max(w.x1 for w in self.line.words[self.start : self.end])


def _clean_name(text: str) -> str:
    text = re.sub(r"^(?:nom|name|naam|firma|company|raison sociale)\s*:\s*", "", text, flags=re.I)
    return text.strip(" ,;:·•●|-–").strip()


def _is_label_text(doc: Doc, seg: _Segment) -> bool:
    covered = 0
    for hit in doc.hits[seg.line.index]:
        if hit.start >= seg.start and hit.end <= seg.end:
            covered += sum(len(seg.line.words[i].text) for i in range(hit.start, hit.end))
    return covered >= 0.5 * len(seg.text.replace(" ", ""))


def _name_like(seg: _Segment) -> bool:
    if not re.sub(L.LEGAL_FORM, "", seg.ntext).strip(" .,&-"):
        return False  # "GmbH" alone is a fragment of a name
    letters = sum(c.isalpha() for c in seg.text)
    digits = sum(c.isdigit() for c in seg.text)
    if letters < 2 or digits > letters or len(seg.text) > 60:
        return False
    if _NOT_A_NAME.search(seg.ntext) or (_POSTCODE.search(seg.ntext) and digits >= 4):
        return False
    if parse_amount(seg.text) or find_dates(seg.ntext):
        return False
    return len(seg.text.split()) <= 7


def _segments(doc: Doc, pages: set[int]) -> list[_Segment]:
    out: list[_Segment] = []
    for line in doc.lines:
        if line.page not in pages:
            continue
        for start, end in line.segments():
            text = line.words_between(start, end)
            out.append(_Segment(line, start, end, text, norm(text)))
    return out


def _block_below(doc: Doc, seg: _Segment, max_lines: int = 6) -> list[_Segment]:
    """Segments under `seg` aligned with it (same left or right edge), line after line."""
    block: list[_Segment] = []
    current = seg
    by_index = {line.index: line for line in doc.lines}
    for _ in range(max_lines):
        found: _Segment | None = None
        index = current.line.index + 1
        while index in by_index and by_index[index].page == seg.line.page:
            line = by_index[index]
            if line.y0 - current.line.y1 > 1.6 * max(current.line.height, line.height):
                break
            for start, end in line.segments():
                x0 = line.words[start].x0
                x1 = max(w.x1 for w in line.words[start:end])
                tol = 0.8 * line.height
                if abs(x0 - seg.x0) <= tol or abs(x1 - seg.x1) <= tol:
                    text = line.words_between(start, end)
                    found = _Segment(line, start, end, text, norm(text))
                    break
            if found is not None:
                break
            index += 1
        if found is None:
            break
        block.append(found)
        current = found
    return block


# Separators of a sender line; OCR reads a bullet as "e", "o", "©" or "*" on its own.
# A period ends a part only between two words ("Citv. Massenbergstrasse", OCR's comma) or two
# numbers ("19-21. 44787"), never in "Bahnhofstr. 3".
_SENDER_SPLIT = re.compile(
    r"\s*(?:[·•●|]|\s[-–eo©®*+»«]\s|,|(?<=[a-z]{2})\.\s(?=[A-Z][a-z])|(?<=\d)\.\s(?=\d))\s*"
)


def _sender_parts(text: str) -> list[str]:
    return [p.strip() for p in _SENDER_SPLIT.split(text) if p.strip()]


def _return_address(doc: Doc, segments: Sequence[_Segment]) -> _Segment | None:
    """The sender line printed above the recipient's address ("Kraxi GmbH · Street 1 · 12345
    Town"), in smaller type than the body text."""
    for seg in segments:
        if seg.line.page != 0 or doc.rel_y(seg.line) > 0.45:
            continue
        # OCR spacing is uneven: read the sender line as one run up to a column-wide gap.
        for start, end in seg.line.segments(3.0):
            if start <= seg.start < end:
                text = seg.line.words_between(start, end)
                wide = _Segment(seg.line, start, end, text, norm(text))
                break
        else:
            wide = seg
        parts = _sender_parts(wide.text)
        if len(parts) < 3 or not _POSTCODE.search(seg.ntext):
            continue
        if not any(c.isalpha() for c in parts[0]) or _NOT_A_NAME.search(norm(parts[0])):
            continue
        if seg.line.height <= 0.95 * doc.text_height or _SEPARATORS.search(seg.text):
            return seg
    return None


# "Nummer : 549910", "GLN:", "Kundennr. 12": a key and its value, not a name.
_KEY_VALUE = re.compile(r"^[^\W\d][\w.\- ]{0,24}:\s*(?:\S*\d\S*)?$|^[^:]{0,25}:$")


def _is_key(seg: _Segment) -> bool:
    """A key of a key-value pair ("Nummer : 549910", "GLN:"), not a name."""
    following = seg.line.words[seg.end].text if seg.end < len(seg.line.words) else ""
    return bool(_KEY_VALUE.match(seg.text.strip())) or following.startswith(":")


_SALUTATION = re.compile(
    r"^(?:herrn?|frau|mr\.?|mrs\.?|ms\.?|m\.|mme|monsieur|madame|dhr\.?|mevr\.?|sig\.?(?:ra)?)$",
    re.IGNORECASE,
)


def find_parties(doc: Doc) -> tuple[str | None, str | None, str | None]:
    """(vendor name, vendor address, customer name)."""
    first_page = {0}
    last = len(doc.pages) - 1
    segments = _segments(doc, first_page | {last})
    candidates = [s for s in segments if _name_like(s) and not _is_label_text(doc, s)]
    if not candidates:
        return None, None, None
    customer_lines: set[int] = set()
    customer_name: str | None = None

    # Labelled blocks: "Bill to" / "Rechnungsempfänger" (customer), "Seller" / "Vendeur".
    for hit in doc.hits_of("customer", "seller", "ship_to"):
        values = _party_values(doc, hit)
        if not values:
            continue
        if hit.field == "seller":
            # The first line of the block that is a name, not "Nummer: 549910" or "Name:".
            named = next((v for v in values if not _is_key(v)), None)
            if named is not None:
                _mark(candidates, named, 5.0)
        else:
            head = values[0]
            for seg in values:
                customer_lines.add(seg.line.index)
            if hit.field == "customer" and customer_name is None:
                named = next(
                    (v for v in values if not _is_key(v) and not _SALUTATION.match(v.text.strip())),
                    head,
                )
                customer_name = _clean_name(named.text)

    sender = _return_address(doc, segments)
    sender_name: str | None = None
    sender_address: str | None = None
    if sender is not None:
        parts = _sender_parts(sender.text)
        sender_name = _clean_name(parts[0])
        sender_address = ", ".join(parts[1:]) or None
        # The recipient's window block sits right under the sender line.
        below = _window_block(doc, sender)
        if below:
            for seg in below:
                customer_lines.add(seg.line.index)
            if customer_name is None:
                customer_name = _clean_name(below[0].text)

    domains = _domains(doc, customer_lines)
    keys = [f" {_name_key(s.text)} " for s in segments]
    # The letterhead: the first name on the first page, unless it is the addressee's.
    heading = next(
        (
            c
            for c in sorted(candidates, key=lambda c: (c.line.index, c.x0))
            if c.line.page == 0
            and doc.rel_y(c.line) < 0.35
            and c.line.index not in customer_lines
            and (sender is None or c.line.index != sender.line.index)
            and sum(ch.isalpha() for ch in c.text) >= 4
        ),
        None,
    )
    # Two names side by side at the top (sender and recipient columns) say nothing by order.
    if heading is not None and not any(
        c is not heading and c.line.index == heading.line.index for c in candidates
    ):
        heading.score += 1.5 if heading.line.height >= doc.text_height else 1.0
    for seg in candidates:
        key = _name_key(seg.text)
        if _LEGAL.search(seg.ntext):
            seg.score += 3
        if sender_name and key and (key == _name_key(sender_name)):
            seg.score += 4
        elif sender_name and _name_key(sender_name) and key.startswith(_name_key(sender_name)):
            seg.score += 3.5
        if (
            len(key) >= 4
            and sum(f" {key} " in other for other in keys)
            + sum(_similar(key, other.strip()) and f" {key} " not in other for other in keys)
            >= 2
        ):
            seg.score += 2  # repeated: letterhead and footer, or sender line and signature
        squashed = key.replace(" ", "")
        if len(squashed) >= 3 and any(
            d and (squashed.startswith(d) or d.startswith(squashed[:6])) for d in domains
        ):
            seg.score += 4  # the company's own mail or web domain
        rel = doc.rel_y(seg.line)
        if seg.line.page == 0 and rel < 0.25:
            seg.score += 1
        if seg.line.height >= 1.3 * doc.text_height and rel < 0.3:
            seg.score += 1
        if seg.line.index in customer_lines:
            seg.score -= 6
        if seg.text.count(" ") >= 5 or ":" in seg.text:
            seg.score -= 2
        if seg.text.islower():
            seg.score -= 1
        if sender is not None and seg.line.index == sender.line.index:
            seg.score -= 1  # prefer the full name printed elsewhere over the small sender line
    best = max(candidates, key=lambda s: (s.score, -s.line.index), default=None)
    if best is not None:
        # The same name printed twice may read differently by OCR ("Bet Spiel"): take the
        # copy in the largest type, which OCR reads best.
        twins = [
            c for c in candidates if c is best or _similar(_name_key(c.text), _name_key(best.text))
        ]
        best = max(twins, key=lambda c: (c.line.height, c.score))
    vendor_name: str | None = None
    vendor_address: str | None = None
    if best is not None and best.score >= 3:
        vendor_name = _clean_name(best.text)
        doc.evidence["vendor_name"] = min(3.0, 0.6 * best.score)
        foreign = set(customer_lines)
        if sender is not None:
            foreign.add(sender.line.index)
        vendor_address = _address_after(doc, best, foreign)
    elif sender_name:
        vendor_name = sender_name
        doc.evidence["vendor_name"] = 1.8
    elif domains:
        # Only the company's own web or mail domain names it (the name is in the logo).
        vendor_name = _domain_name(doc, customer_lines)
        doc.evidence["vendor_name"] = 1.2
    if (
        vendor_name
        and sender_name
        and vendor_address is None
        and (_name_key(sender_name) in _name_key(vendor_name))
    ):
        vendor_address = sender_address
    if customer_name is None and best is not None and vendor_name:
        customer_name = _unlabelled_customer(doc, candidates, best)
    if customer_name and vendor_name and _name_key(customer_name) == _name_key(vendor_name):
        customer_name = None
    return vendor_name or None, vendor_address, customer_name or None


def _unlabelled_customer(doc: Doc, candidates: list[_Segment], vendor: _Segment) -> str | None:
    """Without a label or a sender line: the other company-like name heading an address block
    in the top part of the first page."""
    vendor_key = _name_key(vendor.text)
    for seg in sorted(candidates, key=lambda c: (-c.score, c.line.index)):
        if seg.score < 3 or seg.line.page != 0 or doc.rel_y(seg.line) > 0.4:
            continue
        if _similar(_name_key(seg.text), vendor_key) or _name_key(seg.text) == vendor_key:
            continue
        block = _block_below(doc, seg, 4)
        if any(_POSTCODE.search(b.ntext) for b in block):
            return _clean_name(seg.text)
    return None


def _mark(candidates: list[_Segment], seg: _Segment, bonus: float) -> None:
    for cand in candidates:
        if cand.line is seg.line and cand.start == seg.start:
            cand.score += bonus
            return
    if _name_like(seg):
        seg.score += bonus
        candidates.append(seg)


def _party_values(doc: Doc, hit: LabelHit) -> list[_Segment]:
    """The name block a party label introduces: to its right, else under it."""
    hits_in_line = doc.hits[hit.line.index]
    line = hit.line
    start = hit.end
    while start < len(line.words) and is_filler(line.words[start].text):
        start += 1
    if start < len(line.words) and not is_header(hit, hits_in_line):
        _, seg_end = line.segment_of(start)
        end = min(seg_end, *(h.start for h in hits_in_line if h.start > hit.start), len(line.words))
        text = line.words_between(start, end)
        head = _Segment(line, start, end, text, norm(text))
        return [head, *_block_below(doc, head, 4)]
    unders = below_words(hit, doc.lines, max_lines=1)
    if not unders:
        return []
    first = unders[0][0]
    target = next(ln for ln in doc.lines if first in ln.words)
    i = target.words.index(first)
    s, e = target.segment_of(i)
    text = target.words_between(s, e)
    head = _Segment(target, s, e, text, norm(text))
    if _is_label_text(doc, head):
        return []
    return [head, *_block_below(doc, head, 4)]


def _window_block(doc: Doc, sender: _Segment) -> list[_Segment]:
    """The address block right under the sender line, in the same column."""
    by_index = {line.index: line for line in doc.lines}
    index = sender.line.index + 1
    while index in by_index and by_index[index].page == sender.line.page:
        line = by_index[index]
        if line.y0 - sender.line.y1 > 4 * doc.text_height:
            return []
        for start, end in line.segments():
            x0 = line.words[start].x0
            if abs(x0 - sender.x0) <= 3 * doc.text_height or (
                x0 < sender.x1 and line.words[end - 1].x1 > sender.x0
            ):
                text = line.words_between(start, end)
                head = _Segment(line, start, end, text, norm(text))
                return [head, *_block_below(doc, head, 5)]
        index += 1
    return []


# Shared mail domains say nothing about whose address it is.
_MAIL_PROVIDERS = frozenset(
    {
        "gmail",
        "googlemail",
        "yahoo",
        "hotmail",
        "outlook",
        "live",
        "gmx",
        "web",
        "localhost",
        "icloud",
        "orange",
        "free",
        "wanadoo",
        "t-online",
        "aol",
        "protonmail",
        "example",
    }
)


def _domains(doc: Doc, customer_lines: set[int]) -> set[str]:
    found: set[str] = set()
    for line in doc.lines:
        if line.index in customer_lines:
            continue
        for match in _EMAIL_OR_WEB.finditer(line.ntext):
            name = match.group(2) or match.group(4) or match.group(6)
            if name and name not in _MAIL_PROVIDERS:
                found.add(re.sub(r"[^a-z0-9]", "", name))
    return found


def _domain_name(doc: Doc, customer_lines: set[int]) -> str | None:
    """The first own web or mail domain on the first page, as a name ("www.azimut.com" ->
    "Azimut")."""
    for line in doc.lines:
        if line.index in customer_lines or line.page != 0:
            continue
        for match in _EMAIL_OR_WEB.finditer(line.ntext):
            name = match.group(2) or match.group(4) or match.group(6)
            if name and name not in _MAIL_PROVIDERS and len(name) >= 3:
                return name.replace("-", " ").title()
    return None


def _similar(a: str, b: str) -> bool:
    return len(a) >= 4 and len(b) >= 4 and SequenceMatcher(None, a, b).ratio() >= 0.85


def _name_key(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9 ]", "", norm(text))).strip()


def _address_after(doc: Doc, seg: _Segment, foreign: set[int]) -> str | None:
    """The vendor's street and town under its name, up to a contact line or another party."""
    parts: list[str] = []
    for below in _block_below(doc, seg, 4):
        if below.line.index in foreign:
            break
        if _NOT_A_NAME.search(below.ntext) and not _POSTCODE.search(below.ntext):
            break
        if re.search(r"(?<![a-z])(?:tel|fax|phone|fon|email|e-mail|www|http)", below.ntext):
            break
        parts.append(below.text.strip(" ,"))
        if _POSTCODE.search(below.ntext) and len(parts) >= 2:
            break
    has_digit = any(any(c.isdigit() for c in p) for p in parts)
    return ", ".join(parts) if parts and has_digit else None
