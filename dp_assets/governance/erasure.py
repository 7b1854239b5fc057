"""Erasure of one person on request: what to remove and how (pure: no Dagster, no I/O).

A request names a person by subject keys, the columns some source (or project) declares as saying
whom a record is about (``subject_keys``), e.g. ``email=ann@example.org``; a project's erasure hook
may add every other key of the same person. The ``Subject`` holds, per key, the values that
identify their records in raw files and tables. Landed files are rewritten with the person's
record lines *blanked*, not deleted: every other line keeps its bytes and its line number, so
``record_no`` in the formatted zone still points at the right line, and the readers already skip
blank lines. ``governance/erasure_job.py`` carries the plan out.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.privacy import pseudonymize
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

Key = tuple[str, ...]


class ErasureLogEntry(pa.DataFrameModel):
    """One object an erasure changed (or could not inspect): the audit trail of erasure requests."""

    erasure_id: str = pa.Field(description="Id of the erasure request, ERA-<UTC time>-<random>")
    subject: str = pa.Field(
        description="Whom the request named: its subject keys as column=value, sorted (the value "
        "of a PII column is its pseudonym, as stored in the formatted zone)"
    )
    customer_id: Optional[str] = pa.Field(
        nullable=True,
        description="Logs from before requests by subject key: the customer id erased (their "
        "subject reads customer_id=<it>); null since",
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


class BadRequest(ValueError):
    """The request names no declared subject key, or a key only in part."""


class UnknownSubject(ValueError):
    """The request names nobody stored (mistyped, or erased before)."""


@dataclass(frozen=True)
class Subject:
    """Everything that identifies one person's records: per key (a tuple of columns), the values.

    ``description`` says whom the request named (``column=value, ...``; PII as pseudonyms): what
    the audit log keeps, and how a repeated request is recognised."""

    description: str
    keys: dict[Key, pl.DataFrame]

    def values(self, key: Key) -> pl.DataFrame | None:
        frame = self.keys.get(key)
        return frame if frame is not None and not frame.is_empty() else None

    def merged(self, more: dict[Key, pl.DataFrame]) -> Subject:
        """The subject with ``more`` values per key (an erasure hook's findings) added."""
        keys = dict(self.keys)
        for key, frame in more.items():
            frame = frame.select(pl.col(c).cast(pl.String) for c in key)
            keys[key] = pl.concat([keys[key], frame]) if key in keys else frame
            keys[key] = keys[key].drop_nulls().unique(maintain_order=True)
        return Subject(self.description, keys)


def request_subject(
    request: Iterable[str], declared: Iterable[Key], pii: set[str], pii_key: bytes
) -> Subject:
    """The subject a request names: ``["email=ann@example.org", ...]``, all about one person.

    Each ``column=value`` must be a column of a ``declared`` subject key, and a key of several
    columns needs all of them (given the same number of times: the n-th values go together). The
    value of a ``pii`` column is pseudonymized with ``pii_key``, as the formatted zone stores it.
    """
    declared = sorted(set(declared))
    shown = ", ".join("+".join(k) for k in declared) or "none"
    given: dict[str, list[str]] = {}
    for item in request:
        column, sep, value = item.partition("=")
        column, value = column.strip(), value.strip()
        if not sep or not column or not value:
            raise BadRequest(f"{item!r}: a subject key is given as <column>=<value>")
        given.setdefault(column, []).append(value)
    if not given:
        raise BadRequest(f"name the person by a subject key (declared: {shown})")
    if unknown := sorted(c for c in given if not any(c in k for k in declared)):
        raise BadRequest(f"{', '.join(unknown)}: not a declared subject key (declared: {shown})")
    for column in given:
        if column in pii:
            given[column] = pseudonymize(pl.Series(given[column]), pii_key).to_list()
    keys = {}
    for key in (k for k in declared if set(k) <= set(given)):
        if len({len(given[c]) for c in key}) > 1:
            raise BadRequest(f"{'+'.join(key)}: give each of its columns as often as the others")
        keys[key] = pl.DataFrame({c: given[c] for c in key}).unique(maintain_order=True)
    if partial := sorted(c for c in given if not any(c in k for k in keys)):
        parts = " or ".join("+".join(k) for k in declared if set(partial) & set(k))
        raise BadRequest(
            f"{', '.join(partial)}: part of the subject key {parts}: give all of its columns"
        )
    description = ", ".join(f"{c}={v}" for c in sorted(given) for v in sorted(set(given[c])))
    return Subject(description, keys)


def matching_records(typed: pl.DataFrame, subject: Subject, keys) -> list[int]:
    """``record_no`` of the records in a read file that are about the subject (any key matching).
    Keys compare as text: a request's values are typed in, a column may hold numbers."""
    found = []
    for key in keys:
        if (values := subject.values(key)) is not None:
            as_text = [pl.col(c).cast(pl.String) for c in key]
            records = typed.select("record_no", *as_text).join(
                values.select(as_text), on=list(key), how="semi", nulls_equal=False
            )
            found.append(records["record_no"])
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
