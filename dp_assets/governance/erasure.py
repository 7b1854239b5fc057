"""Erasure of one person on request: what to remove and how (pure: no Dagster, no I/O).

A person is found by their platform ``customer_id``; the ``Subject`` holds every value that
identifies their records in raw files and tables (CRM ids, meters, email pseudonyms). Landed files
are rewritten with the person's record lines *blanked*, not deleted: every other line keeps its
bytes and its line number, so ``record_no`` in the formatted zone still points at the right line,
and the readers already skip blank lines. ``governance/erasure_job.py`` carries the plan out.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.exploitation.schema import CUSTOMER_ID_PATTERN
from dp_assets.sources.base import (
    GZIP_MAGIC,
    MAX_DECOMPRESSED_BYTES,
    gunzip,
    record_lines,
    text_encoding,
)
from dp_assets.sources.schema import UtcTimestamp

ERASURE_LOG = "governance.erasure_log"
OBJECT_KINDS = ("landed_file", "unreadable_file", "table", "model")


class ErasureLogEntry(pa.DataFrameModel):
    """One object an erasure changed (or could not inspect): the audit trail of erasure requests."""

    erasure_id: str = pa.Field(description="Id of the erasure request, ERA-<UTC time>-<random>")
    customer_id: str = pa.Field(
        str_matches=CUSTOMER_ID_PATTERN, description="Platform customer id that was erased"
    )
    requested_by: str = pa.Field(description="Who asked for (or carried out) the erasure")
    reason: Optional[str] = pa.Field(
        nullable=True, description="Why, e.g. the ticket of the data subject's request"
    )
    erased_at: UtcTimestamp = pa.Field(description="When the erasure was committed, UTC")
    object_kind: str = pa.Field(
        isin=OBJECT_KINDS,
        description="landed_file (rewritten), unreadable_file (could not be inspected: review by "
        "hand), table (rows deleted) or model (version marked for retraining)",
    )
    object: str = pa.Field(description="Landed path (after the rewrite), table name, or 'model vN'")
    rows_removed: Optional[int] = pa.Field(
        nullable=True, ge=0, description="Records or rows removed from the object"
    )
    sha256_before: Optional[str] = pa.Field(
        nullable=True, description="SHA-256 of a landed file before the rewrite"
    )
    sha256_after: Optional[str] = pa.Field(
        nullable=True, description="SHA-256 of a landed file after the rewrite"
    )
    note: Optional[str] = pa.Field(nullable=True, description="What else to know about the entry")

    class Config:
        strict = True


class UnknownCustomer(ValueError):
    """The customer id names nobody in the warehouse (mistyped, or erased before)."""


@dataclass(frozen=True)
class Subject:
    """Everything that identifies one person's records: per key (a tuple of columns), the values."""

    customer_id: str
    keys: dict[tuple[str, ...], pl.DataFrame]

    def values(self, key: tuple[str, ...]) -> pl.DataFrame | None:
        frame = self.keys.get(key)
        return frame if frame is not None and not frame.is_empty() else None


def matching_records(typed: pl.DataFrame, subject: Subject, keys) -> list[int]:
    """``record_no`` of the records in a read file that are about the subject (any key matching)."""
    found = [
        typed.join(values, on=list(key), how="semi", nulls_equal=False)["record_no"]
        for key in keys
        if (values := subject.values(key)) is not None
    ]
    return sorted(set(pl.concat(found).to_list())) if found else []


def blank_lines(
    data: bytes, line_numbers: set[int], encoding: str = "utf-8", delimiter: str | None = None
) -> bytes:
    """The file with the given 1-based lines emptied (their terminators kept), all else byte-equal.

    Lines are counted like the readers count them (``text_lines``: ending at "\n", in the text
    ``decode`` reads: after a byte-order mark, which also says the encoding, and decompressed). A
    gzip file comes back gzip-compressed again. With the ``delimiter`` of delimited text, a number
    is a record's first line and all the record's lines are emptied: a quoted field can hold line
    breaks.
    """
    if data.startswith(GZIP_MAGIC):  # mtime 0: the same content always gives the same bytes
        plain = gunzip(data, MAX_DECOMPRESSED_BYTES)
        return gzip.compress(blank_lines(plain, line_numbers, encoding, delimiter), mtime=0)
    bom, codec = text_encoding(data, encoding)
    text = data[len(bom) :].decode(codec)
    if delimiter is not None and (spans := record_lines(text, delimiter)):
        line_numbers = {
            n for first in line_numbers for n in range(first, spans.get(first, first) + 1)
        }
    lines = text.split("\n")
    ends = ["\n"] * (len(lines) - 1) + [""]
    if lines[-1] == "":  # nothing after the last terminator
        lines, ends = lines[:-1], ends[:-1]
    if max(line_numbers, default=0) > len(lines):
        raise ValueError(f"line {max(line_numbers)} asked for, the file has {len(lines)} lines")
    kept = [
        ("\r" if line.endswith("\r") else "") + end if number in line_numbers else line + end
        for number, (line, end) in enumerate(zip(lines, ends), start=1)
    ]
    return bom + "".join(kept).encode(codec)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def renamed_for(landed_path: str, old_sha: str, new_sha: str) -> str:
    """Landed names carry the content hash (``<hhmmss>_<sha12>_<name>``): the rewrite's new name."""
    folder, _, name = landed_path.rpartition("/")
    return f"{folder}/{name.replace(f'_{old_sha[:12]}_', f'_{new_sha[:12]}_', 1)}"


def erased_originals(
    rewrites: dict[str, str], landed: dict[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """(source, content hash before an erasure) -> landed path of today's version of that file.

    ``rewrites`` maps each rewritten file's hash before to after (the erasure log; a file erased
    twice is followed to its latest version); ``landed`` maps (source, current hash) to the landed
    path. The landing treats a re-delivery of an erased file's original content as a re-delivery
    of today's version, so an erased person does not come back through the collector.
    """
    current = {sha: (source, path) for (source, sha), path in landed.items()}
    found = {}
    for before in rewrites:
        sha = before
        while sha in rewrites:
            sha = rewrites[sha]
        if sha in current:
            source, path = current[sha]
            found[(source, before)] = path
    return found
