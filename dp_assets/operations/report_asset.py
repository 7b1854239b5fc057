"""Dagster wiring of the report: ``[reporting, report]`` writes ``reports/report.html``
(``report.py``) whenever what it shows changes.

It depends on the formatted sources (file outcomes), pipeline health, ``reporting`` KPIs and model
accuracy (which follows each pipeline's live accuracy), and each pipeline's champion (which
follows its evaluation, in the same run) and drift: what it shows, no more. Being in the
``reporting`` group, the platform's automation policy (``automation.follow_updates``) rewrites it
after any of them updates, so the page never shows champion v1 after a retrain promoted v3.
"""

from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from dp_assets.analysis.spec import PipelineSpec
from dp_assets.metadata import OWNER, WAREHOUSE_POOL
from dp_assets.operations.report import render_report, report_path, save
from dp_assets.resources import DataDir, MlflowTracking, Warehouse

REPORT_KEY = AssetKey(["reporting", "report"])
SHOWN_STEPS = ("champion", "drift")
SHOWN = [
    AssetKey(["monitoring", "pipeline_health"]),
    AssetKey(["reporting", "model_accuracy"]),
    AssetKey(["reporting", "kpis"]),  # a project's KPI view, where it has one
]


def build_report_asset(keys: list[AssetKey], pipelines: list[PipelineSpec]):
    """The report asset over ``keys`` (every asset defined): it depends on those it shows."""
    known = set(keys)
    steps = [AssetKey([p.name, s]) for p in pipelines for s in SHOWN_STEPS]
    formatted = [
        k for k in keys if k.path[0] == "formatted" and not k.path[-1].endswith("_rejects")
    ]
    deps = [k for k in [*formatted, *SHOWN, *steps] if k in known]

    @asset(
        key=REPORT_KEY,
        description="One HTML page people read (reports/report.html): data quality per source "
        "and delivery day, step durations, each pipeline's serving champion with its evaluation, "
        "feature importance, accuracy over time and drift, and the project's KPIs. Rewritten "
        "whenever what it shows changes; `dp report` writes the same page",
        deps=deps,
        group_name="reporting",
        owners=[OWNER],
        kinds={"html"},
        code_version="1",
        pool=WAREHOUSE_POOL,
    )
    def report(data_dir: DataDir, warehouse: Warehouse, mlflow_tracking: MlflowTracking):
        settings = data_dir.settings
        built = render_report(settings, warehouse, mlflow_tracking)
        path = save(built, report_path(settings))
        figures = {**{f"{p} serves": v for p, v in built.served.items()}, **built.headlines}
        summary = "\n".join(f"- **{k}**: {v}" for k, v in figures.items())
        return MaterializeResult(
            metadata={
                # A path, not a file:// link: browsers do not follow those from the UI's page.
                "path": MetadataValue.path(str(path)),
                "summary": MetadataValue.md(f"Open `{path}` in a browser.\n\n{summary}"),
                **{f"{p} champion": MetadataValue.text(v) for p, v in built.served.items()},
            }
        )

    return report
