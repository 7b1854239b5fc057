"""Format landed files: decode, parse, homogenize each file, then split rows from rejects.

Pure: bytes in, frames out; no Dagster, no I/O. Every input record ends in exactly one of ``rows``
or ``rejects``, or the whole file is quarantined with a reason. Reading is per file; validation
runs over a batch of files at once, because Pandera's cost is mostly per call, not per row.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pandera.polars as pa
import polars as pl

from dp_assets.formatted.schema import FileOutcome, Reject
from dp_assets.frames import empty_frame, polars_schema
from dp_assets.sources.base import FileContext, Source, Unparseable, decode

T, R = TypeVar("T"), TypeVar("R")


@dataclass
class ReadFile:
    """One file decoded, parsed and homogenized (``typed``), or the reason it could not be."""

    ctx: FileContext
    typed: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    quarantine_reason: str | None = None

    @property
    def records_in(self) -> int:
        return 0 if self.typed is None else self.typed.height


@dataclass
class FileResult:
    rows: pl.DataFrame
    rejects: pl.DataFrame
    records_in: int = 0
    notes: list[str] = field(default_factory=list)
    quarantine_reason: str | None = None


def read_file(source: Source, data: bytes, ctx: FileContext) -> ReadFile:
    try:
        text, notes = decode(data, source.physical.encoding)
        parsed = source.parse(text)
    except Unparseable as error:
        return ReadFile(ctx, quarantine_reason=str(error))
    return ReadFile(ctx, source.homogenize(parsed.records, ctx), notes + parsed.notes)


def format_file(source: Source, data: bytes, ctx: FileContext) -> FileResult:
    """One file end to end."""
    read = read_file(source, data, ctx)
    rows, rejects, _ = format_batch(source, [read], dt.datetime.now(dt.UTC))
    return FileResult(rows, rejects, read.records_in, read.notes, read.quarantine_reason)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``map`` on a thread pool, in order, with at most ``ahead`` results pending (memory stays
    bounded however many items)."""
    with ThreadPoolExecutor(max_workers=min(ahead, os.cpu_count() or 2)) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def batched_by_records(reads: Iterable[ReadFile], limit: int) -> Iterator[list[ReadFile]]:
    """Group files into batches of at least ``limit`` records (the last one smaller, maybe empty)."""
    batch, records = [], 0
    for read in reads:
        batch.append(read)
        records += read.records_in
        if records >= limit:
            yield batch
            batch, records = [], 0
    yield batch


def format_batch(
    source: Source, reads: list[ReadFile], processed_at: dt.datetime
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Validate a batch of read files together: (rows, rejects, one outcome row per file)."""
    typed = [r.typed for r in reads if r.typed is not None]
    if typed:
        rows, rejects = split_valid(pl.concat(typed), source.schema, source.key)
    else:
        rows, rejects = empty_frame(source.schema), empty_frame(Reject)
    formatted = dict(rows.group_by("file_sha256").len().iter_rows())
    rejected = dict(rejects.group_by("file_sha256").len().iter_rows())
    outcomes = pl.DataFrame(
        [
            {
                "source": source.name,
                "file_sha256": r.ctx.sha256,
                "original_name": r.ctx.original_name,
                "status": "quarantined" if r.quarantine_reason else "formatted",
                "records_in": r.records_in,
                "rows_formatted": formatted.get(r.ctx.sha256, 0),
                "rows_rejected": rejected.get(r.ctx.sha256, 0),
                "reason": r.quarantine_reason,
                "notes": "; ".join(r.notes) or None,
                "transform_version": source.version,
                "processed_at": processed_at,
            }
            for r in reads
        ],
        schema=polars_schema(FileOutcome),
    )
    return rows, rejects, outcomes


def split_valid(
    typed: pl.DataFrame, schema: type[pa.DataFrameModel], key: tuple[str, ...]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows that pass the schema (first of each key wins) and rejects with every reason found."""
    columns = list(schema.to_schema().columns)
    frame = typed.with_row_index("_i")
    candidates = frame.filter(pl.col("reject_reason").is_null())
    failures = schema_failures(candidates.select(columns), schema)
    if failures.height:
        positions = candidates.select("_i").with_row_index("_pos")
        failures = failures.join(positions, left_on="index", right_on="_pos").select("_i", "reason")
        frame = (
            frame.join(failures, on="_i", how="left", maintain_order="left")
            .with_columns(reject_reason=pl.coalesce("reject_reason", "reason"))
            .drop("reason")
        )
    # Within one file a key must be unique: a later valid record with the same key is a duplicate.
    # Only repeated keys go through the window that finds each one's first record.
    valid = frame.filter(pl.col("reject_reason").is_null())
    later = (
        valid.filter(valid.select("file_sha256", *key).is_duplicated())
        .with_columns(first=pl.col("record_no").first().over("file_sha256", *key))
        .filter(pl.col("record_no") != pl.col("first"))
        .select("_i", "first")
    )
    duplicate = pl.format("duplicate of record {} (same {})", "first", pl.lit(", ".join(key)))
    frame = frame.join(later, on="_i", how="left", maintain_order="left").with_columns(
        reject_reason=pl.coalesce("reject_reason", duplicate)
    )
    ok = pl.col("reject_reason").is_null()
    rows = frame.filter(ok).select(columns)
    rejects = frame.filter(~ok).select(
        "file_sha256",
        "record_no",
        pl.col("raw_record").fill_null(""),
        pl.col("reject_reason").alias("reason"),
    )
    return rows, rejects


def schema_failures(frame: pl.DataFrame, schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    """One row per failing record: ``index`` (position in ``frame``) and ``reason``.

    A failure not tied to a row (a wrong column type) is a bug in the homogenizer, not bad data,
    so it raises instead of rejecting.
    """
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pl.DataFrame(schema={"index": pl.UInt32, "reason": pl.String})
    if cases["index"].null_count():
        raise TypeError(
            f"{schema.__name__}: schema-level failures\n{cases.filter(pl.col('index').is_null())}"
        )
    reason = (
        pl.when(pl.col("schema_context") == "DataFrameSchema")
        .then(pl.col("check"))
        .when(pl.col("check") == "not_nullable")
        .then(pl.format("{}: missing value", pl.col("column")))
        .otherwise(
            pl.format(
                "{}: failed {} (got {})", pl.col("column"), pl.col("check"), pl.col("failure_case")
            )
        )
    )
    return (
        cases.select(pl.col("index").cast(pl.UInt32), reason.alias("reason"))
        .group_by("index", maintain_order=True)
        .agg(pl.col("reason").str.join("; "))
    )
