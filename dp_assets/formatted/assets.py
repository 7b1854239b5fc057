"""Dagster wiring of the formatted zone: one asset (plus its rejects) per source, from one factory.

Each run formats only the landed files it has not formatted yet with the current transform version
(new files, late files, or everything after a transform change), replacing their rows by file hash:
re-running never duplicates, and late files slot in wherever their timestamps fall. Files are
written in batches, each committed with its files' outcomes, so a long backlog keeps memory flat
and a stopped step resumes where it stopped. A large file is read and written in parts, all in the
transaction that commits its outcome, so memory stays flat with one file too.
"""

import datetime as dt
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from dp_assets.failpoints import crash_point
from dp_assets.formatted.process import (
    CHUNK_BYTES,
    batched_by_records,
    format_batch,
    merge_outcomes,
    ordered_map,
    read_landed,
)
from dp_assets.formatted.schema import FileOutcome, Reject, reason_group
from dp_assets.landing.assets import MANIFEST
from dp_assets.landing.quarantine import ACK_COMMAND, open_quarantine
from dp_assets.landing.schema import Delivery
from dp_assets.landing.store import quarantine
from dp_assets.metadata import (
    OWNER,
    check_stored,
    failed_last_time,
    WAREHOUSE_POOL,
    markdown,
    one_line,
    schema_check,
    spec_metadata,
    table_metadata,
    schema_check_spec,
)
from dp_assets.resources import DataDir, Warehouse
from dp_assets.resources.warehouse import atomic
from dp_assets.resources.tables import ensure_table, insert, replace_where, row_count
from dp_assets.sources.base import FileContext, Source

OUTCOMES = "formatted.file_outcomes"
# Files are validated and written in batches of about this many records: Pandera and DuckDB cost
# mostly per call, and a bounded batch keeps memory flat however long the backlog.
BATCH_RECORDS = 500_000
READ_AHEAD = 2 * (os.cpu_count() or 2)  # files read in parallel, in order, a bounded few at once


class FormatConfig(Config):
    reformat_all: bool = False
    """Format every landed file again, not only pending ones (e.g. after fixing a parser)."""
    batch_records: int = BATCH_RECORDS
    """Records validated, written and committed together (whole files; memory grows with it)."""
    chunk_bytes: int = CHUNK_BYTES
    """A line-based file larger than this is read and validated in parts of about this size
    (committed together, with the file's outcome)."""


PENDING = f"""
SELECT d.sha256, d.original_name, d.landed_path, o.file_sha256 IS NOT NULL AS formatted_before
FROM {MANIFEST} d
LEFT JOIN {OUTCOMES} o ON o.source = d.source AND o.file_sha256 = d.sha256
WHERE d.source = $source AND NOT d.redelivery
  AND (o.file_sha256 IS NULL OR o.transform_version <> $version OR $all)
ORDER BY d.arrival_time, d.original_name
"""

# A source's outcomes of some files: keyed by source too, since identical bytes (an empty file)
# can arrive as two sources.
OF_FILES = "source = ? AND file_sha256 IN (SELECT unnest(?))"


def insert_spooled(conn, table: str, frame: pl.DataFrame, spool: Path) -> None:
    """``insert`` through a Parquet file, for a transaction that goes on for many more parts:
    DuckDB holds on to the memory of every frame inserted from polars until the commit (1 GB for
    the 8.8 M rows of a 300 MB file, in 20 inserts, measured), not to that of a file it read."""
    if frame.height:
        frame.write_parquet(spool, compression="uncompressed", statistics=False)
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet('{spool}')")
        spool.unlink()


def quarantine_check(
    key: AssetKey, source: str, still_open: pl.DataFrame, this_run: int | None, folder: Path
) -> AssetCheckResult:
    """``no_quarantined_files`` from the source's open quarantine (``open_quarantine``): it fails
    (warn) while any file is unresolved, whichever run quarantined it. ``this_run``: the files
    quarantined by this run (None outside a run: after ``dp quarantine ack``)."""
    first = still_open.row(0, named=True) if still_open.height else None
    if first is None:
        description = "no file of this source is in quarantine unresolved"
    else:
        name, reason = first["original_name"], first["reason"]
        more = f" and {still_open.height - 1} more" if still_open.height > 1 else ""
        head = f"{name}{more} in quarantine: "
        tail = f"; deliver it again fixed, or {ACK_COMMAND.format(source=source, file=name)}"
        room = max(320 - len(head) - len(tail), 20)  # one line: Dagster shows it beside the check
        description = head + one_line(reason, room) + tail
    return AssetCheckResult(
        check_name="no_quarantined_files",
        asset_key=key,
        passed=first is None,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "open quarantined files": MetadataValue.int(still_open.height),
            **({} if this_run is None else {"quarantined": MetadataValue.int(this_run)}),
            "files": markdown(
                still_open.select("original_name", "reason", "arrival_time"),
                rows=max(still_open.height, 1),
            ),
            "quarantine dir": MetadataValue.path(str(folder)),
        },
    )


def build_formatted_asset(source: Source):
    table, rejects_table = f"formatted.{source.name}", f"formatted.{source.name}_rejects"
    key, rejects_key = (
        AssetKey(["formatted", source.name]),
        AssetKey(["formatted", f"{source.name}_rejects"]),
    )
    common = dict(
        group_name="formatted",
        owners=[OWNER],
        code_version=source.version,
        deps=[["landing", source.name]],
    )

    @multi_asset(
        name=f"formatted_{source.name}",
        specs=[
            AssetSpec(
                key,
                description=f"{source.description}, homogenized to the canonical model "
                f"({table}). One row per valid record; rows keep their file hash and record number.",
                kinds={"duckdb", "polars", "pandera"},
                metadata=spec_metadata(source.schema, table),
                **common,
            ),
            AssetSpec(
                rejects_key,
                description=f"Records of {source.name} that failed parsing or the schema, each with "
                f"its reason, file and record number ({rejects_table}).",
                kinds={"duckdb", "polars"},
                metadata=spec_metadata(Reject, rejects_table),
                **common,
            ),
        ],
        check_specs=[
            schema_check_spec(key),
            schema_check_spec(rejects_key, "Rejects are well-formed"),
            AssetCheckSpec(
                "file_outcomes",
                asset=key,
                blocking=True,
                description=f"This run's rows of {OUTCOMES} (all of them after a failure) pass "
                "their schema and account for every record",
            ),
            AssetCheckSpec(
                "no_quarantined_files",
                asset=key,
                description="No file of the source sits in quarantine unresolved; fails (warn) "
                "listing them, while other files keep flowing, until each is delivered again "
                "fixed or acknowledged (`dp quarantine ack`)",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def _formatted(
        context: AssetExecutionContext,
        config: FormatConfig,
        data_dir: DataDir,
        warehouse: Warehouse,
    ):
        settings = data_dir.settings
        pii_key = settings.pii_key() if source.pii_columns else b""
        with warehouse.get_connection() as conn, ExitStack() as stack:
            with atomic(conn):
                for name, schema in (
                    (MANIFEST, Delivery),
                    (table, source.schema),
                    (rejects_table, Reject),
                    (OUTCOMES, FileOutcome),
                ):
                    ensure_table(conn, name, schema)
                pending = conn.execute(
                    PENDING,
                    {"source": source.name, "version": source.version, "all": config.reformat_all},
                ).fetchall()
            crash_point(f"{table}:pending")  # what to format read, nothing written yet

            def read_one(file):
                sha, name, landed_path, _ = file
                path, ctx = settings.data_dir / landed_path, FileContext(sha, name, pii_key)
                return read_landed(source, path, ctx, config.chunk_bytes)

            def reads():
                # polars works without the GIL: files are read on every core, a few ahead (a large
                # file's parts one after the other, when its turn comes).
                for parts, (sha, name, landed_path, _) in zip(
                    ordered_map(read_one, pending, READ_AHEAD), pending
                ):
                    for read in parts:
                        if read.quarantine_reason:
                            quarantine(
                                settings,
                                source.name,
                                Path(landed_path),
                                sha,
                                name,
                                read.quarantine_reason,
                            )
                            context.log.warning(f"quarantined {name}: {read.quarantine_reason}")
                        yield read

            processed_at = dt.datetime.now(dt.UTC)
            # Only a file formatted before has rows to replace: deleting by the hashes of new
            # files would scan the whole table per batch for nothing (quadratic on a backlog).
            again = {sha for sha, *_, before in pending if before}
            outcomes = []
            earlier: dict[str, pl.DataFrame] = {}  # keys kept from the parts of a file so far
            batches = batched_by_records(reads(), config.batch_records)
            # Beside the warehouse, owner-only (the rows are personal data), emptied by the next
            # step when a killed one left a part behind.
            spool = settings.data_dir / "spool" / source.name
            shutil.rmtree(spool, ignore_errors=True)
            spool.mkdir(parents=True, mode=0o700)
            stack.callback(shutil.rmtree, spool, True)
            for batch in batches:
                # A batch commits with its files' outcomes: a step stopped midway keeps the files
                # it finished and leaves the rest pending, and memory stays flat (DuckDB holds a
                # transaction's appended rows in memory until the commit). A batch ending within
                # a file read in parts is followed by the next in the same transaction.
                with atomic(conn):
                    unit = []  # this transaction's outcome rows, a batch at a time
                    while True:
                        # Rows of these files written before this batch: their formatting before,
                        # or parts of theirs voided by a restart.
                        shas = [r.ctx.sha256 for r in batch if r.ctx.sha256 in again or r.restart]
                        again.difference_update(shas)
                        for r in batch:
                            if r.restart:
                                earlier.pop(r.ctx.sha256, None)
                                unit = [
                                    u.filter(pl.col("file_sha256") != r.ctx.sha256) for u in unit
                                ]
                        rows, rejects, batch_outcomes = format_batch(
                            source, batch, processed_at, earlier
                        )
                        unit.append(batch_outcomes)
                        last = not batch or batch[-1].final  # the transaction's last batch
                        for t, frame in ((table, rows), (rejects_table, rejects)):
                            if last:
                                replace_where(conn, t, "file_sha256", shas, frame)
                            else:
                                replace_where(conn, t, "file_sha256", shas, frame.clear())
                                insert_spooled(conn, t, frame, spool / "part.parquet")
                        if last:
                            break
                        crash_point(f"{table}:part")  # a part written, its file not finished
                        batch = next(batches)
                    batch_outcomes = merge_outcomes(unit)
                    conn.execute(
                        f"DELETE FROM {OUTCOMES} WHERE {OF_FILES}",
                        [source.name, batch_outcomes["file_sha256"].to_list()],
                    )
                    insert(conn, OUTCOMES, batch_outcomes)
                    crash_point(f"{table}:written")  # rows written, batch not committed
                outcomes.append(batch_outcomes)
            outcomes = pl.concat(outcomes)
            shas = outcomes["file_sha256"].to_list()
            counts = {t: row_count(conn, t) for t in (table, rejects_table)}
            written = {
                table: int(outcomes["rows_formatted"].sum() or 0),
                rejects_table: int(outcomes["rows_rejected"].sum() or 0),
            }
            # The checks validate what was stored this run, read back through DuckDB's types;
            # a check that failed last time validates every stored row, until they pass.
            conn.register(
                "_run_files", pl.DataFrame({"file_sha256": shas}, schema={"file_sha256": pl.String})
            )
            everything = {
                t: failed_last_time(context.instance, k)
                for t, k in ((table, key), (rejects_table, rejects_key))
            }

            def this_run(t: str) -> str:
                # When every stored row is this run's (a first build), no filter is needed: the
                # join would cost more than reading the rows.
                if counts[t] == written[t] or everything[t]:
                    return f"SELECT * FROM {t}"
                return (
                    f"SELECT * FROM {t} t SEMI JOIN _run_files f ON f.file_sha256 = t.file_sha256"
                )

            rows_check, _ = check_stored(conn, this_run(table), source.schema, asset_key=key)
            stored_rejects = conn.execute(this_run(rejects_table)).pl()
            stored_outcomes = (
                conn.execute(f"SELECT * FROM {OUTCOMES} WHERE source = ?", [source.name])
                if failed_last_time(context.instance, key, "file_outcomes")
                else conn.execute(f"SELECT * FROM {OUTCOMES} WHERE {OF_FILES}", [source.name, shas])
            ).pl()
            previews = {
                t: conn.execute(f"SELECT * FROM {t} LIMIT 5").pl() for t in (table, rejects_table)
            }
            reasons = conn.execute(
                f"SELECT {reason_group()} AS reason, count(*) AS rows "
                f"FROM {rejects_table} GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
            ).pl()
            totals = conn.execute(
                f"SELECT count(*) FILTER (status = 'formatted'), "
                f"count(*) FILTER (status = 'quarantined'), coalesce(sum(records_in), 0) "
                f"FROM {OUTCOMES} WHERE source = ?",
                [source.name],
            ).fetchone()
            still_open = open_quarantine(conn, source.name)

        quarantined = outcomes.filter(pl.col("status") == "quarantined")
        # This run's figures beside the table's: a run with nothing new reads 0 files, not an
        # empty source.
        run_stats = {
            "files formatted": MetadataValue.int(outcomes.height - quarantined.height),
            "total files formatted": MetadataValue.int(totals[0]),
            "files quarantined": MetadataValue.int(quarantined.height),
            "total files quarantined": MetadataValue.int(totals[1]),
            "open quarantined files": MetadataValue.int(still_open.height),
            "records in": MetadataValue.int(int(outcomes["records_in"].sum() or 0)),
            "total records in": MetadataValue.int(int(totals[2])),
            "rows formatted": MetadataValue.int(int(outcomes["rows_formatted"].sum() or 0)),
            "total rows formatted": MetadataValue.int(counts[table]),
            "rows rejected": MetadataValue.int(written[rejects_table]),
            "total rows rejected": MetadataValue.int(counts[rejects_table]),
        }
        yield MaterializeResult(
            asset_key=key, metadata={**table_metadata(counts[table], previews[table]), **run_stats}
        )
        yield MaterializeResult(
            asset_key=rejects_key,
            metadata={
                **table_metadata(counts[rejects_table], previews[rejects_table]),
                "rejects by reason": markdown(reasons, 10),
            },
        )
        yield rows_check
        yield schema_check(Reject, stored_rejects, asset_key=rejects_key)
        yield schema_check(FileOutcome, stored_outcomes, "file_outcomes", asset_key=key)
        yield quarantine_check(
            key, source.name, still_open, quarantined.height, settings.quarantine / source.name
        )

    return _formatted
