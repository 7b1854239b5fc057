"""The quarantine's lifecycle: a quarantined file stays open until it is resolved.

A file is quarantined at landing (outside every source folder: ``_unknown``) or when formatting
cannot read it (``formatted.file_outcomes`` status ``quarantined``). It stays open, run after run,
until either

- a fixed file is delivered again under the same name and formatted (for a stray file: under the
  same name or with the same content, in any source folder), or
- someone acknowledges it: ``dp quarantine ack <source> <file> --reason ...`` appends a row to
  ``landing.quarantine_acks`` (who, when, why), never updated nor deleted: the audit.

``open_quarantine`` is the one query of what is open: the formatted zone's ``no_quarantined_files``
check, ``dp quarantine`` and ``dp summary`` all read it.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandera.polars as pa
import polars as pl

from dp_assets.landing.schema import UNKNOWN_SOURCE
from dp_assets.resources.tables import ensure_table, insert, table_exists
from dp_assets.sources.schema import UtcTimestamp

ACKS = "landing.quarantine_acks"
ACK_COMMAND = "dp quarantine ack {source} {file} --reason '...'"


class QuarantineAck(pa.DataFrameModel):
    """Someone decided a quarantined file needs nothing more (audit, one row per file acknowledged)."""

    source: str = pa.Field(description="Raw source the file was delivered to (_unknown for strays)")
    file_sha256: str = pa.Field(description="SHA-256 of the quarantined file")
    original_name: str = pa.Field(description="File name as delivered")
    reason: str = pa.Field(description="Why it needs nothing more, as given to `dp quarantine ack`")
    acknowledged_by: str = pa.Field(description="Who acknowledged it")
    acknowledged_at: UtcTimestamp = pa.Field(description="When, UTC")

    class Config:
        strict = True


# Every quarantined file with its first arrival; outcomes only once the formatted zone has run.
_QUARANTINED = """
    SELECT source, sha256 AS file_sha256, original_name, quarantine_reason AS reason,
           arrival_time, landed_at
    FROM landing.deliveries WHERE quarantine_reason IS NOT NULL AND NOT redelivery
"""
_FROM_OUTCOMES = """
    UNION ALL
    SELECT o.source, o.file_sha256, o.original_name, o.reason, d.arrival_time, d.landed_at
    FROM formatted.file_outcomes o
    JOIN landing.deliveries d ON d.source = o.source AND d.sha256 = o.file_sha256 AND NOT d.redelivery
    WHERE o.status = 'quarantined'
"""
# A file of the same name landed since (or in the same run) and formatted resolves a quarantine;
# for a stray (``_unknown``), the same name or content formatted in any source folder. Landing
# order, not arrival_time: that is the inbox file's mtime, which the sender sets (``cp -p``).
_RESOLVED = f"""
    SELECT 1 FROM formatted.file_outcomes f
    JOIN landing.deliveries fd ON fd.source = f.source AND fd.sha256 = f.file_sha256
                              AND NOT fd.redelivery
    WHERE f.status = 'formatted' AND fd.landed_at >= q.landed_at
      AND (f.source = q.source OR q.source = '{UNKNOWN_SOURCE}')
      AND (f.original_name = q.original_name
           OR (q.source = '{UNKNOWN_SOURCE}' AND f.file_sha256 = q.file_sha256))
"""


def _quarantined(conn: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """The quarantined files' query and the condition of those still open, for the tables that
    exist so far."""
    outcomes = table_exists(conn, "formatted.file_outcomes")
    query = _QUARANTINED + (_FROM_OUTCOMES if outcomes else "")
    open_ = []
    if outcomes:
        open_.append(f"NOT EXISTS ({_RESOLVED})")
    if table_exists(conn, ACKS):
        open_.append(
            f"NOT EXISTS (SELECT 1 FROM {ACKS} a "
            "WHERE a.source = q.source AND a.file_sha256 = q.file_sha256)"
        )
    return query, " AND ".join(open_) or "true"


def open_quarantine(conn: duckdb.DuckDBPyConnection, source: str | None = None) -> pl.DataFrame:
    """Quarantined files not yet resolved (of one source, or all), oldest first: source,
    original_name, file_sha256, reason, arrival_time."""
    if not table_exists(conn, "landing.deliveries"):
        return pl.DataFrame(
            schema={
                "source": pl.String,
                "original_name": pl.String,
                "file_sha256": pl.String,
                "reason": pl.String,
                "arrival_time": pl.Datetime("us", "UTC"),
            }
        )
    query, still_open = _quarantined(conn)
    return conn.execute(
        f"SELECT source, original_name, file_sha256, reason, arrival_time FROM ({query}) q "
        f"WHERE {still_open} AND ($source IS NULL OR q.source = $source) "
        "ORDER BY arrival_time, source, original_name",
        {"source": source},
    ).pl()


def acknowledge(
    conn: duckdb.DuckDBPyConnection, source: str, file: str, reason: str, by: str
) -> pl.DataFrame:
    """Record the open quarantined files of ``source`` named ``file`` (or whose hash starts with
    it, 8 characters at least) as acknowledged; returns the rows written (none when nothing open matches)."""
    ensure_table(conn, ACKS, QuarantineAck)
    by_hash = len(file) >= 8 and pl.col("file_sha256").str.starts_with(file.lower())
    matches = open_quarantine(conn, source).filter((pl.col("original_name") == file) | by_hash)
    rows = matches.select(
        "source",
        "file_sha256",
        "original_name",
        reason=pl.lit(reason),
        acknowledged_by=pl.lit(by),
        acknowledged_at=pl.lit(dt.datetime.now(dt.UTC)),
    )
    insert(conn, ACKS, rows)
    return rows
