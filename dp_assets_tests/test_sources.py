"""Unit tests of each source's pure transforms: raw text in, canonical rows and rejects out."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import re
import zipfile

import polars as pl
import pytest

from dp_assets.formatted.process import format_file
from dp_assets.privacy import pseudonymize
from dp_assets.sources.base import (
    MAX_LINE_BYTES,
    FileContext,
    Unparseable,
    _first_long_line,
    decode,
    gunzip,
    read_delimited,
)
from dp_projects.utility.sources.customers import normalize_name
from dp_projects.utility.model import canonical_meter_id
from dp_assets_tests.conftest import SOURCES

CTX = FileContext("f" * 64, "test", b"unit-test-key")
UTC = dt.UTC


def run(source: str, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    result = format_file(SOURCES[source], data, CTX)
    assert result.quarantine_reason is None, result.quarantine_reason
    assert result.rows.height + result.rejects.height == result.records_in
    return result


def test_vendor_a_local_time_decimal_comma_and_autumn_dst():
    result = run(
        "meters_vendor_a",
        "meter_id;timestamp;consumption_kwh\n"
        "MTR-000001;2024-10-27 01:30;1,5\n"
        "MTR-000001;2024-10-27 02:00;0,25\n"  # CEST
        "MTR-000001;2024-10-27 02:30;0,25\n"
        "MTR-000001;2024-10-27 02:00;0,75\n"  # the repeat: CET
        "MTR-000001;2024-10-27 02:30;0,75\n"
        "MTR-000001;2024-07-01 12:00;1 234,5\n",
    )
    starts = result.rows["reading_start"].to_list()
    assert starts[:5] == [
        dt.datetime(2024, 10, 26, 23, 30, tzinfo=UTC),
        dt.datetime(2024, 10, 27, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        dt.datetime(2024, 10, 27, 1, 0, tzinfo=UTC),
        dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC),
    ]
    assert result.rows["kwh"].to_list()[:5] == [1.5, 0.25, 0.25, 0.75, 0.75]
    # 1234.5 kWh in half an hour is a device fault, rejected by the schema's bound.
    assert "kwh: failed less_than_or_equal_to" in result.rejects["reason"][0]


def test_vendor_a_spring_gap_and_triple_occurrence_are_rejected():
    result = run(
        "meters_vendor_a",
        "meter_id;timestamp;consumption_kwh\nMTR-000001;2024-03-31 02:30;1\n"
        + "MTR-000002;2024-10-27 02:00;1\n" * 3,
    )
    reasons = result.rejects["reason"].to_list()
    assert "does not exist in Europe/Warsaw (skipped by the DST change)" in reasons[0]
    assert "occurs more than twice" in reasons[1]


def test_vendor_b_epoch_ms_wh_and_schema_drift():
    ts = int(dt.datetime(2024, 1, 15, 10, tzinfo=UTC).timestamp() * 1000)
    result = run(
        "meters_vendor_b",
        f'{{"meter": "000042", "ts": {ts}, "wh": 250}}\n{{"meter": "42", "ts": {ts + 1_800_000}, "energy_wh": 1250}}\n',
    )
    assert result.rows["meter_id"].to_list() == ["MTR-000042", "MTR-000042"]
    assert result.rows["kwh"].to_list() == [0.25, 1.25]
    assert result.rows["reading_start"][1] == dt.datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


def test_vendor_b_bad_lines_are_rejected_one_by_one():
    result = run("meters_vendor_b", '[1, 2]\n{"meter": "1", "ts": 1, "wh": -5}\nnot json\n')
    assert result.rows.height == 0
    reasons = result.rejects["reason"].to_list()
    assert (
        "not an object" in reasons[0]
        and "greater_than_or_equal_to" in reasons[1]
        and "invalid JSON" in reasons[2]
    )


def test_weather_fahrenheit_is_converted_using_the_declared_unit():
    doc = {"provider": "skycast", "units": {"temperature": "F"},
           "observations": [{"region": " West ", "time": "2024-01-15T00:00:00Z", "temperature": 50, "humidity": 80}]}  # fmt: skip
    result = run("weather", json.dumps(doc))
    row = result.rows.row(0, named=True)
    assert row["temperature_c"] == pytest.approx(10.0) and row["region"] == "west"
    assert row["observed_at"] == dt.datetime(2024, 1, 15, tzinfo=UTC)


def test_tariffs_are_made_net_of_vat_before_the_change():
    result = run("tariffs", "tariff,month,price_pln_per_kwh\ng11,2024-03,1.23\nG11,2024-04,1.00\n")
    assert result.rows["price_net_pln_per_kwh"].to_list() == [1.0, 1.0]
    assert result.rows["source_included_vat"].to_list() == [True, False]
    assert result.rows["month"].to_list() == [dt.date(2024, 3, 1), dt.date(2024, 4, 1)]


def test_customers_two_crms_normalize_to_the_same_pseudonyms():
    alpha = run(
        "customers",
        "customer_id,full_name,email,address,city,region,tariff,meter_id,contract_start,contract_end\n"
        "ALP-000001,Jan Kowalski,jan.k@example.com,ul. Polna 1/2,Łódź,central,G11,MTR-000007,2020-01-31,\n",
    ).rows
    beta = run(
        "customers",
        "CustomerNo,Name,E-mail,Address,City,Region,TariffPlan,MeterNo,StartDate,EndDate\n"
        '700001,"KOWALSKI, Jan", JAN.K@example.com ,ul.Polna 1/2,łódź,CENTRAL,g11,7,31.01.2020,\n',
    ).rows
    for column in (
        "name_pseudonym",
        "email_pseudonym",
        "address_pseudonym",
        "meter_id",
        "region",
        "tariff",
        "contract_start",
    ):
        assert alpha[column][0] == beta[column][0], column
    assert alpha["source_system"][0] == "crm_alpha" and beta["source_system"][0] == "crm_beta"
    assert "Kowalski" not in str(alpha.to_dicts()) + str(beta.to_dicts())


def test_customer_rejects_withhold_pii():
    result = format_file(
        SOURCES["customers"],
        b"customer_id,full_name,email,address,city,region,tariff,meter_id,contract_start,contract_end\n"
        b"ALP-1,Jan Nowak,jan@x.pl,Secret St 1,Gdansk,atlantis,G11,MTR-000001,2020-01-01,\n",
        CTX,
    )
    assert "region: failed isin" in result.rejects["reason"][0]
    assert (
        "Nowak" not in result.rejects["raw_record"][0]
        and "jan@x.pl" not in result.rejects["raw_record"][0]
    )


def test_unknown_crm_header_is_unparseable():
    result = format_file(SOURCES["customers"], b"id,name\n1,x\n", CTX)
    assert "neither CRM export" in result.quarantine_reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DOE, John", "John Doe"),
        ("  john   doe ", "John Doe"),
        ("KOWALSKA-NOWAK, Anna Maria", "Anna Maria Kowalska-Nowak"),
    ],
)
def test_normalize_name(raw, expected):
    assert pl.DataFrame({"n": [raw]}).select(normalize_name("n")).item() == expected


def test_canonical_meter_id():
    values = pl.DataFrame(
        {"m": ["MTR-000123", "mtr-123", "123", " 000123 ", "M-1", None, "1234567"]}
    )
    assert values.select(canonical_meter_id("m"))["literal"].to_list() == ["MTR-000123"] * 4 + [
        None,
        None,
        None,
    ]


def test_pseudonyms_are_keyed_and_stable():
    names = pl.Series("n", ["John Doe", None, "John Doe"])
    first, second = pseudonymize(names, b"k1"), pseudonymize(names, b"k2")
    assert (
        first[0] == first[2] and first[1] is None and first[0] != second[0] and len(first[0]) == 32
    )


def test_decode_locates_problems():
    with pytest.raises(Unparseable, match=r"byte 0xe9 at offset 7 \(line 2\)"):
        decode(b"a;b;c\nx\xe9")
    with pytest.raises(Unparseable, match="only whitespace"):
        decode(b"  \n \n")
    assert decode(b"\xef\xbb\xbfa\n") == ("a\n", ["UTF-8 byte-order mark removed"])


def test_gzip_is_decompressed_with_a_note():
    text = "a;b\nx;1\n"
    packed = gzip.compress(text.encode())
    assert decode(packed) == (text, [f"gzip-compressed: decompressed ({len(packed)} to 8 bytes)"])
    # Members concatenated (gzip a >> f; gzip b >> f) are one file; a BOM inside is still a BOM.
    twice = gzip.compress(b"\xef\xbb\xbfa;b\n") + gzip.compress(b"x;1\n")
    assert decode(twice)[0] == text and decode(twice)[1][1] == "UTF-8 byte-order mark removed"
    # What is wrong inside is located in the decompressed text.
    with pytest.raises(Unparseable, match=r"gzip-compressed.*byte 0xe9 at offset 7 \(line 2\)"):
        decode(gzip.compress(b"a;b;c\nx\xe9"))


def test_a_corrupt_or_exploding_gzip_is_unparseable_and_located():
    text = "".join(f"MTR-{i:06};2024-01-15 10:00;0,5\n" for i in range(20_000)).encode()
    packed = gzip.compress(text)
    with pytest.raises(
        Unparseable, match=r"gzip stream ends early.*\(line \d+ of the decompressed"
    ):
        gunzip(packed[: len(packed) // 2], 1 << 30)
    flipped = bytearray(packed)
    flipped[len(packed) // 2] ^= 0xFF
    with pytest.raises(Unparseable, match=r"corrupt gzip stream \(.+\) in compressed bytes"):
        gunzip(bytes(flipped), 1 << 30)
    with pytest.raises(Unparseable, match=r"corrupt gzip stream \(.*data check.*\)"):
        gunzip(packed[:-8] + b"\0\0\0\0" + packed[-4:], 1 << 30)  # CRC-32 wrong
    with pytest.raises(
        Unparseable, match=f"trailing bytes after the gzip stream at offset {len(packed):,}"
    ):
        gunzip(packed + b"junk", 1 << 30)
    # A gzip bomb stops at the limit, not at the end of its output: 100 MB of zeros in 100 kB.
    bomb = gzip.compress(bytes(100 << 20))
    assert len(bomb) < 200_000
    with pytest.raises(Unparseable, match="decompresses to more than 1,048,576 bytes"):
        gunzip(bomb, 1 << 20)
    assert gunzip(packed, len(text)) == text  # exactly at the limit


@pytest.mark.parametrize(
    "codec, bom", [("utf-16-le", "FF FE"), ("utf-16-be", "FE FF"), ("utf-32-le", "FF FE 00 00")]
)
def test_utf16_and_utf32_with_a_byte_order_mark_are_decoded(codec, bom):
    text = "customer_id,full_name\r\nALP-1,Jörg Łódź \U0001f600\r\n"
    data = bytes.fromhex(bom) + text.encode(codec)
    label = codec.upper().replace("-LE", "LE").replace("-BE", "BE")
    assert decode(data) == (text, [f"{label} text (byte-order mark {bom}): decoded"])
    cut = "\n".encode(codec) + b"\xd8"  # the last character cut short
    with pytest.raises(
        Unparseable,
        match=rf"not valid {codec}: byte 0xd8 at offset {len(data) + len(cut) - 1} \(line 4\)",
    ):
        decode(data + cut)
    with pytest.raises(Unparseable, match=r"binary content: NUL character on line 2"):
        decode(bytes.fromhex(bom) + "a\nb\x00\n".encode(codec))


def test_binary_formats_are_named():
    def zipped(*names: str) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in names:
                archive.writestr(name, "<x/>")
        return buffer.getvalue()

    parquet = io.BytesIO()
    pl.DataFrame({"a": [1]}).write_parquet(parquet)
    cases = {
        "a zip archive": zipped("export.csv"),
        "an Excel workbook (.xlsx": zipped("[Content_Types].xml", "xl/workbook.xml"),
        "a Parquet file": parquet.getvalue(),
        "a PDF document": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        "gzip data": gzip.compress(gzip.compress(b"a\n")),  # compressed twice
        "an OLE2 compound file": bytes.fromhex("d0cf11e0a1b11ae1") + bytes(512),
        "UTF-16LE text without a byte-order mark": "meter_id;timestamp\n".encode("utf-16-le"),
        "UTF-16BE text without a byte-order mark": "Jörg;Łódź\n".encode("utf-16-be"),
        "NUL byte at offset 0 (line 1)": bytes(range(256)) * 8,
    }
    for what, data in cases.items():
        with pytest.raises(Unparseable, match=re.escape(what)):
            decode(data)


@pytest.mark.parametrize(
    "lines, long",
    [
        (["a", "b" * MAX_LINE_BYTES, "c"], None),  # at the limit
        (["a\r", "b" * MAX_LINE_BYTES + "\r", "\r", ""], None),  # "\r\n" ends a line too
        (
            ["", "a", "b" * (MAX_LINE_BYTES + 1), "c" * (MAX_LINE_BYTES + 2)],
            (3, MAX_LINE_BYTES + 1),
        ),
        (["a", "\r" * (MAX_LINE_BYTES + 2)], (2, MAX_LINE_BYTES + 1)),  # only the last "\r" ends it
        (["a", "b" * (MAX_LINE_BYTES + 1)], (2, MAX_LINE_BYTES + 1)),  # no final terminator
    ],
)
def test_an_overlong_line_is_located_in_bytes(lines, long):
    data = "\n".join(lines).encode()
    assert _first_long_line(data) == long
    if long:
        with pytest.raises(Unparseable, match=f"line {long[0]} is {long[1]:,} bytes long"):
            decode(data)


def test_a_batch_validates_files_together_but_duplicates_only_within_a_file():
    import datetime as dt

    from dp_assets.formatted.process import batched_by_records, format_batch, read_file

    text = "meter_id;timestamp;consumption_kwh\nMTR-000001;2024-01-15 10:00;1\nMTR-000001;2024-01-15 10:00;1\n"
    reads = [
        read_file(SOURCES["meters_vendor_a"], text.encode(), FileContext(c * 64, c, b""))
        for c in "ab"
    ]
    reads.append(read_file(SOURCES["meters_vendor_a"], b"", FileContext("c" * 64, "empty", b"")))
    assert [len(b) for b in batched_by_records(reads, 4)] == [2, 1]
    rows, rejects, outcomes = format_batch(
        SOURCES["meters_vendor_a"], reads, dt.datetime.now(dt.UTC)
    )
    assert sorted(rows["file_sha256"].str.slice(0, 1)) == [
        "a",
        "b",
    ]  # same key in two files: both kept
    assert (
        rejects["reason"].to_list() == ["duplicate of record 2 (same meter_id, reading_start)"] * 2
    )
    assert outcomes.select("original_name", "status", "records_in", "rows_formatted", "rows_rejected").rows() == [
        ("a", "formatted", 2, 1, 1), ("b", "formatted", 2, 1, 1), ("empty", "quarantined", 0, 0, 0),
    ]  # fmt: skip


# The column-wise readers must say exactly what the line-by-line ones say.
DELIMITED_CASES = [
    "meter_id;timestamp;consumption_kwh\nMTR-1;2024-01-01 00:00;0,5\n",
    "meter_id;timestamp;consumption_kwh\r\n\r\nMTR-1;;0,5\r\n  \r\nMTR-2;x\nMTR-3;a;b;c;\n",
    "meter_id;timestamp;consumption_kwh\nMTR-1;2024-01-01 00:00;0,5\nMTR-2;2024-01-01 00:00",
    "meter_id;timestamp;consumption_kwh\n;;\n",
]
JSON_LINES_CASES = [
    '{"meter": "1", "ts": 1700000000000, "wh": 250}\n{"meter": "2", "ts": "x", "energy_wh": null}\n',
    '\n{"meter": 12, "ts": 1.5e3, "wh": -1, "extra": [1, 2]}\n\n{"meter": "3", "ts": 1, "wh": ""}',
    # lines the colon count cannot vouch for: a value holding a colon, an extra key spaced
    # before its colon, a null beside an extra key
    '{"meter": "a\\":", "ts": 1, "wh": 2}\n{"meter": "1", "ts": 1, "wh": 2, "other" : 3}\n'
    '{"meter": null, "late": 1, "ts": 1, "wh": 1}\r\n',
    # U+2028 inside a string is text, not a line end (str.splitlines would cut the record there)
    '{"meter": "1\u2028", "ts": 1, "wh": 2}\n',
]


@pytest.mark.parametrize("text", DELIMITED_CASES)
def test_split_records_equal_csv_module_records(text):
    from dp_assets.sources.base import _delimited_records, _split_records, text_lines

    lines, names = text_lines(text), ["meter_id", "timestamp", "consumption_kwh"]
    assert _split_records(lines, ";", names, text).equals(_delimited_records(text, ";", names))


@pytest.mark.parametrize("text", JSON_LINES_CASES)
def test_decoded_json_lines_equal_line_by_line(text):
    from dp_assets.sources.base import _decode_json_lines, _json_lines_one_by_one

    fields, renames = ["meter", "ts", "wh"], {"energy_wh": "wh"}
    fast, slow = (
        _decode_json_lines(text, fields, renames),
        _json_lines_one_by_one(text, fields, renames),
    )
    # Python writes 1.5e3 back as 1500.0, polars as 1500: the same number to the homogenizer.
    as_numbers = pl.col("ts").cast(pl.Float64, strict=False)
    assert fast.records.with_columns(as_numbers).equals(slow.records.with_columns(as_numbers))
    assert fast.notes == slow.notes


def test_generated_meter_files_read_the_same_both_ways(tmp_path):
    from dp_projects.utility.sample_data.generator import SampleParams, generate
    from dp_assets.sources.base import (
        _decode_json_lines,
        _delimited_records,
        _json_lines_one_by_one,
        _split_records,
        text_lines,
    )

    generate(tmp_path, SampleParams(days=4, meters=6, seed=2))
    for path in sorted((tmp_path / "inbox" / "meters_vendor_a").iterdir()):
        try:
            text, _ = decode(path.read_bytes())
        except Unparseable:
            continue
        lines = text_lines(text)
        names = [h.strip() for h in lines["raw_record"][0].split(";")]
        if len(names) == 3:
            assert _split_records(lines, ";", names, text).equals(
                _delimited_records(text, ";", names)
            ), path.name
    for path in sorted((tmp_path / "inbox" / "meters_vendor_b").iterdir()):
        try:
            text, _ = decode(path.read_bytes())
        except Unparseable:
            continue
        fields, renames = ["meter", "ts", "wh"], {"energy_wh": "wh"}
        assert _decode_json_lines(text, fields, renames).records.equals(
            _json_lines_one_by_one(text, fields, renames).records
        ), path.name


CRM_HEADER = "customer_id,full_name,email,address,city,region,tariff,meter_id,contract_start,contract_end\r\n"


def test_a_quoted_field_may_hold_line_breaks():
    first = 'ALP-000001,"Doe, John",j@example.com,"Polna 1\r\nflat 2",Lodz,central,G11,MTR-000001,2020-01-01,'
    second = 'ALP-000002,Ann Roe,a@example.com,"Long\n\n""quoted"" st",Lodz,central,G11,MTR-000002,2020-01-01,'
    third = "ALP-000003,Bo Li,b@example.com,Short 3,Lodz,central,G11,MTR-000003,2020-01-01,"
    text = CRM_HEADER + first + "\r\n\r\n" + second + "\r\n" + third + "\r\n"
    records = read_delimited(text, ",", ["customer_id", "address"]).records
    # record_no is the line a record starts on; raw_record all its lines, as in the file
    assert records.select("customer_id", "address", "record_no", "raw_record").rows() == [
        ("ALP-000001", "Polna 1\r\nflat 2", 2, first),
        ("ALP-000002", 'Long\n\n"quoted" st', 5, second),
        ("ALP-000003", "Short 3", 8, third),
    ]
    assert records["reject_reason"].is_null().all()
    result = run("customers", text)
    assert result.rows["record_no"].to_list() == [2, 5, 8] and result.rejects.is_empty()


def test_an_unreadable_or_runaway_quoted_record_is_rejected_and_located():
    row = "ALP-00000{},Ann Roe,a@example.com,{},Lodz,central,G11,MTR-00000{},2020-01-01,\n"
    text = (
        CRM_HEADER
        + row.format(1, '"' + "x" * 200_000 + '"', 1)  # a field over the csv module's limit
        + row.format(2, "Side 2", 2)
        + row.format(3, '"Open quote', 3)  # never closed: it runs to the end of the file
        + row.format(4, "Side 4", 4)
    )
    result = run("customers", text)
    assert result.rows["source_customer_id"].to_list() == ["ALP-000002"]
    assert result.rejects.select("record_no", "reason").rows() == [
        (2, "not a valid CSV record: field larger than field limit (131072)"),
        (4, "expected 10 fields, found 4 (the record spans lines 4-5: a quote left open?)"),
    ]
