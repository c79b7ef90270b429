"""Postgres: models, sessions, migrations run from code, and the repository of statements."""
