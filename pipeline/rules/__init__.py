"""Layout-aware extraction rules over positioned words (no model, no network)."""

from pipeline.rules.invoice import Box, InvoiceFields, PageWords, Reread, extract_invoice

__all__ = ["Box", "InvoiceFields", "PageWords", "Reread", "extract_invoice"]
