"""Two writers of one table on a DuckLake: one commits, the other starts its step again.

DuckLake detects a conflict between two transactions when both delete from, alter or replace one
table, but two that only append to it both commit. Two runs of one asset at once (a user's run
beside automation's, a retried run) would then both append the same new rows. So, on a lake and
inside a Dagster step, every transaction first *claims* the tables of the step's assets (their
``dagster/table_name``): it sets each one's comment again, to the comment it has, which alters the
table and so conflicts with any other transaction that writes it meanwhile. The one that commits
second fails; its step raises ``WriteConflict``, a ``RetryRequested``, and Dagster runs the step
again on what the other committed.

A step that reads in one transaction and writes in the next (the formatted zone reads which files
are pending, then commits them in batches) could still act on what it read before another writer
committed in between. So each later transaction of the step first looks at the snapshots since
the step's last commit: if another writer changed a claimed table, the step starts again too.

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

# Enough for a handful of runs of one asset at once; the wait is jittered so that retries of two
# steps that conflicted do not meet again.
MAX_RETRIES = 10
WAIT_S = (1.0, 5.0)

# The connections opened on a lake (only they claim), and each step attempt's claim.
lake_connections: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_claims: weakref.WeakKeyDictionary[object, Claim] = weakref.WeakKeyDictionary()

_TABLE_IDS = """
    SELECT t.table_id::VARCHAR
    FROM __ducklake_metadata_{lake}.ducklake_table t
    JOIN __ducklake_metadata_{lake}.ducklake_schema s USING (schema_id)
    WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
      AND list_contains($tables, s.schema_name || '.' || t.table_name)
"""
# Snapshots since the step's last commit that changed a claimed table (by id, or by name where a
# table was created or replaced).
_CHANGED_SINCE = """
    SELECT snapshot_id, coalesce(author, 'a writer outside Dagster'), commit_message
    FROM {lake}.snapshots()
    WHERE snapshot_id > $since
      AND list_has_any($touched, flatten(list_transform(
          list_filter(map_entries(changes), e -> e.key NOT LIKE 'schemas%'), e -> e.value)))
    ORDER BY snapshot_id
    LIMIT 1
"""
_COMMENTS = """
    SELECT schema_name || '.' || table_name, comment FROM duckdb_tables()
    WHERE database_name = current_database()
      AND list_contains($tables, schema_name || '.' || table_name)
"""


class WriteConflict(RetryRequested):
    """Another writer committed to a table this step writes: the step runs again on its commit."""

    def __init__(self, message: str):
        super().__init__(max_retries=MAX_RETRIES, seconds_to_wait=random.uniform(*WAIT_S))
        self.args = (message,)


def is_conflict(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.TransactionException) and "Transaction conflict" in str(error)


def conflict(error: duckdb.Error) -> WriteConflict:
    return WriteConflict(
        "Another writer committed to a table this transaction wrote, first. A Dagster step runs "
        f"again on what it committed (up to {MAX_RETRIES} times). DuckLake: {error}"
    )


@dataclass
class Claim:
    """What one step attempt claims and where its own history ends."""

    step: str
    author: str
    tables: list[str]
    since: int | None = None  # the snapshot of the step's last commit
    ids: list[str] = field(default_factory=list)


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
        tables = sorted(names - {None})
        _claims[step] = Claim(step.step.key, f"dagster run {context.run_id}", tables)
    return _claims[step]


def claim(conn: duckdb.DuckDBPyConnection, lake: str) -> Claim | None:
    """Claim the step's tables in the transaction just begun on ``conn`` (see the module); the
    claim to pass to ``committed``, or None where nothing is claimed."""
    if conn not in lake_connections or (claim := _step_claim()) is None or not claim.tables:
        return None
    if claim.since is not None:
        ids = conn.execute(_TABLE_IDS.format(lake=lake), {"tables": claim.tables}).fetchall()
        touched = claim.tables + claim.ids + [i for (i,) in ids]
        changed = conn.execute(
            _CHANGED_SINCE.format(lake=lake), {"since": claim.since, "touched": touched}
        ).fetchone()
        if changed:
            snapshot, author, message = changed
            raise WriteConflict(
                f"{claim.step}: snapshot {snapshot} by {author} ({message or 'no message'}) "
                f"changed {', '.join(claim.tables)} after this step last committed; what it read "
                "before may be stale, so it runs again on the current snapshot."
            )
    conn.execute(f"CALL {lake}.set_commit_message(?, ?)", [claim.author, claim.step])
    for table, comment in conn.execute(_COMMENTS, {"tables": claim.tables}).fetchall():
        text = "NULL" if comment is None else "'" + comment.replace("'", "''") + "'"
        conn.execute(f"COMMENT ON TABLE {table} IS {text}")
    return claim


def committed(conn: duckdb.DuckDBPyConnection, claim: Claim, lake: str) -> None:
    """Remember where the step's own history ends: the snapshot ``conn`` just committed, and the
    ids its tables have now (a replace in it gave them new ones)."""
    (snapshot,) = conn.execute(f"FROM {lake}.last_committed_snapshot()").fetchone()
    claim.since = claim.since if snapshot is None else snapshot  # None: it changed nothing
    ids = conn.execute(_TABLE_IDS.format(lake=lake), {"tables": claim.tables}).fetchall()
    claim.ids = [i for (i,) in ids]
