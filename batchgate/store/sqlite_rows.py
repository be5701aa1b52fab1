"""Many rows in few SQLite statement steps.

Python's sqlite3 releases the GIL around every step of a statement: once per row of an
`executemany`, once per row a SELECT returns. Taking it back waits, while another thread
of the process is computing (the worker's event loop, the API's), until that thread's
switch interval ends (5 ms). `bench/sqlite_steps.py`: 2,000 rows by `executemany` take
0.014 s alone and 14.6 s beside a thread spinning in Python; as 400-row VALUES lists,
0.008 s and 0.056 s. So the store's hot paths (a worker's claims and result flushes) write
a VALUES list per statement, and read an id set as one row."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

ROWS_PER_STATEMENT = 400  # well under SQLite's 32,766 parameters for the widest row (15)


@functools.lru_cache(maxsize=64)
def _values(width: int, rows: int) -> str:
    row = f"({', '.join(['?'] * width)})"
    return ", ".join([row] * rows)


def execute_values(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `sql`, whose `{values}` stands for a VALUES list, over `rows` (all of one width):
    one statement per ROWS_PER_STATEMENT rows, in their order."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        conn.execute(sql.format(values=_values(len(chunk[0]), len(chunk))), [v for row in chunk for v in row])


def id_set(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> set[int]:
    """The integers `sql` selects (one column), read as one row: `sql` is a SELECT of
    `group_concat(<integer column>)`."""
    joined = conn.execute(sql, tuple(params)).fetchone()[0]
    return set(map(int, joined.split(","))) if joined else set()
