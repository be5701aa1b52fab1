"""Projects and API keys. Keys are shown once and stored only as a SHA-256 hash.

A key carries scopes (`models.SCOPES`: which route groups it may call), optionally the
models it may use, and optionally an expiry; the API checks them on every request. It may
also carry rate limits and a cap on parallel requests (enforced by core/ratelimit.py) and
a budget (core/budgets.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

from batchgate.core.errors import AuthenticationError, InvalidRequestError, NotFoundError, PermissionDeniedError
from batchgate.core.ids import new_id, now
from batchgate.core.models import BUDGET_PERIODS, DEFAULT_SCOPES, LIMIT_KINDS, SCOPES, ApiKey, Project, RateLimit
from batchgate.core.ports import Store

KEY_PREFIX = "bg-"
_UPDATABLE = frozenset(
    {
        "name", "scopes", "allowed_models", "expires_at", "limits", "max_parallel_requests", "budget_usd",
        "budget_period", "budget_soft_usd", "routing_profile",
    }
)  # fmt: skip
MAX_WINDOW_S = 31 * 86400  # a month and a day: the longest rolling window


def hash_key(secret: str) -> str:
    # API keys carry 256 bits of entropy, so a fast unsalted hash is enough: nobody can
    # brute-force the preimage, and lookups by hash stay a single indexed query.
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in their canonical order; InvalidRequestError naming an unknown one."""
    wanted = set(scopes)
    if unknown := sorted(wanted - set(SCOPES)):
        raise InvalidRequestError(
            f"Unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}.", param="scopes", code="invalid_value"
        )
    if not wanted:
        raise InvalidRequestError("A key needs at least one scope.", param="scopes", code="invalid_value")
    return tuple(s for s in SCOPES if s in wanted)


def check_limits(limits: Iterable[RateLimit | dict[str, Any]]) -> tuple[RateLimit, ...]:
    """The limits, each checked (a known kind, a positive limit, a window of 1 s to
    MAX_WINDOW_S), at most one per kind and window; InvalidRequestError naming what is wrong."""
    checked: list[RateLimit] = []
    for i, given in enumerate(limits):
        limit = given if isinstance(given, RateLimit) else RateLimit(**given)
        param = f"limits[{i}]"
        if limit.kind not in LIMIT_KINDS:
            raise InvalidRequestError(
                f"Unknown limit kind {limit.kind!r}; kinds are {', '.join(LIMIT_KINDS)}.",
                param=param + ".kind",
                code="invalid_value",
            )
        if limit.limit < 1:
            raise InvalidRequestError("A limit must be at least 1.", param=param + ".limit", code="invalid_value")
        if not 1 <= limit.window_s <= MAX_WINDOW_S:
            raise InvalidRequestError(
                f"A limit's window is 1 to {MAX_WINDOW_S} seconds.", param=param + ".window_s", code="invalid_value"
            )
        if any((c.kind, c.window_s) == (limit.kind, limit.window_s) for c in checked):
            raise InvalidRequestError(
                f"Two {limit.kind} limits over the same {limit.window_s} s window.", param=param, code="invalid_value"
            )
        checked.append(limit)
    return tuple(checked)


def check_budget(key: ApiKey) -> ApiKey:
    """The key, unless its parallel cap and budget fields make no sense (InvalidRequestError)."""
    if key.max_parallel_requests is not None and key.max_parallel_requests < 1:
        raise InvalidRequestError(
            "max_parallel_requests must be at least 1.", param="max_parallel_requests", code="invalid_value"
        )
    if key.budget_period not in BUDGET_PERIODS:
        raise InvalidRequestError(
            f"Unknown budget period {key.budget_period!r}; periods are {', '.join(BUDGET_PERIODS)}.",
            param="budget_period",
            code="invalid_value",
        )
    for field in ("budget_usd", "budget_soft_usd"):
        if (value := getattr(key, field)) is not None and value < 0:
            raise InvalidRequestError(f"{field} cannot be negative.", param=field, code="invalid_value")
    if key.budget_usd is not None and key.budget_soft_usd is not None and key.budget_soft_usd > key.budget_usd:
        raise InvalidRequestError(
            "budget_soft_usd (the soft threshold) cannot be above budget_usd.", param="budget_soft_usd",
            code="invalid_value",
        )  # fmt: skip
    return key


def check_profile(profile: str | None, profiles: Collection[str] | None) -> None:
    """InvalidRequestError unless `profile` is None or one of the routing config's
    `profiles` (None: not checked, for a caller without the config)."""
    if profile is None or profiles is None or profile in profiles:
        return
    known = ", ".join(sorted(profiles)) or "none: add a [profiles.NAME] table to batchgate.toml"
    raise InvalidRequestError(
        f"Unknown routing profile {profile!r}; the routing config's profiles: {known}.",
        param="routing_profile",
        code="invalid_value",
    )


class KeyService:
    def __init__(self, store: Store, profiles: Collection[str] | None = None):
        self.store = store
        self.profiles = profiles  # the routing config's [profiles.NAME] (None: not checked)

    def create(
        self,
        project_name: str,
        name: str = "",
        scopes: Iterable[str] = DEFAULT_SCOPES,
        allowed_models: Iterable[str] | None = None,
        expires_at: int | None = None,
        *,
        limits: Iterable[RateLimit | dict[str, Any]] = (),
        max_parallel_requests: int | None = None,
        budget_usd: float | None = None,
        budget_period: str = "month",
        budget_soft_usd: float | None = None,
        routing_profile: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key for `project_name` (creating the project if new); returns (key, secret)."""
        checked = check_scopes(scopes)
        check_profile(routing_profile, self.profiles)
        checked_limits = check_limits(limits)
        key = ApiKey(
            id="",
            project_id="",
            name=name,
            prefix="",
            created_at=0,
            max_parallel_requests=max_parallel_requests,
            budget_usd=budget_usd,
            budget_period=budget_period,
            budget_soft_usd=budget_soft_usd,
            routing_profile=routing_profile,
        )
        check_budget(key)  # before the project is made
        project = self.store.ensure_project(project_name, now())
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = replace(
            key,
            id=new_id("key_"),
            project_id=project.id,
            name=name,
            prefix=secret[:10],
            created_at=now(),
            project_name=project.name,
            scopes=checked,
            allowed_models=tuple(allowed_models) if allowed_models is not None else None,
            expires_at=expires_at,
            limits=checked_limits,
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
        if key.expires_at is not None and key.expires_at <= now():
            raise AuthenticationError(f"The API key {key.id} has expired.", code="expired_api_key")
        return key

    @staticmethod
    def authorize(key: ApiKey, scope: str) -> None:
        """PermissionDeniedError unless `key` has `scope`."""
        if scope not in key.scopes:
            raise PermissionDeniedError(
                f"The API key {key.id} lacks the {scope!r} scope this endpoint needs (it has: {', '.join(key.scopes)}).",
                code="missing_scope",
            )

    def show(self, key_id: str) -> ApiKey:
        key = self.store.get_api_key(key_id)
        if key is None:
            raise NotFoundError(f"No API key with id {key_id!r}.", param="key_id")
        return key

    def update(self, key_id: str, **changes: Any) -> ApiKey:
        """Change the given fields of an active key: `name`, `scopes`, `allowed_models`
        (None: any model), `expires_at` (None: never), `limits` (the whole list; empty:
        none), `max_parallel_requests`, `budget_usd`, `budget_soft_usd` (None: none),
        `budget_period` and `routing_profile` (None: none)."""
        if unknown := set(changes) - _UPDATABLE:
            raise TypeError(f"not updatable: {', '.join(sorted(unknown))}")
        if "scopes" in changes:
            changes["scopes"] = check_scopes(changes["scopes"])
        if changes.get("allowed_models") is not None:
            changes["allowed_models"] = tuple(changes["allowed_models"])
        if "limits" in changes:
            changes["limits"] = check_limits(changes["limits"] or ())
        if "routing_profile" in changes:
            check_profile(changes["routing_profile"], self.profiles)
        changed = check_budget(replace(self.show(key_id), **changes))
        if not self.store.update_api_key(changed):
            raise NotFoundError(f"No active API key with id {key_id!r}.", param="key_id")
        return changed

    def projects(self) -> list[Project]:
        return self.store.list_projects()

    def ensure_project(self, name: str) -> Project:
        return self.store.ensure_project(name, now())

    def list(self) -> list[ApiKey]:
        return self.store.list_api_keys()

    def revoke(self, key_id: str) -> None:
        if not self.store.revoke_api_key(key_id, now()):
            raise NotFoundError(f"No active API key with id {key_id!r}.", param="key_id")

    def default_project(self) -> Project:
        """The project used when the server runs with --insecure-no-auth."""
        return self.store.ensure_project("default", now())
