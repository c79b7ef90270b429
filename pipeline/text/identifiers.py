"""Identifiers as printed: invoice, receipt and reference numbers."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-/._]*$")


def clean_identifier(token: str) -> str | None:
    """An invoice-number-like token: has a digit, no spaces, at most 40 characters."""
    text = token.strip().strip(":;,()[]").lstrip("#№").rstrip(".")
    if not text or len(text) > 40 or not any(c.isdigit() for c in text):
        return None
    if not _IDENTIFIER.match(text):
        return None
    return text
