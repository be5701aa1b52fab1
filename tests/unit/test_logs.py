"""Repeated warnings and errors are rate-limited (issue 11, defect 8: a worker on a full
disk logged a traceback every ~150 ms)."""

from __future__ import annotations

import logging

import pytest

from batchgate.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> tuple[logging.Logger, list[str], Clock]:
    clock = Clock()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage() + (" +traceback" if record.exc_info else ""))

    handler = Collect()
    handler.addFilter(RepeatFilter(window=60, clock=clock))
    logger = logging.getLogger("test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, lines, clock


def test_an_error_repeated_every_150_ms_is_logged_once_a_minute(logged) -> None:  # type: ignore[no-untyped-def]
    logger, lines, clock = logged
    for _ in range(400 * 3):  # three minutes, at the pace the worker loop failed
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logger.exception("worker loop error; retrying")
        clock.now += 0.15
    assert len(lines) == 3
    assert lines[0] == "worker loop error; retrying +traceback"
    assert lines[1].startswith("worker loop error; retrying [399 more like this in the last 60 s not logged]")


def test_kinds_are_limited_separately_and_info_is_never_limited(logged) -> None:  # type: ignore[no-untyped-def]
    logger, lines, clock = logged
    for i in range(5):
        logger.error("batch %s failed", f"b{i}")  # one kind: the template, whatever its arguments
        logger.warning("reaped dead worker %s", i)
        logger.info("batch %s validated", i)
    assert lines == ["batch b0 failed", "reaped dead worker 0", *[f"batch {i} validated" for i in range(5)]]
    clock.now += 61
    logger.error("batch %s failed", "b9")
    assert lines[-1] == "batch b9 failed [4 more like this in the last 61 s not logged]"
