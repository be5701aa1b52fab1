"""The console in a real browser: Playwright for Python driving Debian's chromium
(`apt-get install -y chromium`; never `playwright install`), headless, against a real
`batchgate serve` on the scripted backend.

Without chromium (or playwright) the tests skip, except under CI=true, where they fail:
CI must run them. Screenshots go to the test's tmp dir, and also to
$BATCHGATE_SCREENSHOTS when set (docs/screenshots is made that way)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ALL_SCOPES, Server

CHROMIUM = os.environ.get("BATCHGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

# a priced model on the scripted backend, so batches have a cost to find in Usage
ROUTING = """
[models.demo-model]
backend = "local"
model = "demo-model"
price = { input = 2000.0, output = 4000.0 }
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(reason)


# module scope, not session: while sync_playwright() is open its event loop is the running
# loop of the main thread, so every later test calling asyncio.run() would fail
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose worker runs one line at a time (0.5 s each), so progress is visible."""
    home = tmp_path_factory.mktemp("console")
    config = home / "batchgate.toml"
    config.write_text(ROUTING)
    env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_CONCURRENCY": "1", "BATCHGATE_SETTLE_GRACE": "0.5"}
    server = Server(home / "data", env)
    server.start()
    server.admin_key = server.create_key("acme", *ALL_SCOPES, "--name", "lead")  # type: ignore[attr-defined]
    server.reader_key = server.create_key("acme", "--scope", "read", "--scope", "batch", "--name", "analyst")  # type: ignore[attr-defined]
    yield server
    server.kill()


class Shots:
    """Saves full-page screenshots under the test's tmp dir (and $BATCHGATE_SCREENSHOTS)."""

    def __init__(self, tmp: Path):
        self.dirs = [tmp]
        if extra := os.environ.get("BATCHGATE_SCREENSHOTS"):
            self.dirs.append(Path(extra))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> None:
        data = page.screenshot(full_page=True)
        for d in self.dirs:
            (d / f"{name}.png").write_bytes(data)


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path / "screenshots")


@pytest.fixture
def sign_in(browser: Any) -> Iterator[Any]:
    """Opens a new browser context signed in with a key; its page is on Batches."""
    contexts: list[Any] = []

    def open_signed_in(server: Server, key: str) -> Any:
        context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.goto(server.url + "/console/login")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/batches")
        return page

    yield open_signed_in
    for context in contexts:
        context.close()
