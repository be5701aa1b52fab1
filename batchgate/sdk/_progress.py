"""Progress bars on stderr, shown only when someone is watching (stderr is a terminal)."""

from __future__ import annotations

import sys
from typing import Any


class Bar:
    """A rich progress bar, or nothing: `enabled=None` means "when stderr is a terminal".

    rich is imported only when a bar is actually drawn, so scripts and servers using the SDK
    never pay for it.
    """

    def __init__(self, enabled: bool | None, description: str, total: float | None = None, bytes_: bool = False):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None
        self._description, self._total, self._bytes = description, total, bytes_

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        counter = (DownloadColumn(), TransferSpeedColumn()) if self._bytes else (MofNCompleteColumn(),)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *counter,
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=self._total)

    def update(
        self, completed: float | None = None, *, advance: float = 0, total: float | None = None, status: str = ""
    ) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            self._start()
        description = f"{self._description} {status}".rstrip()
        self._progress.update(
            self._task, completed=completed, advance=advance or None, total=total, description=description
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
