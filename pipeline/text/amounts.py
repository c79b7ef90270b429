"""Money amounts as printed: one reading for the rules, every possible reading for grounding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from pipeline.currencies import ISO_4217, SYMBOLS
from pipeline.text.normalise import OCR_DIGITS

_STRIP_CHARS = "€$£¥*:;"
_AMOUNT_BODY = re.compile(r"^[-+−]?\d[\d.,' \u00a0\u202f]*\d$|^[-+−]?\d$")


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
        text = text.translate(OCR_DIGITS)
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


def format_amount(value: Decimal) -> str:
    """A plain decimal string ("1005.55"), never exponent notation."""
    return format(value, "f")


# Every reading (grounding): a value is found when any reading of a printed amount equals it.

SIGNS = "€$£¥₹₩₽₺₪₴₫₦₱฿"
_CURRENCY_PREFIX = re.compile(
    rf"^(?:[A-Z]{{3}}|[A-Z]{{1,2}}\$|[{SIGNS}]|CHF|S?Fr\.|kr\.?|zł)\s*(?=[-−–+(\d])"
)
_CURRENCY_SUFFIX = re.compile(rf"(?<=[\d)\-])\s*(?:[A-Z]{{3}}|[{SIGNS}]|CHF|kr\.?|zł|,-|\.-)$")
_GROUPED = re.compile(r"\d{1,3}(?:[ \u00a0\u202f'’]\d{3})+(?:[.,]\d+)?")
_NUMBER = re.compile(r"\d[\d.,]*\d|\d")
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
def amount_readings(text: str) -> tuple[Decimal, ...]:
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
        t = t.translate(OCR_DIGITS)
    try:
        values = _plain_number(t)
    except InvalidOperation:
        return ()
    return tuple(-v for v in values) if negative else values


# Two decimals after a separator, as money is printed ("1.005,55", "681.87", "0,00").
CENTS = re.compile(r"\d[.,]\d{2}(?!\d)")
