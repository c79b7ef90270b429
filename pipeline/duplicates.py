"""Duplicate invoices: the same vendor's same invoice number seen again (a second scan, a
resend, a forwarded copy) goes to review instead of being paid twice.

Vendor names and numbers are compared by keys Postgres computes (migration 0007:
`pagemill_vendor_key`, `pagemill_invoice_number_key`, indexed), so the check, the index and
the `invoice_duplicates` view agree by construction. Two copies finishing at the same moment
are serialised by a transaction-scoped advisory lock on their key: the second one waits for
the first to commit, then sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.checks import as_amount

# First key of the two-key advisory lock: keeps these locks apart from any other user's.
_LOCK_SPACE = 0x504D_4431  # "PMD1"
_MAX_LISTED = 3


@dataclass(frozen=True, slots=True)
class Earlier:
    document_id: int
    key: str
    total: Decimal | None


_KEYS = text("SELECT pagemill_vendor_key(:vendor), pagemill_invoice_number_key(:number)")
_LOCK = text("SELECT pg_advisory_xact_lock(:space, hashtext(:vendor_key || '|' || :number_key))")
_EARLIER = text(
    """
    SELECT d.id, d.key, e.data->>'total'
      FROM extractions e
      JOIN documents d ON d.id = e.document_id
     WHERE e.valid
       AND e.schema_name = :schema
       AND pagemill_vendor_key(e.data->>'vendor_name') = :vendor_key
       AND pagemill_invoice_number_key(e.data->>'invoice_number') = :number_key
       AND e.document_id <> :document_id
       AND d.status IN ('done', 'needs_review')
     ORDER BY e.id
     LIMIT :limit
    """
)


def earlier_copies(
    session: Session, document_id: int, schema_name: str, data: dict[str, Any]
) -> list[Earlier]:
    """Finished documents with the same vendor and invoice number, oldest first.

    Call it in the transaction that stores this document's result: it takes the key's
    advisory lock (held until commit), so a copy finishing concurrently waits and then sees
    this one."""
    vendor, number = data.get("vendor_name"), data.get("invoice_number")
    if not isinstance(vendor, str) or not isinstance(number, str):
        return []
    vendor_key, number_key = session.execute(_KEYS, {"vendor": vendor, "number": number}).one()
    if vendor_key is None or number_key is None:
        return []
    keys = {"vendor_key": vendor_key, "number_key": number_key}
    session.execute(_LOCK, {"space": _LOCK_SPACE, **keys})
    rows = session.execute(
        _EARLIER,
        {"schema": schema_name, "document_id": document_id, "limit": _MAX_LISTED, **keys},
    ).all()
    return [Earlier(row[0], row[1], as_amount(row[2])) for row in rows]


def duplicate_reasons(data: dict[str, Any], earlier: list[Earlier]) -> list[str]:
    """The review reason naming the earliest copy (and how many more there are)."""
    if not earlier:
        return []
    first = earlier[0]
    total = as_amount(data.get("total"))
    if total is None or first.total is None:
        same = "same vendor and invoice number"
    elif total == first.total:
        same = f"same vendor, invoice number and total {total}"
    else:
        same = f"same vendor and invoice number, but its total is {first.total}, not {total}"
    others = len(earlier) - 1
    more = f"; {others} more earlier cop{'y' if others == 1 else 'ies'}" if others else ""
    return [f"possible duplicate of document {first.document_id} ({first.key}: {same}{more})"]


def check_duplicates(
    session: Session, document_id: int, schema_name: str, data: dict[str, Any] | None
) -> list[str]:
    """Review reasons for a result about to be stored: empty when it is the first copy."""
    if not data:
        return []
    return duplicate_reasons(data, earlier_copies(session, document_id, schema_name, data))
