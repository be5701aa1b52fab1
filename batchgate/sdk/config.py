"""Where a client's base URL and API key come from: arguments, a named profile, the environment.

Profiles live in `~/.config/batchgate/profiles.toml` (or the file `BATCHGATE_PROFILES`
names), one table per profile:

    [prod]
    base_url = "https://batchgate.example.com"
    api_key_env = "BATCHGATE_PROD_KEY"   # or api_key = "sk-…" (the key in the file itself)
    timeout = 300                        # optional: seconds per request (the client's default otherwise)

Anything a profile leaves out falls back to `BATCHGATE_BASE_URL` / `BATCHGATE_API_KEY`,
then to http://127.0.0.1:8000 and no key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgate.sdk.errors import ConfigurationError

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    base_url: str
    api_key: str | None
    timeout: float | None = None  # a profile's own request timeout, when it sets one


def profiles_path() -> Path:
    """The profiles file: `$BATCHGATE_PROFILES`, else `~/.config/batchgate/profiles.toml`."""
    explicit = os.environ.get("BATCHGATE_PROFILES")
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "batchgate" / "profiles.toml"


def resolve(base_url: str | None = None, api_key: str | None = None) -> Settings:
    """Arguments first, then `BATCHGATE_BASE_URL` / `BATCHGATE_API_KEY`, then the defaults."""
    url = base_url or os.environ.get("BATCHGATE_BASE_URL") or DEFAULT_BASE_URL
    key = api_key or os.environ.get("BATCHGATE_API_KEY") or None
    return Settings(normalize_base_url(url), key)


def normalize_base_url(url: str) -> str:
    """Without a trailing slash or `/v1`: the SDK adds `/v1/…` and `/api/…` itself, and
    users of OpenAI's client habitually configure the `/v1` form."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def load_profile(name: str) -> Settings:
    """The settings of profile `name`; a clear `ConfigurationError` when the file or the
    profile is missing, malformed, or names an API key variable that is not set."""
    path = profiles_path()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"no profiles file at {path} (profile {name!r} was asked for)") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the profiles file {path}: {exc}") from None
    profile: Any = profiles.get(name)
    if not isinstance(profile, dict):
        known = ", ".join(sorted(k for k, v in profiles.items() if isinstance(v, dict))) or "none"
        raise ConfigurationError(f"no profile {name!r} in {path} (profiles: {known})")
    api_key = profile.get("api_key")
    key_env = profile.get("api_key_env")
    if api_key is None and key_env is not None:
        api_key = os.environ.get(str(key_env))
        if not api_key:
            raise ConfigurationError(f"profile {name!r} takes its API key from ${key_env}, which is not set")
    base_url = profile.get("base_url")
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(f"profile {name!r}: base_url must be a string")
    timeout = profile.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigurationError(f"profile {name!r}: timeout must be a positive number of seconds")
    settings = resolve(base_url, str(api_key) if api_key is not None else None)
    return Settings(settings.base_url, settings.api_key, None if timeout is None else float(timeout))
