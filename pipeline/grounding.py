"""Grounding: look every extracted value up in the page words, to catch values a model invented."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from typing import Any, Final, Literal, Protocol, TypeAlias

from pipeline.currencies import ISO_4217, SYMBOLS
from pipeline.domain import Word

# --- public types --------------------------------------------------------------------------


class Ungrounded(Enum):
    UNGROUNDED = "ungrounded"


UNGROUNDED: Final = Ungrounded.UNGROUNDED

Kind = Literal["text", "identifier", "amount", "quantity", "date", "currency"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value is printed: page index, union box of the matched words (PDF points from
    the page's top-left corner) and the words as printed."""

    page: int
    bbox: tuple[float, float, float, float]
    matched_text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "bbox": [round(v, 2) for v in self.bbox],
            "text": self.matched_text,
        }


Found: TypeAlias = Location | Literal[Ungrounded.UNGROUNDED]


@dataclass(slots=True)
class Grounding:
    """Per field path ("total", "line_items[2].amount"): a Location or UNGROUNDED."""

    fields: dict[str, Found] = field(default_factory=dict)

    def __getitem__(self, path: str) -> Found:
        return self.fields[path]

    def __contains__(self, path: object) -> bool:
        return path in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def get(self, path: str) -> Found | None:
        return self.fields.get(path)

    def ungrounded(self) -> list[str]:
        return [path for path, found in self.fields.items() if found is UNGROUNDED]

    def located(self) -> dict[str, Location]:
        return {p: f for p, f in self.fields.items() if isinstance(f, Location)}

    def to_json(self) -> dict[str, Any]:
        return {
            path: found.to_json() if isinstance(found, Location) else found.value
            for path, found in self.fields.items()
        }


class HasWords(Protocol):
    """Anything with a page index and positioned words, e.g. PageContent."""

    @property
    def index(self) -> int: ...

    @property
    def words(self) -> Sequence[Word]: ...


@dataclass(frozen=True, slots=True)
class PageWords:
    index: int
    words: Sequence[Word]


# --- normalisation -------------------------------------------------------------------------

_ALNUM_RUN = re.compile(r"[^\W_]+")
# Letters OCR reads for digits; applied to both sides, only for values that contain digits.
_DIGIT_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1", "s": "5", "b": "8", "z": "2"})


def _fold(text: str) -> str:
    """Casefolded without accents: OCR drops accents, and people type them inconsistently."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@lru_cache(maxsize=16384)
def _parts(text: str) -> tuple[str, ...]:
    """Alphanumeric runs of a word: punctuation, at the edges or inside, never decides a match."""
    return tuple(_ALNUM_RUN.findall(_fold(text)))


def _key(text: str) -> str:
    return "".join(_parts(text))


def _within_one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance ≤ 1 (one substitution, insertion, deletion or swap)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# --- amounts -------------------------------------------------------------------------------

_SIGNS = "€$£¥₹₩₽₺₪₴₫₦₱฿"
_CURRENCY_PREFIX = re.compile(
    rf"^(?:[A-Z]{{3}}|[A-Z]{{1,2}}\$|[{_SIGNS}]|CHF|S?Fr\.|kr\.?|zł)\s*(?=[-−–+(\d])"
)
_CURRENCY_SUFFIX = re.compile(rf"(?<=[\d)\-])\s*(?:[A-Z]{{3}}|[{_SIGNS}]|CHF|kr\.?|zł|,-|\.-)$")
_GROUPED = re.compile(r"\d{1,3}(?:[ \u00a0\u202f'’]\d{3})+(?:[.,]\d+)?")
_NUMBER = re.compile(r"\d[\d.,]*\d|\d")
_OCR_AMOUNT = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "S": "5", "B": "8"})
_QUANTITY_X = re.compile(r"^[x×]\s*(?=\d)|(?<=\d)\s*[x×]$")


def _plain_number(text: str) -> tuple[Decimal, ...]:
    """Every value a bare number can mean: "1.005" is 1005 in Germany and 1.005 elsewhere."""
    if _GROUPED.fullmatch(text):
        text = re.sub(r"[ \u00a0\u202f'’]", "", text)
    if text.isdigit():
        return (Decimal(text),)
    if not _NUMBER.fullmatch(text):
        return ()
    dots, commas = text.count("."), text.count(",")
    if dots and commas:
        dec = "." if text.rfind(".") > text.rfind(",") else ","
        thou = "," if dec == "." else "."
        int_part, frac = text.rsplit(dec, 1)
        if thou in frac or not re.fullmatch(rf"\d{{1,3}}(?:{re.escape(thou)}\d{{3}})*", int_part):
            return ()
        return (Decimal(f"{int_part.replace(thou, '')}.{frac}"),)
    sep = "." if dots else ","
    if dots + commas > 1:
        if re.fullmatch(rf"\d{{1,3}}(?:{re.escape(sep)}\d{{3}})+", text):
            return (Decimal(text.replace(sep, "")),)
        return ()
    int_part, frac = text.split(sep)
    value = Decimal(f"{int_part}.{frac}")
    if len(frac) == 3 and len(int_part) <= 3 and int_part != "0":
        return (value, Decimal(int_part + frac))
    return (value,)


@lru_cache(maxsize=16384)
def _amount_values(text: str) -> tuple[Decimal, ...]:
    """Values a printed amount can have: either decimal separator, thousands by '.', ',',
    space or apostrophe, currency signs or codes before or after, minus before or after,
    accounting parentheses. Percentages are not amounts."""
    t = text.strip().rstrip(".:;,*")
    if not t or "%" in t or not any(c.isdigit() for c in t):
        return ()
    negative = False
    if t.startswith("(") and t.endswith(")"):
        negative, t = True, t[1:-1].strip()
    for _ in range(2):  # "€ -5,00" and "-€5,00" both occur
        t = _CURRENCY_PREFIX.sub("", t)
        t = _CURRENCY_SUFFIX.sub("", t).strip()
        if t[:1] in "-−–":
            negative, t = True, t[1:].strip()
        elif t[:1] == "+":
            t = t[1:].strip()
    if t.endswith("-"):
        negative, t = True, t[:-1].strip()
    t = _QUANTITY_X.sub("", t)
    if sum(c.isdigit() for c in t) >= 2 and not t.isdigit():
        t = t.translate(_OCR_AMOUNT)
    try:
        values = _plain_number(t)
    except InvalidOperation:
        return ()
    return tuple(-v for v in values) if negative else values


# Two decimals after a separator, as money is printed ("1.005,55", "681.87", "0,00").
_CENTS = re.compile(r"\d[.,]\d{2}(?!\d)")


# --- dates ---------------------------------------------------------------------------------

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "january jan januar janner janvier janv januari enero gennaio",
        "february feb febr februar fevrier fev fevr februari febrero febbraio",
        "march mar marz maerz mrz mars maart mrt marzo",
        "april apr avril avr abril aprile",
        "may mai mei mayo maggio",
        "june jun juni juin junio giugno",
        "july jul juli juillet juil julio luglio",
        "august aug aout augustus agosto",
        "september sep sept septembre septiembre settembre",
        "october oct okt oktober octobre octubre ottobre",
        "november nov novembre noviembre",
        "december dec dez dezember decembre diciembre dicembre",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number

_ORDINAL = re.compile(r"(?<=\d)(?:st|nd|rd|th|er|re|eme|e|ste|de|te)\b")
_DATE_SPLIT = re.compile(r"[\s./,\-]+")
_DATE_FILLER = frozenset({"de", "of", "den", "der", "le", "du", "the"})


def _year(text: str) -> int | None:
    if len(text) == 4:
        return int(text)
    if len(text) == 2:
        year = int(text)
        return year + (2000 if year < 70 else 1900)
    return None


def _make_date(year: int | None, month: int, day: int) -> date | None:
    if year is None or not 1900 <= year <= 2100:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


@lru_cache(maxsize=16384)
def _date_values(text: str) -> frozenset[date]:
    """Every date a run of words can mean, in ISO, numeric day-first and month-first, and
    written-month forms (en/de/fr/nl/es/it); ambiguous numeric dates yield both readings."""
    t = _fold(text).strip(" .,;:()[]")
    if ":" in t:  # a label glued to the date, "datum:30.10.2024"
        t = t.rsplit(":", 1)[1].strip()
    has_separator = bool(re.search(r"[./-]", t))
    parts = [p for p in _DATE_SPLIT.split(_ORDINAL.sub("", t)) if p and p not in _DATE_FILLER]
    found: set[date | None] = set()
    if len(parts) == 1 and len(parts[0]) == 8 and parts[0].isdigit():
        p = parts[0]
        found.add(_make_date(int(p[:4]), int(p[4:6]), int(p[6:])))
    elif len(parts) == 3:
        a, b, c = parts
        if a.isdigit() and b.isdigit() and c.isdigit():
            if not has_separator:
                pass  # space-separated digit triples are phone numbers and codes
            elif len(a) == 4 and len(b) <= 2 and len(c) <= 2:
                found.add(_make_date(int(a), int(b), int(c)))
            elif len(a) <= 2 and len(b) <= 2:
                found.add(_make_date(_year(c), int(b), int(a)))
                found.add(_make_date(_year(c), int(a), int(b)))
        elif a.isdigit() and b in _MONTHS and c.isdigit():
            if len(a) <= 2:
                found.add(_make_date(_year(c), _MONTHS[b], int(a)))
            elif len(a) == 4 and len(c) <= 2:
                found.add(_make_date(int(a), _MONTHS[b], int(c)))
        elif a in _MONTHS and b.isdigit() and c.isdigit() and len(b) <= 2:
            found.add(_make_date(_year(c), _MONTHS[a], int(b)))
    return frozenset(d for d in found if d is not None)


# --- currencies ----------------------------------------------------------------------------

_CURRENCY_SIGNS: dict[str, tuple[str, ...]] = {
    "EUR": ("€", "euro", "euros"),
    "USD": ("$", "us$"),
    "CAD": ("$", "ca$", "c$"),
    "AUD": ("$", "a$", "au$"),
    "NZD": ("$", "nz$"),
    "SGD": ("$", "s$"),
    "HKD": ("$", "hk$"),
    "MXN": ("$", "mx$"),
    "GBP": ("£",),
    "JPY": ("¥", "円"),
    "CNY": ("¥", "元", "rmb"),
    "CHF": ("fr.", "sfr."),
    "INR": ("₹", "rs."),
    "KRW": ("₩",),
    "RUB": ("₽",),
    "TRY": ("₺",),
    "ILS": ("₪",),
    "UAH": ("₴",),
    "VND": ("₫",),
    "NGN": ("₦",),
    "PHP": ("₱",),
    "THB": ("฿",),
    "PLN": ("zł",),
    "SEK": ("kr", "kr."),
    "NOK": ("kr", "kr."),
    "DKK": ("kr", "kr."),
    "ISK": ("kr", "kr."),
    "BRL": ("r$",),
}
for _symbol, _code in SYMBOLS.items():
    if _symbol.casefold() not in _CURRENCY_SIGNS.get(_code, ()) and _symbol != _code:
        _CURRENCY_SIGNS[_code] = (*_CURRENCY_SIGNS.get(_code, ()), _symbol.casefold())
# Codes that are also ordinary words: only trusted when printed in capitals.
_WORDLIKE_CODES = frozenset({"ALL", "TOP", "CUP", "MAD", "SOS", "PEN", "BAM", "GEL", "TRY", "BOB"})


# --- labels --------------------------------------------------------------------------------

# Words that label a field: used only to pick among several occurrences of the same value.
_LABELS: dict[str, re.Pattern[str]] = {
    "invoice_number": re.compile(
        r"invoice|rechnung|factu|fattura|nummer|number|numero|^(?:no|nr|n|num|inv|ref|beleg)$"
    ),
    "invoice_date": re.compile(r"date|datum|fecha|^data$|invoice|rechnung|factu|fattura"),
    "due_date": re.compile(r"due|fallig|echeance|zahlbar|payable|verval|scadenza|vencim|^bis$"),
    "total": re.compile(
        r"(?<!sub)total|gesamt|summe|brutto|^ttc$|betrag|amount|payer|totaal|^grand|balance|due"
    ),
    "subtotal": re.compile(r"subtotal|zwischensumme|netto|^net$|^ht$|sous|imponibile"),
    "tax": re.compile(r"vat|tax|mwst|^ust|tva|btw|^iva$|gst|hst|steuer"),
    "quantity": re.compile(r"^(?:qty|quantity|menge|anzahl|quantite|qte|aantal|pcs|stk)$"),
}
_LABELS["date"] = _LABELS["invoice_date"]
# A label word is not one for the field when it or a neighbour names another field ("Due
# Date", "Total HT", "USt. Gesamt").
_NOT_LABELS: dict[str, re.Pattern[str]] = {
    "invoice_date": re.compile(
        r"due|ship|deliver|liefer|leistung|fallig|echeance|livraison|order|bestell|auftrag"
        r"|period|debut|^fin$|^end$|start|verval|valid|zahlbar|payment"
    ),
    "total": re.compile(r"^(?:ht|net|excl|exkl|zzgl|sub)|tva|vat|tax|mwst|^ust|btw|zwischen"),
}
_NOT_LABELS["date"] = _NOT_LABELS["invoice_date"]

# Prefixes an invoice number may be glued to ("Nr.2014-03", "No:F-1", "N°123").
_NUMBER_LABEL = re.compile(
    r"^(?:no|nr|n|num|number|nummer|numero|inv|invoice|rechnung(?:snr|snummer)?|facture"
    r"|factuur|fattura|factura|ref|beleg(?:nr)?|bill)$"
)

_DEFAULT_KINDS: dict[str, Kind] = {
    "invoice_number": "identifier",
    "invoice_date": "date",
    "due_date": "date",
    "date": "date",
    "currency": "currency",
    "subtotal": "amount",
    "tax": "amount",
    "total": "amount",
    "unit_price": "amount",
    "amount": "amount",
    "quantity": "quantity",
    "vendor_name": "text",
    "vendor_address": "text",
    "customer_name": "text",
    "description": "text",
}
_MAX_MATCHES = 12
_MAX_FUZZY_TOKENS = 40  # longer values must match exactly: the token search grows with length
_MAX_TOKEN_WORDS = 12  # occurrences per token followed in the token search
_SEARCH_BUDGET = 4000  # word visits per value: keeps a pathological value from costing time


def _kind_of(name: str, value: Any, kinds: Mapping[str, Kind]) -> Kind:
    if name in kinds:
        return kinds[name]
    if name in _DEFAULT_KINDS:
        return _DEFAULT_KINDS[name]
    if isinstance(value, (date, datetime)):
        return "date"
    if isinstance(value, (Decimal, int, float)):
        return "quantity" if "qty" in name or "quantity" in name else "amount"
    if name.endswith("date"):
        return "date"
    if "currency" in name:
        return "currency"
    if re.search(r"amount|price|total|^tax|_tax$|^sum$|_sum$", name):
        return "amount"
    if re.search(r"number|_no$|_nr$|_id$|^id$|reference", name):
        return "identifier"
    return "text"


# --- the page index ------------------------------------------------------------------------


Span: TypeAlias = tuple[int, ...]  # word indexes on one page, in reading order


@dataclass(slots=True)
class _Segment:
    line: int
    words: list[int]  # left to right
    x0: float
    x1: float
    first_keyed: int | None  # first word with letters or digits


class _Page:
    """One page's words, indexed once: visual lines and segments (one cell or column run
    each), and lazily the lookups each kind of value needs."""

    def __init__(self, index: int, words: Sequence[Word]) -> None:
        self.index = index
        self.words = [w for w in words if w.text.strip()]
        self.parts = [_parts(w.text) for w in self.words]
        self.keys = ["".join(p) for p in self.parts]
        self.has_digit = [any(c.isdigit() for c in k) for k in self.keys]
        self._heights = [max(w.y1 - w.y0, 1.0) for w in self.words]
        self._group()
        self._successors: dict[int, tuple[int, ...]] = {}
        self._starts: dict[bool, dict[str, list[tuple[int, int]]]] = {}
        self._folded: list[str] | None = None
        self._by_key: dict[str, list[int]] | None = None
        self._by_folded: dict[str, list[int]] | None = None
        self._by_shape: dict[tuple[int, str], list[int]] | None = None
        self._amounts: dict[Decimal, list[Span]] | None = None
        self._dates: dict[date, list[Span]] | None = None
        self._labels: dict[str, list[int]] = {}

    # geometry

    def _group(self) -> None:
        words, heights = self.words, self._heights
        centre = [(w.y0 + w.y1) / 2 for w in words]
        order = sorted(range(len(words)), key=lambda i: (centre[i], words[i].x0))
        lines: list[list[int]] = []
        ref_y, ref_h = 0.0, 0.0
        for i in order:
            if lines and abs(centre[i] - ref_y) <= 0.5 * min(heights[i], ref_h):
                lines[-1].append(i)
            else:
                lines.append([i])
                ref_y, ref_h = centre[i], heights[i]
        self.lines = [sorted(line, key=lambda i: words[i].x0) for line in lines]
        self.line_y = [sum(centre[i] for i in line) / len(line) for line in self.lines]
        self.line_of = [0] * len(words)
        self.pos_of = [0] * len(words)
        self.seg_of = [0] * len(words)
        self.rank = [0] * len(words)
        self.next_in_seg: list[int | None] = [None] * len(words)
        self.prev_in_seg: list[int | None] = [None] * len(words)
        self.segments: list[_Segment] = []
        rank = 0
        for n, line in enumerate(self.lines):
            current: list[int] = []
            for pos, i in enumerate(line):
                self.line_of[i], self.pos_of[i], self.rank[i] = n, pos, rank
                rank += 1
                if current:
                    prev = current[-1]
                    # A gap wider than about one line height separates table cells and columns.
                    if words[i].x0 - words[prev].x1 > 0.9 * max(heights[i], heights[prev]):
                        self._close(n, current)
                        current = []
                current.append(i)
            self._close(n, current)

    def _close(self, line: int, members: list[int]) -> None:
        keyed = [i for i in members if self.keys[i]]
        seg = _Segment(
            line=line,
            words=members,
            x0=min(self.words[i].x0 for i in members),
            x1=max(self.words[i].x1 for i in members),
            first_keyed=keyed[0] if keyed else None,
        )
        number = len(self.segments)
        self.segments.append(seg)
        for i in members:
            self.seg_of[i] = number
        for a, b in pairwise(keyed):
            self.next_in_seg[a], self.prev_in_seg[b] = b, a

    def successors(self, i: int) -> tuple[int, ...]:
        """Words a value may continue with after word i: the next word in its segment, or the
        start of the text below it (a value wrapped inside a cell or an address block)."""
        cached = self._successors.get(i)
        if cached is not None:
            return cached
        out: list[int] = []
        nxt = self.next_in_seg[i]
        if nxt is not None:
            out.append(nxt)
        word, h = self.words[i], self._heights[i]
        seg = self.segments[self.seg_of[i]]
        limit = self.line_y[self.line_of[i]] + 2.5 * h
        for n in range(self.line_of[i] + 1, len(self.lines)):
            if self.line_y[n] > limit:
                break
            line = self.lines[n]
            for pos, j in enumerate(line):
                if not self.keys[j] or j in out:
                    continue
                other = self.segments[self.seg_of[j]]
                if j == other.first_keyed and other.x0 <= seg.x1 + h and other.x1 >= seg.x0 - h:
                    out.append(j)
                    continue
                left = self.words[line[pos - 1]].x1 if pos else -math.inf
                w = self.words[j]
                if seg.x0 - 2 * h <= w.x0 <= word.x1 + h and left < seg.x0 - 0.5 * h:
                    out.append(j)
        result = tuple(out)
        self._successors[i] = result
        return result

    def near(self, a: int, b: int, skipped: int) -> bool:
        """Whether word b can follow word a in one printed text with `skipped` value tokens
        missing between them: further along a's line, or starting below within a's column."""
        wa, wb = self.words[a], self.words[b]
        h = max(self._heights[a], self._heights[b])
        la, lb = self.line_of[a], self.line_of[b]
        if la == lb:
            return self.pos_of[b] > self.pos_of[a] and wb.x0 - wa.x1 <= (skipped + 1) * 4 * h
        seg = self.segments[self.seg_of[a]]
        return (
            lb > la
            and self.line_y[lb] - self.line_y[la] <= (skipped + 1) * 2.5 * h
            and seg.x0 - 2 * h <= wb.x0 <= seg.x1 + 2 * h
        )

    def location(self, span: Span) -> Location:
        ws = [self.words[i] for i in span]
        return Location(
            page=self.index,
            bbox=(
                min(w.x0 for w in ws),
                min(w.y0 for w in ws),
                max(w.x1 for w in ws),
                max(w.y1 for w in ws),
            ),
            matched_text=" ".join(w.text for w in ws),
        )

    def span_y(self, span: Span) -> tuple[float, float]:
        return min(self.words[i].y0 for i in span), max(self.words[i].y1 for i in span)

    def height(self, span: Span) -> float:
        return max(self._heights[i] for i in span)

    # lookups, built on first use

    def folded(self) -> list[str]:
        if self._folded is None:
            self._folded = [k.translate(_DIGIT_LOOKALIKES) for k in self.keys]
        return self._folded

    def starts(self, folded: bool) -> dict[str, list[tuple[int, int]]]:
        """First character -> (word, offset) for every place a value may start: a word's
        beginning or, after punctuation inside it, one of its later parts."""
        found = self._starts.get(folded)
        if found is None:
            found = {}
            keys = self.folded() if folded else self.keys
            for i, parts in enumerate(self.parts):
                offset = 0
                for part in parts:
                    found.setdefault(keys[i][offset], []).append((i, offset))
                    offset += len(part)
            self._starts[folded] = found
        return found

    def ends(self, i: int) -> set[int]:
        offsets, total = set(), 0
        for part in self.parts[i]:
            total += len(part)
            offsets.add(total)
        return offsets

    def by_key(self) -> dict[str, list[int]]:
        if self._by_key is None:
            self._by_key = {}
            for i, k in enumerate(self.keys):
                if k:
                    self._by_key.setdefault(k, []).append(i)
        return self._by_key

    def by_folded(self) -> dict[str, list[int]]:
        if self._by_folded is None:
            self._by_folded = {}
            for i, k in enumerate(self.folded()):
                if k:
                    self._by_folded.setdefault(k, []).append(i)
        return self._by_folded

    def by_shape(self) -> dict[tuple[int, str], list[int]]:
        """(length, digits) -> words of five characters or more, for the one-edit match."""
        if self._by_shape is None:
            self._by_shape = {}
            for i, k in enumerate(self.keys):
                if len(k) >= 5:
                    self._by_shape.setdefault((len(k), _digits(k)), []).append(i)
        return self._by_shape

    def amounts(self) -> dict[Decimal, list[Span]]:
        if self._amounts is None:
            index: dict[Decimal, list[Span]] = {}
            singles: list[tuple[Decimal, ...]] = []
            for i, w in enumerate(self.words):
                if not self.has_digit[i]:
                    singles.append(())
                    continue
                nxt = self.next_word(i)
                if nxt is not None and self.words[nxt].text.startswith("%"):
                    singles.append(())
                    continue
                values = _amount_values(w.text)
                singles.append(values)
                for v in values:
                    index.setdefault(v, []).append((i,))
            for line in self.lines:
                for a, b in pairwise(line):
                    wa, wb = self.words[a], self.words[b]
                    # "1 005,55": a thousands space is narrower than a word space.
                    if wb.x0 - wa.x1 > 0.6 * self._heights[a] or not re.fullmatch(
                        r"[-−(]?\D?\d{1,3}", wa.text
                    ):
                        continue
                    for v in _amount_values(f"{wa.text} {wb.text}"):
                        if v not in singles[a] and v not in singles[b]:
                            index.setdefault(v, []).append((a, b))
            self._amounts = index
        return self._amounts

    def has_cents(self, span: Span) -> bool:
        return any(_CENTS.search(self.words[i].text) for i in span)

    def column_rank(self, span: Span) -> tuple[bool, bool, float]:
        """Orders a row's numbers for the leftmost-value rule: a bare integer starting the line
        is a position number, one after a word in its own cell belongs to that word ("BC: 3");
        both are worse than a number standing in a column of its own."""
        i = span[0]
        first = next((j for j in self.lines[self.line_of[i]] if self.keys[j]), None)
        position = span == (first,) and self.words[i].text.rstrip(".").isdigit()
        before = self.prev_in_seg[i]
        labelled = before is not None and not self.has_digit[before]
        return position, labelled, self.words[i].x0

    def next_word(self, i: int) -> int | None:
        line = self.lines[self.line_of[i]]
        pos = self.pos_of[i] + 1
        return line[pos] if pos < len(line) else None

    def dates(self) -> dict[date, list[Span]]:
        if self._dates is None:
            index: dict[date, list[Span]] = {}
            for seg in self.segments:
                members = seg.words
                for s, first in enumerate(members):
                    if not (self.has_digit[first] or self.keys[first] in _MONTHS):
                        continue
                    for e in range(s, min(s + 5, len(members))):
                        if not self.has_digit[members[e]]:
                            continue
                        text = " ".join(self.words[i].text for i in members[s : e + 1])
                        for d in _date_values(text):
                            spans = index.setdefault(d, [])
                            span = tuple(members[s : e + 1])
                            # Keep the shortest run: "2026" after a full date adds nothing.
                            if not any(set(old) <= set(span) for old in spans):
                                spans.append(span)
            self._dates = index
        return self._dates

    def labels(self, name: str) -> list[int]:
        found = self._labels.get(name)
        if found is None:
            pattern, exclude = _LABELS.get(name), _NOT_LABELS.get(name)
            found = []
            for i, k in enumerate(self.keys):
                if not k or pattern is None or not pattern.search(k):
                    continue
                near = (
                    k,
                    *(
                        self.keys[j]
                        for j in (self.prev_in_seg[i], self.next_in_seg[i])
                        if j is not None
                    ),
                )
                if exclude is None or not any(exclude.search(n) for n in near):
                    found.append(i)
            self._labels[name] = found
        return found


# --- matching ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """What is known of one line item while grounding it: where its text sits and where the
    previous item was."""

    after: tuple[int, float] | None = None  # (page, y) the item must start below
    page: int | None = None
    y0: float = 0.0
    y1: float = 0.0
    h: float = 0.0

    def place(self, page: int, y0: float, y1: float, h: float) -> None:
        if self.page is None:
            self.page, self.y0, self.y1, self.h = page, y0, y1, h

    def is_after(self, hit: _Hit) -> bool:
        return self.after is None or (hit.page, hit.y0) > self.after


@dataclass(slots=True, eq=False)
class _Hit:
    """One occurrence of a value, with everything choosing among occurrences needs, so that
    the page's words can be let go once its chunk is searched."""

    page: int
    rank: int  # reading order of the first word on its page
    span: Span
    loc: Location
    y0: float
    y1: float
    h: float
    cents: bool
    seq: int  # discovery order: breaks ties between occurrences starting at the same word
    dist: int = 0  # label distance, for a field outside line items
    line: int = 0
    line_y: float = 0.0
    line_box: tuple[float, float, float] = (0.0, 0.0, 0.0)  # y0, y1, height of the whole line
    x0: float = 0.0
    col: tuple[bool, bool, float] = (False, False, 0.0)

    @property
    def order(self) -> tuple[int, int, int]:
        return self.page, self.rank, self.seq


# What a value is looked up as. The field name is set when label distance picks among its
# occurrences (fields outside line items): then only the best occurrence need be kept.
_Query: TypeAlias = (
    tuple[Literal["num"], Decimal, str | None]
    | tuple[Literal["date"], date, str | None]
    | tuple[Literal["cur"], str, bool]  # the bool: inside a line item, keep every occurrence
    | tuple[Literal["text"], str, Literal["text", "identifier"], str | None]
)


def _query(kind: Kind, value: Any, name: str | None, in_row: bool) -> _Query:
    if kind in ("amount", "quantity"):
        number = _as_decimal(value)
        if number is not None:
            return ("num", number, name)
    elif kind == "date":
        day = _as_date(value)
        if day is not None:
            return ("date", day, name)
    elif kind == "currency" and isinstance(value, str) and value.strip().upper() in ISO_4217:
        return ("cur", value.strip().upper(), in_row)
    return ("text", str(value), "identifier" if kind == "identifier" else "text", name)


class _Best:
    """Occurrences of a number or date outside line items: the lowest label distance wins, the
    first in reading order on a tie; kept for all occurrences and for those printed with cents."""

    def __init__(self) -> None:
        self.best: _Hit | None = None
        self.best_cents: _Hit | None = None

    def offer(self, hit: _Hit) -> None:
        if self.best is None or (hit.dist, *hit.order) < (self.best.dist, *self.best.order):
            self.best = hit
        if hit.cents and (
            self.best_cents is None
            or (hit.dist, *hit.order) < (self.best_cents.dist, *self.best_cents.order)
        ):
            self.best_cents = hit

    def hits(self, cents_only: bool) -> list[_Hit]:
        hit = self.best_cents if cents_only else self.best
        return [] if hit is None else [hit]

    def pages(self) -> set[int] | None:
        return {h.page for h in (self.best, self.best_cents) if h is not None}


class _All:
    """Occurrences inside line items: which one wins depends on the items before, so all stay
    (as small records, not pages)."""

    def __init__(self) -> None:
        self.found: list[_Hit] = []

    def offer(self, hit: _Hit) -> None:
        self.found.append(hit)

    def hits(self, cents_only: bool) -> list[_Hit]:
        return [h for h in self.found if h.cents] if cents_only else self.found

    def pages(self) -> set[int] | None:
        return {h.page for h in self.found}


class _Text:
    """A text value's three tiers, each used only when the ones before found nothing on any
    page: exact, exact up to digit look-alikes, token by token. A later tier is searched only
    while the earlier ones have found nothing so far; at most _MAX_MATCHES of each are kept."""

    def __init__(self, value: str, kind: Literal["text", "identifier"]) -> None:
        self.target = _key(value)
        self.kind = kind
        self.tokens = [k for k in (_key(t) for t in value.split()) if k]
        self.exact: list[_Hit] = []
        self.folded: list[_Hit] = []
        self.fuzzy: tuple[int, int, _Hit] | None = None  # (missing, first rank, occurrence)
        self.fuzzy_done = not self.tokens or len(self.tokens) > _MAX_FUZZY_TOKENS

    def hits(self, cents_only: bool) -> list[_Hit]:
        if self.exact or self.folded:
            return self.exact or self.folded
        return [] if self.fuzzy is None else [self.fuzzy[2]]

    def pages(self) -> set[int] | None:
        return {h.page for h in self.hits(False)}


class _Currency:
    """Words naming a currency, by code, else by sign. Outside line items only the first one
    and those on a page where the total may be are needed (the nearest to the total wins)."""

    def __init__(self, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.by_code: list[_Hit] = []
        self.by_sign: list[_Hit] = []

    def hits(self, cents_only: bool) -> list[_Hit]:
        return self.by_code or self.by_sign

    def pages(self) -> set[int] | None:
        return None

    def prune(self, watch: set[int] | None) -> None:
        if self.keep_all or watch is None:
            return
        if self.by_code:
            self.by_sign = []
        for name in ("by_code", "by_sign"):
            found: list[_Hit] = getattr(self, name)
            if found:
                first = min(found, key=lambda h: h.order)
                setattr(self, name, [h for h in found if h is first or h.page in watch])


_Store: TypeAlias = _Best | _All | _Text | _Currency


class GroundingStream:
    """Grounds one document's values against its pages delivered chunk by chunk, in page
    order: `add(pages)` for each chunk, then `result()`. Between chunks it keeps only the
    occurrences that can still be chosen, never the pages' words, so memory does not grow
    with the page count; the result is the one `ground` gives on all pages at once."""

    def __init__(self, data: Mapping[str, Any], *, kinds: Mapping[str, Kind] | None = None) -> None:
        self._data = data
        self._kinds = dict(kinds or {})
        # A dry run of the decisions lists every lookup they will make.
        planner = _Decider(self._kinds, _Planner())
        planner.walk(data, "")
        assert isinstance(planner.source, _Planner)
        self._stores: dict[_Query, _Store] = {}
        for query in planner.source.queries:
            self._stores[query] = _store_for(query)
        self._total = planner.total
        self._cents = False
        self._seq = 0

    @property
    def prints_cents(self) -> bool:
        return self._cents

    def add(self, pages: Iterable[HasWords]) -> None:
        chunk = [_Page(p.index, p.words) for p in pages]
        if not chunk:
            return
        if not self._cents:
            self._cents = any(_CENTS.search(w.text) for page in chunk for w in page.words)
        for query, store in self._stores.items():
            self._search(query, store, chunk)
        watch = self._watch()
        for store in self._stores.values():
            if isinstance(store, _Currency):
                store.prune(watch)

    def hits(self, query: _Query, cents_only: bool) -> list[_Hit]:
        return self._stores[query].hits(cents_only)

    def result(self) -> Grounding:
        decider = _Decider(self._kinds, self)
        decider.walk(self._data, "")
        return decider.result

    def _watch(self) -> set[int] | None:
        """Pages the total may end up on: a currency outside line items is taken near it."""
        if self._total is None:
            return set()
        return self._stores[self._total].pages()

    def _hit(self, page: _Page, span: Span, name: str | None, number: bool = False) -> _Hit:
        self._seq += 1
        y0, y1 = page.span_y(span)
        hit = _Hit(
            page=page.index,
            rank=page.rank[span[0]],
            span=span,
            loc=page.location(span),
            y0=y0,
            y1=y1,
            h=page.height(span),
            cents=page.has_cents(span),
            seq=self._seq,
        )
        if name is not None:
            hit.dist = _label_distance(page, name, span, hit.loc)
        if number:
            line = page.line_of[span[0]]
            members = page.lines[line]
            hit.line, hit.line_y = line, page.line_y[line]
            hit.line_box = (*page.span_y(tuple(members)), page.height(tuple(members)))
            hit.x0 = page.words[span[0]].x0
            hit.col = page.column_rank(span)
        return hit

    def _search(self, query: _Query, store: _Store, chunk: list[_Page]) -> None:
        if query[0] == "num":
            assert isinstance(store, (_Best, _All))
            value, name = query[1], query[2]
            for page in chunk:
                index = page.amounts()
                spans = list(index.get(value, []))
                if value:  # credit notes and discounts print the sign either way
                    spans += index.get(-value, [])
                for span in spans:
                    store.offer(self._hit(page, span, name, number=True))
        elif query[0] == "date":
            assert isinstance(store, (_Best, _All))
            day, name = query[1], query[2]
            for page in chunk:
                for span in page.dates().get(day, []):
                    store.offer(self._hit(page, span, name))
        elif query[0] == "cur":
            assert isinstance(store, _Currency)
            code_hits, sign_hits = _currency_words(chunk, query[1])
            store.by_code += [self._hit(p, s, None) for p, s in code_hits]
            if not store.by_code or store.keep_all:
                store.by_sign += [self._hit(p, s, None) for p, s in sign_hits]
        else:
            assert isinstance(store, _Text)
            self._search_text(store, chunk, query[3])

    def _search_text(self, store: _Text, chunk: list[_Page], name: str | None) -> None:
        target, kind = store.target, store.kind
        if not target:
            return
        if len(store.exact) < _MAX_MATCHES:
            out: list[tuple[_Page, Span]] = []
            for page in chunk:
                _Stream(page, target, kind, False, out, _MAX_MATCHES - len(store.exact)).run()
            store.exact += [self._hit(p, s, name) for p, s in out]
        if store.exact:
            return
        if _digits(target) and len(store.folded) < _MAX_MATCHES:
            folded = target.translate(_DIGIT_LOOKALIKES)
            out = []
            for page in chunk:
                _Stream(page, folded, kind, True, out, _MAX_MATCHES - len(store.folded)).run()
            store.folded += [self._hit(p, s, name) for p, s in out]
        if store.folded or store.fuzzy_done:
            return
        for page in chunk:
            found = _fuzzy_page(page, store.tokens, kind)
            if found is not None and (store.fuzzy is None or found[:2] < store.fuzzy[:2]):
                store.fuzzy = (found[0], found[1], self._hit(page, found[2], name))
            if store.fuzzy is not None and store.fuzzy[0] == 0:
                store.fuzzy_done = True
                return


def _store_for(query: _Query) -> _Store:
    if query[0] == "cur":
        return _Currency(keep_all=query[2])
    if query[0] == "text":
        return _Text(query[1], query[2])
    return _All() if query[2] is None else _Best()


class _Source(Protocol):
    @property
    def prints_cents(self) -> bool: ...

    def hits(self, query: _Query, cents_only: bool) -> list[_Hit]: ...


class _Planner:
    """Stands in for the pages in a dry run: records the lookups, finds nothing."""

    prints_cents = False

    def __init__(self) -> None:
        self.queries: dict[_Query, None] = {}  # insertion-ordered set

    def hits(self, query: _Query, cents_only: bool) -> list[_Hit]:
        self.queries[query] = None
        return []


def ground(
    data: Mapping[str, Any],
    pages: Sequence[HasWords],
    *,
    kinds: Mapping[str, Kind] | None = None,
) -> Grounding:
    """Locate every non-null scalar of `data` in the pages' words.

    The kind of each field (how it is compared) comes from `kinds` (by field name, e.g.
    "amount"), else the invoice schema's field names, else the value's type and field name.
    """
    return ground_chunks(data, [pages], kinds=kinds)


def ground_chunks(
    data: Mapping[str, Any],
    chunks: Iterable[Iterable[HasWords]],
    *,
    kinds: Mapping[str, Kind] | None = None,
) -> Grounding:
    """`ground` over pages delivered chunk by chunk in page order; only one chunk's words are
    held at a time."""
    stream = GroundingStream(data, kinds=kinds)
    for chunk in chunks:
        stream.add(chunk)
    return stream.result()


class _Decider:
    """Walks the data and picks, for every value, one of its occurrences."""

    def __init__(self, kinds: dict[str, Kind], source: _Source) -> None:
        self.kinds = kinds
        self.source = source
        self.result = Grounding()
        self.total: _Query | None = None  # how the field "total" was looked up

    # walking the data

    def walk(self, data: Mapping[str, Any], prefix: str) -> None:
        scalars = [(k, v) for k, v in data.items() if not isinstance(v, (Mapping, list, tuple))]
        # Currency last: its sign is best taken from near the total.
        scalars.sort(key=lambda kv: _kind_of(kv[0], kv[1], self.kinds) == "currency")
        for name, value in scalars:
            self.field(f"{prefix}{name}", name, value, None)
        for name, value in data.items():
            if isinstance(value, Mapping):
                self.walk(value, f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                self.rows(f"{prefix}{name}", name, value)

    def rows(self, path: str, name: str, items: Sequence[Any]) -> None:
        after: tuple[int, float] | None = None
        for n, item in enumerate(items):
            if not isinstance(item, Mapping):
                self.field(f"{path}[{n}]", name, item, None)
                continue
            row = _Row(after=after)
            numbers: dict[str, Decimal] = {}
            # Text first: it places the row, and the row then picks among repeated numbers.
            for key, value in item.items():
                if isinstance(value, (Mapping, list, tuple)) or value is None:
                    continue
                number = None
                if _kind_of(key, value, self.kinds) in ("amount", "quantity"):
                    number = _as_decimal(value)
                if number is None:
                    self.field(f"{path}[{n}].{key}", key, value, row)
                else:
                    numbers[key] = number
            self.row_numbers(f"{path}[{n}].", numbers, row)
            for key, value in item.items():
                if isinstance(value, Mapping):
                    self.walk(value, f"{path}[{n}].{key}.")
            if row.page is not None:
                # Below the middle of the item's last line: the next item starts lower.
                after = (row.page, row.y1 - 0.3 * row.h)

    def row_numbers(self, prefix: str, values: dict[str, Decimal], row: _Row) -> None:
        """A line item's numbers, grounded together: the printed line holding most of them,
        next to the item's text, is the item's row; each number is then taken from it."""
        found = {
            key: self.source.hits(("num", value, None), False) for key, value in values.items()
        }
        lines: dict[tuple[int, int], set[str]] = {}
        line_hit: dict[tuple[int, int], _Hit] = {}
        for key, cands in found.items():
            for hit in cands:
                lines.setdefault((hit.page, hit.line), set()).add(key)
                line_hit.setdefault((hit.page, hit.line), hit)

        def rank(item: tuple[tuple[int, int], set[str]]) -> tuple[bool, bool, int, float, int, int]:
            (page_no, line_no), keys = item
            yc = line_hit[(page_no, line_no)].line_y
            gap = max(0.0, yc - row.y1, row.y0 - yc) if row.page == page_no else math.inf
            near = gap <= 2.0 * row.h
            later = row.after is None or (page_no, yc) > row.after
            return not near, not later, -len(keys), gap, page_no, line_no

        best = min(lines.items(), key=rank)[0] if lines else None
        used: set[tuple[int, int]] = set()
        # The line total first and from the right: it is the last column nearly everywhere.
        for key in sorted(found, key=lambda k: k not in ("amount", "total", "line_total")):
            cands = sorted(found[key], key=lambda c: c.order)
            if not cands:
                self.result.fields[prefix + key] = UNGROUNDED
                continue
            on_line = [c for c in cands if (c.page, c.line) == best]
            if on_line:
                pool = [c for c in on_line if not any((c.page, i) in used for i in c.span)]
                pool = pool or on_line
                if key in ("amount", "total", "line_total"):
                    hit = max(pool, key=lambda c: c.x0)
                else:
                    hit = min(pool, key=lambda c: c.col)
            else:
                later = [c for c in cands if row.is_after(c)]
                hit = (later or cands)[0]
            used.update((hit.page, i) for i in hit.span)
            self.result.fields[prefix + key] = hit.loc
        if best is not None and row.page is None:
            row.place(best[0], *line_hit[best].line_box)

    def field(self, path: str, name: str, value: Any, row: _Row | None) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, str) and not value.strip():
            return
        kind = _kind_of(name, value, self.kinds)
        labelled = row is None and kind != "currency"
        query = _query(kind, value, name if labelled else None, row is not None)
        if path == "total":
            self.total = query
        # Where money is printed with cents, a bare "1" (a page number, a quantity) is no
        # evidence for an amount of 1.00.
        cents_only = kind == "amount" and query[0] == "num" and self.source.prints_cents
        candidates = self.source.hits(query, cents_only)
        if not candidates:
            self.result.fields[path] = UNGROUNDED
            return
        hit = self.choose(kind, candidates, row)
        self.result.fields[path] = hit.loc
        if row is not None:
            row.place(hit.page, hit.y0, hit.y1, hit.h)

    def choose(self, kind: Kind, candidates: list[_Hit], row: _Row | None) -> _Hit:
        candidates = sorted(candidates, key=lambda c: c.order)
        if len(candidates) == 1:
            return candidates[0]
        if row is not None:
            # Within a line item, the first occurrence below the previous item.
            return next((c for c in candidates if row.is_after(c)), candidates[0])
        if kind == "currency":
            total = self.result.fields.get("total")
            if isinstance(total, Location):
                near = [c for c in candidates if c.page == total.page]
                if near:
                    return min(near, key=lambda c: _distance(c.loc.bbox, total.bbox))
            return candidates[0]
        return min(candidates, key=lambda c: (c.dist, c.order))


def _currency_words(
    pages: list[_Page], code: str
) -> tuple[list[tuple[_Page, Span]], list[tuple[_Page, Span]]]:
    """Words naming the currency: by its code, and by its sign."""
    code_re = re.compile(rf"(?<![A-Za-z]){code}(?![A-Za-z])")
    lower = code.casefold()
    signs = _CURRENCY_SIGNS.get(code, ())
    # Signs are found inside a word ("12,00€"), sign words only as the whole word.
    marks = [s for s in signs if not s.replace(".", "").isalpha()]
    names = {_key(s) for s in signs if s not in marks}
    by_code: list[tuple[_Page, Span]] = []
    by_sign: list[tuple[_Page, Span]] = []
    for page in pages:
        for i, w in enumerate(page.words):
            text, key = w.text, page.keys[i]
            if (code in text and code_re.search(text)) or (
                key == lower and code not in _WORDLIKE_CODES
            ):
                by_code.append((page, (i,)))
            elif any(m in text for m in marks) or (names and key.strip("0123456789") in names):
                by_sign.append((page, (i,)))
    return by_code, by_sign


def _fuzzy_page(page: _Page, tokens: list[str], kind: str) -> tuple[int, int, Span] | None:
    """Token by token with OCR slack; a long text may miss a fifth of its tokens, as long as
    the ones found follow each other closely in reading order. The page's best chain as
    (tokens missing, rank of its first word, words)."""
    n = len(tokens)
    allowed = n - math.ceil(0.8 * n) if kind == "text" and n >= 5 else 0
    best: tuple[int, int, Span] | None = None
    cands = [_token_words(page, t) for t in tokens]
    # chains[t][w] = (missing so far, words) for chains whose last token t matched w.
    chains: list[dict[int, tuple[int, list[int]]]] = [{} for _ in tokens]
    for t in range(n):
        for w in cands[t]:
            options: list[tuple[int, list[int]]] = []
            if t <= allowed:
                options.append((t, [w]))
            for s in range(max(0, t - allowed - 1), t):
                skipped = t - s - 1
                for prev, (missing, words) in chains[s].items():
                    if (
                        missing + skipped <= allowed
                        and w not in words
                        and page.near(prev, w, skipped)
                    ):
                        options.append((missing + skipped, [*words, w]))
            if options:
                chains[t][w] = min(options, key=lambda o: (o[0], page.rank[o[1][0]]))
    for t in range(n):
        for missing, words in chains[t].values():
            total = missing + (n - 1 - t)
            if total <= allowed:
                key = (total, page.rank[words[0]])
                if best is None or key < best[:2]:
                    best = (total, page.rank[words[0]], tuple(words))
    return best


def _token_words(page: _Page, token: str) -> list[int]:
    """Words matching one value token: equal, equal up to digit look-alikes, or one edit away
    for tokens of six characters or more — but an edit may never touch a digit, since a
    changed digit is exactly what an invented number looks like."""
    found = list(page.by_key().get(token, []))
    digits = _digits(token)
    if digits:
        folded = page.by_folded().get(token.translate(_DIGIT_LOOKALIKES), [])
        found += [i for i in folded if i not in found]
    if len(token) >= 6:
        # A one-edit match keeps every digit: only words with the same digits can match, and
        # the look-alike matches among them are found above, so one edit is all to test.
        for length in (len(token) - 1, len(token), len(token) + 1):
            for i in page.by_shape().get((length, digits), []):
                if i not in found and _within_one_edit(token, page.keys[i]):
                    found.append(i)
    return sorted(found, key=lambda i: page.rank[i])[:_MAX_TOKEN_WORDS]


def _label_distance(page: _Page, name: str, span: Span, loc: Location) -> int:
    """How far an occurrence sits from the nearest label word for the field, in words between
    them on the same line, or in lines down from a label above it in the same column. Labels
    do not follow their value, so words right of or below it do not count; with no label in
    sight the distance is large and reading order decides."""
    x0, y0, x1, _ = loc.bbox
    h = page.height(span)
    line, pos = page.line_of[span[0]], page.pos_of[span[0]]
    words = page.lines[line]
    best = 1000
    for i in page.labels(name):
        if i in span:
            return 0  # "Nr.2014-03": label and value in one word
        w = page.words[i]
        if page.line_of[i] == line and page.pos_of[i] < pos:
            between = words[page.pos_of[i] + 1 : pos]
            best = min(best, sum(1 for j in between if page.keys[j]))
        elif page.line_of[i] < line and w.x0 - 2 * h < x1 and w.x1 + 2 * h > x0:
            # Line spacing, not visual line numbers: other columns add lines in between.
            best = min(best, 1 + int(max(0.0, y0 - w.y1) / (1.5 * h)))
    return best


class _Stream:
    """Depth-first search for one value on one page, within a fixed budget of word visits;
    stops once `out` holds `limit` matches (shared by the pages searched in turn)."""

    def __init__(
        self,
        page: _Page,
        target: str,
        kind: str,
        folded: bool,
        out: list[tuple[_Page, Span]],
        limit: int = _MAX_MATCHES,
    ) -> None:
        self.page, self.target, self.kind, self.out = page, target, kind, out
        self.keys = page.folded() if folded else page.keys
        self.folded = folded
        self.limit = limit
        self.budget = _SEARCH_BUDGET

    def done(self) -> bool:
        return self.budget < 0 or len(self.out) >= self.limit

    def run(self) -> None:
        page, target, keys = self.page, self.target, self.keys
        for i, offset in page.starts(self.folded).get(target[0], []):
            if self.done():
                return
            if offset and self.kind == "identifier" and not _NUMBER_LABEL.match(keys[i][:offset]):
                continue
            rest = keys[i][offset:]
            if target.startswith(rest):
                self.extend(i, len(rest), [i])
            elif (
                self.kind == "text"
                and rest.startswith(target)
                and (offset + len(target) in page.ends(i))
            ):
                self.out.append((page, (i,)))

    def extend(self, i: int, pos: int, path: list[int]) -> None:
        page, target = self.page, self.target
        if pos == len(target):
            self.out.append((page, tuple(path)))
            return
        for j in page.successors(i):
            self.budget -= 1
            if self.done():
                return
            k = self.keys[j]
            if j in path or not k:
                continue
            if target.startswith(k, pos):
                self.extend(j, pos + len(k), [*path, j])
            elif (
                self.kind == "text"
                and k.startswith(target[pos:])
                and (len(target) - pos in page.ends(j))
            ):
                self.out.append((page, (*path, j)))  # the value ends inside "Liter:-Preis"


def _distance(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return math.hypot(dx, dy)


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (Decimal, int)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            readings = _date_values(value)  # a date copied as printed, "11. Juli 2014"
            return next(iter(readings)) if len(readings) == 1 else None
    return None
