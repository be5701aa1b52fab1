"""Rendering: the Jinja2 templates, their filters, and the request context every page
gets (who is signed in, the CSRF token, the services)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import Response

from batchgate.app import Services
from batchgate.console.session import LOGIN_COOKIE, SESSION_COOKIE, Sessions, Viewer
from batchgate.core.errors import PermissionDeniedError


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _usd(value: float | None) -> str:
    if not value:
        return "$0"
    return f"${value:,.4f}" if value >= 0.0001 else f"${value:.2e}"


def _number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("batchgate.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, duration=_duration, usd=_usd, number=_number)
    return env


templates = Jinja2Templates(env=_environment())


def query_string(params: Mapping[str, Any], **changes: Any) -> str:
    """`params` with `changes` applied, empty values left out, as `?a=1&b=2` ("" if none)."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


@dataclass
class Ctx:
    """One console request: the services, who is signed in, and the CSRF token its forms send."""

    request: Request
    services: Services
    viewer: Viewer
    csrf: str

    def require(self, scope: str) -> None:
        """PermissionDeniedError unless the signed-in key has `scope` (as the API checks it)."""
        if self.viewer.key is not None:
            self.services.keys.authorize(self.viewer.key, scope)

    def require_admin(self) -> None:
        if not self.viewer.admin:
            raise PermissionDeniedError("This page is for keys with the 'admin' scope.", code="missing_scope")

    def page(self, template: str, status_code: int = 200, **values: Any) -> Response:
        return render(self.request, template, status_code, viewer=self.viewer, csrf=self.csrf, **values)


class SignInRequired(Exception):
    """Raised by `ctx` when nobody is signed in: the site redirects to the sign-in page."""


def sessions(request: Request) -> Sessions:
    return request.app.state.sessions


def csrf_binding(request: Request) -> str | None:
    """The cookie value CSRF tokens are bound to: the session's, else the sign-in form's."""
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(LOGIN_COOKIE)


def ctx(request: Request) -> Ctx:
    """The signed-in request's context (SignInRequired if nobody is)."""
    s = sessions(request)
    viewer = request.scope.get("state", {}).get("console_viewer") or s.viewer(request.cookies.get(SESSION_COOKIE))
    if viewer is None:
        raise SignInRequired
    binding = csrf_binding(request)
    return Ctx(request, s.services, viewer, s.csrf_token(binding) if binding else "")


Context = Annotated[Ctx, Depends(ctx)]


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    values.setdefault("viewer", None)
    values.setdefault("csrf", "")
    values["path"] = request.url.path
    values["qs"] = query_string
    return templates.TemplateResponse(request, template, values, status_code=status_code)
