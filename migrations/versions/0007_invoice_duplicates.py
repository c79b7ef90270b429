"""Duplicate invoices: normalised vendor and number keys, their index, and invoice_duplicates.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 15:00:00
"""

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Legal forms dropped from a vendor's name: "Lieferant GmbH & Co. KG" and "LIEFERANT" are one
# vendor. The same list `pagemill eval` scores vendor names with.
_LEGAL_FORMS = (
    "gmbh mbh ag kg kgaa ug ohg gbr ek se co cie company corp corporation inc incorporated "
    "ltd limited llc llp lp plc sarl sas sasu sa eurl sci snc bv nv vof cv oy ab as aps srl "
    "spa sl pty"
).split()

FUNCTIONS = {
    # Case, accents, punctuation and legal forms ignored; NULL when nothing is left.
    "pagemill_vendor_key(value text)": f"""
        SELECT nullif(string_agg(word, '' ORDER BY position), '')
          FROM regexp_split_to_table(
                 regexp_replace(
                   regexp_replace(
                     regexp_replace(lower(normalize(value, NFD)), '[\\u0300-\\u036f]', '', 'g'),
                     '[.''’]', '', 'g'),
                   '[^[:alnum:]]+', ' ', 'g'),
                 ' ') WITH ORDINALITY AS words(word, position)
         WHERE word <> '' AND word NOT IN ({", ".join(f"'{w}'" for w in _LEGAL_FORMS)})
    """,
    # Case, spaces and punctuation ignored, and the leading zeros of every number in it:
    # "RE-2024/0042", "re 2024 42" and "RE2024-042" are one number.
    "pagemill_invoice_number_key(value text)": """
        SELECT nullif(
                 regexp_replace(
                   regexp_replace(lower(normalize(value, NFKC)), '(^|[^0-9])0+([0-9])', '\\1\\2', 'g'),
                   '[^[:alnum:]]+', '', 'g'),
                 '')
    """,
}

_KEYS = (
    "pagemill_vendor_key(data->>'vendor_name')",
    "pagemill_invoice_number_key(data->>'invoice_number')",
)

VIEW = """
    WITH keyed AS (
        SELECT e.id AS extraction_id, e.schema_name, d.id AS document_id, d.bucket, d.key,
               d.status, d.finished_at,
               e.data->>'vendor_name' AS vendor_name,
               e.data->>'invoice_number' AS invoice_number,
               CASE WHEN e.data->>'total' ~ '^-?[0-9]+(\\.[0-9]+)?$'
                    THEN (e.data->>'total')::numeric END AS total,
               pagemill_vendor_key(e.data->>'vendor_name') AS vendor_key,
               pagemill_invoice_number_key(e.data->>'invoice_number') AS number_key
          FROM extractions e
          JOIN documents d ON d.id = e.document_id
         WHERE e.valid AND d.status IN ('done', 'needs_review')
           AND pagemill_vendor_key(e.data->>'vendor_name') IS NOT NULL
           AND pagemill_invoice_number_key(e.data->>'invoice_number') IS NOT NULL
    ), ranked AS (
        SELECT keyed.*,
               first_value(document_id) OVER same AS first_document_id,
               first_value(key) OVER same AS first_key,
               first_value(total) OVER same AS first_total,
               row_number() OVER same AS copy_number
          FROM keyed
        WINDOW same AS (PARTITION BY schema_name, vendor_key, number_key ORDER BY extraction_id)
    )
    SELECT document_id, bucket, key, status, vendor_name, invoice_number, total,
           first_document_id AS duplicate_of, first_key AS duplicate_of_key,
           first_total AS duplicate_of_total,
           total IS NOT DISTINCT FROM first_total AS same_total,
           copy_number, finished_at
      FROM ranked
     WHERE copy_number > 1
"""


def upgrade() -> None:
    for signature, body in FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {signature} RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
            f"RETURNS NULL ON NULL INPUT AS $fn$ {body} $fn$"
        )
    op.execute(
        f"CREATE INDEX ix_extractions_invoice_key ON extractions (schema_name, {', '.join(_KEYS)})"
        " WHERE valid"
    )
    op.execute(f"CREATE VIEW invoice_duplicates AS {VIEW}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS invoice_duplicates")
    op.execute("DROP INDEX IF EXISTS ix_extractions_invoice_key")
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
