"""Currencies as printed: codes, signs and words, and which ones a single token names."""

from __future__ import annotations

import re

from pipeline.currencies import ISO_4217, SYMBOLS
from pipeline.text.normalise import norm

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


_DOLLARS = {"CA": "CAD", "C": "CAD", "AU": "AUD", "A": "AUD", "NZ": "NZD", "HK": "HKD", "SG": "SGD"}


def currency_of_token(token: str) -> str | None:
    """The ISO code a single printed token names, if any ("€", "EUR", "(EUR)", "EURO")."""
    stripped = token.strip("()[]{}:;,.")
    if not stripped:
        return None
    for symbol, code in SYMBOLS.items():
        if stripped == symbol or (len(symbol) == 1 and symbol in stripped):
            dollar = re.fullmatch(r"(CA|AU|NZ|HK|SG|C|A)\$.*", stripped)
            if symbol == "$" and dollar:
                return _DOLLARS[dollar.group(1)]
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


def is_currency_token(token: str) -> bool:
    """A word that only names a currency: "€", "EUR", "(EUR)", "Euro"."""
    stripped = token.strip("()[]:,")
    return not any(c.isdigit() for c in stripped) and currency_of_token(stripped) is not None


# Every sign and word that names a currency (grounding looks them up by code).
CURRENCY_SIGNS: dict[str, tuple[str, ...]] = {
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
    if _symbol.casefold() not in CURRENCY_SIGNS.get(_code, ()) and _symbol != _code:
        CURRENCY_SIGNS[_code] = (*CURRENCY_SIGNS.get(_code, ()), _symbol.casefold())
# Codes that are also ordinary words: only trusted when printed in capitals.
WORDLIKE_CODES = frozenset({"ALL", "TOP", "CUP", "MAD", "SOS", "PEN", "BAM", "GEL", "TRY", "BOB"})
