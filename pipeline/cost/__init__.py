"""Cost control: estimates, budgets and caps, page cache, cascade, prompt caching, batch, failover.

The extract stage reaches all of it through one object per document (`control.DocumentCost`,
handed to `extract_pages` in `ExtractOptions.cost`); everything here is provider-neutral.
"""
