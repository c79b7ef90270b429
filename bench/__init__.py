"""Benchmarks: `python -m bench` (or `make bench`). Never part of the test suite."""
