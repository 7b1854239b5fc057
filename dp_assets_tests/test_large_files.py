"""A large line-based file is read, validated and written in parts of a bounded size: the parts
give exactly the rows, rejects and outcome the file read whole gives, and a run killed between
two parts keeps nothing of the file. That memory stays bounded is shown by
``bench/large_file.py``, not asserted here."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import AssetSelection

from dp_assets.formatted.process import line_chunks
from dp_assets.sources.base import Unparseable, decode
from dp_assets_tests.conftest import REPO, cli_env

WHOLE = 1 << 30  # a chunk size no test file reaches: read whole


def vendor_a_file() -> bytes:
    """Vendor A's day of the autumn DST change, with the problems that span parts: a key repeated
    far from its first record, the repeated hour (and a third occurrence) with records between,
    bad rows late in the file, blank lines, and a last line without terminator."""
    lines = ["meter_id;timestamp;consumption_kwh"]
    times = [f"2024-10-27 {h:02d}:{m:02d}" for h in range(6) for m in (0, 30)]
    times[6:6] = ["2024-10-27 02:00", "2024-10-27 02:30"]  # the autumn hour, written twice
    for meter in (1, 2, 3):
        lines += [f"MTR-{meter:06d};{t};{meter},{i}" for i, t in enumerate(times)]
    lines += [
        "",
        "",
        "MTR-000001;2024-10-27 00:00;9,9",  # duplicate of record 2, parts away
        "MTR-000002;2024-10-27 02:00;1,0",  # the autumn hour a third time
        "MTR-000002;2024-10-27 05:00;-1,5",  # negative
        "MTR-000003;x",  # wrong field count
        "MTR-000003;2024-03-31 02:30;1,0",  # in the spring DST gap
        "mtr-4;2024-10-27 00:00;0,5",  # a new meter, its id to canonicalize
        "MTR-000004;2024-10-27 00:00;0,7",  # ... and its duplicate in the canonical form
        "",
        "MTR-000003;2024-10-27 23:30;0,5",  # truncated: no terminator
    ]
    return "\n".join(lines).encode()


def vendor_b_file() -> bytes:
    """Vendor B with a duplicate across parts, an extra field in an early and another in a late
    part (one note for the file), the renamed field, a broken line late, a truncated last line."""
    ts = 1_730_000_000_000
    lines = [f'{{"meter": "{m}", "ts": {ts + 1_800_000 * i}, "wh": {i}}}' for m in (1, 2) for i in range(15)]  # fmt: skip
    lines[3] = lines[3][:-1] + ', "early": 1}'
    lines += [
        "",
        f'{{"meter": "1", "ts": {ts}, "wh": 5}}',  # duplicate of record 1
        f'{{"meter": "3", "ts": {ts}, "energy_wh": 7, "late": true}}',
        '{"meter": "3", "ts": ',  # invalid JSON
        f'{{"meter": "3", "ts": {ts + 1_800_000}, "energy_wh": -7}}',  # negative
        f'{{"meter": "3", "ts": {ts + 3_600_000}, "wh": 7}}',  # truncated: no terminator
    ]
    return "\n".join(lines).encode()


FILES = {"meters_vendor_a": vendor_a_file, "meters_vendor_b": vendor_b_file}


def format_config(source: str, chunk_bytes: int, **extra) -> dict:
    config = {"chunk_bytes": chunk_bytes, "batch_records": 5, **extra}
    return {"ops": {f"formatted_{source}": {"config": config}}}


def selection(source: str) -> AssetSelection:
    return AssetSelection.assets(["landing", source], ["formatted", source])


def stored(platform, source: str) -> dict:
    """What formatting stored for the source, without the time it ran."""
    outcomes = platform.sql(
        "SELECT * EXCLUDE (processed_at) FROM formatted.file_outcomes WHERE source = ? ORDER BY ALL",
        [source],
    )
    return {
        "rows": platform.sql(f"SELECT * FROM formatted.{source} ORDER BY ALL"),
        "rejects": platform.sql(f"SELECT * FROM formatted.{source}_rejects ORDER BY ALL"),
        "outcomes": outcomes,
    }


@pytest.mark.parametrize("source", FILES)
def test_a_file_in_parts_is_formatted_as_the_whole_file(platform, source):
    data = FILES[source]()
    platform.drop(source, "large.txt", b"\xef\xbb\xbf" + data if source.endswith("a") else data)
    platform.drop(source, "small.txt", data[: data.find(b"\n", 400) + 1])
    select = selection(source).required_multi_asset_neighbors()
    # First formatted in parts of about 64 bytes (two or three records), and in 5-record batches,
    # so parts, batches and transactions all end in different places.
    assert platform.materialize(select, run_config=format_config(source, 64)).success
    in_parts = stored(platform, source)
    for chunk_bytes in (WHOLE, 150, 1):  # read whole again; then other boundaries
        config = format_config(source, chunk_bytes, reformat_all=True)
        assert platform.materialize(select, run_config=config).success
        assert stored(platform, source) == in_parts, f"chunk_bytes={chunk_bytes}"

    outcome = {o[2]: o for o in in_parts["outcomes"]}["large.txt"]
    records = sum(1 for line in data.splitlines()[source.endswith("a") :] if line.strip())
    assert outcome[4] == records == outcome[5] + outcome[6], "records_in = formatted + rejected"
    reasons = {r[1]: r[3] for r in in_parts["rejects"] if r[0] == outcome[1]}
    if source == "meters_vendor_a":
        assert outcome[8] == "UTF-8 byte-order mark removed"
        assert reasons == {
            46: "duplicate of record 2 (same meter_id, reading_start)",
            47: "timestamp: '2024-10-27 02:00' occurs more than twice for the same meter_id",
            48: "kwh: failed greater_than_or_equal_to(0.0) (got -1.5)",
            49: "expected 3 fields, found 2; timestamp: cannot parse 'x'",
            50: "timestamp: '2024-03-31 02:30' does not exist in Europe/Warsaw (skipped by the "
            "DST change)",
            52: "duplicate of record 51 (same meter_id, reading_start)",
            54: "last line has no line terminator: the file may be truncated",
        }
        # The autumn hour twice, its third occurrence rejected: 14 instants per meter.
        per_meter = platform.sql(
            "SELECT meter_id, count(DISTINCT reading_start) FROM formatted.meters_vendor_a "
            "WHERE file_sha256 = ? GROUP BY 1 ORDER BY 1",
            [outcome[1]],
        )
        assert per_meter[:3] == [(f"MTR-{m:06d}", 14) for m in (1, 2, 3)]
    else:
        assert outcome[8] == "ignored extra fields ['early', 'late']"
        assert reasons[32] == "duplicate of record 1 (same meter_id, reading_start)"
        assert reasons[34].startswith("invalid JSON")
        assert reasons[35] == "kwh: failed greater_than_or_equal_to(0.0) (got -0.007)"
        assert reasons[36] == "last line has no line terminator: the file may be truncated"
        assert len(reasons) == 4


@pytest.mark.parametrize("bad", [b"\x00", b"\xf6"], ids=["NUL byte", "not UTF-8"])
def test_a_problem_in_a_later_part_quarantines_the_file_as_read_whole(platform, bad):
    data = vendor_a_file()
    at = data.find(b"\n", len(data) // 2) + 1
    data = data[:at] + b"MTR-000009;2024-10-27 00:00;1" + bad + b"\n" + data[at:]
    with pytest.raises(Unparseable) as whole:
        decode(data)
    platform.drop("meters_vendor_a", "broken.csv", data)
    select = selection("meters_vendor_a").required_multi_asset_neighbors()
    config = format_config("meters_vendor_a", 64)
    assert platform.materialize(select, run_config=config).success
    [(status, records_in, reason)] = platform.sql(
        "SELECT status, records_in, reason FROM formatted.file_outcomes"
    )
    assert (status, records_in, reason) == ("quarantined", 0, str(whole.value))
    assert platform.sql("SELECT count(*) FROM formatted.meters_vendor_a") == [(0,)], (
        "the parts written before the problem are void"
    )
    assert platform.sql("SELECT count(*) FROM formatted.meters_vendor_a_rejects") == [(0,)]


QUOTED = (
    'id,name,note\n1,"Kowalski, Jan","line one\nline two"\n2,Nowak,""\n'
    '3,"say ""hi""\n\nbye",x\n4,a,b\n5,"\n",c'
)


@pytest.mark.parametrize("size", range(1, len(QUOTED) + 1, 3))
def test_csv_chunks_end_only_at_line_breaks_outside_quotes(size):
    chunks = list(line_chunks(io.BytesIO(QUOTED.encode()), size, quoted=True))
    assert b"".join(chunks) == QUOTED.encode()
    for chunk in chunks[:-1]:
        assert chunk.endswith(b"\n") and chunk.count(b'"') % 2 == 0, chunk
    assert len(chunks) > 1 or size > len(QUOTED) // 2


def test_json_lines_chunks_end_at_every_line_break():
    text = b'{"a": "x\\"y"}\n{"b": 1}\n{"c": 2}\n'
    assert list(line_chunks(io.BytesIO(text), 1)) == text.splitlines(keepends=True)


@pytest.mark.slow
def test_a_run_killed_between_two_parts_of_a_file_keeps_none_of_it(tmp_path):
    env = cli_env(tmp_path)
    data = Path(env["DP_DATA_DIR"])
    large = vendor_a_file()
    inbox = data / "inbox" / "meters_vendor_a"
    inbox.mkdir(parents=True)
    (inbox / "a_small.csv").write_bytes(large[: large.find(b"\n", 100) + 1])  # read whole
    (inbox / "b_large.csv").write_bytes(large)
    select = 'group:landing or key:"formatted/meters_vendor_a*"'
    config = '{"ops": {"formatted_meters_vendor_a": {"config": {"batch_records": 1, "chunk_bytes": 200}}}}'  # fmt: skip
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
               "dp_assets", "--select", select, "--config-json", config]  # fmt: skip
    queries = {
        "outcomes": "SELECT original_name, records_in FROM formatted.file_outcomes",
        "rows": "SELECT d.original_name, count(*) FROM formatted.meters_vendor_a r "
        "JOIN landing.deliveries d ON d.sha256 = r.file_sha256 GROUP BY 1",
        "rejects": "SELECT count(*) FROM formatted.meters_vendor_a_rejects r "
        "JOIN landing.deliveries d ON d.sha256 = r.file_sha256 WHERE d.original_name = 'b_large.csv'",
    }

    def run(crash_at: str | None = None):
        extra = {"DP_CRASH_AT": crash_at} if crash_at else {}
        return subprocess.run(command, env={**env, **extra}, cwd=REPO, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    def snapshot() -> dict:
        with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
            return {k: sorted(conn.execute(q).fetchall()) for k, q in queries.items()}

    killed = run("formatted.meters_vendor_a:part@3")  # the large file's third part written
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    after_kill = snapshot()
    assert [name for name, _ in after_kill["outcomes"]] == ["a_small.csv"]
    assert [name for name, _ in after_kill["rows"]] == ["a_small.csv"]
    assert after_kill["rejects"] == [(0,)], "nothing of the large file committed"

    final = run()
    assert final.returncode == 0, final.stderr[-3000:]
    assert not (data / "spool" / "meters_vendor_a").exists(), "no part left beside the warehouse"
    after = snapshot()
    assert [name for name, _ in after["outcomes"]] == ["a_small.csv", "b_large.csv"]
    assert after["rows"][0] == after_kill["rows"][0], "the small file was not formatted again"
    (_, records_in), (_, rows) = after["outcomes"][1], after["rows"][1]
    assert records_in == rows + after["rejects"][0][0] == 50
