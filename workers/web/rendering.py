"""How dashboard pages are rendered: the Jinja templates, their value formatters, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pipeline.money import usd
from workers.web.security import CSRF_FIELD, csrf_token, set_cookies

HERE = Path(__file__).resolve().parent


def money(value: Any) -> str:
    """Plain decimal dollars (`pipeline.money.usd`), shortened for the eye: at least cents,
    at most 8 places, no trailing zeros beyond the cents."""
    if value is None:
        return "–"
    whole, _, frac = usd(value, 8).partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def seconds(value: Any) -> str:
    if value is None:
        return "–"
    s = float(value)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def when(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def number(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def shown(value: Any) -> str:
    return "" if value is None else str(value)


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(money=money, seconds=seconds, when=when, number=number, shown=shown)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    parts = request.app.state.dashboard
    page = _env.get_template(name).render(
        request=request,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(request),
        # Logging out only makes sense with a token, once logged in.
        show_logout=request.app.state.access.token is not None
        and request.app.state.access.allowed(request),
        refresh=context.pop("refresh", None),
        refresh_s=parts.refresh_s,
        **context,
    )
    response = HTMLResponse(page, status_code=status_code, headers={"Cache-Control": "no-store"})
    return set_cookies(request, response)


def error_page(request: Request, status_code: int, message: str) -> Response:
    return render(request, "error.html", {"status": status_code, "message": message}, status_code)
