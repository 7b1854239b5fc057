"""Two writers of one table on a DuckLake: one commits, the other starts its step again.

DuckLake fails the second of two overlapping commits when both delete from, alter or replace one
table, but two that only append to it both commit. Two runs of one asset at once (a user's run
beside automation's, a retried run) would then both append the same new rows. So, on a lake and
inside a Dagster step, every transaction first *claims* the tables of the step's assets (their
``dagster/table_name``): it sets each one's comment again, to the comment it has, which alters the
table, so that of two claimed transactions writing one table the second to commit fails. (A
writer outside a step claims nothing: an append of its that commits first does not stop a
claimed one.) The step whose commit fails raises ``WriteConflict``, a ``RetryRequested``, and
Dagster runs it again on what the other committed.

What DuckLake's own check lets through is checked here from the lake's snapshots (each one's
changes name the tables it touched; an erasure's rewrites of files, which change no row, aside):

- a step that reads in one transaction and writes in the next (the formatted zone reads which
  files are pending, then commits them in batches) could act on what it read before another
  writer committed in between: each later transaction first looks at the snapshots since the
  step's last commit, and starts the step again if another writer changed a claimed table (or if
  that history was expired, so that nobody can tell);
- a replace (``CREATE OR REPLACE``) that commits after another writer's append to the table does
  not conflict, and would drop what the other wrote: after a commit that replaced a claimed table,
  the snapshots between the transaction's start and its commit are looked at the same way, and
  the step runs again, replacing the table with both writers' work. (Only then: a step that
  appended must not run again once its rows are in.)

An expiry of the snapshots an open transaction started from would hide what it conflicts with:
the erasure expires history only once the runs at work when it rewrote the files have ended
(``governance.erasure_job.forget_history``).

Each transaction is attributed in the lake's snapshots (author: the run; message: the step), which
makes a conflict's message name the other writer and leaves who wrote what in the lake's history.
Outside a step (the ``dp`` commands, a user's shell) nothing is claimed: those write tables no
asset writes, or are the user's own.
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass, field

import duckdb
from dagster import DagsterInvariantViolationError, OpExecutionContext, RetryRequested

from dp_assets.metadata import plain

# Retries wait longer each time, jittered, so that two long steps that keep meeting drift apart
# (at most about 10 minutes of waiting in all).
MAX_RETRIES = 10
MAX_WAIT_S = 120

# The connections opened on a lake (only they claim), and each step attempt's claim.
lake_connections: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_claims: weakref.WeakKeyDictionary[object, Claim] = weakref.WeakKeyDictionary()

# The claimed tables as they are now: name, id, comment (from the catalog's own tables: what
# `duckdb_tables()` says costs ten times more, as it lists every table of every database).
_TABLES = """
    SELECT s.schema_name || '.' || t.table_name, t.table_id::VARCHAR, c.value
    FROM __ducklake_metadata_{lake}.ducklake_table t
    JOIN __ducklake_metadata_{lake}.ducklake_schema s USING (schema_id)
    LEFT JOIN __ducklake_metadata_{lake}.ducklake_tag c
      ON c.object_id = t.table_id AND c.key = 'comment' AND c.end_snapshot IS NULL
    WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
      AND list_contains($tables, s.schema_name || '.' || t.table_name)
"""
# The first snapshot in (after, before) that changed a claimed table: by id, or by name where a
# table was created (or replaced); an id of -1 when `after` no longer exists (expired). The
# maintenance that rewrites files without changing a row (an erasure's) is no change.
MAINTENANCE = ["flushed_inlined", "merge_adjacent", "rewrite_delete"]
_CHANGED = """
    SELECT snapshot_id, coalesce(author, 'a writer outside Dagster'), commit_message
    FROM {lake}.snapshots()
    WHERE snapshot_id > $after AND snapshot_id < $before
      AND list_has_any($touched, flatten(list_transform(list_filter(map_entries(changes),
          e -> e.key NOT LIKE 'schemas%' AND NOT list_contains($same_rows, e.key)), e -> e.value)))
    UNION ALL
    SELECT -1, NULL, NULL WHERE NOT EXISTS (
        SELECT 1 FROM {lake}.snapshots() WHERE snapshot_id = $after)
    ORDER BY 1
    LIMIT 1
"""


class WriteConflict(RetryRequested):
    """Another writer committed to a table this step writes: the step runs again on its commit."""

    def __init__(self, message: str, retry_number: int = 0):
        wait = min(MAX_WAIT_S, 2 ** (retry_number + 1)) * random.uniform(0.5, 1.5)
        super().__init__(max_retries=MAX_RETRIES, seconds_to_wait=wait)
        self.args = (message,)


def is_conflict(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.TransactionException) and "Transaction conflict" in str(error)


def conflict(error: duckdb.Error) -> WriteConflict:
    """DuckLake's conflict error, said plainly; retried when raised in a step."""
    claim = _step_claim()
    return WriteConflict(
        "Another writer committed first to a table this transaction wrote; nothing of the "
        "transaction was committed. A Dagster step runs again on what the other committed (up "
        f"to {MAX_RETRIES} times); elsewhere, run it again. DuckLake: {error}",
        claim.retry_number if claim else 0,
    )


@dataclass
class Claim:
    """What one step attempt claims, and where its own history ends."""

    step: str
    author: str
    retry_number: int
    tables: list[str]
    since: int | None = None  # the snapshot of the step's last commit
    start: int = 0  # the snapshot the open transaction started from
    ids: list[str] = field(default_factory=list)  # the tables' ids then

    def current(self, conn: duckdb.DuckDBPyConnection, lake: str) -> list[tuple[str, str, str]]:
        return conn.execute(_TABLES.format(lake=lake), {"tables": self.tables}).fetchall()

    def check(
        self, conn: duckdb.DuckDBPyConnection, lake: str, after: int, before: int, ids: list[str]
    ) -> None:
        """Raise ``WriteConflict`` if a snapshot between ``after`` and ``before`` changed one of
        the tables (known by their names, their ids then, or ``ids``, their ids now), or
        ``after`` was expired."""
        touched = self.tables + self.ids + ids
        params = {"after": after, "before": before, "touched": touched, "same_rows": MAINTENANCE}
        changed = conn.execute(_CHANGED.format(lake=lake), params).fetchone()
        if not changed:
            return
        snapshot, author, message = changed
        what = (
            f"the lake's history since snapshot {after} was expired"
            if snapshot < 0
            else f"snapshot {snapshot} by {author} ({message or 'no message'}) changed "
            f"{', '.join(self.tables)}"
        )
        raise WriteConflict(
            f"{self.step}: {what} while this step was writing them: it runs again on the current "
            "snapshot.",
            self.retry_number,
        )


def _step_claim() -> Claim | None:
    try:
        context = OpExecutionContext.get()
    except DagsterInvariantViolationError:
        return None
    step = context.get_step_execution_context()
    if step not in _claims:
        specs = context.assets_def.specs_by_key if context.has_assets_def else {}
        names = {
            plain(specs[key].metadata.get("dagster/table_name"))
            for key in context.selected_asset_keys
            if key in specs
        }
        _claims[step] = Claim(
            step.step.key, f"dagster run {context.run_id}", context.retry_number,
            sorted(names - {None}),
        )  # fmt: skip
    return _claims[step]


def claim(conn: duckdb.DuckDBPyConnection, lake: str) -> Claim | None:
    """Claim the step's tables in the transaction just begun on ``conn`` (see the module); the
    claim to pass to ``committed``, or None where nothing is claimed."""
    if conn not in lake_connections or (claim := _step_claim()) is None or not claim.tables:
        return None
    (claim.start,) = conn.execute(f"SELECT id FROM ducklake_current_snapshot('{lake}')").fetchone()
    tables = claim.current(conn, lake)
    ids = [i for _, i, _ in tables]
    if claim.since is not None:
        claim.check(conn, lake, claim.since, claim.start + 1, ids)
    claim.ids = ids
    conn.execute(f"CALL {lake}.set_commit_message(?, ?)", [claim.author, claim.step])
    for table, _, comment in tables:
        text = "NULL" if comment is None else "'" + comment.replace("'", "''") + "'"
        conn.execute(f"COMMENT ON TABLE {table} IS {text}")
    return claim


def committed(conn: duckdb.DuckDBPyConnection, claim: Claim, lake: str) -> None:
    """After ``conn`` committed the claimed transaction: remember where the step's own history
    ends, and if it replaced a claimed table, check that no other writer's commit to it came
    between the transaction's start and its commit (a replace commits over it)."""
    (own,) = conn.execute(f"FROM {lake}.last_committed_snapshot()").fetchone()
    claim.since = max(claim.since or 0, own or 0)
    # Only a replace: an append that commits second conflicts with the claim, and a step that
    # appended must not run again once its rows are in.
    (replaced,) = conn.execute(
        f"SELECT list_has_any(changes['tables_dropped'], $ids) FROM {lake}.snapshots() "
        "WHERE snapshot_id = $own",
        {"ids": claim.ids, "own": claim.since},
    ).fetchone() or (False,)
    if replaced:
        ids = [i for _, i, _ in claim.current(conn, lake)]
        claim.check(conn, lake, claim.start, claim.since, ids)
