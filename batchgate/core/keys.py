"""Projects and API keys. Keys are shown once and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from batchgate.core.errors import AuthenticationError, NotFoundError
from batchgate.core.ids import new_id, now
from batchgate.core.models import ApiKey, Project
from batchgate.core.ports import Store

KEY_PREFIX = "bg-"


def hash_key(secret: str) -> str:
    # API keys carry 256 bits of entropy, so a fast unsalted hash is enough: nobody can
    # brute-force the preimage, and lookups by hash stay a single indexed query.
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    def __init__(self, store: Store):
        self.store = store

    def create(self, project_name: str, name: str = "") -> tuple[ApiKey, str]:
        """Create a key for `project_name` (creating the project if new); returns (key, secret)."""
        project = self.store.ensure_project(project_name, now())
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id=new_id("key_"),
            project_id=project.id,
            name=name,
            prefix=secret[:10],
            created_at=now(),
            project_name=project.name,
        )
        self.store.add_api_key(key, hash_key(secret))
        return key, secret

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key behind an `Authorization: Bearer …` header value, or AuthenticationError."""
        if not authorization:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer <key>'. "
                "Create one with `batchgate keys create --project NAME`."
            )
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("Malformed Authorization header: expected 'Bearer <key>'.")
        key = self.store.find_api_key(hash_key(secret.strip()))
        if key is None:
            raise AuthenticationError("Incorrect or revoked API key provided.")
        return key

    def list(self) -> list[ApiKey]:
        return self.store.list_api_keys()

    def revoke(self, key_id: str) -> None:
        if not self.store.revoke_api_key(key_id, now()):
            raise NotFoundError(f"No active API key with id {key_id!r}.", param="key_id")

    def default_project(self) -> Project:
        """The project used when the server runs with --insecure-no-auth."""
        return self.store.ensure_project("default", now())
