"""Parsing printed values: normalised text, amounts, dates, identifiers and currencies."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from pipeline.currencies import ISO_4217, SYMBOLS


def norm(text: str) -> str:
    """Casefolded, accents removed: OCR drops accents often enough that labels must not care."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().replace("’", "'").replace("`", "'")


# --- amounts -------------------------------------------------------------------------------

_STRIP_CHARS = "€$£¥*:;"
_AMOUNT_BODY = re.compile(r"^[-+−]?\d[\d.,' \u00a0\u202f]*\d$|^[-+−]?\d$")
# Digits that OCR confuses with letters, only ever applied to a token that is mostly digits.
_OCR_DIGITS = str.maketrans({"O": "0", "o": "0", "D": "0", "l": "1", "I": "1", "|": "1", "S": "5"})


@dataclass(frozen=True, slots=True)
class ParsedAmount:
    value: Decimal
    decimals: int  # digits after the decimal separator as printed (0 when none)
    currency: str | None  # ISO code printed with the amount, if any


def _strip_currency(token: str) -> tuple[str, str | None]:
    currency: str | None = None
    text = token.strip()
    for symbol, code in sorted(SYMBOLS.items(), key=lambda kv: -len(kv[0])):
        if text.startswith(symbol) or text.endswith(symbol):
            currency = code
            text = text.removeprefix(symbol).removesuffix(symbol).strip()
            break
    match = re.match(r"^([A-Z]{3})\s*(?=[-+\d])", text) or re.search(r"(?<=\d)\s*([A-Z]{3})$", text)
    if match and match.group(1) in ISO_4217:
        currency = match.group(1)
        text = (text[: match.start()] + text[match.end() :]).strip()
    return text, currency


def parse_amount(token: str, *, ocr_fix: bool = False) -> ParsedAmount | None:
    """A money amount printed in any common European or English style.

    "1.005,55", "1,005.55", "1 005,55", "€ 681.87", "681,87 €", "-5,00", "5,00-", "(5.00)".
    A single separator followed by exactly three digits is a thousands separator ("1.005").
    Percentages are not amounts.
    """
    text, currency = _strip_currency(token)
    if not text or text.endswith("%") or "%" in text:
        return None
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1].strip()
    text = text.strip(_STRIP_CHARS).strip()
    if text.endswith("-") and not text.startswith("-"):
        negative, text = True, text[:-1]
    if text[:1] in "-−":
        negative, text = True, text[1:].strip()
    elif text[:1] == "+":
        text = text[1:].strip()
    if ocr_fix and sum(c.isdigit() for c in text) >= 2:
        text = text.translate(_OCR_DIGITS)
    if not _AMOUNT_BODY.match(text):
        return None
    compact = re.sub(r"[ \u00a0\u202f']", "", text)
    if re.search(r"[ \u00a0\u202f']", text) and not re.fullmatch(
        r"\d{1,3}(?:[ \u00a0\u202f']\d{3})+(?:[.,]\d{1,2})?", text
    ):
        return None  # spaces only ever separate thousands groups
    decimals = 0
    last_dot, last_comma = compact.rfind("."), compact.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        dec_sep = "." if last_dot > last_comma else ","
        thousands = "," if dec_sep == "." else "."
        int_part, frac = compact.rsplit(dec_sep, 1)
        if not re.fullmatch(r"\d{1,3}(?:" + re.escape(thousands) + r"\d{3})*", int_part):
            return None
        int_digits = int_part.replace(thousands, "")
    elif last_dot >= 0 or last_comma >= 0:
        sep = "." if last_dot >= 0 else ","
        parts = compact.split(sep)
        if len(parts) > 2:
            if not (1 <= len(parts[0]) <= 3 and all(len(p) == 3 for p in parts[1:])):
                return None
            int_digits, frac = "".join(parts), ""
        elif len(parts[1]) == 3 and 1 <= len(parts[0]) <= 3 and parts[0] != "0":
            int_digits, frac = "".join(parts), ""
        else:
            int_digits, frac = parts
    else:
        int_digits, frac = compact, ""
    if not int_digits.isdigit() or (frac and not frac.isdigit()) or len(frac) > 4:
        return None
    if len(int_digits.lstrip("0")) > 13:
        return None  # an account or reference number, not money
    decimals = len(frac)
    try:
        value = Decimal(f"{int_digits}.{frac}" if frac else int_digits)
    except InvalidOperation:
        return None
    if negative:
        value = -value
    return ParsedAmount(value=value, decimals=decimals, currency=currency)


def is_currency_token(token: str) -> bool:
    """A word that only names a currency: "€", "EUR", "(EUR)", "Euro"."""
    stripped = token.strip("()[]:,")
    return not any(c.isdigit() for c in stripped) and currency_of_token(stripped) is not None


def format_amount(value: Decimal) -> str:
    """A plain decimal string ("1005.55"), never exponent notation."""
    return format(value, "f")


# --- dates ---------------------------------------------------------------------------------

MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "january jan januar janner jaenner janvier janv januari",
        "february feb febr februar fevrier fev fevr februari",
        "march mar maerz marz mrz mars maart mrt",
        "april apr avril avr",
        "may mai mei",
        "june jun juni juin",
        "july jul juli juillet juil",
        "august aug august aout augustus",
        "september sep sept septembre",
        "october oct okt oktober octobre",
        "november nov novembre",
        "december dec dez dezember decembre",
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
    rf"(?<![\d])(\d{{1,2}})(?:er|st|nd|rd|th|e)?\.?\s*(?:de\s+)?({_MONTH_RE})\.?,?\s*(\d{{4}})(?!\d)"
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


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        year += 2000 if year < 70 else 1900
    return year


def _make(year: int, month: int, day: int) -> date | None:
    if not 1900 <= year <= 2100:
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
        value = _make(int(match[1]), int(match[2]), int(match[3]))
        if value and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _DAY_MONTH_YEAR.finditer(lowered):
        value = _make(int(match[3]), MONTHS[match[2]], int(match[1]))
        if value and free(match.start(), match.end()):
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    for match in _MONTH_DAY_YEAR.finditer(lowered):
        value = _make(int(match[3]), MONTHS[match[1]], int(match[2]))
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
        day_first = _make(year, second, first)
        month_first_value = _make(year, first, second)
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
        value = _make(int(match[3]), int(match[2]), int(match[1]))
        if value is not None:
            found.append(FoundDate(value, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    found.sort(key=lambda d: d.start)
    return found


def parse_date(text: str, *, month_first: bool = False) -> date | None:
    """The first date in `text`, or None."""
    dates = find_dates(text, month_first=month_first)
    return dates[0].value if dates else None


# --- identifiers ---------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-/._]*$")


def clean_identifier(token: str) -> str | None:
    """An invoice-number-like token: has a digit, no spaces, at most 40 characters."""
    text = token.strip().strip(":;,()[]").lstrip("#№").rstrip(".")
    if not text or len(text) > 40 or not any(c.isdigit() for c in text):
        return None
    if not _IDENTIFIER.match(text):
        return None
    return text


# --- currencies ----------------------------------------------------------------------------

# Codes seen on European and US invoices. Any other three capitals ("ALL", "TOP", "PEN",
# "SOS") are more likely a word or an abbreviation: only trusted next to an amount.
_COMMON_CODES = frozenset(
    {
        "EUR",
        "USD",
        "GBP",
        "CHF",
        "JPY",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "ISK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "HRK",
        "TRY",
        "CNY",
        "HKD",
        "SGD",
        "INR",
        "ZAR",
        "BRL",
        "MXN",
        "AED",
        "ILS",
        "KRW",
        "RUB",
        "UAH",
    }
)
_EURO_WORDS = frozenset({"euro", "euros", "eur."})


def currency_of_token(token: str) -> str | None:
    """The ISO code a single printed token names, if any ("€", "EUR", "(EUR)", "EURO")."""
    stripped = token.strip("()[]{}:;,.")
    if not stripped:
        return None
    for symbol, code in SYMBOLS.items():
        if stripped == symbol or (len(symbol) == 1 and symbol in stripped):
            if symbol == "$" and re.search(r"(?:CA|AU|NZ|HK|SG|C|A)\$", stripped):
                return {
                    "CA": "CAD",
                    "C": "CAD",
                    "AU": "AUD",
                    "A": "AUD",
                    "NZ": "NZD",
                    "HK": "HKD",
                    "SG": "SGD",
                }[stripped.split("$")[0]]
            return code
    if stripped.upper() in {"EURO", "EUROS"} or norm(stripped) in _EURO_WORDS:
        return "EUR"
    match = re.fullmatch(r"([A-Z]{3})\d*(?:[.,]\d+)?|\d+(?:[.,]\d+)?([A-Z]{3})", stripped)
    if match:
        code = match.group(1) or match.group(2)
        return code if code in ISO_4217 else None
    return None


def needs_amount_nearby(code: str) -> bool:
    return code not in _COMMON_CODES
