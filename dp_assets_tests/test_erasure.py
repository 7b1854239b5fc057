"""Erasure on request: `dp erase` removes one person from every zone of a fully materialized world,
leaves everyone else byte for byte, logs the audit trail, marks the models, and keeps them gone."""

from __future__ import annotations

import csv
import gzip
import io
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetSelection, RunRequest, build_sensor_context

from dp_assets.automation import build_retrain_sensor
from dp_assets.cli import main as dp
from dp_assets.definitions import build_defs
from dp_assets.governance.erasure import (
    BadRequest,
    Subject,
    blank_lines,
    erased_originals,
    matching_records,
    renamed_for,
    request_subject,
    sha256_hex,
)
from dp_assets.governance.erasure_job import ensure_log, find_subject
from dp_assets.privacy import pseudonymize
from dp_assets.project import ProjectError, load_project
from dp_assets.settings import Settings
from dp_projects.utility.sample_data.generator import generate
from dp_assets.sources.base import GZIP_MAGIC, decode, record_lines
from dp_projects.utility.model import canonical_meter_id
from dp_assets_tests.conftest import (
    PIPELINES,
    Platform,
    REPO,
    SOURCES,
    WORLD,
    cli_env,
    isolate,
    isolated_platform,
    on_its_warehouse,
)

pytestmark = pytest.mark.slow


# --- the pure parts ---------------------------------------------------------------------------------


def test_blank_lines_keeps_every_other_byte():
    data = b"\xef\xbb\xbfh;a\r\nMTR-1;x\r\nMTR-2;y\r\nMTR-1;z"
    assert blank_lines(data, {2, 4}) == b"\xef\xbb\xbfh;a\r\n\r\nMTR-2;y\r\n"
    assert blank_lines(b"a\nb\n", set()) == b"a\nb\n"
    # Lines end at "\n" only, as the readers count them: U+2028 is text inside line 1.
    assert blank_lines("a\u2028b\nc\n".encode(), {1}) == b"\nc\n"
    with pytest.raises(ValueError, match="line 3"):
        blank_lines(b"a\nb\n", {3})


def test_blank_lines_empties_every_line_of_a_quoted_record():
    data = b'h,a\n1,"x\r\ny\n"\n2,z\n3,"w\n"\n'
    assert blank_lines(data, {2, 6}, delimiter=",") == b"h,a\n\r\n\n\n2,z\n\n\n"
    assert blank_lines(data, {2}) == b'h,a\n\r\ny\n"\n2,z\n3,"w\n"\n'  # by lines: JSON Lines


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_blank_lines_keeps_the_byte_order_mark_and_encoding(encoding):
    data = "h;a\r\nMTR-1;Łódź\r\nMTR-2;y\r\n".encode(encoding)
    assert blank_lines(data, {2}) == "h;a\r\n\r\nMTR-2;y\r\n".encode(encoding)


def test_blank_lines_of_a_gzip_file_recompress_the_blanked_text():
    text = b'h,a\n1,"x\ny"\n2,z\n'
    packed = gzip.compress(text[:9]) + gzip.compress(text[9:])  # two members
    blanked = blank_lines(packed, {2}, delimiter=",")
    assert blanked[:2] == b"\x1f\x8b" and gzip.decompress(blanked) == b"h,a\n\n\n2,z\n"
    assert blank_lines(packed, {2}, delimiter=",") == blanked  # the same bytes every time


def test_matching_records_by_any_key():
    subject = Subject(
        "CUS-0000000001",
        {
            ("meter_id",): pl.DataFrame({"meter_id": ["MTR-000001"]}),
            ("source_system", "source_customer_id"): pl.DataFrame(
                {"source_system": ["crm_beta"], "source_customer_id": ["7"]}
            ),
        },
    )
    typed = pl.DataFrame({
        "record_no": [2, 3, 4, 5],
        "meter_id": ["MTR-000001", "MTR-000002", None, "MTR-000003"],
        "source_system": ["crm_alpha", "crm_beta", "crm_beta", "crm_alpha"],
        "source_customer_id": ["1", "7", "7", "7"],
    })  # fmt: skip
    assert matching_records(typed, subject, SOURCES["customers"].subject_keys) == [2, 3, 4]
    assert matching_records(typed, subject, (("meter_id",),)) == [2]


def test_a_request_names_declared_subject_keys_pii_as_pseudonyms():
    declared = [("email",), ("source_system", "source_customer_id"), ("meter_id",)]
    subject = request_subject(
        ["meter_id=MTR-1", "email= Ann@x.org", "meter_id=MTR-2", "email=Ann@x.org"],
        declared, pii={"email"}, pii_key=b"k",
    )  # fmt: skip
    pseudonym = pseudonymize(pl.Series(["Ann@x.org"]), b"k").item()
    assert subject.keys[("meter_id",)]["meter_id"].to_list() == ["MTR-1", "MTR-2"]
    assert subject.keys[("email",)]["email"].to_list() == [pseudonym]
    assert subject.description == f"email={pseudonym}, meter_id=MTR-1, meter_id=MTR-2"
    pair = request_subject(
        ["source_customer_id=7", "source_system=crm_beta"], declared, set(), b"k"
    )
    assert pair.keys[("source_system", "source_customer_id")].rows() == [("crm_beta", "7")]
    for request, problem in [
        (["phone=1"], "phone: not a declared subject key (declared: email, meter_id, "
                      "source_system+source_customer_id)"),
        (["source_customer_id=7"], "part of the subject key source_system+source_customer_id"),
        (["meter_id"], "<column>=<value>"),
        ([], "name the person by a subject key"),
    ]:  # fmt: skip
        with pytest.raises(BadRequest, match=re.escape(problem)):
            request_subject(request, declared, set(), b"k")


def test_a_hook_adds_keys_compared_as_text():
    subject = Subject("person_id=7", {("person_id",): pl.DataFrame({"person_id": ["7"]})})
    subject = subject.merged({("person_id",): pl.DataFrame({"person_id": [7, 8, None]})})
    assert subject.keys[("person_id",)]["person_id"].to_list() == ["7", "8"]
    typed = pl.DataFrame({"record_no": [2, 3, 4], "person_id": [8, 9, 7]})
    assert matching_records(typed, subject, [("person_id",)]) == [2, 4]


def test_a_log_from_before_subject_keys_gains_the_subject_column():
    import duckdb

    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA governance")
    conn.execute(
        "CREATE TABLE governance.erasure_log (erasure_id VARCHAR, customer_id VARCHAR, "
        "requested_by VARCHAR, object VARCHAR)"
    )
    conn.execute(
        "INSERT INTO governance.erasure_log VALUES ('ERA-1', 'CUS-0A1B2C3D4E', 'dpo', 't')"
    )
    ensure_log(conn)
    ensure_log(conn)  # as every erasure does
    assert conn.execute("SELECT customer_id, subject FROM governance.erasure_log").fetchall() == [
        ("CUS-0A1B2C3D4E", "customer_id=CUS-0A1B2C3D4E")
    ]


def test_a_project_declares_subject_keys_as_a_source_does(tmp_path):
    (tmp_path / "project.yaml").write_text("name: keyed\nsubject_keys: customer_id\n")
    with pytest.raises(
        ProjectError, match=r"subject_keys must be a list of keys.*\[\[customer_id\]\]"
    ):
        load_project(tmp_path)
    (tmp_path / "project.yaml").write_text("name: keyed\nsubject_keys: [[customer_id]]\n")
    assert load_project(tmp_path).subject_keys == (("customer_id",),)


def test_an_erased_files_original_maps_to_its_latest_version():
    landed = {("customers", "c"): "landing/customers/x_c_export.csv"}
    assert renamed_for("landing/a/120000_aaaaaaaaaaaa_f.csv", "a" * 64, "b" * 64) == (
        "landing/a/120000_bbbbbbbbbbbb_f.csv"
    )
    assert erased_originals({"a": "b", "b": "c"}, landed) == {
        ("customers", "a"): landed[("customers", "c")],
        ("customers", "b"): landed[("customers", "c")],
    }


# --- on a materialized world ------------------------------------------------------------------------


@dataclass
class Erased:
    platform: Platform
    root: Path
    customer_id: str
    person: dict  # the generator's ground truth: clear name, email, street, meter
    records: set[tuple[str, str]]  # the person's CRM records
    files_before: dict[str, bytes]
    files_after: dict[str, bytes]
    tables_before: dict[str, pl.DataFrame]
    tables_after: dict[str, pl.DataFrame]
    log: pl.DataFrame
    cli: subprocess.CompletedProcess


def landed_files(platform: Platform) -> dict[str, bytes]:
    root = platform.settings.data_dir
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "landing").rglob("*"))
        if p.is_file()
    }


def tables(platform: Platform) -> dict[str, pl.DataFrame]:
    names = platform.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name <> 'governance'"
    )
    return {name: platform.frame(f"SELECT * FROM {name}") for (name,) in names}


def dp_erase_args(customer_id: str, *more: str) -> list[str]:
    """The ``dp erase`` command of ``customer_id`` (``more``: options)."""
    args = [str(REPO / ".venv/bin/dp"), "erase", "--key", f"customer_id={customer_id}"]
    return [*args, "--requested-by", "dpo@example.com", "--reason", "request #42", *more]


def dp_erase(root: Path, customer_id: str, **env: str) -> subprocess.CompletedProcess:
    """``dp erase`` of ``customer_id`` on the platform under ``root`` (``env``: more variables)."""
    return subprocess.run(
        dp_erase_args(customer_id), env=cli_env(root, **env), cwd=REPO, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def as_some_crms_write_them(inbox: Path) -> None:
    """CRM alpha's export gzip-compressed; CRM beta's with every street address on two lines
    (a quoted field holding a line break, which normalizes to the same address)."""
    for path in inbox.glob("crm_alpha_*.csv"):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    for path in inbox.glob("crm_beta_*.csv"):
        rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        for row in (r for r in rows[1:] if len(r) > 3):
            row[3] = "\n".join(row[3].rsplit(" ", 1))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        path.write_text(text.getvalue())


def plain(data: bytes) -> bytes:
    return gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data


@pytest.fixture(scope="module")
def erased(tmp_path_factory) -> Erased:
    root = tmp_path_factory.mktemp("erasure")
    with isolated_platform(root) as platform:
        manifest = generate(platform.settings.data_dir, WORLD)
        as_some_crms_write_them(platform.settings.inbox / "customers")
        assert platform.materialize().success
        people = {p["meter_id"]: p for p in manifest.people}
        # Someone both CRMs know: the harder case (two records, two exports, one person).
        customer_id, meter = platform.sql(
            "SELECT customer_id, meter_id FROM exploitation.customers WHERE source_records = 2 "
            "ORDER BY customer_id LIMIT 1"
        )[0]
        records = set(
            platform.sql(
                "SELECT source_system, source_customer_id FROM exploitation.customer_id_map "
                "WHERE customer_id = ?",
                [customer_id],
            )
        )
        files_before, tables_before = landed_files(platform), tables(platform)
        cli = dp_erase(root, customer_id)
        assert cli.returncode == 0, cli.stderr[-3000:]
        yield Erased(
            platform, root, customer_id, people[meter], records,
            files_before, landed_files(platform), tables_before, tables(platform),
            platform.frame("SELECT * FROM governance.erasure_log"), cli,
        )  # fmt: skip


def about_person(e: Erased, source: str, data: bytes) -> set[int]:
    """Line numbers of the records in a raw file about the person, read with the source's parser."""
    records = SOURCES[source].parse(decode(data)[0]).records
    meter = "meter" if "meter" in records.columns else "meter_id"  # vendor B's raw name
    mine = canonical_meter_id(meter) == e.person["meter_id"]
    if source == "customers":
        mine |= pl.struct("source_system", pl.col("customer_id").str.strip_chars()).is_in(
            [{"source_system": s, "customer_id": i} for s, i in e.records]
        )
    return set(records.filter(mine)["record_no"].to_list())


def lines_of_person(e: Erased, source: str, data: bytes) -> set[int]:
    """Every line of the person's records: a CRM record can span several."""
    spans = record_lines(decode(data)[0], ",") if source == "customers" else {}
    return {
        n
        for first in about_person(e, source, data)
        for n in range(first, spans.get(first, first) + 1)
    }


def test_the_cli_reports_the_erasure(erased):
    assert f"{erased.customer_id} erased" in erased.cli.stdout
    assert "retrain pipelines: ['customer_churn', 'energy_forecast']" in erased.cli.stdout


def test_landed_files_lose_the_persons_lines_and_nothing_else(erased):
    rewritten = erased.log.filter(pl.col("object_kind") == "landed_file")
    after_of = dict(zip(rewritten["sha256_before"], rewritten["object"]))
    assert rewritten.height >= 3  # two CRM exports and the meter's vendor files
    spanned, compressed = set(), set()
    for path, before in erased.files_before.items():
        source = path.split("/")[1]
        if sha256_hex(before) not in after_of:
            assert erased.files_after[path] == before, f"{path} changed"
            continue
        assert path not in erased.files_after, f"{path}: the unerased version is still there"
        after = erased.files_after[after_of[sha256_hex(before)]]
        assert after.startswith(GZIP_MAGIC) == before.startswith(GZIP_MAGIC), path
        old, new = plain(before).decode().split("\n"), plain(after).decode().split("\n")
        assert len(old) == len(new)
        changed = {n for n, (a, b) in enumerate(zip(old, new), start=1) if a != b}
        assert changed == lines_of_person(erased, source, before) != set()
        assert all(new[n - 1] == "" for n in changed)
        assert about_person(erased, source, after) == set()
        spanned.add(changed != about_person(erased, source, before))
        compressed.add(before.startswith(GZIP_MAGIC))
    assert spanned == compressed == {True, False}  # a two-line record, a gzip file, among them
    email = erased.person["email"].lower().encode()
    for path, data in erased.files_after.items():
        assert email not in plain(data).lower(), f"{path} still holds the person's email"


def test_every_table_loses_the_persons_rows_and_nothing_else(erased):
    log = erased.log
    new_sha = dict(
        log.filter(pl.col("object_kind") == "landed_file")
        .select("sha256_before", "sha256_after")
        .iter_rows()
    )
    blanked = {
        (sha, n)
        for path, data in erased.files_before.items()
        if (sha := sha256_hex(data)) in new_sha
        for n in about_person(erased, path.split("/")[1], data)
    }
    keys = {
        "customer_id": {erased.customer_id},
        "meter_id": {erased.person["meter_id"]},
        "source_customer_id": {i for _, i in erased.records},
    }
    bookkeeping = {"landing.deliveries", "formatted.file_outcomes"}  # recounted: checked below
    for table, before in erased.tables_before.items():
        after = erased.tables_after[table]
        expected = before
        for column, values in keys.items():
            if column in before.columns:
                expected = expected.filter(~pl.col(column).is_in(list(values)))
        if "record_no" in before.columns:  # rejects carry no id: they go by file and line
            expected = expected.filter(
                ~pl.struct("file_sha256", "record_no").is_in(
                    [{"file_sha256": s, "record_no": n} for s, n in blanked]
                )
            )
        if "file_sha256" in before.columns:
            expected = expected.with_columns(pl.col("file_sha256").replace(new_sha))
        removed = before.height - after.height
        entry = log.filter((pl.col("object_kind") == "table") & (pl.col("object") == table))
        assert removed == (entry["rows_removed"].sum() if entry.height else 0), table
        if table not in bookkeeping:
            assert after.sort(after.columns).equals(expected.sort(expected.columns)), table
    assert erased.tables_after["exploitation.customers"].height == (
        erased.tables_before["exploitation.customers"].height - 1
    )
    outcomes = erased.tables_after["formatted.file_outcomes"]
    assert outcomes.filter(
        pl.col("records_in") != pl.col("rows_formatted") + pl.col("rows_rejected")
    ).is_empty()
    deliveries = erased.tables_after["landing.deliveries"].filter(~pl.col("redelivery"))
    for sha, path, size in deliveries.select("sha256", "landed_path", "size_bytes").iter_rows():
        data = erased.files_after[path]
        assert (sha256_hex(data), len(data)) == (sha, size)


def test_the_audit_log_says_who_when_what(erased):
    log = erased.log
    assert set(log["subject"]) == {f"customer_id={erased.customer_id}"}
    assert set(log["requested_by"]) == {"dpo@example.com"}
    assert set(log["reason"]) == {"request #42"} and log["erasure_id"].n_unique() == 1
    rewritten = log.filter(pl.col("object_kind") == "landed_file")
    for path, sha in rewritten.select("object", "sha256_after").iter_rows():
        assert sha256_hex(erased.files_after[path]) == sha
    assert sorted(log.filter(pl.col("object_kind") == "model")["object"]) == [
        "customer_churn v1",
        "energy_forecast v1",
    ]
    # Files no reader could parse cannot be searched: listed for a person to review.
    unreadable = log.filter(pl.col("object_kind") == "unreadable_file")
    quarantined = erased.tables_before["formatted.file_outcomes"].filter(
        (pl.col("status") == "quarantined")
        & pl.col("source").is_in([s.name for s in SOURCES.values() if s.subject_keys])
    )
    assert unreadable.height == quarantined.height > 0


def test_models_are_marked_and_retraining_starts(erased):
    import mlflow

    tracking = erased.platform.defs.resources["mlflow_tracking"]
    client = mlflow.MlflowClient(tracking.tracking_uri, tracking.tracking_uri)
    (erasure_id,) = erased.log["erasure_id"].unique()
    for name in PIPELINES:
        for version in client.search_model_versions(f"name = '{name}'"):
            assert version.tags["retrain_required"] == erasure_id
    sensor = build_retrain_sensor(list(PIPELINES.values()), "train_models")
    with build_sensor_context(instance=erased.platform.instance) as context:
        requests = sensor(context)
        assert sorted(r.asset_selection[0].path[0] for r in requests) == sorted(PIPELINES)
        assert all(isinstance(r, RunRequest) for r in requests)
        assert all(f"erasure {erasure_id}" in r.tags["dp/retrain_reason"] for r in requests)
        assert not isinstance(sensor(context), list), "one erasure retrains once"


def test_erasing_again_says_when_it_was_done(erased):
    again = dp_erase(erased.root, erased.customer_id)
    assert again.returncode == 1
    assert f"customer_id={erased.customer_id} is not stored: erased by ERA-" in again.stderr
    unknown = dp_erase(erased.root, "CUS-FFFFFFFFFF")
    assert unknown.returncode == 1 and "ids look like CUS-" in unknown.stderr


def test_a_redelivered_original_does_not_bring_the_person_back(erased):
    platform = erased.platform
    export = next(p for p in erased.files_before if "crm_beta_export" in p)
    platform.drop("customers", Path(export).name.split("_", 2)[2], erased.files_before[export])
    assert platform.materialize().success  # every zone and pipeline again, checks included
    deliveries = platform.frame("SELECT * FROM landing.deliveries ORDER BY landed_at DESC LIMIT 1")
    assert deliveries["redelivery"].item() is True
    meter, email = erased.person["meter_id"], erased.person["email"].lower().encode()
    assert platform.sql(
        "SELECT count(*) FROM exploitation.meter_readings WHERE meter_id = ?", [meter]
    ) == [(0,)]
    assert platform.sql(
        "SELECT count(*) FROM exploitation.customers WHERE meter_id = ?", [meter]
    ) == [(0,)]
    assert email not in b"".join(map(plain, landed_files(platform).values())).lower()


# --- on a project of one declared source --------------------------------------------------------------

PEOPLE = """\
description: People of a throw-away project
pattern: "*.csv"
columns:
  person_id: {type: int, required: true}
  email: {pii: true, case: lower, description: Contact address}
  city: {}
key: [person_id]
subject_keys: [[email]]
"""


class ProjectPlatform(Platform):
    """``Platform`` serving only the project in ``folder``."""

    def __init__(self, root: Path, folder: Path):
        super().__init__(root)
        self.settings = replace(self.settings, projects=(folder,))  # on the same warehouse
        self.defs = build_defs(self.settings)


def test_erasure_by_a_declared_pii_key_of_a_users_project(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "people_project"
    (folder / "sources").mkdir(parents=True)
    (folder / "project.yaml").write_text("name: people_project\ndescription: people only\n")
    (folder / "sources" / "people.yaml").write_text(PEOPLE)
    isolate(monkeypatch)
    platform = ProjectPlatform(tmp_path, folder)
    on_its_warehouse(platform, monkeypatch)  # `dp erase` below reads the environment
    monkeypatch.setenv("DP_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("DP_PROJECT", str(folder))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    zones = AssetSelection.groups("landing", "formatted")
    platform.drop("people", "a.csv", b"person_id,email,city\n1,ann@example.org,Oslo\n"
                  b"2,bob@example.org,Bergen\n3,cat@example.org,Oslo\n")  # fmt: skip
    platform.drop("people", "b.csv", b"person_id,email,city\n4,dan@example.org,Oslo\n"
                  b"1,ANN@example.org,Trondheim\n")  # fmt: skip
    assert platform.materialize(zones).success
    before = landed_files(platform)
    people = platform.frame("SELECT person_id, city FROM formatted.people ORDER BY ALL")

    assert dp(["erase", "--key", "phone=1"]) == 1
    assert "phone: not a declared subject key (declared: email)" in capsys.readouterr().err
    assert dp(["erase", "--key", "email=ann@example.org", "--reason", "ticket 7"]) == 0
    assert "erased" in capsys.readouterr().out

    after = landed_files(platform)
    assert len(after) == len(before) == 2 and after.keys() != before.keys()
    assert not any(b"ann@example.org" in data.lower() for data in after.values())
    assert sorted(after.values()) == [
        b"person_id,email,city\n\n2,bob@example.org,Bergen\n3,cat@example.org,Oslo\n",
        b"person_id,email,city\n4,dan@example.org,Oslo\n\n",
    ]
    assert platform.frame("SELECT person_id, city FROM formatted.people ORDER BY ALL").equals(
        people.filter(pl.col("person_id") != 1)
    )
    log = platform.frame("SELECT * FROM governance.erasure_log")
    pseudonym = pseudonymize(pl.Series(["ann@example.org"]), b"test-key-not-a-secret").item()
    assert set(log["subject"]) == {f"email={pseudonym}"} and log["customer_id"].is_null().all()
    assert sorted(log.filter(pl.col("object_kind") == "table")["object"]) == ["formatted.people"]

    assert dp(["erase", "--key", "email=ann@example.org"]) == 1
    assert f"email={pseudonym} is not stored: erased by ERA-" in capsys.readouterr().err
    assert dp(["erase", "--key", "email=eve@example.org"]) == 1
    assert "no landed record and no table row has it" in capsys.readouterr().err
    platform.instance.dispose()


def test_a_project_level_key_on_a_pii_column_is_matched_as_its_pseudonym(tmp_path, monkeypatch):
    folder = tmp_path / "keyed_project"
    (folder / "sources").mkdir(parents=True)
    (folder / "project.yaml").write_text("name: keyed_project\nsubject_keys: [[email]]\n")
    (folder / "sources" / "people.yaml").write_text(PEOPLE.replace("subject_keys: [[email]]\n", ""))
    isolate(monkeypatch)
    subject = find_subject(None, Settings(tmp_path / "data", (folder,)), ["email=ann@example.org"])
    pseudonym = pseudonymize(pl.Series(["ann@example.org"]), b"test-key-not-a-secret").item()
    assert subject.keys[("email",)]["email"].to_list() == [pseudonym]
