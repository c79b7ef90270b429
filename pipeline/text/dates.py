"""Dates as printed: numeric, ISO and written-month forms in English, German, French, Dutch,
Spanish, Italian and Portuguese; the first reading for the rules, every reading for grounding;
and a receipt's time as printed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time
from functools import lru_cache

from pipeline.text.normalise import fold, norm

MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "january jan januar janner jaenner janvier janv januari enero gennaio janeiro",
        "february feb febr februar fevrier fev fevr februari febrero febbraio fevereiro",
        "march mar maerz marz mrz mars maart mrt marzo marco",
        "april apr avril avr abril aprile",
        "may mai mei mayo maggio maio",
        "june jun juni juin junio giugno junho",
        "july jul juli juillet juil julio luglio julho",
        "august aug aout augustus agosto",
        "september sep sept septembre septiembre setiembre settembre setembro",
        "october oct okt oktober octobre octubre ottobre outubro",
        "november nov novembre noviembre novembro",
        "december dec dez dezember decembre diciembre dicembre dezembro",
    ],
    start=1,
):
    for _name in _names.split():
        MONTHS[_name] = _number

_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_ISO_DATE = re.compile(r"(?<![\d.])(\d{4})[-./](\d{1,2})[-./](\d{1,2})(?![\d])")
_NUMERIC_DATE = re.compile(
    r"(?<![\d.,/])(\d{1,2})\s?([./-])\s?(\d{1,2})\s?\2\s?(\d{4}|\d{2})(?![\d])"
)
# OCR drops or swaps one separator of a dotted date ("01 11.2024", "01.11,2024").
_OCR_DOTTED_DATE = re.compile(
    r"(?<![\d.,/])(\d{2})(?:\.\s?|\s|,)(\d{2})(?:\.\s?|\s|,)(\d{4})(?![\d.,])"
)
_DAY_MONTH_YEAR = re.compile(
    rf"(?<![\d])(\d{{1,2}})(?:er|st|nd|rd|th|e)?\.?\s*(?:de\s+)?({_MONTH_RE})\.?,?\s*(?:de\s+|del\s+)?"
    rf"(\d{{4}})(?!\d)"
)
# "20260815": eight digits standing alone, a plausible year first.
_COMPACT_DATE = re.compile(
    r"(?<![\d.,/-])((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?![\d.,/-])"
)
_MONTH_DAY_YEAR = re.compile(
    rf"(?<![a-z])({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})(?!\d)"
)


@dataclass(frozen=True, slots=True)
class FoundDate:
    value: date
    start: int  # character span in the searched text
    end: int
    ambiguous: bool = False  # day and month could be swapped (both ≤ 12)
    month_first: bool = False  # only meaningful for numeric dates


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


def find_dates(text: str, *, month_first: bool = False) -> list[FoundDate]:
    """Every date in a line of text, in the order printed.

    Numeric dates are day-first unless `month_first` (US documents) or only the other reading
    is a valid date ("02/17/26" is February 17 either way).
    """
    lowered = norm(text)
    found: list[FoundDate] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for match in _ISO_DATE.finditer(lowered):
        value = _make_date(int(match[1]), int(match[2]), int(match[3]))
        if value and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _DAY_MONTH_YEAR.finditer(lowered):
        value = _make_date(int(match[3]), MONTHS[match[2]], int(match[1]))
        if value and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _MONTH_DAY_YEAR.finditer(lowered):
        value = _make_date(int(match[3]), MONTHS[match[1]], int(match[2]))
        if value and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _NUMERIC_DATE.finditer(lowered):
        if not free(match.start(), match.end()):
            continue
        first, second, year = int(match[1]), int(match[3]), _year(match[4])
        if len(match[4]) == 2 and match[2] == ".":
            pass  # "17.02.26" is a date in German use
        elif len(match[4]) == 2 and match[2] == "-":
            continue  # "12-34-56" is more often a reference than a date
        day_first = _make_date(year, second, first)
        month_first_value = _make_date(year, first, second)
        ambiguous = day_first is not None and month_first_value is not None and first != second
        if day_first and month_first_value:
            value = month_first_value if month_first and match[2] == "/" else day_first
            is_month_first = value is month_first_value and ambiguous
        else:
            value = day_first or month_first_value
            is_month_first = value is month_first_value and day_first is None
        if value is None:
            continue
        found.append(
            FoundDate(value, match.start(), match.end(), ambiguous, month_first=is_month_first)
        )
        taken.append((match.start(), match.end()))
    for match in _OCR_DOTTED_DATE.finditer(lowered):
        if not free(match.start(), match.end()) or "." not in match.group(0):
            continue
        value = _make_date(int(match[3]), int(match[2]), int(match[1]))
        if value is not None:
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _COMPACT_DATE.finditer(lowered):
        value = _make_date(int(match[1]), int(match[2]), int(match[3]))
        if value is not None and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    found.sort(key=lambda d: d.start)
    return found


def parse_date(text: str, *, month_first: bool = False) -> date | None:
    """The first date in `text`, or None."""
    dates = find_dates(text, month_first=month_first)
    return dates[0].value if dates else None


# --- every reading (grounding) -------------------------------------------------------------

_ORDINAL = re.compile(r"(?<=\d)(?:st|nd|rd|th|er|re|eme|e|ste|de|te)\b")
_DATE_SPLIT = re.compile(r"[\s./,\-]+")
_DATE_FILLER = frozenset({"de", "of", "den", "der", "le", "du", "the"})


@lru_cache(maxsize=16384)
def date_readings(text: str) -> frozenset[date]:
    """Every date a run of words can mean, in ISO, numeric day-first and month-first, and
    written-month forms (en/de/fr/nl/es/it); ambiguous numeric dates yield both readings."""
    t = fold(text).strip(" .,;:()[]")
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
        elif a.isdigit() and b in MONTHS and c.isdigit():
            if len(a) <= 2:
                found.add(_make_date(_year(c), MONTHS[b], int(a)))
            elif len(a) == 4 and len(c) <= 2:
                found.add(_make_date(int(a), MONTHS[b], int(c)))
        elif a in MONTHS and b.isdigit() and c.isdigit() and len(b) <= 2:
            found.add(_make_date(_year(c), MONTHS[a], int(b)))
    return frozenset(d for d in found if d is not None)


_ISO_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?")


def printed_time(value: object) -> str | None:
    """A time as a receipt prints it: validation writes 17:00 as "17:00:00", and receipts print
    seconds only when they count ("17:00", but "17:00:42")."""
    match = _ISO_TIME.match(value.isoformat() if isinstance(value, time) else str(value))
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return f"{hours}:{minutes}" if seconds in (None, "00") else f"{hours}:{minutes}:{seconds}"
