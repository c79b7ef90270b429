"""The one text-and-value layer the offline rules and grounding share.

`normalise` folds case, accents and OCR look-alikes; `amounts`, `dates`, `currency` and
`identifiers` read printed values; `lines` groups positioned words into visual lines;
`labels` finds a schema's label phrases in them.
"""
