"""What every raw source shares: its description, decoding, record readers and reject reasons.

A source module defines a ``Source``: physical format, a parser (text -> one string column per field,
plus ``record_no`` and ``raw_record``) and a homogenizer (raw strings -> the canonical typed model).
Nothing here imports Dagster; ``dp_assets.formatted.process`` drives these functions per file.

Two kinds of failure, kept apart on purpose:
- ``Unparseable``: the file as a whole cannot be read (empty, binary, wrong encoding, wrong header).
  The file goes to quarantine with the reason.
- a row-level problem: the row goes to ``<source>_rejects`` with its reason, the rest flows on.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandera.polars as pa
import polars as pl

MAX_LINE_BYTES = 1 << 20  # a longer line is corruption (or an attack), not a record
RAW_RECORD_CHARS = 2000  # rejects keep this much of the raw record; the landing keeps all of it


class Unparseable(Exception):
    """The whole file cannot be read; the message is the quarantine reason."""


@dataclass(frozen=True)
class PhysicalFormat:
    """How the raw files of a source look: the physical metadata recorded on the landing assets."""

    format: str
    encoding: str = "utf-8"
    delimiter: str | None = None
    decimal: str | None = None
    units: str = ""
    time_zone: str = "UTC"
    notes: str = ""
    # Whether a delimited file starts with a header line (a file read in parts repeats it).
    header: bool = True

    def as_metadata(self) -> dict[str, str]:
        metadata = {k: v for k, v in self.__dict__.items() if v and k != "header"}
        return metadata if self.header else {**metadata, "header": "none (names declared)"}


@dataclass(frozen=True)
class Parsed:
    """A file's records as strings: one column per field, ``record_no`` and ``raw_record``.

    ``reject_reason`` is set on records that are already broken at the syntax level (wrong number of
    fields, invalid JSON on one line); ``notes`` are file-level remarks that did not stop parsing.
    """

    records: pl.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileContext:
    """What a homogenizer may know about the file beyond its content."""

    sha256: str
    original_name: str
    pii_key: bytes
    # Read in parts: what the homogenizer keeps from one part of the file to the next (None when
    # the file is read whole).
    carry: dict | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    physical: PhysicalFormat
    schema: type[pa.DataFrameModel]
    key: tuple[str, ...]  # a second record with the same key in one file is a duplicate
    parse: Callable[[str], Parsed]
    homogenize: Callable[[pl.DataFrame, FileContext], pl.DataFrame]
    version: str
    pii_columns: tuple[str, ...] = ()
    # Typed columns that say whom a record is about (each tuple one way to match a person): what an
    # erasure request looks for. Only line-based formats can have one, since erasure blanks lines.
    subject_keys: tuple[tuple[str, ...], ...] = ()
    # Which files of inbox/<source>/ belong to the source (a glob on the name).
    pattern: str = "*"


# --- decoding -----------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
# A gzip file is decompressed in memory up to this size (over 3 times the largest file seen, a
# 300 MB vendor file): beyond it, it is a gzip bomb or a file to deliver uncompressed.
MAX_DECOMPRESSED_BYTES = 1 << 30
_GZIP_BLOCK = 1 << 18  # compressed bytes fed at a time: where a corrupt stream is located
# A byte-order mark declares the text's encoding: (codec, name). UTF-32LE's mark begins with
# UTF-16LE's, so it is tried first.
BYTE_ORDER_MARKS = {
    b"\xef\xbb\xbf": ("utf-8", "UTF-8"),
    b"\xff\xfe\x00\x00": ("utf-32-le", "UTF-32LE"),
    b"\x00\x00\xfe\xff": ("utf-32-be", "UTF-32BE"),
    b"\xff\xfe": ("utf-16-le", "UTF-16LE"),
    b"\xfe\xff": ("utf-16-be", "UTF-16BE"),
}
_WIDE = {codec for codec, _ in BYTE_ORDER_MARKS.values()} - {"utf-8"}  # not ASCII-compatible
# Files that are not text, by their first bytes, with what to ask the sender for.
_UNPACK, _AS_TEXT = "deliver the files inside, unpacked", "deliver the records as text"
MAGIC_NUMBERS = (
    (b"PK\x03\x04", "a zip archive", _UNPACK),
    (b"PK\x05\x06", "an empty zip archive", _UNPACK),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", _UNPACK),
    (GZIP_MAGIC, "gzip data (compressed twice?)", "compress the text once, with gzip"),
    (b"BZh", "bzip2 data", "deliver the text uncompressed or gzip-compressed"),
    (b"\xfd7zXZ\x00", "xz data", "deliver the text uncompressed or gzip-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd data", "deliver the text uncompressed or gzip-compressed"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 compound file (legacy .xls or .doc)", _AS_TEXT),
    (b"PAR1", "a Parquet file", _AS_TEXT),
    (b"%PDF-", "a PDF document", _AS_TEXT),
)


def decode(data: bytes, encoding: str = "utf-8") -> tuple[str, list[str]]:
    """Bytes to text, or ``Unparseable`` with a located reason. Returns the text and notes.

    A gzip file is decompressed first (a note says so). A byte-order mark declares the encoding,
    so UTF-16 and UTF-32 text with one is decoded (with a note); without one, ``encoding``.
    """
    if not data.startswith(GZIP_MAGIC):
        return _decode_text(data, encoding)
    plain = gunzip(data, MAX_DECOMPRESSED_BYTES)
    try:
        text, notes = _decode_text(plain, encoding)
    except Unparseable as error:
        raise Unparseable(f"gzip-compressed, {len(plain):,} bytes decompressed: {error}") from None
    return text, [f"gzip-compressed: decompressed ({len(data):,} to {len(plain):,} bytes)", *notes]


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip file's content (every member, as ``gzip -d`` does), or ``Unparseable``: corrupt
    (located), truncated, followed by other bytes, or decompressing to more than ``limit`` bytes
    (stopped there: a gzip bomb never gets further)."""
    parts: list[bytes] = []
    size = start = 0
    while start < len(data):
        if not data.startswith(GZIP_MAGIC, start):
            raise Unparseable(f"trailing bytes after the gzip stream at offset {start:,}")
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)  # | 16: gzip header and CRC-32
        offset = start
        while not inflater.eof:
            if offset >= len(data):
                raise Unparseable(
                    f"gzip stream ends early at byte {len(data):,} (truncated?), after "
                    f"{_decompressed(parts)}"
                )
            block = data[offset : offset + _GZIP_BLOCK]
            try:
                part = inflater.decompress(block, limit + 1 - size)
            except zlib.error as error:
                raise Unparseable(
                    f"corrupt gzip stream ({error}) in compressed bytes {offset:,} to "
                    f"{offset + len(block):,}, after {_decompressed(parts)}"
                ) from None
            size += len(part)
            if size > limit:
                raise Unparseable(
                    f"gzip-compressed file decompresses to more than {limit:,} bytes, the limit "
                    f"for one file (from {len(data):,}): deliver it uncompressed or split it"
                )
            parts.append(part)
            offset += len(block)
        start = offset - len(inflater.unused_data)
    return b"".join(parts)


def _decompressed(parts: list[bytes]) -> str:
    """Where a gzip stream broke off, for a person: in bytes and lines of the decompressed text."""
    size, lines = sum(map(len, parts)), sum(p.count(b"\n") for p in parts)
    return f"{size:,} bytes decompressed (line {lines + 1} of the decompressed text)"


def text_encoding(data: bytes, declared: str) -> tuple[bytes, str]:
    """The byte-order mark ``data`` starts with (``b""`` if none) and the codec of its text."""
    for bom, (codec, _) in BYTE_ORDER_MARKS.items():
        if data.startswith(bom):
            return bom, codec
    return b"", declared


def _decode_text(data: bytes, encoding: str) -> tuple[str, list[str]]:
    if not data:
        raise Unparseable("empty file (0 bytes)")
    bom, codec = text_encoding(data, encoding)
    notes = []
    name = BYTE_ORDER_MARKS[bom][1] if bom else encoding
    if bom:
        notes.append(
            "UTF-8 byte-order mark removed"
            if codec == "utf-8"
            else f"{name} text (byte-order mark {bom.hex(' ').upper()}): decoded"
        )
    wide = codec in _WIDE
    if not wide and (nul := data.find(b"\x00", len(bom))) >= 0:
        raise Unparseable(_not_text(data, nul))
    try:
        text = data[len(bom) :].decode(codec)
    except UnicodeDecodeError as error:
        offset = len(bom) + error.start
        if not wide and (what := _binary_format(data)):
            raise Unparseable(f"binary content: {what}") from None
        bad = data[offset : offset + 1].hex()
        latin = not wide and _decodes_as_cp1250(data)
        hint = " (looks like Latin-1 or Windows-125x text)" if latin else ""
        raise Unparseable(
            f"not valid {codec}: byte 0x{bad} at offset {offset} "
            f"(line {_line_of(data, offset, codec)}){hint}; re-export the file as {encoding}"
        ) from None
    if wide and (nul := text.find("\x00")) >= 0:
        line = text.count("\n", 0, nul) + 1
        raise Unparseable(f"binary content: NUL character on line {line} of the {name} text")
    # The line limit is in UTF-8 bytes, which is what a record costs once decoded.
    if (long := _first_long_line(text.encode() if wide else data)) is not None:
        number, length = long
        raise Unparseable(
            f"line {number} is {length:,} bytes long, over the {MAX_LINE_BYTES:,} limit for one "
            "record"
        )
    if not text or text.isspace():
        raise Unparseable("no content: the file holds only whitespace")
    return text, notes


def _not_text(data: bytes, nul: int) -> str:
    """Why bytes holding a NUL are not text: a known format, UTF-16 without its mark, or where."""
    if what := _binary_format(data):
        return f"binary content: {what}"
    # UTF-16 text of Latin script has a NUL in every other byte, at odd offsets when little-endian.
    sample = data[:4096]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    for name, nuls, others in (("UTF-16LE", odd, even), ("UTF-16BE", even, odd)):
        if nuls >= len(sample) // 4 and others <= len(sample) // 200:
            return (
                f"{name} text without a byte-order mark (every other byte is NUL): the encoding "
                "cannot be told for sure; re-export the file as UTF-8"
            )
    return f"binary content: NUL byte at offset {nul} (line {_line_of(data, nul)})"


def _binary_format(data: bytes) -> str | None:
    """What a file that is not text is, by its magic number, with what to ask for instead."""
    for magic, what, ask in MAGIC_NUMBERS:
        if data.startswith(magic):
            if magic == b"PK\x03\x04" and _is_xlsx(data):
                what, ask = "an Excel workbook (.xlsx, a zip archive)", "export the sheet as CSV"
            return f"{what} (starts {magic.hex(' ').upper()}), not text: {ask}"
    return None


def _is_xlsx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _first_long_line(data: bytes) -> tuple[int, int] | None:
    """(line number, length in bytes without its terminator) of the first line over
    ``MAX_LINE_BYTES``, or None. On the bytes with numpy: a tenth of splitting the text."""
    if len(data) <= MAX_LINE_BYTES:
        return None
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [len(data)]))
    crlf = (ends > starts) & (raw[np.maximum(ends - 1, 0)] == ord("\r"))
    lengths = ends - starts - crlf
    long = np.flatnonzero(lengths > MAX_LINE_BYTES)
    return (int(long[0]) + 1, int(lengths[long[0]])) if len(long) else None


def _line_of(data: bytes, offset: int, codec: str = "utf-8") -> int:
    if codec in _WIDE:  # a 0x0a byte can be half of any character
        return data[:offset].decode(codec, "replace").count("\n") + 1
    return data.count(b"\n", 0, offset) + 1


def _decodes_as_cp1250(data: bytes) -> bool:
    try:
        data.decode("cp1250")
    except UnicodeDecodeError:
        return False
    return True


def _truncation_note(text: str) -> str | None:
    if text.endswith("\n"):
        return None
    return "last line has no line terminator: the file may be truncated"


def text_lines(text: str) -> pl.DataFrame:
    """The text's lines as ``raw_record``, numbered from 1 in ``record_no``.

    Lines end at "\n" (a "\r" before it belongs to the terminator), which is how the erasure
    counts them too; nothing after a final terminator is a line. Split by polars, not
    ``str.splitlines``: no Python string per line, and no GIL held while files are read in parallel.
    """
    lines = pl.DataFrame({"raw_record": [text]}).select(
        pl.col("raw_record").str.split("\n").explode().str.strip_suffix("\r")
    )
    if text.endswith("\n"):
        lines = lines.head(-1)
    return lines.with_row_index("record_no", offset=1).with_columns(
        pl.col("record_no").cast(pl.Int64)
    )


# --- record readers -------------------------------------------------------------------------------


def read_delimited(
    text: str, delimiter: str, required: list[str], renames: dict[str, str] | None = None
) -> Parsed:
    """Delimited text with a header line into string columns.

    ``renames`` maps header names to canonical raw names (applied before checking ``required``).
    Missing required columns make the file unparseable; extra columns are ignored with a note.
    A record with the wrong number of fields, or an unterminated last line, is rejected by reason.
    Quoting follows RFC 4180: a quoted field may hold the delimiter, doubled quotes and line breaks
    (``record_no`` is then the line the record starts on).
    """
    end = text.find("\n")
    first = (text if end < 0 else text[:end]).removesuffix("\r")
    header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
    renames = renames or {}
    names = [renames.get(h, h) for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        hint = next(
            (
                f"; the header looks {d!r}-delimited, expected {delimiter!r}"
                for d in (",", ";", "\t", "|")
                if d != delimiter and d in first
            ),
            "",
        )
        raise Unparseable(f"missing required columns {missing} (header: {first[:200]!r}){hint}")
    if len(set(names)) != len(names):
        raise Unparseable(f"duplicate column names in header {header}")
    notes = []
    if extra := [h for h, n in zip(header, names) if n not in required]:
        notes.append(f"ignored extra columns {extra}")

    if '"' in text:  # quoting: Python's csv module knows the rules
        frame = _delimited_records(text, delimiter, names)
    else:  # the common case, vectorized: one split per line
        frame = _split_records(text_lines(text), delimiter, names, text)
    return Parsed(frame.select(*required, *RECORD_COLUMNS), notes)


EMPTY_DELIMITED = "no data rows: the file holds only a header"


def _delimited_records(text: str, delimiter: str, names: list[str]) -> pl.DataFrame:
    records = _Records(names)
    width = len(names)
    for first, last, raw, fields in _csv_records(text, delimiter):
        if not raw.strip():
            continue
        reason = None
        if isinstance(fields, csv.Error):  # its advice (" - do you need ...") is not ours to give
            reason, fields = f"not a valid CSV record: {str(fields).split(' - ')[0]}", []
        elif len(fields) != width:
            reason = f"expected {width} fields, found {len(fields)}"
            if last > first:
                reason += f" (the record spans lines {first}-{last}: a quote left open?)"
        if reason:
            fields = (fields + [None] * width)[:width]
        records.add([f if f != "" else None for f in fields], first, raw, reason)
    return records.frame(EMPTY_DELIMITED, text)


def _csv_records(text: str, delimiter: str) -> Iterator[tuple[int, int, str, list | csv.Error]]:
    """The records after the header line: (first line, last line, raw text without its
    terminator, fields or the csv module's error). Lines end at "\n", as ``text_lines`` counts."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        start = text.find("\n") + 1  # after the header
        while 0 < start < len(text):
            end = text.find("\n", start) + 1 or len(text)
            consumed.append(text[start:end])  # the csv module wants the terminators
            yield consumed[-1]
            start = end

    reader = csv.reader(lines(), delimiter=delimiter)
    last = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the reader goes on at the next line
            fields = error
        first, last = last + 1, last + len(consumed)
        yield first, last, "".join(consumed).removesuffix("\n").removesuffix("\r"), fields
        consumed.clear()


def record_lines(text: str, delimiter: str) -> dict[int, int]:
    """First line -> last line of every delimited record that spans several lines."""
    if '"' not in text:
        return {}
    return {first: last for first, last, *_ in _csv_records(text, delimiter) if last > first}


def _split_records(
    lines: pl.DataFrame, delimiter: str, names: list[str], text: str
) -> pl.DataFrame:
    """``_delimited_records`` for text without quotes, where a field is what lies between two
    delimiters: the same records, reasons and line numbers, computed column-wise."""
    width = len(names)
    frame = (
        lines.slice(1)  # the header
        .filter(pl.col("raw_record").str.strip_chars() != "")
        .with_columns(fields=pl.col("raw_record").str.split(delimiter))
    )
    if frame.is_empty():
        raise Unparseable(EMPTY_DELIMITED)
    count = pl.col("fields").list.len()
    frame = frame.select(
        *[
            pl.col("fields").list.get(i, null_on_oob=True).replace("", None).alias(name)
            for i, name in enumerate(names)
        ],
        "record_no",
        pl.col("raw_record").str.slice(0, RAW_RECORD_CHARS),
        reject_reason=pl.when(count != width).then(
            pl.format("expected {} fields, found {}", pl.lit(width), count)
        ),
    )
    return _flag_truncation(frame, text)


def read_json_lines(text: str, fields: list[str], renames: dict[str, str] | None = None) -> Parsed:
    """JSON Lines into string columns; a line that is not a JSON object is rejected by reason.

    Files whose every line is a JSON object are decoded column-wise by polars; a file with a broken
    line goes through Python's json line by line, which can say what is wrong with each.
    """
    renames = renames or {}
    try:
        parsed = _decode_json_lines(text, fields, renames)
    except pl.exceptions.PolarsError:
        parsed = None
    return parsed or _json_lines_one_by_one(text, fields, renames)


def _decode_json_lines(text: str, fields: list[str], renames: dict[str, str]) -> Parsed | None:
    """``None`` when polars does not read one record per non-blank line."""
    lines = text_lines(text).filter(pl.col("raw_record").str.strip_chars() != "")
    if lines.is_empty():
        raise Unparseable("no records")
    read = [*fields, *renames]  # a renamed field fills its new name where the old one is missing
    decoded = pl.read_ndjson(text.encode(), schema=dict.fromkeys(read, pl.String))
    if decoded.height != lines.height:
        return None
    values = [
        pl.coalesce(decoded[f], *(decoded[old] for old, new in renames.items() if new == f)).alias(
            f
        )
        for f in fields
    ]
    frame = lines.select(
        *[decoded.select(v).to_series() for v in values],
        "record_no",
        pl.col("raw_record").str.slice(0, RAW_RECORD_CHARS),
        reject_reason=pl.lit(None, pl.String),
    )
    # Top-level names beyond the ones read, for the file's note (a key inside a nested object
    # would show up here too; meter records have none). Every key has its colon, so a line with
    # no more colons than values read has no other key: only the rest go through the key pattern.
    present = decoded.select(pl.sum_horizontal(pl.all().is_not_null())).to_series()
    others = lines.filter(pl.col("raw_record").str.count_matches(":", literal=True) != present)
    matches = others["raw_record"].str.extract_all(r'"(?:[^"\\]|\\.)*"\s*:').explode()
    keys = {json.loads(m.rstrip(": \t")) for m in matches.drop_nulls().unique()}
    extra = keys - set(fields) - set(renames)
    notes = [f"{EXTRA_FIELDS}{sorted(extra)}"] if extra else []
    return Parsed(_flag_truncation(frame, text), notes)


def _json_lines_one_by_one(text: str, fields: list[str], renames: dict[str, str]) -> Parsed:
    records = _Records(fields)
    seen_names: set[str] = set()
    for number, line in text_lines(text).iter_rows():
        if not line.strip():
            continue
        reason = None
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as error:
            record, reason = {}, f"invalid JSON: {error}"
        record = {renames.get(k, k): v for k, v in record.items()}
        seen_names.update(record)
        records.add([_as_text(record.get(f)) for f in fields], number, line, reason)
    frame = records.frame("no records", text)
    notes = [f"{EXTRA_FIELDS}{sorted(extra)}"] if (extra := seen_names - set(fields)) else []
    return Parsed(frame, notes)


EXTRA_FIELDS = "ignored extra fields "


def merge_notes(notes: list[str]) -> list[str]:
    """The notes of a file read in parts, as reading it whole gives them: each note once, the
    extra fields of JSON Lines parts in one sorted list."""
    merged, extra = [], set()
    for note in notes:
        if note.startswith(EXTRA_FIELDS):
            if not extra:
                merged.append(EXTRA_FIELDS)  # its place: where the first part noted extras
            extra.update(ast.literal_eval(note.removeprefix(EXTRA_FIELDS)))
        elif note not in merged:
            merged.append(note)
    return [f"{n}{sorted(extra)}" if n == EXTRA_FIELDS else n for n in merged]


def load_json_document(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise Unparseable(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


def records_from_objects(objects: list, fields: list[str]) -> Parsed:
    """A JSON document's array of records (``record_no`` is the 0-based array index)."""
    records = _Records(fields)
    for index, obj in enumerate(objects):
        ok = isinstance(obj, dict)
        reason = None if ok else f"record is a JSON {type(obj).__name__}, not an object"
        records.add(
            [_as_text(obj.get(f)) if ok else None for f in fields],
            index,
            json.dumps(obj, ensure_ascii=False),
            reason,
        )
    return Parsed(records.frame("no records"))


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


RECORD_COLUMNS = ("record_no", "raw_record", "reject_reason")


class _Records:
    """Records read so far, as strings, with where each came from and any syntax-level reason."""

    def __init__(self, names: list[str]):
        self.names = names
        self.rows: list[list[str | None]] = []
        self.record_nos: list[int] = []
        self.raws: list[str] = []
        self.reasons: list[str | None] = []

    def add(
        self, values: list[str | None], record_no: int, raw: str, reason: str | None = None
    ) -> None:
        self.rows.append(values)
        self.record_nos.append(record_no)
        self.raws.append(raw)
        self.reasons.append(reason)

    def frame(self, empty_reason: str, text: str | None = None) -> pl.DataFrame:
        """The string frame plus ``RECORD_COLUMNS``; ``text`` given: flag an unterminated last line."""
        if not self.rows:
            raise Unparseable(empty_reason)
        frame = pl.DataFrame(
            self.rows,
            schema=self.names,
            orient="row",
            schema_overrides=dict.fromkeys(self.names, pl.String),
        )
        frame = frame.with_columns(
            record_no=pl.Series(self.record_nos, dtype=pl.Int64),
            raw_record=pl.Series(self.raws, dtype=pl.String).str.slice(0, RAW_RECORD_CHARS),
            reject_reason=pl.Series(self.reasons, dtype=pl.String),
        )
        return frame if text is None else _flag_truncation(frame, text)


def _flag_truncation(frame: pl.DataFrame, text: str) -> pl.DataFrame:
    """Add the truncation note to the last record's reason when the text ends mid-line."""
    note = _truncation_note(text)
    if note is None:
        return frame
    last = pl.int_range(pl.len()) == pl.len() - 1
    return frame.with_columns(
        reject_reason=pl.when(last)
        .then(
            pl.concat_str(pl.col("reject_reason"), pl.lit(note), separator="; ", ignore_nulls=True)
        )
        .otherwise(pl.col("reject_reason"))
    )


# --- homogenization helpers ---------------------------------------------------------------------


def parse_failures(typed_from_raw: dict[str, str]) -> pl.Expr:
    """A reason for every typed column that came out null although its raw value was present.

    The reason names the raw field, which is what a person looking at the file sees.
    """
    parts = [
        pl.when(pl.col(typed).is_null() & pl.col(raw).str.strip_chars().ne("")).then(
            pl.format("{}: cannot parse '{}'", pl.lit(raw), pl.col(raw).str.slice(0, 80))
        )
        for typed, raw in typed_from_raw.items()
    ]
    return _joined(parts)


def add_reasons(*reasons: pl.Expr) -> pl.Expr:
    """Join reason expressions (nulls skipped) onto ``reject_reason``."""
    return _joined([pl.col("reject_reason"), *reasons]).alias("reject_reason")


def _joined(parts: list[pl.Expr]) -> pl.Expr:
    # One concatenation, no when/then around it: that would name ``joined`` twice, and nested
    # (``add_reasons(parse_failures(...))``) evaluate every part four times.
    return pl.concat_str(parts, separator="; ", ignore_nulls=True).replace("", None)


def occurrences(
    frame: pl.DataFrame, time: str, entity: Sequence[str] = (), carry: dict | None = None
) -> pl.DataFrame:
    """``occurrence``: 1 for the first record of an entity and local ``time`` in the file, 2 for
    the second... (what tells the two instants of a repeated autumn hour apart, in file order).
    Counted only among repeated ones: a window over every record costs five times more, and
    repeats are rare (the autumn hour, duplicates). ``carry`` (a file read in parts) keeps the
    entities and local times of the parts before, whose records come first."""
    by = [*entity, time]
    frame = frame.with_row_index("_row")
    repeated = frame.filter(pl.struct(by).is_duplicated()).select(
        "_row", occurrence=pl.col(time).cum_count().over(by)
    )
    frame = frame.join(repeated, on="_row", how="left", maintain_order="left").with_columns(
        pl.col("occurrence").fill_null(1)
    )
    if carry is not None:
        # cum_count counts only records with a local time; a null entity is a group of its own.
        seen = frame.filter(pl.col(time).is_not_null()).select(
            "_row", *[pl.col(e).cast(pl.String).fill_null("") for e in entity], time
        )
        slot = f"occurrences/{time}"
        if (before := carry.get(slot)) is not None:
            counts = seen.join(before, on=by).group_by("_row").len("before")
            frame = (
                frame.join(counts, on="_row", how="left", maintain_order="left")
                .with_columns(pl.col("occurrence") + pl.col("before").fill_null(0))
                .drop("before")
            )
            seen = pl.concat([before, seen.drop("_row")])
        else:
            seen = seen.drop("_row")
        carry[slot] = seen
    return frame.drop("_row")


def decimal_comma(col: str) -> pl.Expr:
    """'1 234,5' -> 1234.5: decimal comma, optional spaces as thousands separators."""
    return (
        pl.col(col)
        .str.replace_all(r"[\s\u00a0]", "")
        .str.replace(",", ".", literal=True)
        .cast(pl.Float64, strict=False)
    )
