"""Console sign-in: the session cookie, CSRF tokens, and who is signed in.

The session cookie holds the API key the person signed in with, encrypted and
authenticated (Fernet, AES-128-CBC + HMAC-SHA256, with its issue time) under the
server's console secret, so the browser never holds the key in the clear and a cookie
cannot be forged. Every request decrypts it and checks the key with the same
`KeyService.authenticate` the API uses: a revoked or expired key signs the person out at
once. The cookie is HttpOnly, SameSite=Strict, limited to /console, and Secure over
HTTPS.

CSRF: every state-changing request carries a token (an `X-CSRF-Token` header from htmx,
or `csrf` in a form's action URL) that is an HMAC of the session cookie (or, on the
sign-in form, of a random pre-session cookie); `ConsoleGate` checks it, and the
request's Origin, before a byte of the body is read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from batchgate.app import Services
from batchgate.core.errors import AuthenticationError
from batchgate.core.models import ApiKey

SESSION_COOKIE = "bg_console"
LOGIN_COOKIE = "bg_console_login"
COOKIE_PATH = "/console"
SESSION_SECONDS = 12 * 3600
SECRET_FILE = "console.secret"


def console_secret(home: Path) -> bytes:
    """The server's console secret: `<home>/console.secret`, made (0600) on first use.
    Processes sharing a data dir share it; give hosts that do not share one the same file."""
    path = home / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is signed in: `key` None on a server without auth (it acts as an admin of the
    default project)."""

    key: ApiKey | None
    project_id: str

    @property
    def admin(self) -> bool:
        return self.key is None or "admin" in self.key.scopes

    @property
    def visible_project(self) -> str | None:
        """The project whose rows the viewer reads; None: every project (admin)."""
        return None if self.admin else self.project_id

    @property
    def label(self) -> str:
        if self.key is None:
            return "no auth"
        return f"{self.key.name or self.key.prefix + '…'} ({self.key.project_name})"

    def can(self, scope: str) -> bool:
        return self.key is None or scope in self.key.scopes


class Sessions:
    """Seals an API key into a session cookie and back; derives CSRF tokens."""

    def __init__(self, services: Services, secret: bytes):
        self.services = services
        self._secret = secret
        fernet_key = base64.urlsafe_b64encode(hashlib.sha256(b"batchgate console session\0" + secret).digest())
        self._fernet = Fernet(fernet_key)

    def sign_in(self, api_key: str) -> tuple[ApiKey, str]:
        """Check the key as the API does (AuthenticationError if it is not one); the key
        and the cookie value that carries it."""
        key = self.services.keys.authenticate(f"Bearer {api_key.strip()}")
        return key, self._fernet.encrypt(api_key.strip().encode()).decode()

    def viewer(self, cookie: str | None) -> Viewer | None:
        """Who the cookie signs in, or None (no cookie, tampered, too old, key revoked or expired)."""
        if self.services.settings.insecure_no_auth:
            return Viewer(None, self.services.keys.default_project().id)
        if not cookie:
            return None
        try:
            api_key = self._fernet.decrypt(cookie.encode(), ttl=SESSION_SECONDS).decode()
            key = self.services.keys.authenticate(f"Bearer {api_key}")
        except (InvalidToken, AuthenticationError, UnicodeDecodeError):
            return None
        return Viewer(key, key.project_id)

    def csrf_token(self, bound_to: str) -> str:
        """The token forms must send along with the cookie value `bound_to`."""
        return hmac.new(self._secret, b"csrf\0" + bound_to.encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, bound_to: str | None, token: str | None) -> bool:
        return bool(bound_to and token) and hmac.compare_digest(self.csrf_token(bound_to or ""), token or "")
