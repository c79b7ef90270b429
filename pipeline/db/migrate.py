"""Runs Alembic migrations as an explicit step (`pagemill migrate`), never at worker start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from pipeline.errors import ErrorCategory, PermanentError


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "migrations"
    for candidate in (here, Path.cwd() / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise PermanentError(ErrorCategory.CONFIGURATION, "cannot find the migrations/ folder")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
