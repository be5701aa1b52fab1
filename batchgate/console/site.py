"""The console as an ASGI app of its own, mounted by the HTTP app at /console: its pages,
its static files (vendored, served from the package), sign-in and sign-out, and how
errors show (a page with the message the API would have answered)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from batchgate.app import Services
from batchgate.console.gate import ConsoleGate, cookie_header
from batchgate.console.pages import admin, batches, jobs, ledger, prompts
from batchgate.console.render import SignInRequired, csrf_binding, render, sessions
from batchgate.console.session import SESSION_COOKIE, SESSION_SECONDS, Sessions, console_secret
from batchgate.core.errors import AuthenticationError, BatchgateError

STATIC = Path(__file__).parent / "static"


def console_app(services: Services) -> FastAPI:
    """The console over these services (mount it at /console)."""
    app = FastAPI(title="batchgate console", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.sessions = Sessions(services, console_secret(services.settings.home))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for pages in (batches, jobs, prompts, ledger, admin):
        app.include_router(pages.router)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/console/batches", status_code=303)

    @app.get("/login")
    def login_page(request: Request, error: str | None = None) -> Response:
        return _login(request, error)

    @app.post("/login")
    def login(request: Request, api_key: Annotated[str, Form()] = "") -> Response:
        try:
            _, cookie = sessions(request).sign_in(api_key)
        except AuthenticationError as exc:
            return _login(request, exc.message, status_code=401)
        response = RedirectResponse("/console/batches", status_code=303)
        secure = request.url.scheme == "https"
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, cookie, secure, SESSION_SECONDS))
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", request.url.scheme == "https", 0))
        return response

    @app.exception_handler(SignInRequired)
    def sign_in_first(request: Request, _: Exception) -> Response:
        if request.headers.get("hx-request"):  # a live fragment: make the whole page go to sign-in
            return Response(status_code=204, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(BatchgateError)
    def core_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BatchgateError)
        if request.headers.get("hx-request"):
            return render(request, "_error.html", exc.status, error=exc)
        return render(request, "error.html", exc.status, error=exc)

    settings = services.settings
    app.add_middleware(
        ConsoleGate,
        sessions=app.state.sessions,
        max_body_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_file_bytes,
    )
    return app


def _login(request: Request, error: str | None, status_code: int = 200) -> Response:
    binding = csrf_binding(request)
    token = sessions(request).csrf_token(binding) if binding else ""
    return render(request, "login.html", status_code, csrf=token, error=error)
