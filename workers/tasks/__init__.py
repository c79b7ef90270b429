"""Celery tasks: thin wrappers that decode ids and call one pipeline function."""
