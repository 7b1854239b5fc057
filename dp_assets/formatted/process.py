"""Format one landed file: decode, parse, homogenize, then split rows from rejects by the schema.

Pure: bytes in, frames out; no Dagster, no I/O. Every input record ends in exactly one of ``rows``
or ``rejects``, or the whole file is quarantined with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl

from dp_assets.formatted.schema import Reject
from dp_assets.sources.base import FileContext, Source, Unparseable, decode

REJECT_COLUMNS = list(Reject.to_schema().columns)


@dataclass
class FileResult:
    rows: pl.DataFrame
    rejects: pl.DataFrame
    records_in: int = 0
    notes: list[str] = field(default_factory=list)
    quarantine_reason: str | None = None


def format_file(source: Source, data: bytes, ctx: FileContext) -> FileResult:
    try:
        text, notes = decode(data, source.physical.encoding)
        parsed = source.parse(text)
    except Unparseable as error:
        return FileResult(
            rows=empty_frame(source.schema), rejects=empty_frame(Reject), quarantine_reason=str(error)
        )
    typed = source.homogenize(parsed.records, ctx)
    rows, rejects = split_valid(typed, source.schema, source.key)
    return FileResult(rows, rejects, typed.height, notes + parsed.notes)


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
        frame = frame.join(failures, on="_i", how="left").with_columns(
            reject_reason=pl.coalesce("reject_reason", "reason")
        ).drop("reason")
    # Within one file a key must be unique: a later record with the same key is a duplicate.
    first = pl.col("record_no").first().over(pl.col("reject_reason").is_null(), *key)
    frame = frame.with_columns(
        reject_reason=pl.when(pl.col("reject_reason").is_null() & (pl.col("record_no") != first))
        .then(pl.format("duplicate of record {} (same {})", first, pl.lit(", ".join(key))))
        .otherwise(pl.col("reject_reason"))
    )
    ok = pl.col("reject_reason").is_null()
    rows = frame.filter(ok).select(columns)
    rejects = frame.filter(~ok).select(
        "file_sha256", "record_no", pl.col("raw_record").fill_null(""), pl.col("reject_reason").alias("reason")
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
        raise TypeError(f"{schema.__name__}: schema-level failures\n{cases.filter(pl.col('index').is_null())}")
    reason = (
        pl.when(pl.col("schema_context") == "DataFrameSchema")
        .then(pl.col("check"))
        .when(pl.col("check") == "not_nullable")
        .then(pl.format("{}: missing value", pl.col("column")))
        .otherwise(pl.format("{}: failed {} (got {})", pl.col("column"), pl.col("check"), pl.col("failure_case")))
    )
    return (
        cases.select(pl.col("index").cast(pl.UInt32), reason.alias("reason"))
        .group_by("index", maintain_order=True)
        .agg(pl.col("reason").str.join("; "))
    )


def empty_frame(schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    return pl.DataFrame(schema={n: c.dtype.type for n, c in schema.to_schema().columns.items()})
