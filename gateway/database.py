"""The async database engine, transactions that are safe under concurrent writers, and migrations.

SQLite (the default) and PostgreSQL behave differently in ways the gateway depends on, so the differences are
settled here, once:
- SQLite takes its write lock at `BEGIN IMMEDIATE`, so a write transaction never fails halfway when it tries
  to upgrade a read lock; reads stay deferred and run beside the writer thanks to WAL.
- SQLite has one write lock, and a writer that finds it taken sleeps in SQLite's busy handler (1 to 100 ms
  at a time) rather than being told when it is free: two concurrent writers had a p99 of 141-1,845 ms. So the
  writers of one process queue for it in the process first (`writer_turn`, FIFO, each woken when the one
  before commits) and only one of them at a time holds a connection in a write transaction; the busy
  timeout remains for writers in other processes.
- `LIKE` is case sensitive on both (as in PostgreSQL), so SQL and the Python predicate agree.
- SQLite's `lower()` folds only ASCII; `gateway_lower()` folds like Python (and PostgreSQL), for `ilike`.
- Creating tables takes a PostgreSQL advisory lock, so workers starting together do not race.
- PostgreSQL's pooled connections are not pre-pinged: a ping is three round trips through SQLAlchemy's
  asyncpg adapter (BEGIN, a statement, ROLLBACK) before every transaction. Instead a transaction's BEGIN,
  a round trip it makes anyway, is sent at once and is the ping: a connection that fails it has done nothing
  yet, so it is replaced and the BEGIN sent again, on each pooled connection at most once (after a kill,
  the next pooled one can be as dead: CI saw a write fail on the second of two). A connection the server
  closed (a restart, a failover, an administrator) is known to asyncpg once the event loop has read its end,
  so checkout asks asyncpg and refreshes the whole pool when one is closed; `pool_recycle` bounds the life of
  one cut off without a word.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState
from sqlalchemy.util import await_, greenlet_spawn

from gateway import sqlite_driver
from gateway.regex import sqlite_regexp

MIGRATION_LOCK_KEY = 0x6761_7465_7761_79  # "gateway" as a PostgreSQL advisory lock key
SQLITE_LOWER = "gateway_lower"
"""A Unicode `lower()` for SQLite, registered on every connection (see `gateway.filters.sql`)."""
_WRITER_QUEUES: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()
"""Each SQLite engine's queue of writers (`writer_turn`); keyed by engine, so engines never share one."""
_WAL_ATTEMPTS = 300
"""How often a new connection tries to switch its file to WAL before giving up (about 30 s in all)."""
_ONE_HOP: weakref.WeakSet[Engine] = weakref.WeakSet()
"""The SQLite engines whose connections are `sqlite_driver.OneHopConnection`s."""
POOL_RECYCLE = 1800
"""Seconds after which a pooled PostgreSQL connection is replaced before use."""
POOL_SIZE = 10
MAX_OVERFLOW = 20
BEGIN_ATTEMPTS = POOL_SIZE + MAX_OVERFLOW + 1
"""How many connections a PostgreSQL transaction tries before its BEGIN's error is the caller's: every
pooled one may be one the server ended, each is tried once and replaced, then a fresh one."""


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`, with the per-dialect settings the gateway relies on."""
    if url.startswith("sqlite"):
        parsed = make_url(url)
        one_hop = not parsed.query and "async_creator" not in kwargs
        if one_hop:  # plain file or memory: one hop per statement (see gateway/sqlite_driver.py)
            kwargs["async_creator"] = sqlite_driver.connector(parsed.database or ":memory:", timeout=30)
        kwargs.setdefault("pool_reset_on_return", None)  # `_on_reset` below rolls back only what is open
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        _WRITER_QUEUES[engine.sync_engine] = asyncio.Lock()
        if one_hop:
            _ONE_HOP.add(engine.sync_engine)
        return engine
    engine = create_async_engine(
        url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_recycle=POOL_RECYCLE, **kwargs
    )
    _refresh_closed_connections(engine)
    return engine


def _refresh_closed_connections(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(
        dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if dbapi_connection.driver_connection.is_closed():
            # The pool reconnects this one and replaces every connection older than now: after a restart
            # they are all closed.
            raise InvalidatePoolError("the server closed this pooled connection")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def uses_one_hop_driver(engine: AsyncEngine) -> bool:
    """Whether `engine`'s connections are `sqlite_driver.OneHopConnection`s, which can run a whole
    function on the connection's thread (`OneHopConnection.run`)."""
    return engine.sync_engine in _ONE_HOP


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor)
        for pragma in (
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA case_sensitive_like=ON",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()
        dbapi_connection.create_function(SQLITE_LOWER, 1, _unicode_lower, deterministic=True)
        # In place of SQLAlchemy's (Python's backtracking `re`): see gateway/regex.py.
        dbapi_connection.create_function("regexp", 2, sqlite_regexp, deterministic=True)

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: ConnectionPoolEntry, state: PoolResetState) -> None:
        # A connection back in the pool after its commit has nothing to roll back: asking SQLite anyway
        # was one more trip to the driver's thread per write.
        if not state.terminate_only and dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        driver = connection.connection.driver_connection
        if driver is not None and driver.in_transaction:
            return  # inside `write_transaction`, which began it on the driver
        connection.exec_driver_sql("BEGIN")


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so), retrying while another connection holds a lock.

    The switch needs the exclusive lock, and SQLite answers "database is locked" at once, without its busy
    handler, when a connection that is switching too holds a shared one (it would deadlock otherwise): six
    engines opening a new file together failed one time in five. Retrying with nothing held lets it through;
    the sleeps are the event loop's (this runs inside SQLAlchemy's greenlet), never a blocking one."""
    delay = 0.001
    for _ in range(_WAL_ATTEMPTS - 1):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        await_(asyncio.sleep(delay))
        delay = min(delay * 2, 0.1)
    cursor.execute("PRAGMA journal_mode=WAL")


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@asynccontextmanager
async def writer_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """This process's turn to write to `engine`'s database: on SQLite, after every writer queued before it
    here has finished (FIFO); on PostgreSQL at once (its row locks let writers run side by side)."""
    queue = _WRITER_QUEUES.get(engine.sync_engine)
    if queue is None:
        yield
        return
    async with queue:
        yield


@asynccontextmanager
async def pooled_driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The driver's connection of one pooled connection, for code that talks to the driver alone.

    Taken from the pool directly: through `engine.connect()` (SQLAlchemy's async and sync Connection
    objects, their events and close) a checkout and checkin cost ~220 us of CPU, straight from the pool ~70
    (loadtests/RESULTS.md, issue 16, fourth pass). The pool still resets the connection on its return."""
    pooled = await greenlet_spawn(engine.sync_engine.pool.connect)
    try:
        yield pooled.driver_connection
    finally:
        await greenlet_spawn(pooled.close)


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: committed on success, rolled back on any exception."""
    if is_sqlite(engine):
        async with writer_turn(engine), engine.connect() as connection, _sqlite_transaction(connection):
            yield connection
        return
    async with _postgres_transaction(engine) as connection:
        yield connection


@asynccontextmanager
async def _postgres_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL transaction whose BEGIN has been answered (see the module's docstring)."""
    for attempt in range(BEGIN_ATTEMPTS):
        connection = await engine.connect()
        try:
            transaction = await connection.begin()
            adapted = (await connection.get_raw_connection()).dbapi_connection
            assert adapted is not None
            await adapted._start_transaction()  # what SQLAlchemy's adapter does at the first statement
        except BaseException as exc:
            await connection.invalidate()
            await connection.close()
            last = attempt == BEGIN_ATTEMPTS - 1
            if last or not isinstance(exc, Exception) or isinstance(exc, DBAPIError):
                raise
            continue
        break
    try:
        try:
            yield connection
        except BaseException as exc:
            await transaction.__aexit__(type(exc), exc, exc.__traceback__)  # rolled back
            raise
        await transaction.__aexit__(None, None, None)  # committed
    finally:
        await connection.close()


@asynccontextmanager
async def _sqlite_transaction(connection: AsyncConnection) -> AsyncIterator[None]:
    """BEGIN IMMEDIATE ... COMMIT sent to aiosqlite directly, one hop each.

    Through SQLAlchemy's `begin()` (the "begin" event, its execution context, the commit and the close) an
    empty write transaction cost ~430 us of CPU, as much as a create's two statements (loadtests/RESULTS.md,
    issue 16), whose statements go to the driver too. A statement of SQLAlchemy's inside it autobegins
    SQLAlchemy's own transaction (the "begin" hook sends no BEGIN: SQLite is in one); SQLAlchemy then
    commits or rolls back, so that it does not roll back again at close.
    """
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    await _driver_statement(driver, "BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction():
            await connection.rollback()
        elif driver.in_transaction:
            await _driver_statement(driver, "ROLLBACK")
        raise
    if connection.in_transaction():
        await connection.commit()
    else:
        await _driver_statement(driver, "COMMIT")


async def _driver_statement(driver: Any, sql: str) -> None:
    try:
        await driver.execute_fetchall(sql)
    except (sqlite3.Error, ValueError) as exc:  # aiosqlite: ValueError for a closed connection
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


@asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only unit of work (one consistent snapshot on PostgreSQL)."""
    if is_sqlite(engine):
        async with engine.connect() as connection, connection.begin():
            yield connection
        return
    async with _postgres_transaction(engine) as connection:
        yield connection


async def create_tables(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables and indexes; safe to run from many workers at once.

    On SQLite the write lock is taken first (BEGIN IMMEDIATE): a deferred transaction that read the schema
    and then found another worker's tables written fails at once with "database is locked" (its snapshot is
    stale, so the busy timeout does not apply), and two gunicorn workers starting together hit it."""
    async with write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await connection.run_sync(metadata.create_all)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
