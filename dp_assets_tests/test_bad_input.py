"""Broken files, one of each kind, dropped into the inbox together: each ends in a clear, located
reason (quarantine, reject or note), the good files keep flowing, and no received byte is lost."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile

import pytest
from dagster import AssetSelection

GOOD_A = "meter_id;timestamp;consumption_kwh\nMTR-000001;2024-01-15 10:00;0,25\nMTR-000001;2024-01-15 10:30;0,5\n"
GOOD_B = '{"meter": "000002", "ts": 1705312800000, "wh": 250}\n'
LATIN1 = "customer_id,full_name,email,address,city,region,tariff,meter_id,contract_start,contract_end\n" \
         "ALP-000001,Jörg Müller,j@example.com,Hauptstraße 1,Łódź,central,G11,MTR-000001,2020-01-01,\n"  # fmt: skip
QUOTED_NEWLINE = LATIN1.replace("Hauptstraße 1", '"Hauptstraße 1\r\nHinterhaus"').replace(
    "Łódź", "Lodz"
)
GZIP_B = gzip.compress(GOOD_B.replace("250", "750").encode())
ZIP = io.BytesIO()
with zipfile.ZipFile(ZIP, "w") as archive:
    archive.writestr("export.csv", LATIN1)
WEIRD_NAME = "C:\\exports\\..\\..\\etc\\passwd;rm -rf ~ $(x).csv"

# (source, file name, content, expected outcome, text the reason must contain)
CASES = {
    "empty": ("meters_vendor_a", "empty.csv", b"", "quarantined", "empty file (0 bytes)"),
    "header_only": ("meters_vendor_a", "header_only.csv", b"meter_id;timestamp;consumption_kwh\n", "quarantined", "only a header"),
    "truncated": ("meters_vendor_a", "truncated.csv", GOOD_A.encode() + b"MTR-000001;2024-01-15 11:00;0,7", "rejected", "no line terminator"),
    "wrong_delimiter": ("meters_vendor_a", "commas.csv", GOOD_A.replace(";", ",").encode(), "quarantined", "looks ','-delimited"),
    "latin1": ("customers", "latin1.csv", LATIN1.replace("Łódź", "Lodz").encode("latin-1"), "quarantined", "not valid utf-8: byte 0xf6 at offset 104 (line 2)"),
    "bom": ("meters_vendor_a", "bom.csv", b"\xef\xbb\xbf" + GOOD_A.replace("10:", "12:").encode(), "noted", "byte-order mark removed"),
    "missing_column": ("meters_vendor_a", "missing.csv", b"meter_id;timestamp\nMTR-000001;2024-01-15 10:00\n", "quarantined", "missing declared columns ['consumption_kwh']"),
    "extra_column": ("tariffs", "extra.csv", b"tariff,month,price_pln_per_kwh,currency\nG11,2024-05,0.7,PLN\n", "noted", "ignored extra columns ['currency']"),
    "bad_timestamp": ("meters_vendor_b", "bad_ts.jsonl", b'{"meter": "000002", "ts": "yesterday", "wh": 250}\n' + GOOD_B.encode(), "rejected", "ts: cannot parse 'yesterday'"),
    "binary": ("meters_vendor_b", "garbage.jsonl", bytes(range(256)) * 8, "quarantined", "binary content: NUL byte at offset 0"),
    "huge_line": ("meters_vendor_b", "huge.jsonl", GOOD_B.encode() + b'{"meter": "' + b"9" * (2 << 20) + b'"}\n', "quarantined", "line 2 is 2,097,165 bytes long"),
    "path_like_name": ("meters_vendor_a", WEIRD_NAME, GOOD_A.replace("10:", "14:").encode(), "formatted", None),
    "invalid_json_doc": ("weather", "cut.json", b'{"provider": "meteo", "units": {"temperature": "C"}, "observations": [{"region"', "quarantined", "invalid JSON at line 1, column 80"),
    "gzip": ("meters_vendor_b", "day.jsonl.gz", GZIP_B, "noted", "gzip-compressed: decompressed"),
    "gzip_truncated": ("meters_vendor_b", "cut.jsonl.gz", GZIP_B[:-9], "quarantined", "gzip stream ends early"),
    "utf16_bom": ("tariffs", "utf16.csv", "tariff,month,price_pln_per_kwh\r\nG12,2024-06,0.8\r\n".encode("utf-16"), "noted", "UTF-16LE text (byte-order mark FF FE): decoded"),
    "utf16_no_bom": ("customers", "utf16_nobom.csv", QUOTED_NEWLINE.encode("utf-16-le"), "quarantined", "UTF-16LE text without a byte-order mark"),
    "zip": ("customers", "export.zip", ZIP.getvalue(), "quarantined", "a zip archive"),
    "quoted_newline": ("customers", "quoted.csv", QUOTED_NEWLINE.encode(), "formatted", None),
    "unknown_unit": ("weather", "kelvin.json", json.dumps({"provider": "x", "units": {"temperature": "K"}, "observations": []}).encode(), "quarantined", "unknown unit 'K' at units.temperature"),
}  # fmt: skip
DUPLICATE = ("meters_vendor_a", "again.csv", GOOD_A.replace("10:", "16:").encode())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    from dp_assets_tests.conftest import isolated_platform

    with isolated_platform(tmp_path_factory.mktemp("bad")) as platform:
        for source, name, data, *_ in CASES.values():
            platform.drop(source, name, data)
        platform.drop(*DUPLICATE)
        platform.drop("meters_vendor_a", "again (1).csv", DUPLICATE[2])
        platform.drop(
            "meters_vendor_a", "2024/01/nested.csv", GOOD_A.replace("10:", "18:").encode()
        )
        platform.drop(
            "meters_vendor_a", ".still_writing.csv", b"meter_id;timestamp;consumption_kwh\nMTR-0"
        )
        platform.drop(
            "meters_vendor_a", "in_progress.csv.part", b"meter_id;timestamp;consumption_kwh\nMTR-0"
        )
        stray = platform.settings.inbox / "stray.txt"
        stray.write_bytes(b"who put this here?")
        selection = AssetSelection.groups("landing", "formatted")
        result = platform.materialize(selection)
        yield platform, result


def _file_outcome(platform, source, name):
    rows = platform.sql(
        "SELECT o.status, o.reason, o.notes, o.rows_formatted, o.rows_rejected FROM formatted.file_outcomes o "
        "JOIN landing.deliveries d ON d.sha256 = o.file_sha256 AND d.source = o.source "
        "WHERE d.source = ? AND d.original_name = ?",
        [source, name],
    )
    assert len(rows) == 1, (source, name, rows)
    return rows[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_file_ends_in_clear_reason(outcome, case):
    platform, _ = outcome
    source, name, data, expected, reason = CASES[case]
    status, quarantine_reason, notes, formatted, rejected = _file_outcome(platform, source, name)
    if expected == "quarantined":
        assert status == "quarantined" and reason in quarantine_reason
        copies = list((platform.settings.quarantine / source).glob("*.reason.txt"))
        assert any(reason in c.read_text() for c in copies)
    elif expected == "rejected":
        assert status == "formatted" and rejected >= 1
        reasons = [r for (r,) in platform.sql(
            f"SELECT reason FROM formatted.{source}_rejects WHERE file_sha256 = ?", [_sha(data)])]  # fmt: skip
        assert any(reason in r for r in reasons), reasons
    elif expected == "noted":
        assert status == "formatted" and formatted >= 1 and reason in notes
    else:
        assert status == "formatted" and formatted >= 1 and rejected == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_byte_lost(outcome, case):
    platform, _ = outcome
    source, name, data, *_ = CASES[case]
    (landed_path,) = platform.sql(
        "SELECT landed_path FROM landing.deliveries WHERE source = ? AND original_name = ?",
        [source, name],
    )[0]
    landed = platform.settings.data_dir / landed_path
    assert landed.read_bytes() == data
    assert landed.resolve().is_relative_to(platform.settings.landing.resolve())


def test_path_like_name_is_kept_but_never_used_as_a_path(outcome):
    platform, _ = outcome
    (landed_path,) = platform.sql(
        "SELECT landed_path FROM landing.deliveries WHERE original_name = ?", [WEIRD_NAME]
    )[0]
    assert (
        ".." not in landed_path
        and "$" not in landed_path
        and ";" not in landed_path
        and "\\" not in landed_path
    )
    assert not (platform.settings.data_dir.parent / "etc").exists()


def test_nested_folders_are_kept_in_the_original_name(outcome):
    platform, _ = outcome
    assert (
        platform.sql(
            "SELECT count(*) FROM landing.deliveries WHERE original_name = '2024/01/nested.csv'"
        )[0][0]
        == 1
    )


def test_files_still_being_written_are_left_in_the_inbox(outcome):
    platform, _ = outcome
    waiting = sorted(p.name for p in platform.settings.inbox.rglob("*") if p.is_file())
    assert waiting == [".still_writing.csv", "in_progress.csv.part"]


def test_duplicate_delivery_is_recognised_and_formatted_once(outcome):
    platform, _ = outcome
    rows = platform.sql(
        "SELECT original_name, redelivery FROM landing.deliveries WHERE sha256 = ? ORDER BY redelivery",
        [_sha(DUPLICATE[2])],
    )
    assert [r[1] for r in rows] == [False, True]
    (count,) = platform.sql(
        "SELECT count(*) FROM formatted.meters_vendor_a WHERE file_sha256 = ?", [_sha(DUPLICATE[2])]
    )[0]
    assert count == 2  # the file's two rows, once


def test_stray_file_is_quarantined_not_lost(outcome):
    platform, _ = outcome
    ((source, reason, landed_path),) = platform.sql(
        "SELECT source, quarantine_reason, landed_path FROM landing.deliveries WHERE original_name = 'stray.txt'"
    )
    assert source == "_unknown" and "inbox/<source>/" in reason
    assert (platform.settings.data_dir / landed_path).read_bytes() == b"who put this here?"
    assert list((platform.settings.quarantine / "_unknown").glob("*stray.txt.reason.txt"))


def test_good_files_keep_flowing_and_quarantine_shows_as_failed_check(outcome):
    platform, result = outcome
    assert result.success
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks[("formatted/meters_vendor_a", "no_quarantined_files")] is False
    assert checks[("formatted/tariffs", "no_quarantined_files")] is True
    assert all(passed for (_, name), passed in checks.items() if name == "schema")
    (good,) = platform.sql("SELECT count(*) FROM formatted.meters_vendor_a")[0]
    assert (
        good == 2 + 2 + 2 + 2 + 2
    )  # truncated (its complete rows), bom, path-like, duplicate, nested


def _quarantine_check(platform, result, source: str):
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == f"formatted/{source}"
        and e.check_name == "no_quarantined_files"
    ]
    return evaluation


def test_quarantine_stays_open_until_redelivered_or_acknowledged(platform, monkeypatch, capsys):
    """A quarantined file keeps its source's check failing, run after run, until a fixed file of
    the same name is formatted or someone acknowledges it with `dp quarantine ack` (audited)."""
    from dagster import AssetCheckKey, AssetKey

    from dp_assets.cli import main

    selection = AssetSelection.groups("landing", "formatted")
    platform.drop("meters_vendor_a", "good.csv", GOOD_A.encode())
    platform.drop("meters_vendor_a", "commas.csv", GOOD_A.replace(";", ",").encode())
    platform.drop("tariffs", "empty.csv", b"")
    assert platform.materialize(selection).success

    # A run with nothing new: the quarantine is still open, and the totals still show.
    noop = platform.materialize(selection)
    check = _quarantine_check(platform, noop, "meters_vendor_a")
    assert not check.passed and check.severity.value == "WARN"
    assert "commas.csv" in check.description and "dp quarantine ack" in check.description
    assert check.metadata["open quarantined files"].value == 1
    assert check.metadata["quarantined"].value == 0  # by this run
    (materialization,) = [
        m for m in noop.asset_materializations_for_node("formatted_meters_vendor_a")
        if m.asset_key == AssetKey(["formatted", "meters_vendor_a"])
    ]  # fmt: skip
    figures = {k: v.value for k, v in materialization.metadata.items()}
    assert figures["files formatted"] == 0 and figures["total files formatted"] == 1
    assert figures["files quarantined"] == 0 and figures["total files quarantined"] == 1
    assert figures["open quarantined files"] == 1
    assert figures["rows formatted"] == 0 and figures["total rows formatted"] == 2
    assert figures["total rows rejected"] == 0 and figures["total records in"] == 2
    (landed,) = [
        m for m in noop.asset_materializations_for_node("landing")
        if m.asset_key == AssetKey(["landing", "meters_vendor_a"])
    ]  # fmt: skip
    assert landed.metadata["files taken"].value == 0
    assert landed.metadata["total files taken"].value == 2

    # The fixed file, delivered again under its name, resolves its quarantine: even copied with
    # the sender's older time (`cp -p`), as landing order decides, not the file's mtime.
    fixed_file = platform.drop(
        "meters_vendor_a", "commas.csv", GOOD_A.replace("10:", "11:").encode()
    )
    os.utime(fixed_file, (1_000_000_000, 1_000_000_000))
    fixed = platform.materialize(selection)
    assert _quarantine_check(platform, fixed, "meters_vendor_a").passed
    assert not _quarantine_check(platform, fixed, "tariffs").passed

    # The empty tariffs file will not come again: acknowledged, with who and why kept.
    monkeypatch.setenv("DP_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("DAGSTER_HOME", platform.instance.root_directory)
    assert main(["quarantine"]) == 0
    listed = capsys.readouterr().out
    assert "tariffs" in listed and "empty.csv" in listed and "commas.csv" not in listed
    assert main(["checks"]) == 0  # warnings only
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "no_quarantined" in line]
    assert line.split()[:2] == ["WARN", "formatted/tariffs"] and "dp quarantine ack" in line
    args = [
        "quarantine",
        "ack",
        "tariffs",
        "empty.csv",
        "--reason",
        "sent by mistake",
        "--by",
        "ann",
    ]
    assert main(args) == 0
    assert "acknowledged 1" in capsys.readouterr().out
    ((by, reason, name),) = platform.sql(
        "SELECT acknowledged_by, reason, original_name FROM landing.quarantine_acks"
    )
    assert (by, reason, name) == ("ann", "sent by mistake", "empty.csv")
    # The check turns green at once (reported to the instance), and stays green on the next run.
    key = AssetCheckKey(AssetKey(["formatted", "tariffs"]), "no_quarantined_files")
    latest = platform.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])
    assert latest[key].status.value == "SUCCEEDED"
    assert main(["checks"]) == 0 and "no_quarantined" not in capsys.readouterr().out
    after = platform.materialize(selection)
    assert _quarantine_check(platform, after, "tariffs").passed
    assert main(["quarantine", "ack", "tariffs", "nothing.csv", "--reason", "x"]) == 1
