"""Finding the invoice currency: the one named most, and most credibly, on the pages."""

from __future__ import annotations

import re
from collections import Counter

from pipeline.rules.invoice.document import Doc
from pipeline.rules.invoice.values import amounts_in
from pipeline.text.amounts import parse_amount
from pipeline.text.currency import currency_of_token, needs_amount_nearby

_CURRENCY_LABEL = re.compile(
    r"(?<![a-z])(?:currency|wahrung|waehrung|devise|valuta|munt|betrage\s+in|amounts?\s+in"
    r"|montants?\s+en|bedragen\s+in)(?![a-z])"
)


def find_currency(doc: Doc) -> str | None:
    """The currency named most (and most credibly) on the pages; None when none is printed."""
    votes: Counter[str] = Counter()
    for line in doc.lines:
        amount_at = {a.index for a in amounts_in(line.words)}
        labelled = bool(_CURRENCY_LABEL.search(line.ntext))
        for i, word in enumerate(line.words):
            code = currency_of_token(word.text)
            if code is None:
                parsed = parse_amount(word.text)
                code = parsed.currency if parsed else None
            if code is None:
                continue
            near_amount = (i - 1) in amount_at or (i + 1) in amount_at or i in amount_at
            if needs_amount_nearby(code) and not (near_amount or labelled):
                continue
            votes[code] += 1 + 2 * near_amount + 3 * labelled
    if not votes:
        return None
    code, count = votes.most_common(1)[0]
    doc.evidence["currency"] = 3.0 if count >= 3 else 1.5 + 0.5 * count
    return code
