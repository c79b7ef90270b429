"""Use cases: what the pipeline does with a document or for an operator, one module each."""
