"""What every `pagemill` command needs: settings or a clean exit, database sessions, logging,
user schemas and the --format choices."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, NoReturn

import typer

from pipeline.settings import Settings, SettingsError, get_settings


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        die(str(exc))


def die(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_user_schemas(settings: Settings) -> None:
    from pipeline.routing import configure_schemas

    configure_schemas(settings.user_schemas, settings.schema_routes, settings.schema_name)


def setup_logging(settings: Settings, level: int | str = logging.INFO) -> None:
    from pipeline import logs

    logs.configure(settings.log_format, level)


def session_factory(settings: Settings) -> Any:
    from pipeline.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url, pool_size=1))
