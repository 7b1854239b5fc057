"""Dagster wiring of erasure: the ``erase_person`` job and the ``governance.erasure_log`` it writes
(an asset too: materializing it creates the empty log and reports its size).

``dp erase --key <column>=<value>`` runs the same job. In one warehouse transaction the op:

1. finds the person: the subject keys the request names (a PII column's value pseudonymized),
   and whatever keys of theirs each project's erasure hook (``project.yaml``: ``erasure``) adds;
2. rewrites each landed file holding their records with those lines blanked (a new immutable file
   named by its new hash; the old one is deleted only after the commit), and moves the manifest,
   the formatted rows and the file outcomes over to the new hash, minus the person's records;
3. deletes their rows from every other table holding all the columns of one of their keys
   (exploitation, each pipeline's sandbox, features and predictions);
4. verifies no table still holds a row of theirs (else everything rolls back) and that there
   was one to erase (else the request names nobody: mistyped, or erased before);
5. tags every model version of the pipelines that trained on them ``retrain_required`` and appends
   the audit entries; the ``retrain_on_degradation`` sensor then starts their retraining.

After the commit, the superseded landed files are deleted and the deletions are made physical
(``Warehouse.forget_history``): a DuckDB file's CHECKPOINT; on a DuckLake, the files that held the
rows rewritten at once, then, once every run that was at work then has ended (up to
``wait_for_writers_s``), the older snapshots expired and their files deleted, with those of
writers that died.

Afterwards it records a materialization of each asset it changed, so lineage shows the erasure
and automation refreshes what depends on them.
"""

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunsFilter,
    asset,
    job,
    op,
)

from dp_assets.formatted.assets import OUTCOMES
from dp_assets.formatted.process import read_file
from dp_assets.formatted.schema import FileOutcome
from dp_assets.frames import polars_schema
from dp_assets.governance.erasure import (
    ERASURE_LOG,
    ErasureLogEntry,
    BadRequest,
    Subject,
    UnknownSubject,
    blank_lines,
    matching_records,
    renamed_for,
    request_subject,
    sha256_hex,
)
from dp_assets.landing.assets import MANIFEST
from dp_assets.landing.store import write_immutable
from dp_assets.metadata import (
    OWNER,
    WAREHOUSE_POOL,
    markdown,
    schema_check,
    schema_check_spec,
    spec_metadata,
    stored_table_results,
)
from dp_assets.resources import DataDir, MlflowTracking, Warehouse
from dp_assets.resources.warehouse import CLOCK_MARGIN
from dp_assets.resources.lake_writers import is_conflict
from dp_assets.resources.tables import (
    ensure_table,
    insert,
    row_count,
    table_columns,
)
from dp_assets.settings import Settings
from dp_assets.sources.base import FileContext

ERASURE_KEY = AssetKey(["governance", "erasure_log"])
ERASE_JOB = "erase_person"
RETRAIN_METADATA = "retrain pipelines"  # read by the retrain sensor
RETRAIN_TAG = "retrain_required"
HISTORY_POLL_S = 10
ERASURE_COMMITTED_TAG = "dp/erasure_committed"
# Landing and formatted rows are removed by file and record (step 2); the log is the audit itself.
BY_FILE_SCHEMAS = ("landing", "formatted")


@asset(
    key=ERASURE_KEY,
    description=f"Audit trail of erasure requests ({ERASURE_LOG}): per request, each landed file "
    "rewritten (hashes before and after), each table and row count, each model version marked for "
    f"retraining. Written by the {ERASE_JOB} job (dp erase); materializing it creates the empty log "
    "and reports what it holds",
    group_name="governance",
    owners=[OWNER],
    kinds={"duckdb"},
    code_version="1",
    metadata=spec_metadata(ErasureLogEntry, ERASURE_LOG),
    check_specs=[schema_check_spec(ERASURE_KEY)],
    pool=WAREHOUSE_POOL,
)
def erasure_log(warehouse: Warehouse):
    """Lineage shows the log as materialized from the first run on, not as never built (grey)
    until a first erasure; each erasure records its own materialization."""
    with warehouse.transaction() as conn:
        ensure_log(conn)
        (requests,) = conn.execute(
            f"SELECT count(DISTINCT erasure_id) FROM {ERASURE_LOG}"
        ).fetchone()
        yield from stored_table_results(
            conn, ERASURE_LOG, ErasureLogEntry, ERASURE_KEY,
            requests=MetadataValue.int(requests),
            # Read by the retrain sensor on every materialization of the log: none from this one.
            **{RETRAIN_METADATA: MetadataValue.json([])},
        )  # fmt: skip


class EraseConfig(Config):
    keys: list[str]
    """The person's subject keys as <column>=<value>, all about the same person (the clear value
    of a PII column: it is pseudonymized before matching)."""
    requested_by: str
    """Who asked: kept in the audit log."""
    reason: str = ""
    """Why, e.g. the ticket of the data subject's request."""
    wait_for_writers_s: float = 1800
    """On a lake, how long to wait for the runs at work to end, whose open transactions need the
    history an erasure expires; the run fails after it if they have not."""


@dataclass(frozen=True)
class Rewrite:
    source: str
    sha_before: str
    path_before: str
    sha_after: str
    path_after: str
    size_bytes: int
    record_nos: list[int]


def writers_at_work(context: OpExecutionContext, began_before: dt.datetime) -> list[str]:
    """The other runs still at work that began before ``began_before`` (erasures that have
    committed theirs, and so write nothing more, aside)."""
    at_work = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    return [
        r.dagster_run.run_id
        for r in context.instance.get_run_records(RunsFilter(statuses=at_work))
        if r.dagster_run.run_id != context.run_id
        and r.start_time
        and r.start_time < began_before.timestamp()
        and ERASURE_COMMITTED_TAG not in r.dagster_run.tags
    ]


def forget_history(
    context: OpExecutionContext, warehouse: Warehouse, erasure_id: str, wait_s: float
) -> str:
    """``Warehouse.forget_history`` with writers at work: the deleted rows rewritten out of the
    files at once; the older snapshots and the uncommitted files expired once every run that was
    at work then has ended (a transaction of theirs may have started from an older snapshot and
    needs the history since to see what it conflicts with), waiting up to ``wait_s``. What is
    left when it gives up, as a message; empty when nothing is."""
    deadline = time.monotonic() + wait_s
    snapshot, conflicts, waiting = None, 0, []
    while True:
        try:
            with warehouse.get_connection() as conn:
                if snapshot is None:
                    snapshot = warehouse.rewrite_deleted_rows(conn)
                    if snapshot is None:  # a DuckDB file: nothing more
                        return ""
                    rewritten_at = dt.datetime.now(dt.UTC)
                waiting = writers_at_work(context, rewritten_at + CLOCK_MARGIN)
                if not waiting:
                    left = warehouse.expire_history(conn, snapshot, rewritten_at - CLOCK_MARGIN)
                    if left:
                        context.log.info(f"{erasure_id}: {left} uncommitted lake files kept, "
                                         "written since the erasure began")  # fmt: skip
                    return ""
        except duckdb.TransactionException as error:
            if not is_conflict(error):
                raise
            conflicts += 1  # a writer committed meanwhile: again
        if time.monotonic() >= deadline:
            what = (
                f"the runs {', '.join(waiting)} were still at work"
                if waiting
                else f"its maintenance met {conflicts} write conflicts"
            )
            return (
                f"{erasure_id} committed, but after {wait_s:.0f} s {what}: the lake's snapshots "
                f"before {snapshot} may still hold the person's rows. When those runs have ended, "
                "run the maintenance (README: Erasure on a DuckLake)"
            )
        context.log.info(
            f"{erasure_id}: waiting for the runs at work to end before expiring the lake's "
            f"history: {', '.join(waiting) or 'a write conflict, again'}"
        )
        time.sleep(HISTORY_POLL_S)


def build_erasure_job(table_keys: dict[str, AssetKey], pipelines: list[str]):
    """The job; ``table_keys`` maps stored tables to their assets (for the lineage events)."""

    @op(
        name="erase",
        out={},  # it yields events only
        description="Remove one person from every zone, log the erasure, mark models for retraining",
    )
    def erase(
        context: OpExecutionContext,
        config: EraseConfig,
        data_dir: DataDir,
        warehouse: Warehouse,
        mlflow_tracking: MlflowTracking,
    ):
        settings = data_dir.settings
        now = dt.datetime.now(dt.UTC)
        erasure_id = f"ERA-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        written: list[Path] = []
        try:
            with warehouse.transaction() as conn:
                ensure_log(conn)
                subject = find_subject(conn, settings, config.keys)
                rewrites, unreadable = rewrite_landed_files(conn, settings, subject, written)
                if not rewrites and not remaining_rows(conn, subject):
                    raise UnknownSubject(not_found(conn, subject))
                removed = apply_rewrites(conn, rewrites) | delete_subject_rows(conn, subject)
                if left := remaining_rows(conn, subject):
                    raise Failure(
                        f"rows of {subject.description} would remain in {left}: nothing erased"
                    )
                outcomes = conn.execute(
                    f"SELECT * FROM {OUTCOMES} WHERE file_sha256 IN (SELECT unnest(?))",
                    [[r.sha_after for r in rewrites]],
                ).pl()
                consistent = schema_check(FileOutcome, outcomes)
                if not consistent.passed:
                    raise Failure("file outcomes would no longer add up after the rewrite: nothing erased",
                                  metadata=consistent.metadata)  # fmt: skip
                retrain = sorted(
                    {t.split(".")[0] for t, n in removed.items() if n} & set(pipelines)
                )
                models = mark_for_retraining(mlflow_tracking, retrain, erasure_id)
                entries = audit_entries(
                    config, subject, erasure_id, now, rewrites, unreadable, removed, models
                )
                insert(conn, ERASURE_LOG, entries)
                counts = {t: row_count(conn, t) for t in removed if removed[t]}
                superseded = superseded_files(conn)
        except (BadRequest, UnknownSubject) as error:
            raise Failure(str(error)) from None
        except BaseException:
            for path in written:  # the transaction rolled back: its new files are strays
                path.unlink(missing_ok=True)
            raise
        # Other erasures waiting for the runs at work need not wait for this one any more.
        context.instance.add_run_tags(context.run_id, {ERASURE_COMMITTED_TAG: "true"})
        for path in superseded:  # only now: until the commit, the old versions are the record
            (settings.data_dir / path).unlink(missing_ok=True)
        # Deleted rows must leave the storage too: a lake's old snapshots still hold them.
        try:  # a committed erasure is not undone by what fails here: reported below
            left = forget_history(context, warehouse, erasure_id, config.wait_for_writers_s)
        except duckdb.Error as error:
            left = (
                f"{erasure_id} committed, but the warehouse's history still holds "
                f"{subject.description} ({error}): run the maintenance again (README: Erasure "
                "on a DuckLake; Warehouse.forget_history)"
            )

        for table, rows in removed.items():
            if rows and table in table_keys:
                yield _changed(table_keys[table], erasure_id, rows, counts[table])
        for source in sorted({r.source for r in rewrites}):
            files = [r for r in rewrites if r.source == source]
            yield _changed(AssetKey(["landing", source]), erasure_id, None, None,
                           **{"files rewritten": MetadataValue.int(len(files))})  # fmt: skip
        context.log.info(
            f"{erasure_id}: erased {subject.description} from {len(rewrites)} landed files and "
            f"{sum(1 for n in removed.values() if n)} tables; retraining {retrain or 'nothing'}"
        )
        yield AssetMaterialization(
            ERASURE_KEY,
            description=f"{erasure_id}: {subject.description} erased",
            metadata={
                "erasure_id": erasure_id,
                "subject": subject.description,
                "landed files rewritten": MetadataValue.int(len(rewrites)),
                "unreadable files to review": MetadataValue.int(len(unreadable)),
                "rows removed": MetadataValue.int(sum(removed.values())),
                "history left": left or "none",
                RETRAIN_METADATA: MetadataValue.json(retrain),
                "entries": markdown(entries.drop("subject", "customer_id"), rows=50),
            },
        )
        if left:  # after the events: what was erased stays recorded, and the run shows the rest
            raise Failure(left)

    @job(
        name=ERASE_JOB,
        description="Erase one person from every zone on request (config: keys, the person's "
        "subject keys as column=value; requested_by; reason); the audit trail is "
        "governance.erasure_log",
    )
    def erase_person():
        erase()

    return erase_person


def _changed(key: AssetKey, erasure_id: str, rows: int | None, count: int | None, **extra):
    metadata = {"erasure_id": erasure_id, **extra}
    if rows is not None:
        metadata |= {
            "rows removed": MetadataValue.int(rows),
            "dagster/row_count": MetadataValue.int(count),
        }
    return AssetMaterialization(key, description=f"rows of one person removed by {erasure_id}", metadata=metadata)  # fmt: skip


# --- the steps --------------------------------------------------------------------------------------


def ensure_log(conn: duckdb.DuckDBPyConnection) -> None:
    """The audit log, with its ``subject`` column: a log from before requests by subject key
    (customer ids only) gains it, its entries described as the request was."""
    ensure_table(conn, ERASURE_LOG, ErasureLogEntry)
    conn.execute(f"ALTER TABLE {ERASURE_LOG} ADD COLUMN IF NOT EXISTS subject VARCHAR")
    conn.execute(
        f"UPDATE {ERASURE_LOG} SET subject = 'customer_id=' || customer_id "
        "WHERE subject IS NULL AND customer_id IS NOT NULL"
    )


def find_subject(
    conn: duckdb.DuckDBPyConnection, settings: Settings, request: list[str]
) -> Subject:
    """The person the request's ``column=value`` keys name, with every key of theirs the
    projects' erasure hooks find."""
    catalog = settings.catalog()
    sources = catalog.sources.values()
    declared = [k for s in sources for k in s.subject_keys]
    declared += [k for p in catalog.projects for k in p.subject_keys]
    # A key column a source pseudonymizes is typed in clear and matched as its pseudonym, whether
    # the source or the project declares the key.
    keyed = {c for key in declared for c in key}
    pii = {c for s in sources for c in s.pii_columns if c in keyed}
    subject = request_subject(request, declared, pii, settings.pii_key())
    for project in (p for p in catalog.projects if p.erasure):
        try:
            subject = subject.merged(project.hook(project.erasure)(conn, subject))
        except UnknownSubject as error:
            raise UnknownSubject(not_found(conn, subject, str(error))) from None
    return subject


def not_found(conn: duckdb.DuckDBPyConnection, subject: Subject, why: str = "") -> str:
    """Why nothing of the subject is stored: an earlier erasure of theirs, else ``why``."""
    before = conn.execute(
        f"SELECT erasure_id, erased_at FROM {ERASURE_LOG} WHERE subject = ? "
        "ORDER BY erased_at LIMIT 1",
        [subject.description],
    ).fetchone()
    if before:
        erasure_id, when = before
        return f"{subject.description} is not stored: erased by {erasure_id} on {when:%Y-%m-%d %H:%M} UTC"
    return why or (
        f"{subject.description}: no landed record and no table row has it (mistyped? a PII "
        "value must be written as the source normalizes it before pseudonymizing)"
    )


LANDED = f"""
    SELECT DISTINCT sha256, landed_path, original_name FROM {MANIFEST}
    WHERE source = ? AND NOT redelivery ORDER BY landed_path
"""


def rewrite_landed_files(
    conn: duckdb.DuckDBPyConnection, settings: Settings, subject: Subject, written: list[Path]
) -> tuple[list[Rewrite], list[tuple[str, str, str]]]:
    """Write each landed file holding the subject's records anew without them (appending the new
    paths to ``written``); return the rewrites and the (source, path, reason) of unreadable files."""
    pii_key = settings.pii_key()
    rewrites, unreadable = [], []
    for source in (s for s in settings.catalog().sources.values() if s.subject_keys):
        for sha, path, name in conn.execute(LANDED, [source.name]).fetchall():
            data = (settings.data_dir / path).read_bytes()
            read = read_file(source, data, FileContext(sha, name, pii_key), by_name=False)
            if read.quarantine_reason:
                unreadable.append((source.name, path, sha, read.quarantine_reason))
                continue
            record_nos = matching_records(read.typed, subject, source.subject_keys)
            if not record_nos:
                continue
            physical = source.physical
            new = blank_lines(data, set(record_nos), physical.encoding, physical.delimiter)
            new_sha = sha256_hex(new)
            if conn.execute(
                f"SELECT 1 FROM {MANIFEST} WHERE source = ? AND sha256 = ?", [source.name, new_sha]
            ).fetchone():
                raise Failure(
                    f"{path} without the person's records equals another landed file of "
                    f"{source.name} (sha256 {new_sha}); merging the two is not supported: nothing erased"
                )
            new_path = renamed_for(path, sha, new_sha)
            write_immutable(settings.data_dir / new_path, new)
            written.append(settings.data_dir / new_path)
            rewrites.append(
                Rewrite(source.name, sha, path, new_sha, new_path, len(new), record_nos)
            )
    return rewrites, unreadable


def apply_rewrites(conn: duckdb.DuckDBPyConnection, rewrites: list[Rewrite]) -> dict[str, int]:
    """Point the warehouse at the rewritten files: drop the erased records from the formatted
    tables, recount the file outcomes, replace the hashes and paths. Returns rows removed per table."""
    removed: dict[str, int] = {}
    if not rewrites:
        return removed
    erased = pl.DataFrame(
        [(r.sha_before, n) for r in rewrites for n in r.record_nos],
        schema={"file_sha256": pl.String, "record_no": pl.Int64},
        orient="row",
    )
    files = (
        pl.DataFrame(rewrites)
        .drop("record_nos")
        .with_columns(records=pl.Series([len(r.record_nos) for r in rewrites], dtype=pl.Int64))
    )
    conn.register("_erased", erased)
    conn.register("_files", files)
    try:
        for source in files["source"].unique().sort():
            counts = {}
            for column, table in (("rows_formatted", f"formatted.{source}"),
                                  ("rows_rejected", f"formatted.{source}_rejects")):  # fmt: skip
                removed[table] = conn.execute(
                    f"DELETE FROM {table} t USING _erased e "
                    "WHERE t.file_sha256 = e.file_sha256 AND t.record_no = e.record_no"
                ).fetchone()[0]
                counts[column] = (
                    f"(SELECT count(*) FROM {table} t WHERE t.file_sha256 = f.sha_before)"
                )
            conn.execute(
                f"""UPDATE {OUTCOMES} o SET records_in = o.records_in - f.records,
                    rows_formatted = {counts["rows_formatted"]}, rows_rejected = {counts["rows_rejected"]}
                FROM _files f WHERE o.source = f.source AND o.file_sha256 = f.sha_before AND f.source = ?""",
                [source],
            )
        for table in sorted(t for t, cs in table_columns(conn).items() if "file_sha256" in cs):
            conn.execute(
                f"UPDATE {table} t SET file_sha256 = f.sha_after FROM _files f WHERE t.file_sha256 = f.sha_before"
            )
        conn.execute(
            f"UPDATE {MANIFEST} d SET sha256 = f.sha_after, size_bytes = f.size_bytes "
            "FROM _files f WHERE d.source = f.source AND d.sha256 = f.sha_before"
        )
        conn.execute(  # re-deliveries point at the first copy too
            f"UPDATE {MANIFEST} d SET landed_path = f.path_after FROM _files f WHERE d.landed_path = f.path_before"
        )
    finally:
        conn.unregister("_erased")
        conn.unregister("_files")
    return removed


def delete_subject_rows(conn: duckdb.DuckDBPyConnection, subject: Subject) -> dict[str, int]:
    """Delete the subject's rows from every table past the formatted zone; rows removed per table."""
    removed = {}
    for table, columns in _subject_columns(conn, subject).items():
        if table.split(".")[0] in BY_FILE_SCHEMAS or table == ERASURE_LOG:
            continue
        removed[table] = 0
        for key in columns:
            removed[table] += _on_key(conn, "DELETE FROM", table, key, subject.keys[key])
    return removed


def remaining_rows(conn: duckdb.DuckDBPyConnection, subject: Subject) -> dict[str, int]:
    """Rows of the subject still stored anywhere but the audit log (should be none)."""
    left = {}
    for table, columns in _subject_columns(conn, subject).items():
        if table != ERASURE_LOG:
            found = sum(
                _on_key(conn, "SELECT count(*) FROM", table, k, subject.keys[k]) for k in columns
            )
            if found:
                left[table] = found
    return left


def _on_key(conn, statement: str, table: str, key: tuple[str, ...], values: pl.DataFrame) -> int:
    """``DELETE FROM`` / ``SELECT count(*) FROM`` the rows of ``table`` matching ``values`` on
    ``key``, compared as text (``matching_records`` says why)."""
    if values.is_empty():
        return 0
    conn.register("_key", values)
    try:
        match = " AND ".join(f"t.{c}::VARCHAR = k.{c}::VARCHAR" for c in key)
        return conn.execute(
            f"{statement} {table} t WHERE EXISTS (SELECT 1 FROM _key k WHERE {match})"
        ).fetchone()[0]
    finally:
        conn.unregister("_key")


def _subject_columns(conn, subject: Subject) -> dict[str, list[tuple[str, ...]]]:
    """Tables -> the subject keys all of whose columns they have."""
    found = {
        t: [k for k in subject.keys if set(k) <= cs]
        for t, cs in sorted(table_columns(conn).items())
    }
    return {t: keys for t, keys in found.items() if keys}


def mark_for_retraining(
    tracking: MlflowTracking, pipelines: list[str], erasure_id: str
) -> list[str]:
    """Tag every registered version of these pipelines' models: they learned from erased data."""
    client = tracking.client()
    marked = []
    for name in pipelines:
        for version in client.search_model_versions(f"name = '{name}'"):
            client.set_model_version_tag(name, version.version, RETRAIN_TAG, erasure_id)
            marked.append(f"{name} v{version.version}")
    return marked


def audit_entries(config: EraseConfig, subject: Subject, erasure_id: str, now: dt.datetime, rewrites: list[Rewrite],
                  unreadable: list, removed: dict[str, int], models: list[str]) -> pl.DataFrame:  # fmt: skip
    common = {"erasure_id": erasure_id, "subject": subject.description, "customer_id": None,
              "requested_by": config.requested_by, "reason": config.reason or None, "erased_at": now}  # fmt: skip
    rows = [
        *({"object_kind": "landed_file", "object": r.path_after, "rows_removed": len(r.record_nos),
           "sha256_before": r.sha_before, "sha256_after": r.sha_after} for r in rewrites),
        *({"object_kind": "unreadable_file", "object": path, "sha256_before": sha,
           "note": f"could not be parsed, so not inspected ({reason}): review by hand"}
          for _, path, sha, reason in unreadable),
        *({"object_kind": "table", "object": t, "rows_removed": n} for t, n in sorted(removed.items()) if n),
        *({"object_kind": "model", "object": m, "note": f"tagged {RETRAIN_TAG}; retraining requested"}
          for m in models),
    ]  # fmt: skip
    return pl.DataFrame([common | row for row in rows], schema=polars_schema(ErasureLogEntry))


def superseded_files(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Landed paths every logged rewrite replaced (deleted after the commit; listing all of them
    also finishes the deletions of an erasure that died between its commit and its cleanup)."""
    rows = conn.execute(
        f"SELECT object, sha256_before, sha256_after FROM {ERASURE_LOG} WHERE object_kind = 'landed_file'"
    ).fetchall()
    return [renamed_for(path, after, before) for path, before, after in rows]
