"""Dagster's SQLite event log, with its connections kept open in the processes that run our code.

On the default instance Dagster keeps events in SQLite (a file per run, plus an index) and opens a
new SQLAlchemy engine and SQLite connection for every read and write (``NullPool``), so SQLite
parses the schema again each time: 2.3-2.6 ms per event, 6.3 ms per asset event (mirrored into the
index), 8.5 ms per asset-record read. With one open connection per file: 0.6-0.9, 1.6-2.1 and
1.6-1.8 ms. A run of one more day at M stores ~290 events and reads ~50 records; alternating that
run on one restored M state, six times each, it took 1.0 to 1.3 s less every time.

How: ``keep_connections_open`` replaces three methods of Dagster's ``SqliteEventLogStorage``
(``_connect``, ``wipe``, ``dispose``; Dagster is pinned to 1.13, test_event_log.py fails if they
move). A storage class named in dagster.yaml would need its directory spelled there, which no one
value can be for every Dagster home (`make`, the tests, the benchmark each make their own); this
way only processes that import dp_assets (runs, code servers) change, and the webserver and
daemon keep the stock storage. Bounded: ``NullPool`` is how Dagster stopped long-lived processes
running out of file descriptors (dagster#2021), so only the ``OPEN_FILES`` most recently used
files keep a connection; older ones are closed.
"""

import os
from collections import OrderedDict
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from sqlalchemy import create_engine

OPEN_FILES = 8  # a run process uses two: its run's file and the index
_stock = {}  # the replaced methods that still do their part


def keep_connections_open() -> None:
    """Make every ``SqliteEventLogStorage`` in this process (existing or not) reuse connections."""
    if SqliteEventLogStorage._connect is not _connect:
        _stock.update(wipe=SqliteEventLogStorage.wipe, dispose=SqliteEventLogStorage.dispose)
        SqliteEventLogStorage._connect = _connect
        SqliteEventLogStorage.wipe = _wipe
        SqliteEventLogStorage.dispose = _dispose


@contextmanager
def _connect(self: SqliteEventLogStorage, shard: str):
    # The stock method's contract: one transaction, serialized by the storage's lock.
    with self._db_lock:
        with _engine(self, shard).connect() as conn, conn.begin():
            yield conn


def _engine(storage: SqliteEventLogStorage, shard: str):
    engines = _engines(storage)
    engine = engines.pop(shard, None)
    if engine is None:
        engine = create_engine(
            storage.conn_string_for_shard(shard),
            pool_size=1,  # the lock lets one connection per file be in use at a time
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        if shard not in storage._initialized_dbs:
            storage._initdb(engine)
            storage._initialized_dbs.add(shard)
    engines[shard] = engine  # most recently used last
    while len(engines) > OPEN_FILES:
        engines.popitem(last=False)[1].dispose()
    return engine


def _engines(storage: SqliteEventLogStorage) -> OrderedDict:
    """The storage's open engines in this process: a forked child starts with none (SQLite
    connections must not cross a fork; the parent's are left to the parent)."""
    pid, engines = storage.__dict__.get("_open_engines", (None, None))
    if pid != os.getpid():
        pid, engines = storage.__dict__["_open_engines"] = (os.getpid(), OrderedDict())
    return engines


def open_shards(storage: SqliteEventLogStorage) -> list[str]:
    """The event-log files (run ids and "index") this process keeps open, least recently used
    first."""
    return list(_engines(storage))


def _close_all(storage: SqliteEventLogStorage) -> None:
    engines = _engines(storage)
    while engines:
        engines.popitem()[1].dispose()


def _wipe(self: SqliteEventLogStorage) -> None:
    with self._db_lock:
        _close_all(self)  # before the stock wipe deletes the files they hold
    _stock["wipe"](self)


def _dispose(self: SqliteEventLogStorage) -> None:
    with self._db_lock:
        _close_all(self)
    _stock["dispose"](self)
