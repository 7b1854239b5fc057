"""Scaffold a source declaration from a sample file: what ``dp add-source --sample`` writes.

The sniffer guesses what it can see (format, delimiter, header, decimal mark, null tokens, each
column's type and date or timestamp format) and writes it as commented YAML for the user to
check and complete: what it cannot see (the time zone of wall-clock times, units, keys, PII) is
left as a comment marked CHECK.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import polars as pl

from dp_assets.sources.base import Unparseable, decode

SAMPLE_LINES = 20_000
DELIMITERS = (",", ";", "\t", "|")
NULL_TOKENS = ("", "?", "NULL", "Null", "null", "NA", "N/A", "n/a", "NaN", "None", "-")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d")
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y %H:%M",
)
INT = re.compile(r"^[+-]?\d+$")
FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
COMMA_FLOAT = re.compile(r"^[+-]?\d+,\d+$")
BOOLS = {"true", "false"}
INT64 = range(-(2**63), 2**63)


def scaffold(name: str, sample: Path) -> str:
    """The YAML text of a declaration for source ``name``, guessed from the file ``sample``."""
    data = sample.read_bytes()
    try:
        text, _ = decode(data)
        encoding = "utf-8"
    except Unparseable:
        text, _ = decode(data, "cp1252")  # raises again when it is not text at all
        encoding = "cp1252"
    stripped = text.lstrip()
    # An object first: one JSON document, or the first of JSON Lines (then no document parses).
    document = _document(text) if stripped.startswith("{") else None
    if stripped.startswith("[") or document is not None:
        records, path = _json_records(json.loads(text) if document is None else document)
        settings, columns = {"format": "json", "records_path": path}, _json_columns(records)
    elif stripped.startswith("{"):
        lines = [json.loads(line) for line in text.splitlines()[:SAMPLE_LINES] if line.strip()]
        settings, columns = {"format": "jsonl"}, _json_columns(lines)
    else:
        settings, columns = _delimited(text)
    settings["encoding"] = encoding
    return _yaml(name, sample.name, settings, columns)


def _document(text: str) -> object | None:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_records(document: object) -> tuple[list, str | None]:
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return value, key
    raise Unparseable("no array of records found in the JSON document")


def _json_columns(records: list) -> dict[str, dict]:
    values: dict[str, list[str | None]] = {}
    for record in records[:SAMPLE_LINES]:
        for key, value in record.items() if isinstance(record, dict) else ():
            text = None if value is None else value if isinstance(value, str) else json.dumps(value)
            values.setdefault(key, []).append(text)
    return {name: _column(column, ".") for name, column in values.items()}


def _delimited(text: str) -> tuple[dict, dict[str, dict]]:
    lines = [line for line in text.splitlines()[: SAMPLE_LINES + 1] if line.strip()]
    delimiter = _delimiter(lines)
    quoted = '"' in text and len(delimiter) == 1
    if quoted:
        rows = list(csv.reader(lines, delimiter=delimiter))
    else:
        rows = [line.split(delimiter) for line in lines]
    width = Counter(len(r) for r in rows).most_common(1)[0][0]
    rows = [r for r in rows if len(r) == width]
    decimal = "," if delimiter.strip() != "," and _comma_decimals(rows) else "."
    header = _has_header(rows, decimal)
    names = [n.strip() for n in rows[0]] if header else [f"column_{i + 1}" for i in range(width)]
    body = rows[1:] if header else rows
    columns = {name: _column([r[i] for r in body], decimal) for i, name in enumerate(names)}
    settings: dict = {"format": "csv", "delimiter": delimiter}
    if not quoted and len(delimiter) > 1:
        settings["quote"] = None
    if not header:
        settings["header"] = False
    if decimal == ",":
        settings["decimal"] = ","
    # Null tokens apply to every column: where each was seen goes with them, for the user to check.
    seen: dict[str, list[str]] = {"": []}
    for raw, column in columns.items():
        for token in column.pop("nulls"):
            seen.setdefault(token, []).append(raw)
    settings["nulls"] = dict(sorted(seen.items(), key=lambda item: NULL_TOKENS.index(item[0])))
    return settings, columns


def _delimiter(lines: list[str]) -> str:
    """The delimiter found the same number of times on most lines; ", " when every comma is
    followed by a space (and likewise for ";")."""
    best, best_score = ",", -1.0
    for candidate in DELIMITERS:
        counts = Counter(line.count(candidate) for line in lines)
        count, lines_with = counts.most_common(1)[0]
        score = lines_with / len(lines) if count else 0.0
        if score > best_score:
            best, best_score = candidate, score
    spaced = best + " "
    if best in ",;" and all(line.count(spaced) == line.count(best) for line in lines):
        return spaced
    return best


def _comma_decimals(rows: list[list[str]]) -> bool:
    cells = [c.strip() for r in rows[1:200] for c in r]
    return any(COMMA_FLOAT.match(c) for c in cells) and not any(
        "." in c and FLOAT.match(c) for c in cells
    )


def _has_header(rows: list[list[str]], decimal: str) -> bool:
    """A first line whose fields are not of the type the column below has, or (all text) names
    seen nowhere below."""
    if len(rows) < 2:
        return False
    first, body = rows[0], rows[1:]
    for i, value in enumerate(first):
        column = [r[i] for r in body]
        kind = _column(column, decimal)["type"]
        if kind != "string" and _column([value], decimal)["type"] != kind:
            return True
    return all(
        v.strip() and not INT.match(v.strip()) and v not in {r[i] for r in body}
        for i, v in enumerate(first)
    )


def _column(values: list[str | None], decimal: str) -> dict:
    """What a column's sample values say: type (and date format), null tokens seen, range."""
    cleaned = [None if v is None else v.strip() for v in values]
    nulls = sorted({v for v in cleaned if v in NULL_TOKENS}, key=NULL_TOKENS.index)
    present = [v for v in cleaned if v is not None and v not in NULL_TOKENS]
    spec: dict = {"type": "string", "nulls": nulls}
    if not present:
        return spec
    numbers = [v.replace(",", ".") for v in present] if decimal == "," else present
    if all(INT.match(v) for v in present):
        # An id longer than int64 does not fit the column: text (a float would lose digits).
        if all(int(v) in INT64 for v in present):
            spec["type"] = "int"
    elif all(FLOAT.match(v) for v in numbers):
        spec["type"] = "float"
    elif all(v.lower() in BOOLS for v in present):
        spec["type"] = "bool"
    elif fmt := _datetime_format(present, DATE_FORMATS, date=True):
        spec.update(type="date", format=fmt)
    elif fmt := _datetime_format(present, TIMESTAMP_FORMATS, date=False):
        spec.update(type="timestamp", format=fmt)
    if spec["type"] in ("int", "float"):
        series = pl.Series(numbers).cast(pl.Int64 if spec["type"] == "int" else pl.Float64)
        spec["seen"] = f"{series.min()} to {series.max()}"
    elif spec["type"] == "string":
        distinct = sorted(set(present))
        if len(distinct) <= 12:
            spec["seen"] = ", ".join(distinct)
        else:
            spec["seen"] = f"{len(distinct):,} distinct values"
    return spec


def _datetime_format(values: list[str], formats: tuple[str, ...], date: bool) -> str | None:
    series = pl.Series(values[:2000])
    for fmt in formats:
        if date:
            parsed = series.str.to_date(fmt, strict=False)
        else:
            parsed = series.str.to_datetime(fmt, strict=False, time_unit="us")
        if parsed.null_count() == 0:
            return fmt
    return None


def _q(value: str) -> str:
    """A YAML scalar: plain when safe, else a double-quoted (JSON) string."""
    if re.match(r"^[A-Za-z_][A-Za-z0-9_ .-]*$", value) and value.lower() not in {
        "true", "false", "yes", "no", "null", "on", "off", "y", "n",
    }:  # fmt: skip
        return value.strip() if value == value.strip() else json.dumps(value)
    return json.dumps(value)


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "column"


def _names(raws: list[str]) -> dict[str, str]:
    """Raw name -> canonical snake_case name, made unique (`Price €`, `Price $`: price, price_2)."""
    names: dict[str, str] = {}
    for raw in raws:
        snake = name = _snake(raw)
        n = 1
        while name in names.values():
            n += 1
            name = f"{snake}_{n}"
        names[raw] = name
    return names


def _pattern(sample: str) -> str:
    """The names of files like the sample: its stem with any extension (adult.data: adult.*, which
    takes adult.test too), a dated or numbered stem with its digits free (meters_2024-05-01.csv:
    meters_*.csv); else every name."""
    stem, dot, extension = sample.partition(".")
    if not re.search(r"[A-Za-z]", stem) or re.search(r"[*?\[]", stem):
        return "*"
    if re.search(r"\d", stem):
        return re.sub(r"\d+([-_:T]?\d+)*", "*", stem) + dot + extension
    return stem + ".*" if dot else stem


def _few(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _yaml(name: str, sample: str, settings: dict, columns: dict[str, dict]) -> str:
    out = [
        f"# Source {name}: scaffolded from the sample {sample}. Check every line, above all those",
        "# marked CHECK; `dp` reads this file as the declaration of the source.",
        f"description: {_q('CHECK: what these records are, in one line')}",
        f"pattern: {_q(_pattern(sample))}  # CHECK: the source's file names (others are "
        "quarantined)",
    ]
    for key, value in settings.items():
        if key == "records_path" and value is None:
            continue
        if key == "nulls":
            seen = "; ".join(f"{json.dumps(t)} in {_few(c)}" for t, c in value.items() if t)
            comment = f"CHECK: missing in every column; seen: {seen}" if seen else "read as missing"
            out.append(f"nulls: [{', '.join(json.dumps(v) for v in value)}]  # {comment}")
        elif value is None:
            out.append(f"{key}: null  # fields are what lies between delimiters")
        elif isinstance(value, bool):
            out.append(f"{key}: {str(value).lower()}  # no header line: names in column order")
        else:
            out.append(f"{key}: {json.dumps(value)}")
    out.append("columns:")
    names = _names(list(columns))
    for raw, spec in columns.items():
        out.append(f"  {_q(raw)}:")
        if names[raw] != raw:
            out.append(f"    rename: {names[raw]}")
        out.append(f"    type: {spec['type']}")
        if "format" in spec:
            out.append(f"    format: {json.dumps(spec['format'])}")
        if spec["type"] == "timestamp" and "%z" not in spec["format"] and "Z" not in spec["format"]:
            out += [
                "    time_zone: UTC  # CHECK: the zone the wall clock of these times is in",
                "    dst: reject  # or by_order: a repeated autumn hour written twice in order",
            ]
        if spec["type"] == "timestamp" and spec["format"].endswith("Z"):
            out.append("    time_zone: UTC  # the times end in Z: UTC")
        if "seen" in spec:
            out.append(f"    # seen in the sample: {spec['seen']}")
        if spec["type"] == "float":
            out.append("    # unit: ..., canonical: ...  # CHECK: e.g. Wh and kWh, converted")
    out += [
        "# key: [...]  # CHECK: the columns whose repetition in a file is a duplicate",
        "# subject_keys: [[...]]  # the columns that say whom a record is about (erasure)",
    ]
    return "\n".join(out) + "\n"
