"""Who may use the dashboard (a token), CSRF protection for its forms, and response headers.

* The token (PAGEMILL_WEB_TOKEN) is sent as ``Authorization: Bearer <token>`` by scripts, or
  typed once into /login, which sets a session cookie derived from it (HMAC; changing the token
  logs everyone out). Without a token the app only listens on a loopback address.
* Every form that changes state is a POST carrying a CSRF token equal to a random cookie
  (double submit; the cookies are SameSite=Strict), and a request whose Origin header names
  another site is refused.
* Bound to loopback, only loopback host names are accepted (a DNS-rebinding page cannot reach
  the dashboard through the victim's browser).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "pagemill_session"
CSRF_COOKIE = "pagemill_csrf"
CSRF_FIELD = "csrf_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Scripts and styles come from this app only; page images may be data: URIs in no case.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Access:
    token: str | None  # None: no authentication (loopback only)

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(
            self.token.encode("utf-8"), b"pagemill-web-session-v1", hashlib.sha256
        ).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(candidate.encode("utf-8"), self.token.encode("utf-8"))

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self.session_value()):
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given.strip())


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie, or a new one the response will set."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def set_cookies(request: Request, response: Response) -> Response:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # No Origin (old browsers, some same-origin navigations): the CSRF token decides.
        return origin is None
    parts = urlsplit(origin)
    return parts.scheme == request.url.scheme and parts.netloc == request.headers.get("host")


def csrf_ok(request: Request, form: Any) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get(CSRF_FIELD, ""))
    return bool(cookie) and hmac.compare_digest(sent, cookie) and same_origin(request)


def safe_next(target: str | None) -> str:
    """A redirect target after login: a path on this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class SecurityHeaders:
    """Adds the CSP and friends to every response; refuses foreign Host headers when the
    server listens on loopback only."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = ""
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.decode("latin-1")
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if hostname.lower() not in self.allowed_hosts:
                response = Response("unknown host\n", status_code=421, media_type="text/plain")
                await response(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", _CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive, send_with_headers)
