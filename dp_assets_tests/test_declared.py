"""Declared sources: a YAML declaration in, the formatted zone's rows and rejects out.

Generated files check the behaviour row by row (local time to UTC across both DST changes, unit
conversions, null tokens, padding, located reasons); two tests read the real public files in
``../shared/data`` and skip where they are absent (a fresh clone).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import zoneinfo
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from dp_assets.formatted.process import format_file, read_landed
from dp_assets.privacy import pseudonymize
from dp_assets.sources.base import FileContext, Source
from dp_assets.sources.declared import DeclarationError, load_source
from dp_assets.sources.sniff import scaffold

CTX = FileContext("f" * 64, "test.csv", b"unit-test-key")
UTC = dt.UTC
HERE = Path(__file__).resolve().parent
PROJECTS = HERE / "projects"


def _shared_data() -> Path:
    """``../shared/data`` beside the repository; from a git worktree, beside its main checkout."""
    repo = HERE.parent
    git = repo / ".git"
    if git.is_file():  # "gitdir: <main>/.git/worktrees/<name>"
        main = Path(git.read_text().split(":", 1)[1].strip()).parents[2]
        if not (repo.parent / "shared" / "data").exists():
            repo = main
    return repo.parent / "shared" / "data"


SHARED = _shared_data()


class Project:
    """What ``load_source`` needs of a project: its folder and its hooks."""

    def __init__(self, root: Path, hooks: dict | None = None):
        self.root = root
        self.hooks = hooks or {}

    def hook(self, ref: str):
        return self.hooks[ref]


def declare(tmp_path: Path, text: str, name: str = "src", hooks: dict | None = None) -> Source:
    path = tmp_path / "sources" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_source(path, Project(tmp_path, hooks))


def run(source: Source, data: str | bytes, ctx: FileContext = CTX):
    result = format_file(source, data.encode() if isinstance(data, str) else data, ctx)
    assert result.quarantine_reason is None, result.quarantine_reason
    assert result.rows.height + result.rejects.height == result.records_in
    return result


def reasons(result) -> dict[int, str]:
    return dict(result.rejects.select("record_no", "reason").iter_rows())


METERS = """
description: Half-hourly readings in local time, Wh, with the outdoor temperature in F
delimiter: ";"
decimal: ","
thousands: " "
nulls: ["", "NULL", "Null", "?"]
columns:
  meter: {rename: meter_id, required: true, pattern: "^MTR-[0-9]{3}$"}
  local_time:
    type: timestamp
    rename: reading_start
    format: "%Y-%m-%d %H:%M"
    time_zone: Europe/Warsaw
    dst: by_order
    dst_per: [meter_id]
    required: true
  energy: {type: float, rename: kwh, unit: Wh, canonical: kWh, required: true, ge: 0, le: 20}
  temp: {type: float, rename: temperature_c, unit: F, canonical: C, round: 6}
key: [meter_id, reading_start]
"""


def meter_file() -> tuple[str, dict[int, dict]]:
    """Two meters, interleaved, each in time order, every half hour of the two DST-change days of
    2024 in Europe/Warsaw wall-clock time; the expected row per line number."""
    zone = zoneinfo.ZoneInfo("Europe/Warsaw")
    lines, expected = ["meter;local_time;energy;temp"], {}
    for day in (
        dt.datetime(2024, 3, 30, 22, tzinfo=UTC),
        dt.datetime(2024, 10, 26, 21, tzinfo=UTC),
    ):
        for step in range(50):
            start = day + dt.timedelta(minutes=30 * step)
            local = start.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            for meter, wh in (("MTR-001", 250 + step), ("MTR-002", 1000 + 10 * step)):
                fahrenheit = [" 32 ", "212", "NULL", "Null", "?", "50"][step % 6]
                energy = f" {wh},5 " if step % 7 == 0 else str(wh)  # padded, decimal comma
                lines.append(f"{meter};{local};{energy};{fahrenheit}")
                celsius = {" 32 ": 0.0, "212": 100.0, "50": 10.0}.get(fahrenheit)
                kwh = (wh if step % 7 else wh + 0.5) * 0.001
                expected[len(lines)] = {"meter_id": meter, "reading_start": start, "kwh": kwh,
                                        "temperature_c": celsius}  # fmt: skip
    return "\n".join(lines), expected


def test_local_time_across_both_dst_changes_converted_to_utc_row_by_row(tmp_path):
    source = declare(tmp_path, METERS)
    text, expected = meter_file()
    bad = [
        "MTR-001;2024-03-31 02:30;100;50",  # the skipped spring hour
        "MTR-001;2024-05-01 12:00;abc;50",
        "MTR-001;2024-05-01 12:30;-5;50",
        "MTR-9;2024-05-01 13:00;5;50",
        "MTR-001;2024-05-01 13:30;5",
        "MTR-001;2024-05-01 12:00;7;50",  # the same meter and time as a rejected record: kept
        "MTR-002;2024-10-28 12:00;1 000;50",  # the last line, valid, without a line terminator
    ]
    result = run(source, text + "\n" + "\n".join(bad))
    first_bad = len(expected) + 2
    assert reasons(result) == {
        first_bad: "local_time: '2024-03-31 02:30' does not exist in Europe/Warsaw (skipped by "
        "the DST change)",
        first_bad + 1: "energy: cannot parse 'abc'",
        first_bad + 2: "kwh: failed greater_than_or_equal_to(0.0) (got -0.005)",
        first_bad + 3: "meter_id: failed str_matches('^MTR-[0-9]{3}$') (got MTR-9)",
        first_bad + 4: "expected 4 fields, found 3",
    }
    rows = {r["record_no"]: r for r in result.rows.iter_rows(named=True)}
    for line, want in expected.items():
        got = rows[line]
        assert got["meter_id"] == want["meter_id"]
        assert got["reading_start"] == want["reading_start"], line
        assert got["kwh"] == pytest.approx(want["kwh"], abs=1e-12)
        assert got["temperature_c"] == want["temperature_c"]
    # Each meter's autumn hour 02:00-03:00 was written twice: four distinct UTC half hours.
    repeated = [n for n, r in expected.items() if r["reading_start"].hour in (0, 1)
                and r["reading_start"].month == 10 and r["meter_id"] == "MTR-001"]  # fmt: skip
    assert len({rows[n]["reading_start"] for n in repeated}) == len(repeated) == 4
    assert rows[first_bad + 6]["kwh"] == 1.0 and rows[first_bad + 5]["kwh"] == 0.007
    assert result.rows.schema["reading_start"] == pl.Datetime("us", "UTC")


def test_repeated_hour_rejected_by_the_reject_policy_and_read_in_parts_like_whole(tmp_path):
    text = "ts,v\n2024-11-03 00:30,1\n2024-11-03 01:30,2\n2024-11-03 01:30,3\n2024-11-03 02:30,4\n"
    rejecting = declare(
        tmp_path,
        "description: d\ncolumns:\n  ts: {type: timestamp, format: '%Y-%m-%d %H:%M', "
        "time_zone: America/New_York}\n  v: {type: int}\n",
    )
    assert reasons(run(rejecting, text)) == {
        n: "ts: '2024-11-03 01:30' is ambiguous in America/New_York (the repeated DST hour; "
        "dst: reject)"
        for n in (3, 4)
    }
    # A header-less file by order, read in parts of a few lines: the same rows as read whole.
    by_order = declare(
        tmp_path,
        "description: d\nheader: [ts, v]\ncolumns:\n  ts: {type: timestamp, format: "
        "'%Y-%m-%d %H:%M', time_zone: America/New_York, dst: by_order}\n  v: {type: int}\n",
        name="parts",
    )
    path = tmp_path / "file.csv"
    path.write_text(text.split("\n", 1)[1] * 3)  # the hour twice, three times over
    whole = run(by_order, path.read_bytes())
    parts = list(read_landed(by_order, path, CTX, chunk_bytes=40))
    assert len(parts) > 3
    typed = pl.concat([p.typed for p in parts if p.typed is not None])
    starts = typed["ts"].to_list()
    assert typed["record_no"].to_list() == list(range(1, 13))
    assert starts[:4] == [dt.datetime(2024, 11, 3, h, 30, tzinfo=UTC) for h in (4, 5, 6, 7)]
    rejected = typed.filter(pl.col("reject_reason").is_not_null())
    assert rejected["record_no"].to_list() == [6, 7, 9, 10, 11, 12]  # a third time and later
    assert rejected["reject_reason"][0] == "ts: '2024-11-03 01:30' occurs more than twice"
    kept = typed.filter(pl.col("reject_reason").is_null()).select(whole.rows.columns)
    assert whole.rows.equals(kept)  # no key declared: a repeated record is no duplicate


def test_units_are_converted_and_an_unknown_pair_is_a_located_error(tmp_path):
    source = declare(
        tmp_path,
        """
description: Prices and shares
columns:
  valid_from: {type: date}
  price: {type: float, unit: gross, canonical: net, round: 6,
          vat: {rate: 0.23, from: 2024-01-01, date_column: valid_from}}
  fee_cents: {type: float, rename: fee, unit: cents, canonical: currency}
  share: {type: float, unit: fraction, canonical: percent, le: 100}
  energy: {type: float, unit: MWh, canonical: kWh}
  power: {type: float, unit: MW, canonical: kW}
""",
    )
    result = run(
        source,
        "valid_from,price,fee_cents,share,energy,power\n"
        "2023-12-31,1.23,150,0.25,0.5,2\n2024-01-01,1.23,5,1.5,1,0.001\n",
    )
    rows = result.rows.select("price", "fee", "share", "energy", "power").rows()
    assert rows == [(1.23, 1.5, 25.0, 500.0, 2000.0)]  # before the VAT date: net already
    assert reasons(result) == {3: "share: failed less_than_or_equal_to(100.0) (got 150.0)"}
    with pytest.raises(DeclarationError) as error:
        declare(tmp_path, "description: d\ncolumns:\n  t: {type: float, unit: Wh, canonical: C}\n")
    assert str(error.value).startswith(
        "sources/src.yaml: columns.t.unit: no conversion from 'Wh' to 'C'; known: Wh->kWh,"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("columns:\n  y: {type: flaot}\n",
         "columns.y.type: 'flaot' is not one of 'string', 'int', 'float', 'bool', 'date' or "
         "'timestamp'"),
        ("columns:\n  y: {type: int, uniqe: true}\n",
         "columns.y.uniqe: unknown setting (did you mean 'unique'?)"),
        ("columns:\n  ds: {type: timestamp, format: '%Y'}\n",
         "columns.ds.time_zone: a local timestamp declares the time zone"),
        ("columns:\n  ds: {type: timestamp, format: '%Y', time_zone: Europe/Warsow}\n",
         "columns.ds.time_zone: 'Europe/Warsow' is not a known time zone (did you mean "
         "'Europe/Warsaw'?)"),
        ("columns:\n  a-b: {}\n", "columns.a-b: canonical name 'a-b' is not a lower-case "
         "identifier: add `rename: a_b`"),
        ("columns:\n  a: {}\nkey: [b]\n", "key: 'b' is not a (canonical) column name"),
        ("delimiter: ', '\ncolumns:\n  a: {}\n", "quote: a 2-character delimiter"),
        ("columns: [a\n", "sources/src.yaml:3:1: not valid YAML"),
        ("columns:\n  a: {document: x}\n", "columns.a.document: only for json (format is csv)"),
        ("format: json\ncolumns:\n  t: {type: float, unit: {document: u, one_of: [C, Wh]}, "
         "canonical: C}\n", "columns.t.unit.one_of: no conversion from 'Wh' to 'C'"),
        ("columns:\n  a: {aliases: [b]}\n  b: {}\n", "aliases: 'b' names two fields"),
        ("columns:\n  a: {transform: upper}\n", "columns.a.transform: 'upper' is not a hook"),
        # The offset in each value says the zone: a declared one would convert a second time.
        ("columns:\n  ts: {type: timestamp, format: '%Y-%m-%dT%H:%M:%S%z', "
         "time_zone: Europe/Warsaw}\n", "columns.ts.time_zone: the format's %z gives each time"),
        ("columns:\n  ts: {type: timestamp, format: epoch_s, time_zone: UTC}\n",
         "columns.ts.time_zone: epoch_s times are UTC"),
        ("columns:\n  ts: {type: timestamp, format: epoch_ms}\n  p: {type: float, unit: gross, "
         "canonical: net, vat: {rate: 0.2, date_column: ts}}\n",
         "columns.p.vat.date_column: 'ts' is a timestamp without a declared time_zone"),
    ],
)  # fmt: skip
def test_declaration_errors_are_located(tmp_path, text, message):
    with pytest.raises(DeclarationError) as error:
        declare(tmp_path, "description: d\n" + text)
    assert message in str(error.value)
    assert str(error.value).startswith("sources/src.yaml")


def test_pii_hook_schema_version_and_json_formats(tmp_path):
    def upper_city(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col("city").str.to_uppercase())

    text = """
description: People (JSON Lines, epoch milliseconds)
format: jsonl
columns:
  email: {pii: true, case: lower, required: true, description: Contact address}
  city: {}
  ts: {type: timestamp, format: epoch_ms, rename: seen_at}
  ok: {type: bool}
transform: hooks.py:upper_city
subject_keys: [[email]]
"""
    source = declare(tmp_path, text, hooks={"hooks.py:upper_city": upper_city})
    data = (
        '{"email": " Ann@X.org ", "city": "Lodz", "ts": 1700000000000, "ok": true}\n'
        '{"email": "bob@x.org", "city": null, "ts": "later", "ok": "maybe"}'
    )
    result = run(source, gzip.compress(data.encode()))
    assert result.rows.rows() == [
        ("f" * 64, 1, pseudonymize(pl.Series(["ann@x.org"]), CTX.pii_key)[0], "LODZ",
         dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), True),
    ]  # fmt: skip
    assert reasons(result) == {2: "ts: cannot parse 'later'; ok: cannot parse 'maybe'"}
    assert result.rejects["raw_record"].to_list() == [
        "<PII withheld: see the landed file at record_no>"
    ]
    columns = source.schema.to_schema().columns
    assert list(columns) == ["file_sha256", "record_no", "email", "city", "seen_at", "ok"]
    assert columns["email"].description == "Contact address; PII, pseudonymized"
    assert source.pii_columns == ("email",) and source.subject_keys == (("email",),)
    again = declare(tmp_path, text + "notes: n\n", hooks={"hooks.py:upper_city": upper_city})
    assert again.version != source.version and len(source.version) == 16

    document = declare(
        tmp_path,
        "description: d\nformat: json\nrecords_path: data.items\ncolumns:\n  a: {type: int}\n",
        name="doc",
    )
    result = run(document, json.dumps({"data": {"items": [{"a": 1}, {"a": "x"}, [1]]}}))
    assert result.rows["a"].to_list() == [1]
    assert reasons(result) == {1: "a: cannot parse 'x'", 2: "record is a JSON list, not an object"}


def test_aliases_column_hooks_and_an_unterminated_last_line_rejected(tmp_path):
    def code(value: pl.Expr) -> pl.Expr:  # 'ab-1' -> 'AB-001'; anything else null
        parts = value.str.to_uppercase().str.extract_groups(r"^([A-Z]{2})-?(\d{1,3})$")
        return pl.concat_str(parts.struct[0], pl.lit("-"), parts.struct[1].str.zfill(3))

    hooks = {"hooks.py:code": code}
    text = """
description: d
format: {format}
unterminated_last_line: reject
columns:
  id: {{rename: code, transform: hooks.py:code, required: true}}
  wh: {{type: float, rename: kwh, unit: Wh, canonical: kWh, aliases: [energy_wh]}}
key: [code]
"""
    lines = declare(tmp_path, text.format(format="jsonl"), hooks=hooks)
    result = run(
        lines,
        '{"id": "ab-1", "wh": 250}\n{"id": "x", "energy_wh": 5}\n'
        '{"id": "AB001", "energy_wh": 1}\n{"id": "cd-2", "wh": 1}',
    )
    assert result.rows.select("code", "kwh").rows() == [("AB-001", 0.25)]
    assert reasons(result) == {
        2: "id: cannot parse 'x'",
        3: "duplicate of record 1 (same code)",  # the canonical code makes the duplicate
        4: "last line has no line terminator: the file may be truncated",
    }
    delimited = declare(tmp_path, text.format(format="csv"), name="csv", hooks=hooks)
    result = run(delimited, "energy_wh,id\n1000,ab-7\n")
    assert result.rows.select("code", "kwh").rows() == [("AB-007", 1.0)]
    again = declare(tmp_path, text.format(format="csv"), name="csv", hooks={"hooks.py:code": str})
    assert again.version != delimited.version  # the hook's code is part of the version


def test_values_and_units_stated_by_the_document_and_a_vat_flag(tmp_path):
    source = declare(
        tmp_path,
        """
description: d
format: json
records_path: observations
columns:
  provider: {document: meta.provider, required: true}
  time: {type: timestamp, format: "%Y-%m-%dT%H:%M:%S%#z"}
  t: {type: float, rename: t_c, unit: {document: units.t, one_of: [C, F]}, canonical: C}
""",
    )
    observations = [
        {"time": "2024-01-15T00:00:00Z", "t": 50},
        {"time": "2024-01-15T03:00:00+02:00"},
    ]
    doc = {"meta": {"provider": "sky"}, "units": {"t": "F"}, "observations": observations}
    result = run(source, json.dumps(doc))
    assert result.rows.select("provider", "time", "t_c").rows() == [
        ("sky", dt.datetime(2024, 1, 15, tzinfo=UTC), 10.0),
        ("sky", dt.datetime(2024, 1, 15, 1, tzinfo=UTC), None),
    ]
    doc["units"]["t"] = "C"
    assert run(source, json.dumps(doc)).rows["t_c"].to_list() == [50.0, None]
    doc["units"]["t"] = "K"  # convertible, but not a unit the declaration expects
    assert format_file(source, json.dumps(doc).encode(), CTX).quarantine_reason == (
        "unknown unit 'K' at units.t (for t); expected one of ['C', 'F']"
    )

    tariffs = declare(
        tmp_path,
        """
description: d
columns:
  month: {type: date, format: "%Y-%m"}
  price: {type: float, unit: gross, canonical: net, round: 6,
          vat: {rate: 0.25, until: 2024-04-01, date_column: month, flag: included_vat}}
  other: {}
""",
        name="tariffs",
    )
    result = run(tariffs, "month,price,other\n2024-03,1.25,a\n2024-04,1.25,b\n")
    assert result.rows.drop("file_sha256").rows() == [
        (2, dt.date(2024, 3, 1), 1.0, True, "a"),
        (3, dt.date(2024, 4, 1), 1.25, False, "b"),
    ]
    flag = tariffs.schema.to_schema().columns["included_vat"]
    assert not flag.nullable and flag.description.startswith("whether price included VAT (25%)")


def test_quoted_fields_thousands_and_header_names(tmp_path):
    source = declare(
        tmp_path,
        "description: d\nheader: false\nthousands: ','\ncolumns:\n  name: {}\n"
        "  amount: {type: float}\n  day: {type: date, format: '%d.%m.%Y'}\n",
    )
    result = run(source, '"Doe, J.","1,234.5",01.02.2024\nplain,7,31.02.2024\n')
    assert result.rows.select("record_no", "name", "amount", "day").rows() == [
        (1, "Doe, J.", 1234.5, dt.date(2024, 2, 1))
    ]
    assert reasons(result) == {2: "day: cannot parse '31.02.2024'"}


def test_sniffed_declaration_reads_its_sample(tmp_path):
    sample = tmp_path / "readings.csv"
    sample.write_text(
        "Meter Id, When, kWh, Note, Active\n"
        + "".join(
            f"M{i}, 2024-05-{1 + i % 28:02d} {i % 24:02d}:00:00, {i}.5, "
            f"{['?', 'NULL', 'ok'][i % 3]}, {['true', 'false'][i % 2]}\n"
            for i in range(60)
        )
    )
    text = scaffold("readings", sample)
    assert 'delimiter: ", "' in text and 'nulls: ["", "?", "NULL"]' in text
    assert "rename: meter_id" in text and 'format: "%Y-%m-%d %H:%M:%S"' in text
    assert "# CHECK: the zone the wall clock" in text
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "readings.yaml").write_text(text)
    source = load_source(tmp_path / "sources" / "readings.yaml", Project(tmp_path))
    result = run(source, sample.read_bytes(), replace(CTX, original_name="readings.csv"))
    assert result.rejects.is_empty() and result.rows.height == 60
    assert result.rows.schema["kwh"] == pl.Float64 and result.rows.schema["active"] == pl.Boolean
    assert result.rows["note"].null_count() == 40

    semicolons = tmp_path / "eu.csv"
    semicolons.write_text("a;b\n1,5;01.02.2024\n2,25;03.04.2024\n")
    assert 'decimal: ","' in scaffold("eu", semicolons)
    assert 'format: "%d.%m.%Y"' in scaffold("eu", semicolons)


def test_non_finite_floats_are_rejected(tmp_path):
    source = declare(
        tmp_path, "description: d\ncolumns:\n  y: {type: float, required: true, ge: 0}\n"
    )
    result = run(source, "y\nNaN\ninf\n1e400\n-Infinity\n1.5\n")
    assert result.rows["y"].to_list() == [1.5]
    assert reasons(result) == {
        2: "y: not a finite number 'NaN'",
        3: "y: not a finite number 'inf'",
        4: "y: not a finite number '1e400'",
        5: "y: not a finite number '-Infinity'",
    }


def test_a_pii_value_that_does_not_parse_is_not_quoted(tmp_path):
    def address(value: pl.Expr) -> pl.Expr:  # null unless it looks like an e-mail address
        return pl.when(value.str.contains("@")).then(value)

    source = declare(
        tmp_path,
        "description: d\ncolumns:\n  email: {pii: true, transform: hooks.py:address}\n"
        "  n: {type: int}\n",
        hooks={"hooks.py:address": address},
    )
    result = run(source, "email,n\nann@x.org,1\nAnn Smith 555-0101,x\n")
    assert reasons(result) == {3: "email: cannot parse (PII withheld); n: cannot parse 'x'"}
    assert "Ann" not in result.rejects.write_csv()


@pytest.mark.parametrize(
    "settings, data, value, reason",
    [
        ('decimal: ","', "1,5", 1.5, None),
        ('decimal: ","', "1.234", None, "y: cannot parse '1.234'"),
        ('decimal: ","\nthousands: " "', "1 234.5", None, "y: cannot parse '1 234.5'"),
        ('decimal: ","\nthousands: "."', "1.234,5", 1234.5, None),
        ('decimal: "."', "1,5", None, "y: cannot parse '1,5'"),
        ('decimal: "."\nthousands: ","', "1,234.5", 1234.5, None),
    ],
)
def test_a_separator_that_is_not_declared_is_rejected(tmp_path, settings, data, value, reason):
    source = declare(
        tmp_path, f"description: d\ndelimiter: ';'\n{settings}\ncolumns:\n  y: {{type: float}}\n"
    )
    result = run(source, f"y\n{data}\n")
    assert result.rows["y"].to_list() == ([value] if value is not None else [])
    assert reasons(result) == ({2: reason} if reason else {})


def test_bool_words_are_text_and_compared_case_insensitively(tmp_path):
    # YAML reads unquoted yes/no/on as booleans; raw values are text, as written.
    source = declare(
        tmp_path,
        "description: d\nnulls: ['', n/a, NO]\ncolumns:\n  a: {type: bool, true_values: [Yes, on], "
        "false_values: [no, 'False']}\n  b: {map: {yes: ja, no: nein}}\n",
    )
    result = run(source, "a,b\nYes,yes\nYES,no\nno,x\nFALSE,x\nON,x\ntrue,x\nn/a,NO\n")
    assert result.rows.select("a", "b").rows() == [
        (True, "ja"), (True, "nein"), (False, "x"), (False, "x"), (True, "x"), (None, None),
    ]  # fmt: skip
    assert reasons(result) == {7: "a: cannot parse 'true'"}


def test_the_vat_date_of_a_local_timestamp_is_its_local_date(tmp_path):
    source = declare(
        tmp_path,
        """
description: d
columns:
  at: {type: timestamp, format: "%Y-%m-%d %H:%M", time_zone: Europe/Warsaw}
  price: {type: float, unit: gross, canonical: net,
          vat: {rate: 0.25, from: 2024-01-01, date_column: at, flag: gross}}
""",
    )
    result = run(source, "at,price\n2023-12-31 23:30,1.25\n2024-01-01 00:30,1.25\n")
    # 00:30 in Warsaw on the first VAT day is 23:30 UTC the day before: gross all the same.
    assert result.rows.select("at", "price", "gross").rows() == [
        (dt.datetime(2023, 12, 31, 22, 30, tzinfo=UTC), 1.25, False),
        (dt.datetime(2023, 12, 31, 23, 30, tzinfo=UTC), 1.0, True),
    ]


def test_sniffer_names_ids_patterns_and_null_tokens(tmp_path):
    sample = tmp_path / "orders.data"
    sample.write_text(
        "Order Id,Price €,Price $,Note,Where\n"
        + "".join(
            f"{12345678901234567890 + i},{i}.5,{i}.25,{['?', 'ok'][i % 2]},{['x', 'NULL'][i % 2]}\n"
            for i in range(20)
        )
    )
    text = scaffold("orders", sample)
    assert "rename: price\n" in text and "rename: price_2\n" in text
    assert "  Order Id:\n    rename: order_id\n    type: string" in text  # beyond int64
    pattern = next(line for line in text.splitlines() if line.startswith("pattern:"))
    assert pattern.startswith('pattern: "orders.*"') and "CHECK" in pattern
    nulls = next(line for line in text.splitlines() if line.startswith("nulls:"))
    assert nulls.startswith('nulls: ["", "?", "NULL"]')
    assert "CHECK" in nulls and '"?" in Note' in nulls and '"NULL" in Where' in nulls
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "orders.yaml").write_text(text)
    source = load_source(tmp_path / "sources" / "orders.yaml", Project(tmp_path))
    result = run(source, sample.read_bytes(), replace(CTX, original_name="orders.test"))
    assert result.rows.height == 20 and result.rows["order_id"][0] == "12345678901234567890"
    daily = tmp_path / "meters_2024-05-01.csv"
    daily.write_text("a\n1\n")
    assert 'pattern: "meters_*.csv"' in scaffold("meters", daily)


# --- the real public files -----------------------------------------------------------------------


def shared(path: str) -> Path:
    if not (SHARED / path).exists():
        pytest.skip(
            f"{SHARED / path} is absent: the real public datasets (see its README) are not here"
        )
    return SHARED / path


def project_source(project: str, name: str) -> Source:
    root = PROJECTS / project
    return load_source(root / "sources" / f"{name}.yaml", Project(root))


def test_pjm_east_hourly_load(tmp_path):
    path = shared("pjm_hourly/PJME_hourly.csv")
    source = project_source("pjm", "pjm_load")
    started = time.perf_counter()
    result = run(source, path.read_bytes())
    seconds = time.perf_counter() - started
    print(
        f"PJM: {result.rows.height:,} formatted, {result.rejects.height} rejected, {seconds:.2f} s"
    )
    assert (result.rows.height, result.rejects.height) == (145_366, 0)
    hours = result.rows.sort("hour_start")
    assert hours["hour_start"].is_unique().all()
    starts = dict(result.rows.select("record_no", "hour_start").iter_rows())
    # Hour ending 02:00 on the autumn change, twice: 01:00 EDT then 01:00 EST, an hour apart.
    assert starts[106586] == dt.datetime(2014, 11, 2, 5, tzinfo=UTC)
    assert starts[106587] == dt.datetime(2014, 11, 2, 6, tzinfo=UTC)
    # Spring: hour ending 02:00 (EST) then 04:00 (EDT): consecutive hours, none missing.
    assert starts[112299] == dt.datetime(2014, 3, 9, 6, tzinfo=UTC)
    assert starts[112300] == dt.datetime(2014, 3, 9, 7, tzinfo=UTC)
    per_day = hours.group_by(
        pl.col("hour_start").dt.convert_time_zone("America/New_York").dt.date()
    ).len()
    lengths = dict(per_day.iter_rows())
    assert lengths[dt.date(2014, 11, 2)] == 25 and lengths[dt.date(2014, 3, 9)] == 23
    # Read as hour-starting labels, the same file has 17 times in the skipped spring hour.
    starting = declare(tmp_path, (PROJECTS / "pjm/sources/pjm_load.yaml").read_text().replace(
        "    marks: end", "    marks: start"), name="pjm_load")  # fmt: skip
    wrong = run(starting, path.read_bytes())
    gaps = wrong.rejects.filter(pl.col("reason").str.contains("does not exist in America/New_York"))
    assert gaps.height == 17


def test_uci_adult_both_files(tmp_path):
    source = project_source("adult", "adult")
    started, counts, labels = time.perf_counter(), {}, set()
    for name, records in (("adult.data", 32_560), ("adult.test", 16_281)):
        result = run(
            source, shared(f"uci_adult/{name}").read_bytes(), replace(CTX, original_name=name)
        )
        assert (result.rows.height, result.rejects.height) == (records, 0), reasons(result)
        counts[name] = result.rows
        labels |= set(result.rows["income"].unique())
    print(f"Adult: {sum(r.height for r in counts.values()):,} formatted, 0 rejected, "
          f"{time.perf_counter() - started:.2f} s")  # fmt: skip
    assert labels == {">50K", "<=50K"}
    unknown = counts["adult.data"].filter(
        pl.any_horizontal(pl.col("workclass", "occupation", "native_country").is_null())
    )
    assert unknown.height == 2_399
    text = scaffold("adult", shared("uci_adult/adult.data"))
    assert 'delimiter: ", "' in text and '"?"' in text and "rename: education_num" in text
