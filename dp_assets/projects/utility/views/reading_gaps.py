"""``exploitation/reading_gaps``: runs of missing half-hour intervals per meter, recomputed only
around the meter-days meter_readings rewrote; and its completeness check."""

import datetime as dt

import duckdb

from dp_assets.exploitation import blocks
from dp_assets.exploitation.incremental import Check, build_sql_asset
from dp_projects.utility.views._queries import GAPS, READING_GAPS, READINGS, SERIES

MAX_MISSING_SHARE = 0.01  # more than 1% of expected intervals missing means a delivery problem


def update_gaps(conn: duckdb.DuckDBPyConnection, since: dt.datetime) -> str:
    """Recompute the gaps around the meter-days meter_readings rewrote since the last run."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _gap_windows AS {blocks.gap_windows(SERIES)}",
        {"since": since},
    )
    inside = blocks.in_gap_window(SERIES)
    conn.execute(f"DELETE FROM {GAPS.table} t USING _gap_windows w WHERE {inside}")
    rows = blocks.windowed(SERIES, "_gap_windows")
    conn.execute(f"INSERT INTO {GAPS.table} {blocks.gaps(SERIES, rows)}")
    return f"SEMI JOIN _gap_windows w ON {inside}"


reading_gaps = build_sql_asset(
    GAPS,
    READING_GAPS,
    deps=[READINGS.key],
    version="2",
    follows=SERIES,
    update=update_gaps,
    checks=(
        Check(
            "completeness",
            f"At most {MAX_MISSING_SHARE:.0%} of half-hour intervals are missing",
            lambda conn: blocks.completeness(conn, SERIES, GAPS.table, MAX_MISSING_SHARE),
        ),
    ),
)

ASSETS = [reading_gaps]
