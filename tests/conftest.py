from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real `batchgate serve` subprocesses on a shared data dir; all stopped at teardown."""
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, insecure: bool = False, data_dir: Path | None = None) -> Server:
        server = Server(data_dir or tmp_path / "data", {"BATCHGATE_SETTLE_GRACE": "0.5", **(env or {})}, insecure)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()
