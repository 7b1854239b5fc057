"""Format landed files: decode, parse, homogenize each file, then split rows from rejects.

Pure apart from reading the landed file: bytes in, frames out; no Dagster. Every input record ends
in exactly one of ``rows`` or ``rejects``, or the whole file is quarantined with a reason. Reading is
per file, and a large line-based file is read in parts of a bounded size (``read_landed``), so that
memory does not grow with one file; validation runs over a batch of files (or parts) at once,
because Pandera's cost is mostly per call, not per row.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import BinaryIO, TypeVar

import pandera.polars as pa
import polars as pl

from dp_assets.formatted.schema import FileOutcome, Reject
from dp_assets.frames import empty_frame, polars_schema
from dp_assets.sources.base import FileContext, Source, Unparseable, decode, merge_notes

T, R = TypeVar("T"), TypeVar("R")

# A line-based file larger than this is read in parts of about this size. 16 MB is about 500k
# vendor A records, the size of a validation batch: each part's frames take a few times its bytes.
CHUNK_BYTES = 16 << 20
LINE_FORMATS = ("csv", "jsonl")  # one record per line (in CSV, a line break outside quotes)


@dataclass
class ReadFile:
    """One file decoded, parsed and homogenized (``typed``), or the reason it could not be; or
    one part of a file read in parts (``final`` on its last, whose ``notes`` are the file's)."""

    ctx: FileContext
    typed: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    quarantine_reason: str | None = None
    final: bool = True
    # The file read whole after some of its parts were yielded: those parts are void.
    restart: bool = False

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


def read_file(source: Source, data: bytes, ctx: FileContext, by_name: bool = True) -> ReadFile:
    """``by_name``: a file whose name does not match the source's pattern is quarantined unread
    (erasure reads every landed file of the source, whatever its name)."""
    if by_name and (reason := unexpected_name(source, ctx.original_name)):
        return ReadFile(ctx, quarantine_reason=reason)
    try:
        text, notes = decode(data, source.physical.encoding)
        parsed = source.parse(text)
    except Unparseable as error:
        return ReadFile(ctx, quarantine_reason=str(error))
    return ReadFile(ctx, source.homogenize(parsed.records, ctx), notes + parsed.notes)


def unexpected_name(source: Source, name: str) -> str | None:
    """Why a file in the source's folder is not one of its files: its name does not match the
    declared pattern (kept in the landing, quarantined here: nothing delivered is dropped)."""
    if fnmatch.fnmatchcase(PurePath(name).name, source.pattern):
        return None
    return f"file name {name!r} does not match the source's pattern {source.pattern!r}"


def read_landed(
    source: Source, path: Path, ctx: FileContext, chunk_bytes: int = CHUNK_BYTES
) -> Iterable[ReadFile]:
    """The landed file at ``path`` read whole (a list of one, read now) or, when it is line-based
    plain text larger than ``chunk_bytes``, in parts (read lazily, in order)."""
    big = path.stat().st_size > chunk_bytes and not unexpected_name(source, ctx.original_name)
    if source.physical.format in LINE_FORMATS and big:
        return _read_parts(source, path, ctx, chunk_bytes)
    return [read_file(source, path.read_bytes(), ctx)]


def _read_parts(
    source: Source, path: Path, ctx: FileContext, chunk_bytes: int
) -> Iterator[ReadFile]:
    """A file in parts that give the same records, reasons and notes as the file read whole.

    Each part ends at a line break (outside quotes in CSV), so only the real last line can be
    unterminated; a delimited part after the first is parsed with the file's header line before
    it, and its record numbers continue the file's. The homogenizer keeps what spans parts in
    ``ctx.carry``. Whatever the parts cannot say like the whole file does (a problem that
    quarantines the file, a byte-order mark in the middle) is left to reading the file whole.
    """
    ctx = replace(ctx, carry={})
    with path.open("rb") as file:
        chunks = line_chunks(file, chunk_bytes, quoted=source.physical.format == "csv")
        header, lines_before, notes, yielded = "", 0, [], False
        for number, chunk in enumerate(chunks):
            if number == 0 and not _plain_text(chunk):  # compressed, UTF-16 or binary
                break
            text = None
            try:
                text, decode_notes = decode(chunk, source.physical.encoding)
                if number and decode_notes:
                    break
                notes = merge_notes([*notes, *decode_notes])
                if number == 0 and source.physical.format == "csv" and source.physical.header:
                    header = text[: text.find("\n") + 1]
                    text, lines_before = text[len(header) :], 1
                parsed = source.parse(header + text)
            except Unparseable:
                # A part of blank lines only (the header alone, in the first) has no records.
                if (text is not None and text.strip() == "") or (number and chunk.isspace()):
                    lines_before += chunk.count(b"\n") if text is None else text.count("\n")
                    continue
                break
            shift = lines_before - (1 if header else 0)
            records = parsed.records.with_columns(pl.col("record_no") + shift)
            notes = merge_notes([*notes, *parsed.notes])
            lines_before += text.count("\n")
            yield ReadFile(ctx, source.homogenize(records, ctx), final=False)
            yielded = True
        else:
            if yielded:  # the file's end: no records, its notes; the outcome is due
                yield ReadFile(ctx, notes=notes)
                return
    whole = read_file(source, path.read_bytes(), replace(ctx, carry=None))
    whole.restart = yielded
    yield whole


def _plain_text(head: bytes) -> bool:
    """Whether a file starting with ``head`` can be cut at its line breaks: not gzip, no UTF-16 or
    UTF-32 byte-order mark, no NUL byte (UTF-16 text without one, or binary)."""
    return not head.startswith((b"\x1f\x8b", b"\xff\xfe", b"\xfe\xff")) and b"\x00" not in head


def line_chunks(file: BinaryIO, size: int, quoted: bool = False) -> Iterator[bytes]:
    """The file in chunks of about ``size`` bytes or more, each ending just after a line break,
    the last with whatever the file ends with. ``quoted``: only at a line break outside double
    quotes (RFC 4180: a quoted field may hold one, and ``""`` inside it keeps the count even)."""
    rest = b""
    while block := file.read(size):
        data = rest + block
        cut = _last_break(data, quoted)
        chunk, rest = data[:cut], data[cut:]
        if chunk:
            yield chunk
    if rest:
        yield rest


def _last_break(data: bytes, quoted: bool) -> int:
    """The offset just after the last line break of ``data`` (with ``quoted``, the last one after
    an even number of quotes; ``data`` starts outside quotes), or 0 when there is none."""
    end = data.rfind(b"\n")
    if not quoted or end < 0 or b'"' not in data:
        return end + 1
    odd = data.count(b'"', 0, end) & 1
    while odd and end >= 0:
        previous = data.rfind(b"\n", 0, end)
        odd ^= data.count(b'"', previous + 1, end) & 1
        end = previous
    return end + 1


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
    """Group files (or parts) into batches of at least ``limit`` records (the last one smaller,
    maybe empty). A file read whole again (``restart``) replaces its parts in the batch."""
    batch, records = [], 0
    for read in reads:
        if read.restart:
            batch = [r for r in batch if r.ctx.sha256 != read.ctx.sha256]
            records = sum(r.records_in for r in batch)
        batch.append(read)
        records += read.records_in
        if records >= limit:
            yield batch
            batch, records = [], 0
    yield batch


def format_batch(
    source: Source,
    reads: list[ReadFile],
    processed_at: dt.datetime,
    earlier: dict[str, pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Validate a batch of read files (or parts) together: (rows, rejects, one outcome row per
    file; ``merge_outcomes`` adds up a file's rows from several batches).

    ``earlier``: per file read in parts, the key and record number of each row its earlier
    batches kept, so that the first record of a key in the file wins across parts; updated here.
    """
    earlier = {} if earlier is None else earlier
    files: dict[str, list[ReadFile]] = {}
    for read in reads:
        files.setdefault(read.ctx.sha256, []).append(read)
    typed = [r.typed for r in reads if r.typed is not None]
    if typed:
        known = {sha: kept for sha, kept in earlier.items() if sha in files}
        rows, rejects = split_valid(pl.concat(typed), source.schema, source.key, known)
    else:
        rows, rejects = empty_frame(source.schema), empty_frame(Reject)
    for sha, parts in files.items():
        if parts[-1].final:
            earlier.pop(sha, None)
        elif source.key:
            kept = rows.filter(pl.col("file_sha256") == sha).select(*source.key, "record_no")
            earlier[sha] = pl.concat([earlier[sha], kept]) if sha in earlier else kept
    formatted = dict(rows.group_by("file_sha256").len().iter_rows())
    rejected = dict(rejects.group_by("file_sha256").len().iter_rows())
    outcomes = pl.DataFrame(
        [
            {
                "source": source.name,
                "file_sha256": sha,
                "original_name": parts[-1].ctx.original_name,
                "status": "quarantined" if parts[-1].quarantine_reason else "formatted",
                "records_in": sum(p.records_in for p in parts),
                "rows_formatted": formatted.get(sha, 0),
                "rows_rejected": rejected.get(sha, 0),
                "reason": parts[-1].quarantine_reason,
                "notes": "; ".join(parts[-1].notes) or None,
                "transform_version": source.version,
                "processed_at": processed_at,
            }
            for sha, parts in files.items()
        ],
        schema=polars_schema(FileOutcome),
    )
    return rows, rejects, outcomes


def merge_outcomes(outcomes: list[pl.DataFrame]) -> pl.DataFrame:
    """The outcome rows of several batches as one row per file: a file read in parts has a row
    from each batch it spans; its counts add up, the rest is its last batch's."""
    frame = pl.concat(outcomes)
    if frame["file_sha256"].is_unique().all():
        return frame
    counts = ["records_in", "rows_formatted", "rows_rejected"]
    return (
        frame.group_by("source", "file_sha256", maintain_order=True)
        .agg(pl.col(counts).sum(), pl.exclude(counts).last())
        .select(frame.columns)
        .cast(frame.schema)
    )


def split_valid(
    typed: pl.DataFrame,
    schema: type[pa.DataFrameModel],
    key: tuple[str, ...],
    earlier: dict[str, pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows that pass the schema (first of each key wins) and rejects with every reason found.

    ``earlier``: per file, the key and ``record_no`` of the rows kept from its earlier parts: a
    valid record with one of those keys is a duplicate of that row.
    """
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
    # Only repeated keys go through the window that finds each one's first record. Without a key
    # (a snapshot of records that stand alone) no record duplicates another.
    valid = frame.filter(pl.col("reject_reason").is_null())
    later = (
        valid.filter(valid.select("file_sha256", *key).is_duplicated() if key else False)
        .with_columns(first=pl.col("record_no").first().over("file_sha256", *key))
        .filter(pl.col("record_no") != pl.col("first"))
        .select("_i", "first")
    )
    # A key kept from an earlier part of the file came first.
    for sha, kept in (earlier or {}).items():
        across = (
            valid.filter(pl.col("file_sha256") == sha)
            .select("_i", *key)
            .join(kept.rename({"record_no": "first"}), on=key)
            .select("_i", "first")
        )
        later = pl.concat([later.filter(~pl.col("_i").is_in(across["_i"].implode())), across])
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
