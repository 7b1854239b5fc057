"""``dp report``: one HTML page of data quality, drift and model accuracy over time, for people
who would rather look than read. Reads the warehouse; writes ``reports/report.html``."""

from __future__ import annotations

import datetime as dt
import html
from base64 import b64encode
from pathlib import Path

import polars as pl

from dp_assets.analysis import plots
from dp_assets.analysis.metrics import PRIMARY
from dp_assets.operations.health import HEALTH_TABLE
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import table_exists
from dp_assets.settings import Settings

SLOWEST = 6  # assets in the step-duration plot
KPIS_TABLE = "reporting.kpis"  # a project's business KPIs, if it has them: shown as stored
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f2f2f2}img{max-width:100%}.none{color:#888}"""


def write_report(settings: Settings, output: Path | None = None) -> Path:
    output = output or settings.data_dir / "reports" / "report.html"
    warehouse = Warehouse(database=str(settings.warehouse))
    pipelines = settings.catalog().pipelines
    with warehouse.get_connection() as conn:

        def read(table: str, query: str | None = None) -> pl.DataFrame | None:
            return (
                conn.execute(query or f"SELECT * FROM {table}").pl()
                if table_exists(conn, table)
                else None
            )

        sections = [
            _data_quality(read("formatted.file_outcomes"), read(HEALTH_TABLE)),
            *(_pipeline(name, read(f"{name}.drift"), read(f"{name}.live_accuracy"),
                        read(f"{name}.evaluation"), pipelines[name].task) for name in pipelines),
            _kpis(read(KPIS_TABLE)),
        ]  # fmt: skip
    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>dp_assets report</title>"
        f"<style>{STYLE}</style></head><body><h1>dp_assets report</h1>"
        f"<p>Data dir {html.escape(str(settings.data_dir))}, written {stamp}.</p>{''.join(sections)}</body></html>"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page)
    return output


def _data_quality(outcomes: pl.DataFrame | None, health: pl.DataFrame | None) -> str:
    parts = ["<h2>Data quality</h2>"]
    if outcomes is None:
        return parts[0] + _missing("formatted.file_outcomes")
    totals = (
        outcomes.group_by("source")
        .agg(
            files=pl.len(),
            quarantined=(pl.col("status") == "quarantined").sum(),
            records=pl.col("records_in").sum(),
            rejected=pl.col("rows_rejected").sum(),
        )
        .with_columns(reject_rate=(pl.col("rejected") / pl.col("records")).round(5))
        .sort("source")
    )
    parts.append(_table(totals))
    if health is not None:
        rates = health.filter(pl.col("reject_rate").is_not_null())
        parts.append(_image(plots.over_time("Reject rate per formatting run", "rejected / read",
                                            rates, "materialized_at", "reject_rate", "asset")))  # fmt: skip
        slowest = (
            health.group_by("asset").agg(pl.col("step_seconds").max()).drop_nulls()
            .sort("step_seconds", descending=True).head(SLOWEST)["asset"]
        )  # fmt: skip
        durations = health.filter(pl.col("asset").is_in(slowest.implode()))
        parts.append(_image(plots.over_time(f"Step duration, {SLOWEST} slowest assets", "seconds", durations,
                                            "materialized_at", "step_seconds", "asset")))  # fmt: skip
    else:
        parts.append(_missing(HEALTH_TABLE))
    return "".join(parts)


def _pipeline(name: str, drift, live, evaluation, task: str) -> str:
    primary, _ = PRIMARY[task]
    parts = [f"<h2>{name}</h2>"]
    if evaluation is not None:
        parts.append(f"<h3>Evaluation ({primary}, validation window)</h3>")
        parts.append(_table(evaluation.filter(pl.col("metric") == primary).select(
            "model", "model_version", "segment_column", "segment", "value", "rows")))  # fmt: skip
    if drift is not None and drift.height:
        parts.append("<h3>Drift</h3>")
        parts.append(
            _image(
                plots.over_time("PSI per feature", "PSI", drift, "computed_at", "psi", "feature")
            )
        )
        latest = drift.filter(pl.col("computed_at") == drift["computed_at"].max())
        parts.append(_table(latest.sort("psi", descending=True).drop("computed_at")))
    if live is not None and live.height:
        parts.append(f"<h3>Live accuracy ({primary} on actuals)</h3>")
        mine = live.filter(pl.col("metric") == primary).with_columns(
            model=pl.format("{} v{}", "model", "model_version")
        )
        parts.append(
            _image(plots.over_time(f"Live {primary}", primary, mine, "as_of", "value", "model"))
        )
    else:
        parts.append(
            "<p class='none'>No live accuracy yet: predictions wait for their actuals.</p>"
        )
    return "".join(parts)


def _kpis(kpis: pl.DataFrame | None) -> str:
    """The KPI table of the projects that have one; nothing for those that do not."""
    return "" if kpis is None else "<h2>Business KPIs</h2>" + _table(kpis)


def _table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _image(png: bytes) -> str:
    return f"<img alt='plot' src='data:image/png;base64,{b64encode(png).decode()}'>"


def _missing(table: str) -> str:
    return f"<p class='none'>{table} is not materialized yet.</p>"
