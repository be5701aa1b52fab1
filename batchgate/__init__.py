"""batchgate: a self-hosted gateway for bulk LLM work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgate.sdk import AsyncClient, Client

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # the SDK (and httpx) load on first use, so `import batchgate` stays cheap for the server and CLI
    if name in ("Client", "AsyncClient"):
        from batchgate import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'batchgate' has no attribute {name!r}")
