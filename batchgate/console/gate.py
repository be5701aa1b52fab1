"""ConsoleGate: pure ASGI middleware in front of every console route.

- Every answer gets headers that keep the pages to themselves: a Content-Security-Policy
  allowing only the console's own scripts and styles (nothing from the network), no
  framing, no referrer outside the site, no MIME sniffing.
- A browser without a console cookie gets a random sign-in cookie, which CSRF tokens are
  bound to until it signs in (and on a server without auth).
- A state-changing request (anything but GET/HEAD) is refused with 403 before its body is
  read unless its Origin (when sent) is this site and it carries the CSRF token of its
  cookie; then, except for signing in, its session must hold a valid key (the viewer is
  left in the request state); a body over the console's limit is refused with 413.
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse

from batchgate.console.session import COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, Sessions

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_PATH = "/login"


def cookie_header(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class ConsoleGate:
    def __init__(self, app: Any, sessions: Sessions, max_body_bytes: int, max_upload_bytes: int):
        self.app = app
        self.sessions = sessions
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = SimpleCookie(headers.get("cookie", ""))
        new_login = None
        if SESSION_COOKIE not in cookies and LOGIN_COOKIE not in cookies:
            new_login = secrets.token_urlsafe(24)
            # the route sees the cookie it is about to get, so its forms' tokens match it
            cookie = headers.get("cookie", "")
            cookie = f"{cookie}; {LOGIN_COOKIE}={new_login}" if cookie else f"{LOGIN_COOKIE}={new_login}"
            scope["headers"] = [*(h for h in scope["headers"] if h[0] != b"cookie"), (b"cookie", cookie.encode())]
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if new_login is not None:
                    out.append("set-cookie", cookie_header(LOGIN_COOKIE, new_login, secure))
            await send(message)

        if scope["method"] not in SAFE_METHODS:
            refusal = await self._refusal(scope, headers, cookies)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _refusal(self, scope: dict, headers: Headers, cookies: SimpleCookie) -> Any:
        """Why a state-changing request may not go on (a response), or None."""
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != headers.get("host"):
            return PlainTextResponse("Refused: the form was posted from another site.", status_code=403)
        binding = cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else None
        if binding is None and LOGIN_COOKIE in cookies:
            binding = cookies[LOGIN_COOKIE].value
        token = headers.get("x-csrf-token") or parse_qs(scope.get("query_string", b"").decode()).get("csrf", [None])[0]
        if not self.sessions.csrf_ok(binding, token):
            return PlainTextResponse(
                "Refused: this form's security token is missing or does not match your session. "
                "Reload the page and try again.",
                status_code=403,
            )
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path != SIGN_IN_PATH:
            session = cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else None
            viewer = self.sessions.viewer(session)
            if viewer is None:
                return PlainTextResponse("Sign in first.", status_code=401)
            scope.setdefault("state", {})["console_viewer"] = viewer
        declared = headers.get("content-length")
        is_upload = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.max_upload_bytes if is_upload else self.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return PlainTextResponse(f"The request is larger than {limit} bytes.", status_code=413)
        return None
