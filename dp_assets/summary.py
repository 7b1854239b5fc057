"""``dp summary``: what the warehouse holds, what was rejected, what sits in quarantine and which
checks fail; ``dp checks`` and ``dp quarantine`` print those last two parts alone."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dp_assets.formatted.schema import reason_group
from dp_assets.landing.quarantine import open_quarantine
from dp_assets.resources.warehouse import Warehouse
from dp_assets.settings import Settings


def not_built_yet(warehouse: Warehouse) -> str | None:
    """What to say when nothing has been materialized into ``warehouse`` yet (else None)."""
    if warehouse.exists():
        return None
    return f"No warehouse yet at {warehouse.location}: run `make demo` first."


def summarize(settings: Settings) -> str:
    warehouse = Warehouse.from_settings(settings, lock_timeout_s=5)
    if missing := not_built_yet(warehouse):
        return missing
    lines, pipelines = [], settings.catalog().pipelines
    with warehouse.get_connection() as conn:
        zones = (
            "landing",
            "formatted",
            "exploitation",
            *pipelines,
            "monitoring",
            "reporting",
            "governance",
        )
        tables = conn.execute(
            "SELECT schema_name || '.' || table_name AS table FROM duckdb_tables() "
            "WHERE list_contains(?, schema_name) ORDER BY list_position(?, schema_name), table_name",
            [list(zones), list(zones)],
        ).fetchall()
        lines.append("Tables (rows):")
        for (table,) in tables:
            lines.append(
                f"  {table:<42} {conn.execute(f'SELECT count(*) FROM {table}').fetchone()[0]:>10,}"
            )
        lines.append("")
        lines.append("Rejected rows by source and reason:")
        lines += _rows(
            conn,
            " UNION ALL ".join(
                f"SELECT '{t.split('.')[1].removesuffix('_rejects')}' AS source, "
                f"{reason_group()} AS reason FROM {t}"
                for (t,) in tables
                if t.endswith("_rejects")
            )
            or "SELECT NULL AS source, NULL AS reason WHERE false",
            "SELECT source, reason, count(*) AS n FROM ({}) GROUP BY ALL ORDER BY source, n DESC",
        )
        lines.append("")
        lines += _quarantine(conn, settings)
        lines.append("")
        lines.append(
            f"Re-delivered files recognised (all runs): {_scalar(conn, 'SELECT count(*) FROM landing.deliveries WHERE redelivery')}"
        )
        lines.append("")
        lines.append("Models (validation window; the latest gate decision):")
        for name in pipelines:
            lines += _rows(conn, name, _MODEL_QUERY)
    lines += [
        "",
        "Checks failing (latest evaluation; WARN: someone should act, ERROR: data is wrong):",
    ]
    lines += format_checks(failing_checks(settings))
    lines += [
        "",
        f"Warehouse: {warehouse.location}",
        *(
            [
                "  query it: a DuckDB shell that LOADs the ducklake extension and ATTACHes it "
                "(README, Running at scale); readers never block runs",
            ]
            if warehouse.backend == "ducklake"
            else [
                f"  query it: .venv/bin/duckdb -readonly {settings.warehouse}",
                "  (close the shell before the next run: DuckDB lets one process at a time open "
                "the file)",
            ]
        ),
        f"Data dictionary: {settings.data_dir / 'docs' / 'data_dictionary.md'}",
        "UI: `make ui` then open http://127.0.0.1:3000 (lineage, checks, metadata)",
    ]
    return "\n".join(lines)


_MODEL_QUERY = """
    SELECT '{0}', 'champion v' || coalesce(p.champion_after::VARCHAR, 'none'),
           p.metric || ' ' || round(p.challenger_value, 4) || ' vs baseline ' || round(p.baseline_value, 4),
           p.reason
    FROM {0}.promotions p ORDER BY p.decided_at DESC LIMIT 1
"""


def _quarantine(conn: duckdb.DuckDBPyConnection, settings: Settings) -> list[str]:
    still_open = open_quarantine(conn)
    lines = [
        f"Quarantined files still open (copies and reasons under {settings.quarantine}; resolve "
        "by delivering the file again fixed, or `dp quarantine ack <source> <file> --reason ...`):"
    ]
    if still_open.is_empty():
        return [*lines, "  none"]
    return lines + [
        f"  {r['source']} | {r['original_name']} | {r['reason']}"
        for r in still_open.iter_rows(named=True)
    ]


def quarantine_lines(settings: Settings) -> list[str]:
    """``dp quarantine``: the open quarantined files."""
    warehouse = Warehouse.from_settings(settings, lock_timeout_s=5)
    if missing := not_built_yet(warehouse):
        return [missing]
    with warehouse.get_connection() as conn:
        return _quarantine(conn, settings)


@dataclass(frozen=True)
class FailingCheck:
    check: str  # <asset key> <check name>
    severity: str  # ERROR or WARN
    description: str
    at: dt.datetime


def dagster_instance(settings: Settings):
    """The Dagster instance of ``DAGSTER_HOME``, by default the Makefile's (under the data dir),
    so what the CLI reads and records is what the UI and daemon see."""
    from dagster import DagsterInstance

    os.environ.setdefault("DAGSTER_HOME", str(settings.data_dir / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return DagsterInstance.get()


def failing_checks(settings: Settings) -> list[FailingCheck]:
    """Every check of the definitions whose latest evaluation failed (or that a failed run did
    not evaluate), errors first."""
    from dagster import DagsterRunStatus
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    from dp_assets.definitions import build_defs

    keys = list(build_defs(settings).resolve_asset_graph().asset_check_keys)
    failing, unevaluated = [], {}
    with dagster_instance(settings) as instance:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
        for key, record in latest.items():
            at = dt.datetime.fromtimestamp(record.create_timestamp, dt.UTC)
            name = f"{key.asset_key.to_user_string()} {key.name}"
            if record.status == Status.FAILED:
                evaluation = record.event.dagster_event.event_specific_data
                description = evaluation.description or "(no description: see its metadata)"
                failing.append(FailingCheck(name, evaluation.severity.value, description, at))
            elif record.status == Status.PLANNED:
                # Planned and never evaluated: its step raised or was skipped. Only a failed run
                # makes that a failure (a skip after an upstream's failure is reported there).
                run = instance.get_run_by_id(record.run_id)
                if run is not None and run.status == DagsterRunStatus.FAILURE:
                    unevaluated.setdefault(record.run_id, []).append((name, at))
    # One line per failed run, not one per check downstream of its failed step.
    for run_id, checks in unevaluated.items():
        names = ", ".join(name for name, _ in sorted(checks)[:3])
        more = f" and {len(checks) - 3} more" if len(checks) > 3 else ""
        why = f"not evaluated: run {run_id[:8]} failed (its failed steps say why)"
        failing.append(FailingCheck(f"{names}{more}", "ERROR", why, max(at for _, at in checks)))
    return sorted(failing, key=lambda c: (c.severity != "ERROR", c.check))


def format_checks(failing: list[FailingCheck]) -> list[str]:
    if not failing:
        return ["  none"]
    return [f"  {c.severity:<5} {c.check}: {c.description}" for c in failing]


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str):
    try:
        return conn.execute(sql).fetchone()[0]
    except duckdb.CatalogException:
        return 0


def _rows(conn: duckdb.DuckDBPyConnection, inner: str, template: str) -> list[str]:
    try:
        frame: pl.DataFrame = conn.execute(template.format(inner)).pl()
    except duckdb.CatalogException:
        return ["  (none yet)"]
    if frame.is_empty():
        return ["  none"]
    return ["  " + " | ".join(str(v) for v in row) for row in frame.iter_rows()]
