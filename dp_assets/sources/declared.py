"""Sources declared in YAML: one file per source turned into the runtime ``Source``.

A declaration says what the raw files look like (format, delimiter, header, decimal mark, null
tokens...) and what each column means (type, canonical name, unit, time zone, checks, PII). From it
come the parser, the homogenizer and the Pandera model, so the formatted zone gives rejects,
quarantine, physical metadata and the data dictionary as for a source written in Python::

    description: PJM East hourly load
    pattern: "*.csv"
    columns:
      ds: {type: timestamp, rename: hour_start, format: "%Y-%m-%d %H:%M:%S",
           time_zone: America/New_York, dst: by_order}
      y: {type: float, rename: load_mw, unit: MW, canonical: MW, ge: 0}
    key: [hour_start]

Order of the work on a value: trim, null tokens, ``map``, ``case``, the column's ``transform``
hook (if any: text to text, e.g. an id's canonical form), parse by type (decimal mark, thousands
separator, date format), unit conversion, local time to UTC; then the declaration's ``transform``
hook (if any), pseudonymization of PII columns, and the checks (on canonical values, in canonical
units). A record whose value is present but does not parse (or, a float, is not finite; or has a
``.`` where the decimal mark is ``,`` and ``.`` is not the thousands separator) is rejected with
the field and value (a PII column's value withheld).
A JSON document may state values for all its records (``document: meta.provider``) and the unit
of a column (``unit: {document: units.temperature, one_of: [C, F]}``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import inspect
import re
import zoneinfo
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import pandera.polars as pa
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dp_assets.privacy import pseudonymize
from dp_assets.sources.base import (
    RECORD_COLUMNS,
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    Unparseable,
    _as_text,
    _delimited_records,
    _flag_truncation,
    _split_records,
    add_reasons,
    load_json_document,
    occurrences,
    read_json_lines,
    records_from_objects,
    text_lines,
)
from dp_assets.sources.schema import Lineage, UtcTimestamp

TYPES = ("string", "int", "float", "bool", "date", "timestamp")
EPOCHS = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us"}
TRUE_VALUES = ["true", "t", "yes", "y", "1"]
FALSE_VALUES = ["false", "f", "no", "n", "0"]
PII_WITHHELD = "<PII withheld: see the landed file at record_no>"
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
DURATION = re.compile(r"^(\d+(d|h|m|s))+$")
RESERVED = {*RECORD_COLUMNS, "file_sha256"}
HOOK = re.compile(r"^[\w./-]+\.py:\w+$")


def _scale(factor: float) -> Callable[[pl.Expr], pl.Expr]:
    # Times a constant, never divided: polars divides a one-row frame exactly and a longer one by
    # the reciprocal, so a value would depend on how its file was cut into parts.
    return lambda value: value * factor


# (from, to) -> conversion of a Float64 expression. Power is not energy: kW and MW convert to each
# other, never to kWh (that needs the interval, which a declaration does not say).
CONVERSIONS: dict[tuple[str, str], Callable[[pl.Expr], pl.Expr]] = {
    ("Wh", "kWh"): _scale(0.001),
    ("MWh", "kWh"): _scale(1000.0),
    ("kWh", "MWh"): _scale(0.001),
    ("Wh", "MWh"): _scale(1e-6),
    ("W", "kW"): _scale(0.001),
    ("MW", "kW"): _scale(1000.0),
    ("kW", "MW"): _scale(0.001),
    ("F", "C"): lambda value: (value - 32.0) * (5.0 / 9.0),
    ("K", "C"): lambda value: value - 273.15,
    ("fraction", "percent"): _scale(100.0),
    ("percent", "fraction"): _scale(0.01),
    ("cents", "currency"): _scale(0.01),
}
# gross -> net is also known; it needs the column's ``vat`` (a rate and the dates it applies to).
KNOWN_PAIRS = [*(f"{a}->{b}" for a, b in CONVERSIONS), "gross->net (with vat)"]


class DeclarationError(ValueError):
    """A declaration that cannot be used; the message names the file and every problem in it."""


class Project(Protocol):
    root: Path

    def hook(self, ref: str) -> Callable: ...


# --- the declaration ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Vat(_Strict):
    """Values on the rows whose ``date_column`` lies in [``from``, ``until``) include VAT;
    ``flag`` names a bool column saying so of each row (whether its value was converted)."""

    rate: float = Field(gt=0, lt=1)
    from_: Optional[dt.date] = Field(None, alias="from")
    until: Optional[dt.date] = None
    date_column: str
    flag: Optional[str] = None
    flag_description: str = ""


class DocumentUnit(_Strict):
    """The unit a JSON document states for a column's values (``{"units": {"t": "F"}}``), at the
    dotted path ``document``; a document stating a unit not ``one_of`` these is quarantined."""

    document: str
    one_of: list[str] = Field(min_length=1)


class Column(_Strict):
    type: Literal[TYPES] = "string"
    rename: Optional[str] = None
    description: str = ""
    pii: bool = False
    required: bool = False
    unique: bool = False
    map: Optional[dict[str, Optional[str]]] = None
    case: Optional[Literal["lower", "upper", "title"]] = None
    format: Optional[str] = None  # date and timestamp: strftime codes, or epoch_s/_ms/_us
    time_zone: Optional[str] = None  # timestamp: the wall clock the raw times are written in
    dst: Literal["by_order", "reject"] = "reject"
    dst_per: list[str] = []  # by_order: the entity columns whose records are in time order
    # What a timestamp labels: the start of its interval or (as hour-ending data) its end; the
    # canonical value is always the start, the label minus `interval` (a duration: 1h, 30m, 1d).
    marks: Literal["start", "end"] = "start"
    interval: Optional[str] = None
    true_values: list[str] = TRUE_VALUES
    false_values: list[str] = FALSE_VALUES
    unit: Optional[str | DocumentUnit] = None
    canonical: Optional[str] = None
    vat: Optional[Vat] = None
    round: Optional[int] = Field(None, ge=0, le=12)
    ge: Optional[float] = None
    le: Optional[float] = None
    gt: Optional[float] = None
    lt: Optional[float] = None
    pattern: Optional[str] = None
    isin: Optional[list[Any]] = None
    # Other names of the field (a header or JSON key renamed by the sender): read as this one.
    aliases: list[str] = []
    # json: the value at this dotted path of the document, the same for each of its records.
    document: Optional[str] = None
    # "file.py:fn", fn(pl.Expr) -> pl.Expr on the cleaned text before it is typed (what the
    # declaration cannot say, e.g. an id's canonical form); null where text was: a reject.
    transform: Optional[str] = None

    @field_validator("map", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # Raw values are text (a declaration built in Python may give numbers or booleans).
        if isinstance(value, dict):
            return {_text(k): None if v is None else _text(v) for k, v in value.items()}
        return value

    @field_validator("true_values", "false_values", mode="before")
    @classmethod
    def _words_as_text(cls, value: Any) -> Any:
        return [_text(v) for v in value] if isinstance(value, list) else value


class Declaration(_Strict):
    description: str
    pattern: str = "*"
    format: Literal["csv", "jsonl", "json"] = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    quote: Optional[str] = '"'  # None: quotes are data (and required for a multi-char delimiter)
    header: bool | list[str] = True  # False: names in column order; a list: names in file order
    decimal: str = "."
    thousands: Optional[str] = None
    trim: bool = True
    nulls: list[str] = [""]
    # A last line without a line break: a record like any other, or (a sender that ends every
    # file with one) rejected as possibly truncated.
    unterminated_last_line: Literal["record", "reject"] = "record"
    records_path: Optional[str] = None  # json: dotted path of the records array
    columns: dict[str, Column] = Field(min_length=1)
    key: list[str] = []
    subject_keys: list[list[str]] = []
    transform: Optional[str] = None  # "hooks.py:fn": typed frame -> typed frame
    notes: str = ""

    @field_validator("nulls", mode="before")
    @classmethod
    def _nulls_as_text(cls, value: Any) -> Any:
        return [_text(v) for v in value] if isinstance(value, list) else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


# --- loading --------------------------------------------------------------------------------------


def load_source(path: Path, project: Project) -> Source:
    """The ``Source`` a YAML declaration describes; ``DeclarationError`` naming the file and each
    problem (``sources/x.yaml: columns.y.type: 'flaot' is not one of ...``)."""
    where = _shown(path, project.root)
    text = path.read_text(encoding="utf-8")
    declaration = parse_declaration(text, where)
    transform = project.hook(declaration.transform) if declaration.transform else None
    hooks = {
        raw: project.hook(c.transform) for raw, c in declaration.columns.items() if c.transform
    }
    return build_source(path.stem, declaration, text, where, transform, hooks)


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# Settings holding raw values, read as the text written: YAML 1.1 reads `[yes, no]` as booleans
# (whose spelling is then lost) and `0x10` as 16.
RAW_SETTINGS = {"true_values", "false_values", "map"}
TEXT = "tag:yaml.org,2002:str"
IMPLICIT = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float")}


def _load_yaml(text: str) -> Any:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "nulls":
                _as_written(value)
            elif key.value == "columns" and isinstance(value, yaml.MappingNode):
                columns = [c for _, c in value.value if isinstance(c, yaml.MappingNode)]
                for setting, raw in (pair for c in columns for pair in c.value):
                    if setting.value in RAW_SETTINGS:
                        _as_written(raw)
    return None if node is None else yaml.SafeLoader("").construct_document(node)


def _as_written(node: yaml.Node) -> None:
    if isinstance(node, yaml.ScalarNode) and node.tag in IMPLICIT:
        node.tag = TEXT
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _as_written(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _as_written(key)
            _as_written(value)


def parse_declaration(text: str, where: str) -> Declaration:
    try:
        document = _load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise DeclarationError(f"{where}{at}: not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise DeclarationError(f"{where}: expected a mapping of settings, found {document!r:.80}")
    try:
        declaration = Declaration.model_validate(document)
    except ValidationError as error:
        raise DeclarationError(
            "\n".join(f"{where}: {_located(e)}" for e in error.errors())
        ) from None
    if problems := _problems(declaration):
        raise DeclarationError("\n".join(f"{where}: {p}" for p in problems))
    return declaration


def _located(error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    if error["type"] == "literal_error":
        return f"{loc}: {value!r} is not one of {error['ctx']['expected']}"
    if error["type"] == "extra_forbidden":
        *parent, name = error["loc"]
        fields = Column if "columns" in parent else Vat if "vat" in parent else Declaration
        close = difflib.get_close_matches(str(name), _settings(fields), 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{loc}: unknown setting{hint}"
    if error["type"] == "missing":
        return f"{loc}: required"
    return f"{loc}: {error['msg']} (got {value!r:.80})"


def _settings(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def canonical_name(raw: str, column: Column) -> str:
    return column.rename or raw


def zoned(format: str | None) -> bool:
    """Whether timestamps in ``format`` carry their offset (epoch, ``%z``; ``%#z`` takes ``Z``)."""
    return format is not None and (format in EPOCHS or re.search(r"%[#:]?z", format) is not None)


def _flags(d: Declaration) -> list[str]:
    """The VAT flag columns: canonical columns no raw field fills."""
    return [c.vat.flag for c in d.columns.values() if c.vat and c.vat.flag]


def _problems(d: Declaration) -> list[str]:
    """What pydantic cannot see: names, references between settings, units, formats."""
    problems = []
    names = {raw: canonical_name(raw, c) for raw, c in d.columns.items()}
    canonical = [*names.values(), *_flags(d)]
    for raw, name in names.items():
        if not NAME.match(name):
            suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "a_name"
            problems.append(
                f"columns.{raw}: canonical name {name!r} is not a lower-case identifier: "
                f"add `rename: {suggestion}`"
            )
        elif name in RESERVED:
            problems.append(f"columns.{raw}: {name!r} is a column the platform adds: rename it")
    for name in {n for n in canonical if canonical.count(n) > 1}:
        problems.append(f"columns: two columns are named {name!r}")
    if len(d.delimiter) == 0:
        problems.append("delimiter: empty")
    elif len(d.delimiter) > 1 and d.quote is not None and d.format == "csv":
        problems.append(
            f"quote: a {len(d.delimiter)}-character delimiter {d.delimiter!r} reads fields "
            "between delimiters only: set `quote: null`"
        )
    if d.decimal not in (".", ","):
        problems.append(f"decimal: {d.decimal!r} is not one of '.', ','")
    if d.thousands is not None and d.thousands == d.decimal:
        problems.append("thousands: the same as the decimal mark")
    if isinstance(d.header, list) and (missing := [c for c in d.columns if c not in d.header]):
        problems.append(f"header: declared columns {missing} are not among its names")
    if d.format != "csv" and d.header is not True:
        problems.append(f"header: only for csv (format is {d.format})")
    if d.records_path is not None and d.format != "json":
        problems.append(f"records_path: only for json (format is {d.format})")
    if d.subject_keys and d.format == "json":
        problems.append(
            "subject_keys: erasure blanks lines, so only csv and jsonl sources can have them"
        )
    for setting, columns in (
        ("key", [d.key]),
        ("subject_keys", d.subject_keys),
        *((f"columns.{raw}.dst_per", [c.dst_per]) for raw, c in d.columns.items()),
    ):
        for unknown in sorted({n for cols in columns for n in cols if n not in canonical}):
            problems.append(f"{setting}: {unknown!r} is not a (canonical) column name")
    aliases = [a for c in d.columns.values() for a in c.aliases]
    for alias in sorted({a for a in aliases if aliases.count(a) > 1 or a in d.columns}):
        problems.append(f"aliases: {alias!r} names two fields")
    for raw, column in d.columns.items():
        problems += [f"columns.{raw}.{p}" for p in _column_problems(column, canonical, d.format)]
    by_name = {canonical_name(r, c): c for r, c in d.columns.items()}
    for raw, c in d.columns.items():
        on = by_name.get(c.vat.date_column) if c.vat else None
        if on is not None and on.type not in ("date", "timestamp"):
            problems.append(
                f"columns.{raw}.vat.date_column: {c.vat.date_column!r} is a {on.type}, not a "
                "date or timestamp"
            )
        elif on is not None and on.type == "timestamp" and on.time_zone is None:
            # VAT applies from a local date; the instant of an offset or epoch has no zone here.
            problems.append(
                f"columns.{raw}.vat.date_column: {c.vat.date_column!r} is a timestamp without a "
                "declared time_zone, so its local date is unknown: use a date column or a local "
                "timestamp"
            )
    for where, ref in [("", d.transform)] + [
        (f"columns.{r}.", c.transform) for r, c in d.columns.items()
    ]:
        if ref is not None and not HOOK.match(ref):
            problems.append(f"{where}transform: {ref!r} is not a hook reference like 'hooks.py:fn'")
    return problems


def _column_problems(c: Column, canonical: list[str], format: str) -> list[str]:
    problems = []
    if c.document is not None and format != "json":
        problems.append(f"document: only for json (format is {format})")
    if c.aliases and (format == "json" or c.document is not None):
        problems.append("aliases: only for the fields of csv and jsonl records")
    if isinstance(c.unit, DocumentUnit):
        if format != "json":
            problems.append(f"unit.document: only for json (format is {format})")
        if c.type != "float":
            problems.append(f"unit: converting to {c.canonical} needs type float")
        for unit in c.unit.one_of:
            if unit != c.canonical and (unit, c.canonical) not in CONVERSIONS:
                problems.append(
                    f"unit.one_of: no conversion from {unit!r} to {c.canonical!r}; known: "
                    + ", ".join(f"{a}->{b}" for a, b in CONVERSIONS)
                )
    if c.type == "timestamp":
        if c.format is None:
            problems.append(
                "format: a timestamp declares its format, e.g. '%Y-%m-%d %H:%M:%S' (or epoch_s, "
                "epoch_ms, epoch_us)"
            )
        if c.time_zone is None and not zoned(c.format):
            problems.append(
                "time_zone: a local timestamp declares the time zone its wall clock is in "
                "(e.g. Europe/Warsaw, or UTC)"
            )
        elif c.time_zone is not None and c.format in EPOCHS:
            problems.append(f"time_zone: {c.format} times are UTC: remove it")
        elif c.time_zone is not None and zoned(c.format):
            # Converting the instant the offset gives from the zone again would shift it.
            directive = re.search(r"%[#:]?z", c.format).group()
            problems.append(
                f"time_zone: the format's {directive} gives each time its offset, which says the "
                "zone: remove time_zone (or declare a format without the offset)"
            )
        elif c.time_zone is not None:
            try:
                zoneinfo.ZoneInfo(c.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                close = difflib.get_close_matches(c.time_zone, zoneinfo.available_timezones(), 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"time_zone: {c.time_zone!r} is not a known time zone{hint}")
        if c.marks == "end" and c.interval is None:
            problems.append("interval: `marks: end` needs the interval's length, e.g. 1h or 30m")
        if c.interval is not None and not DURATION.match(c.interval):
            problems.append(f"interval: {c.interval!r} is not a duration like 1h, 30m or 1d")
    else:
        for setting in ("time_zone", "dst_per", "interval"):
            if getattr(c, setting):
                problems.append(f"{setting}: only for timestamps (type is {c.type})")
        if c.format is not None and c.type != "date":
            problems.append(f"format: only for dates and timestamps (type is {c.type})")
    if (c.unit is None) != (c.canonical is None):
        problems.append("unit: a value declares both `unit` and `canonical` (the unit stored)")
    elif isinstance(c.unit, str) and c.unit != c.canonical:
        if c.type != "float":
            problems.append(f"unit: converting {c.unit} to {c.canonical} needs type float")
        if (c.unit, c.canonical) == ("gross", "net"):
            if c.vat is None:
                problems.append("vat: gross->net needs `vat: {rate: ..., date_column: ...}`")
            elif c.vat.date_column not in canonical:
                problems.append(
                    f"vat.date_column: {c.vat.date_column!r} is not a (canonical) column"
                )
        elif (c.unit, c.canonical) not in CONVERSIONS:
            problems.append(
                f"unit: no conversion from {c.unit!r} to {c.canonical!r}; known: "
                + ", ".join(KNOWN_PAIRS)
            )
    if c.vat is not None and (c.unit, c.canonical) != ("gross", "net"):
        problems.append("vat: only with `unit: gross, canonical: net`")
    if c.vat is not None and c.vat.flag is not None and not NAME.match(c.vat.flag):
        problems.append(f"vat.flag: {c.vat.flag!r} is not a lower-case identifier")
    if c.pattern is not None:
        try:
            re.compile(c.pattern)
        except re.error as error:
            problems.append(f"pattern: not a regular expression ({error})")
    if c.type in ("bool", "date", "timestamp") and any(
        getattr(c, b) is not None for b in ("ge", "le", "gt", "lt")
    ):
        problems.append(f"ge/le/gt/lt: bounds are for numbers (type is {c.type})")
    if c.round is not None and c.type != "float":
        problems.append(f"round: only for floats (type is {c.type})")
    if c.pii and c.type != "string":
        problems.append(f"pii: pseudonyms are text: declare type string (type is {c.type})")
    return problems


# --- the runtime Source ---------------------------------------------------------------------------


def build_source(
    name: str,
    d: Declaration,
    text: str,
    where: str = "",
    transform: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    hooks: dict[str, Callable[[pl.Expr], pl.Expr]] | None = None,
) -> Source:
    """The ``Source`` of a validated declaration; ``text`` (and the hooks' code) make its version.
    ``hooks``: raw column -> its column ``transform``."""
    hooks = hooks or {}
    digest = hashlib.sha256(text.encode())
    for hook in (transform, *hooks.values()):
        try:
            digest.update(inspect.getsource(hook).encode())
        except (OSError, TypeError):  # no source to read: the reference alone, already in text
            pass
    pii = tuple(canonical_name(raw, c) for raw, c in d.columns.items() if c.pii)
    zones = sorted({c.time_zone for c in d.columns.values() if c.time_zone})
    units = [
        f"{canonical_name(raw, c)}: {_unit(c)}"
        + (f" -> {c.canonical}" if c.canonical != c.unit else "")
        for raw, c in d.columns.items()
        if c.unit
    ]
    return Source(
        name=name,
        description=d.description,
        physical=PhysicalFormat(
            format=d.format,
            encoding=d.encoding,
            delimiter=d.delimiter if d.format == "csv" else None,
            decimal=d.decimal if d.decimal != "." else None,
            units="; ".join(units),
            time_zone=", ".join(zones) or "UTC",
            notes=d.notes or (f"declared in {where}" if where else ""),
            header=d.header is True,
        ),
        schema=declared_schema(name, d),
        key=tuple(d.key),
        parse=partial(parse, d),
        homogenize=partial(homogenize, d, transform, hooks),
        version=digest.hexdigest()[:16],
        pii_columns=pii,
        subject_keys=tuple(tuple(k) for k in d.subject_keys),
        pattern=d.pattern,
    )


DTYPES = {
    "string": str,
    "int": int,
    "float": float,
    "bool": bool,
    "date": pl.Date,
    "timestamp": UtcTimestamp,
}


def declared_schema(name: str, d: Declaration) -> type[pa.DataFrameModel]:
    """The Pandera model of the formatted table: ``Lineage`` plus one field per column, named by
    alias (a canonical name may be any identifier, even one a DataFrameModel uses itself)."""
    annotations, fields = {}, {}
    for i, (raw, c) in enumerate(d.columns.items()):
        attribute = f"column_{i}"
        dtype = DTYPES[c.type]
        annotations[attribute] = dtype if c.required else Optional[dtype]
        checks = {b: getattr(c, b) for b in ("ge", "le", "gt", "lt") if getattr(c, b) is not None}
        if c.pattern is not None:
            checks["str_matches"] = c.pattern
        if c.isin is not None:
            checks["isin"] = c.isin
        fields[attribute] = pa.Field(
            alias=canonical_name(raw, c),
            nullable=not c.required,
            unique=c.unique,
            description=_description(raw, c),
            **checks,
        )
        if c.vat is not None and c.vat.flag is not None:
            attribute = f"flag_{i}"
            annotations[attribute] = bool
            fields[attribute] = pa.Field(
                alias=c.vat.flag,
                description=c.vat.flag_description
                or f"whether {canonical_name(raw, c)} included VAT ({c.vat.rate:.0%}) and was "
                "converted to net",
            )
    title = "".join(part.title() for part in name.split("_"))
    return type(
        title,
        (Lineage,),
        {
            "__annotations__": annotations,
            "__module__": __name__,
            "__doc__": d.description,
            **fields,
        },
    )


def _unit(c: Column) -> str:
    if isinstance(c.unit, DocumentUnit):
        return f"{' or '.join(c.unit.one_of)} as the document says at {c.unit.document}"
    return c.unit or ""


def _description(raw: str, c: Column) -> str:
    parts = [c.description or raw]
    if c.unit:
        parts.append(f"in {c.canonical}" + (f" (from {_unit(c)})" if c.unit != c.canonical else ""))
    if c.type == "timestamp":
        parts.append(f"UTC (from {c.time_zone} wall-clock time)" if c.time_zone else "UTC")
    if c.pii:
        parts.append("PII, pseudonymized")
    if c.rename and c.rename != raw:
        parts.append(f"raw field {raw!r}")
    return "; ".join(parts)


# --- parsing --------------------------------------------------------------------------------------


def parse(d: Declaration, text: str) -> Parsed:
    """Text -> one string column per declared raw field, ``record_no``, ``raw_record`` and the
    syntax-level ``reject_reason``. A final line without a line terminator is a record like any
    other (a truncated one has too few fields, which is its reason), unless the declaration
    rejects it (``unterminated_last_line: reject``)."""
    # A JSON document is not lines: a line break added to one would move where a cut one ends.
    unterminated = not text.endswith("\n") and d.format != "json"
    if unterminated:
        text += "\n"
    fields = [raw for raw, c in d.columns.items() if c.document is None]
    aliases = {a: raw for raw, c in d.columns.items() for a in c.aliases}
    if d.format == "jsonl":
        parsed = read_json_lines(text, fields, aliases)
    elif d.format == "json":
        parsed = _json_records(d, text, fields)
    else:
        parsed = _delimited(d, text, fields, aliases)
    if unterminated and d.unterminated_last_line == "reject":
        return Parsed(_flag_truncation(parsed.records, text[:-1]), parsed.notes)
    return parsed


def unit_column(raw: str) -> str:
    """The column of a parsed JSON document holding the unit it states for ``raw``."""
    return f"_unit:{raw}"


def _json_records(d: Declaration, text: str, fields: list[str]) -> Parsed:
    document = records = load_json_document(text)
    for step in d.records_path.split(".") if d.records_path else []:
        if not isinstance(records, dict) or step not in records:
            raise Unparseable(f"records_path {d.records_path!r}: no {step!r} in the document")
        records = records[step]
    if not isinstance(records, list):
        what = f"at {d.records_path!r}" if d.records_path else "the document"
        raise Unparseable(f"{what} is a JSON {type(records).__name__}, not an array of records")
    # A unit the document states wrongly voids all its records: said before any record is read.
    units = {}
    for raw, c in d.columns.items():
        if isinstance(c.unit, DocumentUnit):
            unit = _at(document, c.unit.document)
            if unit not in c.unit.one_of:
                raise Unparseable(
                    f"unknown unit {unit!r} at {c.unit.document} (for {raw}); expected one of "
                    f"{c.unit.one_of}"
                )
            units[unit_column(raw)] = unit
    values = {
        raw: _as_text(_at(document, c.document)) for raw, c in d.columns.items() if c.document
    }
    parsed = records_from_objects(records, fields)
    frame = parsed.records.with_columns(
        *(pl.lit(v, pl.String).alias(raw) for raw, v in values.items()),
        *(pl.lit(u, pl.String).alias(name) for name, u in units.items()),
    )
    return Parsed(frame, parsed.notes)


def _at(document: Any, path: str) -> Any:
    """The value at the dotted ``path`` of a JSON document, None where there is none."""
    for step in path.split("."):
        document = document.get(step) if isinstance(document, dict) else None
    return document


def _delimited(d: Declaration, text: str, fields: list[str], aliases: dict[str, str]) -> Parsed:
    if d.header is True:
        end = text.find("\n")
        first = text[:end].removesuffix("\r")
        names = [_unquote(n.strip(), d.quote) for n in first.split(d.delimiter)]
        names = [aliases.get(n, n) for n in names]
        offset = 0
    else:
        names = list(fields) if d.header is False else list(d.header)
        # A header line of our own, so that the readers (which skip one) see every line.
        text, offset = d.delimiter.join(names) + "\n" + text, -1
    missing = [f for f in fields if f not in names]
    if missing:
        hint = next(
            (
                f"; the header looks {c!r}-delimited, not {d.delimiter!r}"
                for c in (", ", ",", ";", "\t", "|")
                if c != d.delimiter and c in first and c not in d.delimiter
            ),
            "",
        )
        raise Unparseable(f"missing declared columns {missing} (header: {first[:200]!r}){hint}")
    if len(set(names)) != len(names):
        raise Unparseable(f"duplicate column names in header {names}")
    notes = (
        [f"ignored extra columns {extra}"]
        if (extra := [n for n in names if n not in fields])
        else []
    )
    if d.quote is not None and d.quote in text:  # quoting: Python's csv module knows the rules
        frame = _delimited_records(text, d.delimiter, names)
    else:  # vectorized: one split per line
        frame = _split_records(text_lines(text), d.delimiter, names, text)
    if offset:
        frame = frame.with_columns(pl.col("record_no") + offset)
    return Parsed(frame.select(*fields, *RECORD_COLUMNS), notes)


def _unquote(name: str, quote: str | None) -> str:
    if quote and len(name) >= 2 and name[0] == name[-1] == quote:
        return name[1:-1].replace(quote * 2, quote)
    return name


# --- homogenizing ---------------------------------------------------------------------------------


def homogenize(
    d: Declaration,
    transform: Callable[[pl.DataFrame], pl.DataFrame] | None,
    hooks: dict[str, Callable[[pl.Expr], pl.Expr]],
    raw: pl.DataFrame,
    ctx: FileContext,
) -> pl.DataFrame:
    """Raw strings -> the declared canonical columns (typed, converted, UTC), with reasons."""
    columns = list(d.columns.items())
    typed = {f"_typed_{i}": raw_name for i, (raw_name, _) in enumerate(columns)}
    units = [unit_column(r) for r, c in columns if isinstance(c.unit, DocumentUnit)]
    # As few passes over the frame as can be: a file of a few records costs what its passes do.
    cleaned = [_cleaned(d, r, c) for r, c in columns]
    frame = raw.with_columns(
        *cleaned,
        *(_typed(d, c, v, hooks.get(r)).alias(t) for t, v, (r, c) in zip(typed, cleaned, columns)),
    )
    # Canonical names from here on; the cleaned raw text stays for the reasons that quote it.
    frame = frame.select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        *(_finite(t, c).alias(canonical_name(r, c)) for t, (r, c) in zip(typed, columns)),
        *(pl.col(r).alias(f"_raw_{i}") for i, (r, _) in enumerate(columns)),
        *units,
        "raw_record",
        add_reasons(*(_parse_failure(d, t, r, c) for t, (r, c) in zip(typed, columns))),
    )
    for i, (raw_name, c) in enumerate(columns):
        if c.type == "timestamp" and c.marks == "end":
            # On the wall clock: an hour-ending label 02:00 is the hour from 01:00, whatever the
            # DST change does to that hour (which the time zone then says).
            name = canonical_name(raw_name, c)
            frame = frame.with_columns(pl.col(name).dt.offset_by(f"-{c.interval}"))
        if c.type == "timestamp" and c.time_zone is not None:
            frame = _to_utc(frame, raw_name, f"_raw_{i}", c, ctx)
    zones = {canonical_name(r, c): c.time_zone for r, c in columns if c.type == "timestamp"}
    final = []
    for r, c in columns:
        converted = c.type == "float" and (c.unit != c.canonical or c.round is not None)
        final.append(_converted(r, c, zones) if converted else pl.col(canonical_name(r, c)))
        if c.vat is not None and c.vat.flag is not None:
            final.append(_gross(c.vat, zones).alias(c.vat.flag))
    frame = frame.select("file_sha256", "record_no", *final, "raw_record", "reject_reason")
    if transform is not None:
        frame = transform(frame)
    if pii := [canonical_name(r, c) for r, c in columns if c.pii]:
        # The raw record holds clear PII: rejects keep only its position, the landing the rest.
        frame = frame.with_columns(
            *(pseudonymize(frame[n], ctx.pii_key) for n in pii), raw_record=pl.lit(PII_WITHHELD)
        )
    return frame


def _finite(typed: str, c: Column) -> pl.Expr:
    """The typed value; a float's only when finite (NaN, inf and 1e400 are no measurement, and
    would pass bounds and `required`)."""
    value = pl.col(typed)
    return pl.when(value.is_finite()).then(value) if c.type == "float" else value


def _parse_failure(d: Declaration, typed: str, raw: str, c: Column) -> pl.Expr:
    """The reason for a typed value that came out null although its (cleaned) text was there, or
    a float that is not finite, naming the raw field: what a person looking at the file sees.
    The text of a PII column is not quoted: the reasons are kept in the clear."""
    text = pl.col(raw) if d.trim else pl.col(raw).str.strip_chars()
    if c.pii:
        shown = pl.format("{}: cannot parse (PII withheld)", pl.lit(raw))
    else:
        shown = pl.format("{}: cannot parse '{}'", pl.lit(raw), pl.col(raw).str.slice(0, 80))
    reason = pl.when(pl.col(typed).is_null() & text.ne("")).then(shown)
    if c.type == "float":
        reason = reason.when(~pl.col(typed).is_finite()).then(
            pl.format("{}: not a finite number '{}'", pl.lit(raw), pl.col(raw).str.slice(0, 80))
        )
    return reason


def _cleaned(d: Declaration, raw: str, c: Column) -> pl.Expr:
    value = pl.col(raw)
    if d.trim:
        value = value.str.strip_chars()
    if d.nulls:
        value = pl.when(value.is_in(d.nulls)).then(None).otherwise(value)
    if c.map:
        value = value.replace(c.map)
    if c.case == "lower":
        value = value.str.to_lowercase()
    elif c.case == "upper":
        value = value.str.to_uppercase()
    elif c.case == "title":
        value = value.str.to_titlecase()
    return value.alias(raw)


def _typed(
    d: Declaration, c: Column, value: pl.Expr, hook: Callable[[pl.Expr], pl.Expr] | None = None
) -> pl.Expr:
    """The cleaned text ``value`` typed (after the column's hook)."""
    value = value if hook is None else hook(value)
    if c.type == "string":
        return value
    if c.type == "bool":
        lower = value.str.to_lowercase()
        return (
            pl.when(lower.is_in([v.lower() for v in c.true_values]))
            .then(True)
            .when(lower.is_in([v.lower() for v in c.false_values]))
            .then(False)
            .otherwise(None)
        )
    if c.type in ("int", "float"):
        if d.decimal == "," and d.thousands != ".":
            # '1.234' is no number here (nor would be '1,5' with a decimal point: the cast says).
            value = pl.when(value.str.contains(".", literal=True)).then(None).otherwise(value)
        if d.thousands is not None:
            value = value.str.replace_all(d.thousands, "", literal=True)
        if d.decimal == ",":
            value = value.str.replace(",", ".", literal=True)
        return value.cast(pl.Int64 if c.type == "int" else pl.Float64, strict=False)
    if c.type == "date":
        return value.str.to_date(c.format or "%Y-%m-%d", strict=False)
    if c.format in EPOCHS:
        epoch = value.cast(pl.Int64, strict=False)
        return (
            pl.from_epoch(epoch, time_unit=EPOCHS[c.format])
            .dt.cast_time_unit("us")
            .dt.replace_time_zone("UTC")
        )
    if zoned(c.format):
        return value.str.to_datetime(c.format, time_unit="us", time_zone="UTC", strict=False)
    return value.str.to_datetime(c.format, time_unit="us", strict=False)  # local: see _to_utc


def _to_utc(frame: pl.DataFrame, raw: str, text: str, c: Column, ctx: FileContext) -> pl.DataFrame:
    """The column's wall-clock times (naive) as UTC instants, with a reason for those that are not
    one instant: a time in the skipped spring hour, and (``dst: reject``) one in the repeated
    autumn hour, or (``by_order``) one seen more than twice for its entity. ``text`` holds the
    raw value the reasons quote."""
    name, zone = canonical_name(raw, c), c.time_zone
    local = pl.col(name)
    if c.dst == "by_order":
        frame = occurrences(frame, name, c.dst_per, ctx.carry)
        # The first occurrence (per entity) of a repeated hour is the earlier instant.
        ambiguous = (
            pl.when(pl.col("occurrence") <= 1).then(pl.lit("earliest")).otherwise(pl.lit("latest"))
        )
    else:
        frame = frame.with_columns(occurrence=pl.lit(1))
        ambiguous = pl.lit("earliest")
    # Each replace_time_zone looks every value up in the zone's rules: by_order needs one.
    utc = local.dt.replace_time_zone(zone, ambiguous=ambiguous, non_existent="null")
    if c.dst == "reject":
        latest = local.dt.replace_time_zone(zone, ambiguous="latest", non_existent="null")
        repeated = utc != latest
    shown = pl.col(text).str.slice(0, 80)

    def reason(template: str, *args: pl.Expr | str) -> pl.Expr:
        return pl.format(
            template, pl.lit(raw), shown, *(pl.lit(a) if isinstance(a, str) else a for a in args)
        )

    reasons = [
        pl.when(local.is_not_null() & utc.is_null()).then(
            reason("{}: '{}' does not exist in {} (skipped by the DST change)", zone)
        )
    ]
    if c.dst == "reject":
        reasons.append(
            pl.when(repeated).then(
                reason("{}: '{}' is ambiguous in {} (the repeated DST hour; dst: reject)", zone)
            )
        )
    else:
        per = f" for the same {', '.join(c.dst_per)}" if c.dst_per else ""
        reasons.append(
            pl.when(pl.col("occurrence") > 2).then(reason("{}: '{}' occurs more than twice{}", per))
        )
    if c.dst == "reject":
        utc = pl.when(repeated).then(None).otherwise(utc)
    return frame.with_columns(
        add_reasons(*reasons), **{name: utc.dt.convert_time_zone("UTC")}
    ).drop("occurrence")


def _gross(vat: Vat, zones: dict[str, str | None]) -> pl.Expr:
    """Whether a row's value includes VAT: its date within [from, until); the date of a (UTC)
    timestamp is the one on its declared wall clock (``zones``: timestamp column -> zone)."""
    on = pl.col(vat.date_column)
    zone = zones.get(vat.date_column)
    on = on.dt.convert_time_zone(zone).dt.date() if zone else on.cast(pl.Date)
    gross = pl.lit(True)
    if vat.from_ is not None:
        gross = gross & (on >= vat.from_)
    if vat.until is not None:
        gross = gross & (on < vat.until)
    return gross


def _converted(raw: str, c: Column, zones: dict[str, str | None]) -> pl.Expr:
    name = canonical_name(raw, c)
    value = pl.col(name)
    if (c.unit, c.canonical) == ("gross", "net"):
        value = (
            pl.when(_gross(c.vat, zones)).then(value * (1.0 / (1.0 + c.vat.rate))).otherwise(value)
        )
    elif isinstance(c.unit, DocumentUnit):
        unit, converted = pl.col(unit_column(raw)), pl.lit(None, pl.Float64)
        for one in reversed(c.unit.one_of):
            to = value if one == c.canonical else CONVERSIONS[(one, c.canonical)](value)
            converted = pl.when(unit == one).then(to).otherwise(converted)
        value = converted
    elif c.unit != c.canonical:
        value = CONVERSIONS[(c.unit, c.canonical)](value)
    if c.round is not None:
        value = value.round(c.round)
    return value.alias(name)
