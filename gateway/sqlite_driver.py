"""aiosqlite connections whose statements each take one hop to the connection's thread, not three or four.

aiosqlite runs every call on a thread of the connection's own, and each call is a hop: the event loop wakes
the thread (a futex wake) and the thread wakes the loop back (an eventfd write). SQLAlchemy's adapter makes
four of them per statement (create a cursor, execute, fetch the rows, close the cursor), so a REST create
(BEGIN, INSERT ... RETURNING, the outbox row, COMMIT) took ten, and waking the thread alone was ~39 % of the
worker's CPU in a write-only profile (loadtests/RESULTS.md, "The write path"). Here a cursor's `execute`
runs the statement, fetches every row and closes the sqlite3 cursor in one hop; the rest of the cursor is
answered from what that hop brought back. Rows are fetched whole, which is what the adapter did anyway
(it buffers results for SQLAlchemy's synchronous API).
"""

from __future__ import annotations

import functools
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiosqlite

_T = TypeVar("_T")
_Outcome = tuple[list[Any], Any, int, int | None]
"""rows, description, rowcount, lastrowid"""


def _run(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor:
    """The part of aiosqlite's `Cursor` that SQLAlchemy's adapter uses, one hop per `execute`."""

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> OneHopCursor:
        return await self._outcome(await self._connection.run(_run, sql, parameters, False))

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneHopCursor:
        return await self._outcome(await self._connection.run(_run, sql, list(parameters), True))

    async def _outcome(self, outcome: _Outcome) -> OneHopCursor:
        rows, self.description, self.rowcount, self.lastrowid = outcome
        self._rows = deque(rows)
        return self

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows, self._rows = list(self._rows), deque()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors are `OneHopCursor`s; everything else is aiosqlite's."""

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """`function(sqlite3_connection, *args)` on the connection's thread, in one hop."""
        outcome: _T = await self._execute(lambda: function(self._conn, *args))  # type: ignore[no-untyped-call]
        return outcome


def connector(database: str, **options: Any) -> Callable[[], Awaitable[OneHopConnection]]:
    """SQLAlchemy's `async_creator` for a SQLite file (`options` go to `sqlite3.connect`)."""

    async def connect() -> OneHopConnection:
        connection = OneHopConnection(functools.partial(sqlite3.connect, database, **options), 64)
        connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: never hold up the exit
        await connection
        return connection

    return connect
