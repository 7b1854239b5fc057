"""Dagster wiring of the landing zone: one asset per source, landed together in one step."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from dp_assets.failpoints import crash_point
from dp_assets.governance.erasure import ERASURE_LOG, erased_originals
from dp_assets.frames import polars_schema
from dp_assets.landing.schema import UNKNOWN_SOURCE, Delivery
from dp_assets.landing.store import (
    clear_inbox,
    delivery_key,
    discard_uncommitted,
    land_files,
    pending_copies,
    scan_inbox,
)
from dp_assets.metadata import (
    OWNER,
    WAREHOUSE_POOL,
    markdown,
    schema_check,
    spec_metadata,
    table_metadata,
    schema_check_spec,
)
from dp_assets.resources import DataDir, Warehouse
from dp_assets.resources.tables import ensure_table, insert, table_exists

MANIFEST = "landing.deliveries"
CODE_VERSION = "1"
# An erased file's original content, delivered again, is a re-delivery of today's version.
ERASED_FILES = (
    f"SELECT sha256_before, sha256_after FROM {ERASURE_LOG} WHERE object_kind = 'landed_file'"
)
LISTED_COLUMNS = ["source", "original_name", "size_bytes", "sha256", "arrival_time", "redelivery"]


def landing_spec(source) -> AssetSpec:
    return AssetSpec(
        ["landing", source.name],
        group_name="landing",
        description=f"Persistent landing of {source.description.lower()}: every delivered file kept "
        f"immutable under landing/{source.name}/ (by arrival time, content-hashed), listed in "
        f"{MANIFEST}.",
        owners=[OWNER],
        kinds={"file", "duckdb"},
        code_version=CODE_VERSION,
        metadata={
            **spec_metadata(Delivery, MANIFEST),
            **{f"physical/{k}": v for k, v in source.physical.as_metadata().items()},
        },
    )


def referenced_paths(conn, paths: list[str]) -> set[str]:
    """Those of ``paths`` a manifest row or the erasure log references: never deleted."""
    if not paths:
        return set()
    query = f"SELECT landed_path FROM {MANIFEST} WHERE landed_path IN (SELECT unnest($paths))"
    if table_exists(conn, ERASURE_LOG):
        query += f" UNION SELECT object FROM {ERASURE_LOG} WHERE object IN (SELECT unnest($paths))"
    return {path for (path,) in conn.execute(query, {"paths": paths}).fetchall()}


def build_landing_asset(sources: dict):
    """One asset per source, landed together in one step; selecting some lands only theirs (files
    outside every source's folder are quarantined when all are selected)."""
    specs = [landing_spec(source) for source in sources.values()]

    @multi_asset(
        name="landing",
        specs=specs,
        check_specs=[
            schema_check_spec(spec.key, "Manifest rows pass the Pandera schema") for spec in specs
        ],
        can_subset=True,
        pool=WAREHOUSE_POOL,
    )
    def landing(context: AssetExecutionContext, data_dir: DataDir, warehouse: Warehouse):
        """Take every pending inbox file into the persistent landing and record each delivery."""
        selected = [key.path[1] for key in context.selected_asset_keys]
        yield from land(context, data_dir.settings, warehouse, sources, selected)

    return landing


def land(context, settings, warehouse: Warehouse, sources: dict, selected: list[str]):
    inbox = scan_inbox(settings, sources)
    every = len(selected) == len(sources)
    inbox.files[:] = [f for f in inbox.files if f.source in selected or every]
    inbox.skipped[:] = [s for s in inbox.skipped if s.source in selected or every]
    with warehouse.transaction() as conn:
        ensure_table(conn, MANIFEST, Delivery)
        # A manifest from before the column (the table is never rebuilt: it is the record).
        conn.execute(f"ALTER TABLE {MANIFEST} ADD COLUMN IF NOT EXISTS original_name_hex VARCHAR")
        pending = pending_copies(settings)  # read before this run journals its own
        first_copies = f"SELECT source, sha256, landed_path FROM {MANIFEST} WHERE NOT redelivery"
        landed = {
            (source, sha): path for source, sha, path in conn.execute(first_copies).fetchall()
        }
        if table_exists(conn, ERASURE_LOG):
            rewrites = dict(conn.execute(ERASED_FILES).fetchall())
            landed |= erased_originals(rewrites, landed)
        recorded = {
            delivery_key(*row)
            for row in conn.execute(
                f"SELECT source, original_name, original_name_hex, inbox_changed_ns FROM {MANIFEST}"
            ).fetchall()
        }
        taken = land_files(settings, inbox.files, landed, recorded)
        rows = pl.DataFrame(taken.rows, schema=polars_schema(Delivery))
        insert(conn, MANIFEST, rows)
        crash_point("landing:copied")  # files copied, manifest not committed
        referenced = referenced_paths(conn, pending)
        totals = {
            source: figures
            for source, *figures in conn.execute(
                f"SELECT source, count(*), count(*) FILTER (NOT redelivery), "
                f"count(*) FILTER (redelivery), sum(size_bytes) FILTER (NOT redelivery) "
                f"FROM {MANIFEST} GROUP BY source"
            ).fetchall()
        }
        previews = conn.execute(
            f"SELECT * FROM {MANIFEST} QUALIFY row_number() OVER (PARTITION BY source ORDER BY landed_at DESC) <= 5"
        ).pl()
        # What this run stored, read back through DuckDB's types, for the schema checks.
        stored = conn.execute(
            f"SELECT * FROM {MANIFEST} WHERE landed_at = ?", [rows["landed_at"].max()]
        ).pl()
    # Only after the manifest is committed: a crash before this lands the files again, never loses.
    for file in clear_inbox(taken.taken):
        context.log.warning(
            f"left {file.source}/{file.original_name} in the inbox: changed since it was copied "
            "(still being written to?); it lands again, whole, as a new delivery"
        )
    if discarded := discard_uncommitted(settings, pending, referenced):
        context.log.warning(f"deleted {discarded} copies a failed landing left uncommitted")
    skipped = pl.DataFrame(
        [(s.source, s.name, s.why, s.kind) for s in inbox.skipped + taken.skipped],
        schema={"source": pl.String, "file": pl.String, "why": pl.String, "kind": pl.String},
        orient="row",
    )
    for s in skipped.filter(pl.col("kind").is_in(["refused", "changed"])).iter_rows(named=True):
        context.log.warning(f"skipped {s['source']}/{s['file']} in the inbox: {s['why']}")
    # Said, so that a run right after a copy does not look as if the file were lost.
    for s in skipped.filter(pl.col("kind") == "waiting").iter_rows(named=True):
        context.log.info(
            f"left {s['source']}/{s['file']} in the inbox for now: {s['why']} (DP_INBOX_QUIET_S); "
            "a later run lands it"
        )

    stray = rows.filter(pl.col("source") == UNKNOWN_SOURCE)
    for row in stray.iter_rows(named=True):
        context.log.warning(
            f"quarantined stray file {row['original_name']!r}: {row['quarantine_reason']}"
        )
    for name in selected:
        taken = rows.filter(pl.col("source") == name)
        left = skipped.filter(pl.col("source") == name)
        deliveries, new, again, size = totals.get(name, (0, 0, 0, 0))
        # This run's figures beside the manifest's totals (a run with nothing new takes 0 files).
        yield MaterializeResult(
            asset_key=["landing", name],
            metadata={
                **table_metadata(deliveries, previews.filter(pl.col("source") == name)),
                "files taken": MetadataValue.int(taken.height),
                "total files taken": MetadataValue.int(deliveries),
                "new files": MetadataValue.int(taken.filter(~pl.col("redelivery")).height),
                "total new files": MetadataValue.int(new),
                "re-deliveries": MetadataValue.int(taken.filter(pl.col("redelivery")).height),
                "total re-deliveries": MetadataValue.int(again),
                # Stored: a re-delivery is recognised by its hash, not copied again.
                "bytes stored": MetadataValue.int(
                    int(taken.filter(~pl.col("redelivery"))["size_bytes"].sum() or 0)
                ),
                "total bytes stored": MetadataValue.int(int(size or 0)),
                "files": markdown(taken.select(LISTED_COLUMNS), rows=max(taken.height, 1)),
                "skipped": markdown(left.drop("source"), rows=max(left.height, 1)),
            },
        )
        yield schema_check(
            Delivery, stored.filter(pl.col("source") == name), asset_key=["landing", name]
        )
