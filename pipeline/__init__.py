"""pagemill's library: everything but Celery, from a file's bytes to rows in Postgres."""
