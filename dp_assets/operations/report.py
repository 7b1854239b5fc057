"""The report: one HTML page of the data's quality, the models that serve, their drift and a
project's KPIs, for people who would rather look than read. The asset ``[reporting, report]``
(``report_asset.py``) rewrites it whenever what it shows changes; ``dp report`` writes the same
page on demand.

It reads the warehouse (file outcomes and deliveries, pipeline health, each pipeline's evaluation,
promotions, drift and live accuracy, ``reporting.kpis`` where a project has it) and the MLflow
registry: the ``champion`` alias says which version serves, and that version's run holds its
evaluation plot and feature importance. Numbers are written as people read them (42,986 kWh,
0.54 %), never in scientific notation; every plot over time has a date axis.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import tempfile
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dp_assets.analysis import plots
from dp_assets.analysis.factory import CHAMPION, EVALUATION_FOLDER, IMPORTANCE_JSON
from dp_assets.analysis.metrics import METRICS, PRIMARY
from dp_assets.analysis.spec import PipelineSpec
from dp_assets.landing.quarantine import open_quarantine
from dp_assets.operations.health import HEALTH_TABLE
from dp_assets.resources import MlflowTracking, Warehouse
from dp_assets.resources.tables import table_exists
from dp_assets.settings import Settings

SLOWEST = 6  # assets in the step-duration plot
RUNS_FOR_A_LINE = 3  # fewer runs than this: the latest run's durations as bars, not lines
KPIS_TABLE = "reporting.kpis"  # a project's business KPIs, if it has them: shown as stored
GATE_HISTORY = 5  # latest gate decisions shown per pipeline
PERFORMANCE_PNG = f"{EVALUATION_FOLDER}/performance.png"
NO_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.4}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f2f2f2}img{max-width:100%}.none{color:#888}.plots{display:flex;flex-wrap:wrap;
gap:1em;align-items:flex-start}.plots img{max-width:560px}.cards{display:flex;flex-wrap:wrap;
gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;min-width:9em}
.card b{display:block;font-size:1.4em}.serving{background:#eef6ee;border-left:4px solid #4a4;
padding:.4em .8em}"""


@dataclass
class Report:
    """The page, and the headline figures the asset shows beside it."""

    page: str = ""
    served: dict[str, str] = field(default_factory=dict)  # pipeline -> "v3", or "none"
    headlines: dict[str, str] = field(default_factory=dict)  # figure -> readable value


def write_report(settings: Settings, output: Path | None = None) -> Path:
    """``dp report``: the page written to ``output`` (default ``reports/report.html``)."""
    report = render_report(
        settings,
        Warehouse.from_settings(settings),
        MlflowTracking.from_settings(settings),
    )
    return save(report, output or report_path(settings))


def report_path(settings: Settings) -> Path:
    return settings.data_dir / "reports" / "report.html"


def save(report: Report, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(report.page, encoding="utf-8")
    partial.replace(output)  # a reader never sees half a page
    return output


def render_report(settings: Settings, warehouse: Warehouse, tracking: MlflowTracking) -> Report:
    pipelines = settings.catalog().pipelines
    report = Report()
    with warehouse.get_connection() as conn:

        def read(table: str) -> pl.DataFrame | None:
            return (
                conn.execute(f"SELECT * FROM {table}").pl() if table_exists(conn, table) else None
            )

        quality = _data_quality(
            read("formatted.file_outcomes"), read("landing.deliveries"), read(HEALTH_TABLE), report,
            open_quarantine(conn).height,
        )  # fmt: skip
        tables = {
            name: {t: read(f"{name}.{t}") for t in ("evaluation", "promotions", "drift",
                                                     "live_accuracy")}
            for name in pipelines
        }  # fmt: skip
        validation = {
            name: conn.execute(f"SELECT * FROM {name}.features WHERE split = 'validation'").pl()
            for name, spec in pipelines.items()
            if not spec.snapshot and table_exists(conn, f"{name}.features")
        }
        kpis = read(KPIS_TABLE)
    sections = [
        quality,
        *(
            _pipeline(spec, tables[name], validation.get(name), tracking, report)
            for name, spec in pipelines.items()
        ),
        _kpis(kpis),
    ]
    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    serving = ", ".join(f"{p} {v}" for p, v in report.served.items()) or "no pipeline"
    report.page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>dp_assets report</title>"
        f"<style>{STYLE}</style></head><body><h1>dp_assets report</h1>"
        f"<p>Written {stamp} from {html.escape(str(settings.data_dir))}. Serving: "
        f"{html.escape(serving)}.</p>{''.join(sections)}</body></html>"
    )
    return report


def _data_quality(
    outcomes: pl.DataFrame | None,
    deliveries: pl.DataFrame | None,
    health: pl.DataFrame | None,
    report: Report,
    still_open: int,
) -> str:
    """``still_open``: quarantined files not yet re-delivered fixed or acknowledged."""
    parts = ["<h2>Data quality</h2>"]
    if outcomes is None:
        return parts[0] + _missing("formatted.file_outcomes")
    per_source = (
        outcomes.group_by("source")
        .agg(
            files=pl.len(),
            quarantined=(pl.col("status") == "quarantined").sum(),
            records=pl.col("records_in").sum(),
            rejected=pl.col("rows_rejected").sum(),
        )
        .with_columns(reject_rate=pl.col("rejected") / pl.col("records"))
        .sort("source")
    )
    records, rejected = per_source["records"].sum(), per_source["rejected"].sum()
    report.headlines |= {
        "files": f"{per_source['files'].sum():,}",
        "quarantined files": f"{per_source['quarantined'].sum():,} ({still_open:,} open)",
        "records read": f"{records:,}",
        "rejected": f"{rejected:,} ({rejected / records if records else 0:.2%})",
    }
    parts.append(_cards(report.headlines))
    parts.append(_table(per_source))
    if deliveries is not None:
        parts.append(_rejects_by_day(outcomes, deliveries))
    if health is not None:
        parts.append(_durations(health))
    else:
        parts.append(_missing(HEALTH_TABLE))
    return "".join(parts)


def _rejects_by_day(outcomes: pl.DataFrame, deliveries: pl.DataFrame) -> str:
    """Rejected records per source and day the files arrived: the data's own time axis, so one
    run that formats four months of files still draws four months."""
    arrived = deliveries.group_by("source", "sha256").agg(pl.col("arrival_time").min())
    daily = (
        outcomes.filter(pl.col("records_in") > 0)
        .join(arrived, left_on=["source", "file_sha256"], right_on=["source", "sha256"])
        .group_by("source", day=pl.col("arrival_time").dt.date())
        .agg(pl.col("rows_rejected").sum() / pl.col("records_in").sum())
    )
    if daily.is_empty():
        return ""
    return _image(
        plots.over_time("Rejected records per delivery day", "rejected / read", daily, "day",
                        "rows_rejected", "source", percent=True),
        "Rejected records per delivery day",
    )  # fmt: skip


def step_durations(health: pl.DataFrame) -> pl.DataFrame:
    """Seconds per run and step, not per asset: the assets of one step (a source's table and its
    rejects, every landing table) share its duration, and would otherwise read as costing it each."""
    return (
        health.drop_nulls(["step_seconds", "step"])
        .group_by("run_id", "step")
        .agg(pl.col("materialized_at").max(), pl.col("step_seconds").first())
    )


def _durations(health: pl.DataFrame) -> str:
    steps = step_durations(health)
    if steps.is_empty():
        return ""
    runs = steps["run_id"].n_unique()
    if runs < RUNS_FOR_A_LINE:  # two points make no trend: what the latest run took
        latest = steps.sort("materialized_at").group_by("step").last()
        top = latest.sort("step_seconds", descending=True).head(SLOWEST)
        title = f"Step duration in the latest run, {SLOWEST} slowest steps"
        png = plots.bars(title, "seconds", top["step"].to_list(), top["step_seconds"].to_list())
    else:
        slowest = (
            steps.group_by("step").agg(pl.col("step_seconds").median())
            .sort("step_seconds", descending=True).head(SLOWEST)["step"]
        )  # fmt: skip
        title = f"Step duration per run, {SLOWEST} slowest steps (median)"
        png = plots.over_time(title, "seconds", steps.filter(pl.col("step").is_in(slowest.implode())),
                              "materialized_at", "step_seconds", "step")  # fmt: skip
    return _image(png, title) + f"<p class='none'>Runs recorded: {runs:,}.</p>"


def _pipeline(
    spec: PipelineSpec, tables: dict, validation: pl.DataFrame | None, tracking, report: Report
) -> str:
    name, task = spec.name, spec.task
    primary, _ = PRIMARY[task]
    parts = [f"<h2>{html.escape(name)}</h2>"]
    champion = tracking.model_version(name, CHAMPION)
    report.served[name] = f"v{champion.version}" if champion else "none"
    promotions = tables["promotions"]
    if champion is None:
        parts.append("<p class='serving'>No champion yet: no model has passed the gate.</p>")
    else:
        registered = dt.datetime.fromtimestamp(champion.creation_timestamp / 1000, dt.UTC)
        decision = ""
        if promotions is not None and promotions.height:
            last = promotions.sort("decided_at").row(-1, named=True)
            decision = (
                f" Latest gate decision ({_cell(last['decided_at'])}, challenger "
                f"v{last['challenger_version']}): {html.escape(last['reason'])}."
            )
        parts.append(
            f"<p class='serving'>Serving: <b>{html.escape(name)} v{champion.version}</b> "
            f"(alias '{CHAMPION}', registered {registered:%Y-%m-%d %H:%M} UTC, "
            f"<a href='{html.escape(tracking.version_url(name, champion.version))}'>in MLflow</a>, "
            f"run <code>{champion.run_id}</code>).{decision}</p>"
        )
    evaluation = tables["evaluation"]
    if evaluation is not None and evaluation.height:
        parts.append(f"<h3>Evaluation on the validation window (primary metric {primary})</h3>")
        parts.append(_table(_by_model(evaluation.filter(pl.col("segment_column") == "all"),
                                      "metric")))  # fmt: skip
        segments = evaluation.filter(
            (pl.col("segment_column") != "all") & (pl.col("metric") == primary)
        )
        if segments.height:
            parts.append(f"<p>{primary} by segment:</p>")
            parts.append(_table(_by_model(segments, "segment_column", "segment", "rows")))
    if champion is not None:
        parts.append(_model_plots(tracking, spec, champion))
    parts.append(_accuracy_over_time(spec, tables["live_accuracy"], validation, tracking, champion))
    parts.append(_drift(spec, tables["drift"]))
    if promotions is not None and promotions.height:
        parts.append("<h3>Gate decisions (latest first)</h3>")
        parts.append(_table(promotions.sort("decided_at", descending=True).head(GATE_HISTORY)))
    return "".join(parts)


def _by_model(frame: pl.DataFrame, *index: str) -> pl.DataFrame:
    """One column per model ('challenger v2', 'baseline', 'champion v1'), the metric values in it."""
    named = frame.with_columns(
        model=pl.when(pl.col("model_version").is_null())
        .then(pl.col("model"))
        .otherwise(pl.format("{} v{}", "model", "model_version"))
    )
    return named.pivot("model", index=list(index), values="value", maintain_order=True)


def _model_plots(tracking: MlflowTracking, spec: PipelineSpec, champion) -> str:
    """The champion's evaluation plot and feature importance, from its MLflow run."""
    from mlflow.exceptions import MlflowException

    images = []
    client = tracking.client()
    quiet = os.environ.get(NO_PROGRESS_BAR)
    os.environ[NO_PROGRESS_BAR] = "false"  # a download's progress bar in every run's log
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = Path(client.download_artifacts(champion.run_id, PERFORMANCE_PNG, tmp))
                images.append(_image(path.read_bytes(), f"Performance of v{champion.version}"))
            except (MlflowException, OSError):
                images.append(f"<p class='none'>v{champion.version} has no {PERFORMANCE_PNG}.</p>")
            try:
                path = Path(client.download_artifacts(champion.run_id, IMPORTANCE_JSON, tmp))
                gains = json.loads(path.read_text())
                images.append(_image(plots.feature_importance(list(gains), list(gains.values())),
                                     f"Feature importance of v{champion.version}"))  # fmt: skip
            except (MlflowException, OSError):
                images.append(f"<p class='none'>v{champion.version} has no {IMPORTANCE_JSON}.</p>")
    finally:
        if quiet is None:
            os.environ.pop(NO_PROGRESS_BAR)
        else:
            os.environ[NO_PROGRESS_BAR] = quiet
    return (
        f"<h3>Champion v{champion.version}: validation performance and feature importance</h3>"
        f"<div class='plots'>{''.join(images)}</div>"
    )


def _accuracy_over_time(spec, live, validation, tracking, champion) -> str:
    """The champion's primary metric per day: on the validation window (dashed; what it scored
    before serving, on days it was not trained on when it was promoted) and live on actuals."""
    primary, _ = PRIMARY[spec.task]
    heading = f"<h3>Live accuracy ({primary} on actuals)</h3>"
    if spec.snapshot:
        return heading + (
            "<p class='none'>Not applicable: a snapshot's labels do not arrive after its "
            "predictions.</p>"
        )
    series = []
    if live is not None and live.height:
        series.append(
            live.filter(pl.col("metric") == primary).select(
                "as_of", "value", model=pl.format("{} v{} (live)", "model", "model_version")
            )
        )
    backtest = f"champion v{champion.version} (validation window)" if champion else None
    if champion is not None and validation is not None and validation.height:
        from dp_assets.analysis.factory import feature_matrix

        booster = tracking.load_lightgbm(spec.name, champion.version)
        scored = validation.with_columns(
            prediction=booster.predict(feature_matrix(validation, spec))
        )
        series.append(
            pl.DataFrame(
                [
                    {"as_of": day, "value": METRICS[spec.task](
                        part["label"].to_numpy(), part["prediction"].to_numpy())[primary]}
                    for (day,), part in scored.group_by("as_of")
                ],
                schema={"as_of": pl.Date, "value": pl.Float64},
            ).with_columns(model=pl.lit(backtest))
        )  # fmt: skip
    note = (
        ""
        if live is not None and live.height
        else "<p class='none'>No live accuracy yet: predictions wait for their actuals. The "
        "dashed line is the champion on the validation window.</p>"
    )
    if not series:
        return heading + note
    frame = pl.concat(series, how="diagonal_relaxed").drop_nulls("value")
    title = f"{spec.name}: {primary} per day"
    return heading + note + _image(
        plots.over_time(title, primary, frame, "as_of", "value", "model", dashed=(backtest,)),
        title,
    )  # fmt: skip


def _drift(spec: PipelineSpec, drift: pl.DataFrame | None) -> str:
    heading = "<h3>Drift (PSI, training window against the latest)</h3>"
    if drift is None or drift.is_empty():
        return heading + "<p class='none'>Not measured yet.</p>"
    latest = drift.filter(pl.col("computed_at") == drift["computed_at"].max()).sort(
        "psi", descending=True, nulls_last=True
    )
    measured = latest.drop_nulls("psi")
    flagged = measured.filter(pl.col("drifted"))["feature"].to_list()
    parts = [heading]
    if measured.height:
        title = f"{spec.name}: PSI by feature, {_cell(latest['computed_at'][0])}"
        parts.append(_image(plots.bars(title, "PSI", measured["feature"].to_list(),
                                       measured["psi"].to_list(), flagged, spec.drift_threshold),
                            title))  # fmt: skip
    else:
        parts.append("<p class='none'>No feature had enough data for a PSI in the latest window: "
                     "each feature's status and reason below say why.</p>")  # fmt: skip
    if drift.drop_nulls("psi")["computed_at"].n_unique() >= 2:
        moved = (
            drift.drop_nulls("psi")
            .group_by("feature")
            .agg(pl.col("psi").max())
            .sort("psi", descending=True)
        )
        shown = moved.head(8)["feature"]
        title = f"{spec.name}: PSI over time, {shown.len()} most moved features"
        parts.append(_image(plots.over_time(title, "PSI", drift.filter(
            pl.col("feature").is_in(shown.implode())).drop_nulls("psi"),
            "computed_at", "psi", "feature"), title))  # fmt: skip
    parts.append(_table(latest.drop("computed_at"), each_value=("train_mean", "recent_mean")))
    return "".join(parts)


def _kpis(kpis: pl.DataFrame | None) -> str:
    """The KPI table of the projects that have one; nothing for those that do not."""
    return "" if kpis is None else "<h2>Business KPIs</h2>" + _table(kpis)


def _cards(figures: dict[str, str]) -> str:
    return "<div class='cards'>" + "".join(
        f"<div class='card'><b>{html.escape(v)}</b>{html.escape(k)}</div>"
        for k, v in figures.items()
    ) + "</div>"  # fmt: skip


def _table(frame: pl.DataFrame, each_value: tuple[str, ...] = ()) -> str:
    """``each_value``: float columns whose rows differ in scale (one feature's mean per row), each
    value read at its own significant digits rather than at the column's precision."""
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in frame.columns)
    numeric = [frame.schema[c].is_numeric() for c in frame.columns]
    decimals = {
        c: _decimals(frame[c])
        for c in frame.columns
        if frame.schema[c].is_float() and c not in each_value
    }
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if num else ''}>{html.escape(_cell(v, c, decimals.get(c)))}</td>"
            for v, c, num in zip(row, frame.columns, numeric)
        )
        + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _decimals(column: pl.Series) -> int:
    """Decimals that give a column's largest value three significant digits (at most four), so
    that a column reads at one precision: 13.9 and 9.3, not 13.9 and 9.293."""
    largest = column.abs().max() if column.len() else None
    if largest is None or not math.isfinite(largest) or largest == 0:
        return 2
    return min(4, max(0, 2 - math.floor(math.log10(largest))))


def _cell(value, column: str = "", decimals: int | None = None) -> str:
    """A value as people read it: 42,986 and 0.42, rates as percentages, times to the minute."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return f"{value:%Y-%m-%d %H:%M} UTC"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column.endswith("rate"):
            return f"{value:.2%}"
        if decimals is None or not math.isfinite(value):
            return plots.readable(value)
        return f"{value:,.{decimals}f}"
    return str(value)


def _image(png: bytes, title: str) -> str:
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{b64encode(png).decode()}'>"


def _missing(table: str) -> str:
    return f"<p class='none'>{table} is not materialized yet.</p>"
