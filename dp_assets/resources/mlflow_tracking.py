"""MLflow tracking and model registry, configured once for the platform.

dagster-mlflow's ``mlflow_tracking`` keeps one MLflow run per Dagster run and leaves it open, so
two pipelines materialized together would log into the same run. Here each pipeline has its own
experiment, each training its own run, and evaluation logs into the run of the model it evaluates.
Defaults: ``sqlite:///$DP_DATA_DIR/mlflow.db`` with artifacts under ``$DP_DATA_DIR/mlartifacts``;
``MLFLOW_TRACKING_URI`` switches to a tracking server (whose own artifact store is then used).

A SQLite store is created atomically: MLflow creates and migrates its schema in place, in dozens
of steps, and a process killed midway left a store every later client refused (``table secrets
already exists``). Here it is created and migrated in a temporary file beside it and linked into
place whole. A store found half-migrated (an older platform's, or ``mlflow ui``'s first start,
killed) is rebuilt when it holds no run and no registered model, and refused with what to do when
it does: the platform never deletes tracking data.

Evidence links both ways: ``run_url``, ``version_url`` and ``artifact_url`` address MLflow's UI at
``ui_url`` (``Settings.mlflow_ui_url``) for asset metadata, and ``dagster_run_url`` addresses a
Dagster run at ``dagster_ui_url`` for MLflow runs and versions. The MLflow UI routes are its
single-page app's (``#/experiments/<id>/runs/<run>``, ``#/models/<name>/versions/<v>``); its
``get-artifact`` endpoint serves a run's file as is, so an image link renders in a page.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from dagster import ConfigurableResource
from pydantic import Field

from dp_assets.frozen import import_frozen
from dp_assets.settings import DAGSTER_UI_URL, MLFLOW_UI_URL, Settings

SQLITE = "sqlite:///"
STALE_TMP_S = 600  # a creation takes seconds: an older temporary store is a killed one's
_ready: set[str] = set()  # stores this process has checked


class TrackingStoreBroken(RuntimeError):
    """A SQLite tracking store that is not at MLflow's schema and holds data."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _schema_problem(path: Path, head: str) -> str | None:
    """Why the store at ``path`` is not a complete store at the ``head`` revision, or None.
    Opened read-write: a process killed mid-transaction leaves a hot journal, which SQLite rolls
    back at the next open (a read-only connection cannot)."""
    with sqlite3.connect(path) as conn:
        tables = _tables(conn)
        if leftovers := sorted(t for t in tables if t.startswith("_alembic_tmp_")):
            return f"a migration was interrupted: leftover tables {leftovers}"
        if "alembic_version" not in tables:
            return "no schema revision: its creation was interrupted"
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    if revision is None or revision[0] != head:
        return f"schema revision {revision and revision[0]}, MLflow's is {head}"
    return None


def _held(path: Path) -> tuple[int, int]:
    """Runs and registered models in a store (0 where the table does not exist yet)."""
    with sqlite3.connect(path) as conn:
        tables = _tables(conn)
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in tables else 0
            for t in ("runs", "registered_models")
        )


def _forget_engines(uri: str) -> None:
    """Drop the engines MLflow keeps per URI in this process: one opened on a store replaced
    since would write into the deleted file."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking

    for store in (Tracking, Registry):
        if engine := store._engine_map.pop(uri, None):
            engine.dispose()


def _create(path: Path, artifact_root: str) -> None:
    """A store created and migrated in a temporary file, then linked into place (a link never
    replaces a store another process created meanwhile)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for old in path.parent.glob(f".{path.name}.*.tmp"):
        if time.time() - old.stat().st_mtime > STALE_TMP_S:
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    SqlAlchemyStore(f"{SQLITE}{tmp}", artifact_root)
    _forget_engines(f"{SQLITE}{tmp}")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process's complete store won
    finally:
        tmp.unlink()


def ensure_store(tracking_uri: str, artifact_root: str | None) -> None:
    """Make a SQLite tracking store complete before MLflow touches it (once per process); a
    tracking server's URI is left alone. Raises ``TrackingStoreBroken`` for a damaged store that
    holds data."""
    if not tracking_uri.startswith(SQLITE) or tracking_uri in _ready:
        return
    from mlflow.store.db.utils import _get_latest_schema_revision

    path = Path(tracking_uri.removeprefix(SQLITE))
    root = artifact_root or str(path.parent / "mlartifacts")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path, root)
    elif problem := _schema_problem(path, _get_latest_schema_revision()):
        runs, models = _held(path)
        if runs or models:
            raise TrackingStoreBroken(
                f"The MLflow tracking store {path} is not usable ({problem}) and holds "
                f"{_plural(runs, 'run')} and {_plural(models, 'registered model')}, so it is left "
                f"as it is. Back it up, then run `mlflow db upgrade {tracking_uri}` (for an "
                "interrupted migration, drop the leftover _alembic_tmp_* tables first), or move "
                "it aside to start a new store."
            )
        path.unlink()  # holds nothing: a killed first creation's
        Path(f"{path}-journal").unlink(missing_ok=True)
        _forget_engines(tracking_uri)
        _create(path, root)
    _ready.add(tracking_uri)


class MlflowTracking(ConfigurableResource):
    tracking_uri: str = Field(description="MLflow tracking and registry URI")
    artifact_root: str | None = Field(
        default=None, description="Where new experiments keep artifacts; None: the server's default"
    )
    ui_url: str = Field(
        default=MLFLOW_UI_URL, description="MLflow UI address links in metadata point at"
    )
    dagster_ui_url: str = Field(
        default=DAGSTER_UI_URL, description="Dagster UI address MLflow runs link back to"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> MlflowTracking:
        return cls(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_root=settings.mlflow_artifact_root,
            ui_url=settings.mlflow_ui_url,
            dagster_ui_url=settings.dagster_ui_url,
        )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """A run's artifact file as MLflow's UI serves it (an image renders where linked)."""
        return f"{self.ui_url.rstrip('/')}/get-artifact?path={quote(path)}&run_uuid={run_id}"

    def dagster_run_url(self, run_id: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{run_id}"

    def client(self):
        ensure_store(self.tracking_uri, self.artifact_root)
        mlflow = import_frozen("mlflow")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    def model_version(self, name: str, alias: str):
        """The registered version holding ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def load_lightgbm(self, name: str, version: str | int):
        """A registered LightGBM model version, from this resource's registry."""
        self.client()  # MLflow's registry URI is process-global: point it at this resource first
        return import_frozen("mlflow.lightgbm").load_model(f"models:/{name}/{version}")
