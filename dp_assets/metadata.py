"""Catalog metadata derived from the Pandera schemas, so column docs are written once.

Also the asset-spec conventions every zone shares (owner, kinds, pool), applied here rather than
repeated per asset, and how the blocking schema checks guard what downstream reads.
"""

from __future__ import annotations

import copy
import functools

import pandera.polars as pa
import polars as pl
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetCheckSeverity,
    AssetKey,
    AutomationCondition,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    AssetCheckExecutionRecordStatus,
)

OWNER = "team:data-platform"
# Every warehouse step joins it: one slot on a DuckDB file (one process at a time), several on a
# DuckLake (deploy/dagster-ducklake.yaml).
WAREHOUSE_POOL = "warehouse"
PREVIEW_ROWS = 5
# Columns the platform keeps to trace a row back to its raw file or delivery: a preview shows them
# after the columns people look for (a 64-character hash first hid them).
PLATFORM_COLUMNS = frozenset({
    "file_sha256", "record_no", "sha256", "sha256_before", "sha256_after", "landed_path",
    "inbox_changed_ns", "original_name_hex", "transform_version",
})  # fmt: skip
# A check of a subsettable asset (one that may skip, reporting no check) is requested on its own:
# automation asks for it whenever it asks for its asset, so that what depends on a blocking check
# sees it as "will be requested" in the same tick, as it does for an ``@asset``'s checks.
WITH_ITS_ASSET = AutomationCondition.any_deps_match(
    AutomationCondition.will_be_requested()
).with_label("requested with its asset")
# Op tags of an asset that reads what the other assets of its run did (the event log, the
# warehouse's catalog) without a lineage edge from each: the in-process executor starts the ready
# step of highest priority, so this one starts when no other step of the run is left to run.
LAST_IN_RUN = {"dagster/priority": "-100"}
VALIDATE_ROWS = 2_000_000  # rows per batch when stored rows are read back for validation


def column_schema(schema: type[pa.DataFrameModel]) -> TableSchema:
    columns = schema.to_schema().columns
    missing = [name for name, column in columns.items() if not column.description]
    if missing:
        raise ValueError(f"{schema.__name__}: columns without a description: {missing}")
    return TableSchema(
        columns=[
            TableColumn(name, str(column.dtype), description=column.description)
            for name, column in columns.items()
        ]
    )


def spec_metadata(schema: type[pa.DataFrameModel], table: str | None = None) -> dict:
    metadata = {"dagster/column_schema": column_schema(schema)}
    if table:
        metadata["dagster/table_name"] = table
    return metadata


def column_lineage(deps: dict[str, tuple[str, ...]]) -> dict:
    """``dagster/column_lineage`` from ``{column: ("zone/asset.column", ...)}``."""
    return {
        "dagster/column_lineage": TableColumnLineage(
            deps_by_column={
                column: [
                    TableColumnDep(AssetKey(asset.split("/")), name)
                    for asset, _, name in (source.rpartition(".") for source in sources)
                ]
                for column, sources in deps.items()
            }
        )
    }


def plain(metadata_value):
    """The Python value of a metadata entry (specs may hold raw values or ``MetadataValue``s)."""
    return getattr(metadata_value, "value", metadata_value)


def stored_tables(specs) -> dict:
    """DuckDB table -> the spec of the asset that stores it: the first by key when several assets
    share a table (the landing manifest)."""
    tables = {}
    for spec in sorted(specs, key=lambda s: s.key):
        if table := plain(spec.metadata.get("dagster/table_name")):
            tables.setdefault(table, spec)
    return tables


def markdown(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    with pl.Config(
        tbl_formatting="ASCII_MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=rows,
        tbl_cols=-1,
        tbl_width_chars=10_000,
        fmt_str_lengths=80,
    ):
        return MetadataValue.md(str(frame.head(rows)))


def business_first(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the ``PLATFORM_COLUMNS`` moved last, in their order."""
    platform = [c for c in frame.columns if c in PLATFORM_COLUMNS]
    return frame.select(pl.exclude(platform), *platform)


def table_metadata(row_count: int, preview: pl.DataFrame) -> dict:
    return {
        "dagster/row_count": MetadataValue.int(row_count),
        "preview": markdown(business_first(preview)),
    }


def stored_table_results(
    conn, table: str, schema: type[pa.DataFrameModel], key: AssetKey, where: str = "", **extra
) -> tuple[MaterializeResult, AssetCheckResult]:
    """Materialization metadata of a stored table and its blocking schema check (named 'schema').

    ``where`` (SQL after ``FROM <table> t``) limits the check to the rows a run wrote, and the
    preview to them when there are any.
    """
    check, preview = check_stored(conn, f"SELECT t.* FROM {table} t {where}", schema, asset_key=key)
    if where and preview.is_empty():  # nothing written this run: show what the table holds
        preview = conn.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}").pl()
    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return MaterializeResult(
        asset_key=key, metadata={**table_metadata(rows, preview), **extra}
    ), check


def check_stored(
    conn, selected: str, schema: type[pa.DataFrameModel], check_name: str = "schema", **kwargs
) -> tuple[AssetCheckResult, pl.DataFrame]:
    """The schema check of the rows a query selects, and a preview of them.

    Rows stream through Pandera in batches of ``VALIDATE_ROWS``, so memory stays bounded. The
    schema's unique key is checked once by DuckDB over every selected row instead, batches or not
    (a duplicate can span two batches); its failure cases name the duplicated keys.
    """
    found, preview, count = [], None, 0
    per_batch = _without_unique(schema)
    for batch in conn.execute(selected).fetch_record_batch(VALIDATE_ROWS):
        frame = pl.from_arrow(batch)
        preview = frame.head(PREVIEW_ROWS) if preview is None else preview
        count += frame.height
        if (cases := _failure_cases(per_batch, frame)) is not None:
            found.append(cases)
    if count and (unique := schema.to_schema().unique):
        if (duplicated := _duplicated_keys(conn, selected, unique)).height:
            found.append(duplicated)
    if preview is None:  # no rows: the preview shows the columns
        preview = conn.execute(f"SELECT * FROM ({selected}) LIMIT 0").pl()
    cases = pl.concat(found, how="diagonal_relaxed") if found else None
    return _check_result(check_name, cases, count, **kwargs), preview


@functools.cache
def _without_unique(schema: type[pa.DataFrameModel]) -> pa.DataFrameSchema:
    without = copy.deepcopy(schema.to_schema())
    without.unique = None
    return without


def _duplicated_keys(conn, selected: str, unique: list[str]) -> pl.DataFrame:
    """Failure cases in Pandera's shape: one per key held by more than one row (first 100)."""
    key = ", ".join(f'"{column}"' for column in unique)
    return conn.execute(
        f"""SELECT 'DataFrameSchema' AS schema_context, 'unique ({", ".join(unique)})' AS "check",
                   concat_ws(', ', {key}) || ' (' || count(*) || ' rows)' AS failure_case
            FROM ({selected}) GROUP BY {key} HAVING count(*) > 1 LIMIT 100"""
    ).pl()


def schema_check_spec(
    key, description: str = "Stored rows pass the Pandera schema"
) -> AssetCheckSpec:
    """The blocking check every stored table has; ``schema_check`` yields its result."""
    return AssetCheckSpec("schema", asset=key, blocking=True, description=description)


def failed_last_time(instance: DagsterInstance, key: AssetKey, check_name: str = "schema") -> bool:
    """Whether the latest evaluation of a check failed. A check that validates only a run's rows
    validates every stored row instead while this holds, so its failure stays until the table is
    clean: the next run's files cannot hide a bad row that downstream would still read."""
    done = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(key, check_name),
        limit=1,
        status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )  # this run's own evaluation is only planned yet: the latest completed one is the last run's
    return bool(done) and done[0].status == AssetCheckExecutionRecordStatus.FAILED


def checks_of_subsettable(specs) -> list[AssetCheckSpec]:
    """``specs`` as checks of a subsettable asset: requested by automation with their asset."""
    return [s._replace(automation_condition=WITH_ITS_ASSET) for s in specs]


def roll_back_unless_passed(*checks: AssetCheckResult):
    """Called inside a write's transaction, before its commit: when a blocking check failed,
    yields the failed results and raises a ``Failure`` naming their reasons, so the transaction
    rolls back and the previous state stays. Nothing downstream runs, and the write's input stays
    pending: the next run tries it again, and fails again until the cause is gone."""
    if failed := [c for c in checks if not c.passed]:
        yield from failed
        reasons = "; ".join(
            f"{c.asset_key.to_user_string()} {c.check_name}: {c.description}" for c in failed
        )
        raise Failure(
            description=f"rolled back, previous state kept: {reasons}", metadata=failed[0].metadata
        )


def schema_check(
    schema: type[pa.DataFrameModel], frame: pl.DataFrame, check_name: str = "schema", **kwargs
) -> AssetCheckResult:
    """Validate stored rows with the Pandera schema; the result lists the first failures."""
    return _check_result(check_name, _failure_cases(schema, frame), frame.height, **kwargs)


def _failure_cases(schema: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame | None:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return None


def _first_failure(cases: pl.DataFrame) -> str:
    """One line for a failed check: how many failures, and the first."""
    first = cases.row(0, named=True)
    column = f"{first['column']} " if first.get("column") else ""
    case = " ".join(str(first["failure_case"]).split())[:100]
    return f"{cases.height} failures, first: {column}{first['check']} fails for {case}"


def _check_result(
    check_name: str, cases: pl.DataFrame | None, validated: int, **kwargs
) -> AssetCheckResult:
    if cases is not None:
        return AssetCheckResult(
            check_name=check_name,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=_first_failure(cases),
            metadata={
                "failures": MetadataValue.int(cases.height),
                "first failures": markdown(cases, 20),
            },
            **kwargs,
        )
    return AssetCheckResult(
        check_name=check_name,
        passed=True,
        metadata={"rows validated": MetadataValue.int(validated)},
        **kwargs,
    )


def one_line(text: str, limit: int = 200) -> str:
    """A check's description: one line of at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
