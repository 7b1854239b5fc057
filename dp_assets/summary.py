"""``dp summary``: what the warehouse holds, what was rejected and what was quarantined."""

from __future__ import annotations

import duckdb
import polars as pl

from dp_assets.formatted.schema import reason_group
from dp_assets.resources.warehouse import Warehouse
from dp_assets.settings import Settings


def summarize(settings: Settings) -> str:
    if not settings.warehouse.exists():
        return f"No warehouse yet at {settings.warehouse}: run `make demo` first."
    lines, pipelines = [], settings.catalog().pipelines
    with Warehouse(database=str(settings.warehouse), lock_timeout_s=5).get_connection() as conn:
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
        lines.append(f"Quarantined files (copies and reasons under {settings.quarantine}):")
        lines += _rows(conn, _quarantine_query(conn), "{}")
        lines.append("")
        lines.append(
            f"Re-delivered files recognised: {_scalar(conn, 'SELECT count(*) FROM landing.deliveries WHERE redelivery')}"
        )
        lines.append("")
        lines.append("Models (validation window; the latest gate decision):")
        for name in pipelines:
            lines += _rows(conn, name, _MODEL_QUERY)
    lines += [
        "",
        f"Warehouse: {settings.warehouse}",
        f"  query it: .venv/bin/duckdb -readonly {settings.warehouse}",
        "  (close the shell before the next run: DuckDB lets one process at a time open the file)",
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


def _quarantine_query(conn: duckdb.DuckDBPyConnection) -> str:
    parts = [
        "SELECT source, original_name AS file, quarantine_reason AS reason FROM landing.deliveries WHERE quarantine_reason IS NOT NULL"
    ]
    if _scalar(
        conn,
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'formatted' AND table_name = 'file_outcomes'",
    ):
        parts.append(
            "SELECT source, original_name, reason FROM formatted.file_outcomes WHERE status = 'quarantined'"
        )
    return " UNION ALL ".join(parts) + " ORDER BY 1, 2"


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
