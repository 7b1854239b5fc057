"""The MLflow tracking store: created atomically, a half-migrated one repaired or refused."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from dp_assets.resources import MlflowTracking
from dp_assets.resources.mlflow_tracking import TrackingStoreBroken

# A child that creates the store at argv[1]: as MLflow itself does (in place, as `mlflow ui` or an
# older platform would) or through the platform's resource. It says when it starts migrating.
CHILD = """
import sys
from dp_assets.resources import MlflowTracking
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
uri, how = f"sqlite:///{sys.argv[1]}", sys.argv[2]
print("migrating", flush=True)
if how == "mlflow":
    SqlAlchemyStore(uri, sys.argv[1] + ".artifacts")
else:
    MlflowTracking(tracking_uri=uri).client().search_experiments()
print("done", flush=True)
"""


def start_child(path: Path, how: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), how], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "migrating"
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def schema(path: Path) -> tuple[str | None, list[str]]:
    """The store's alembic revision and its leftover ``_alembic_tmp_*`` tables."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        revision = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
    return revision and revision[0], [t for t in tables if t.startswith("_alembic_tmp_")]


def half_migrated(path: Path) -> bool:
    revision, leftovers = schema(path)
    return revision != _get_latest_schema_revision() or bool(leftovers)


def tracking(path: Path) -> MlflowTracking:
    return MlflowTracking(tracking_uri=f"sqlite:///{path}", artifact_root=str(path.parent / "art"))


def log_a_run(path: Path) -> float:
    """What training does: an experiment, a run, a metric; the metric as read back."""
    resource = tracking(path)
    client = resource.client()
    with mlflow.start_run(experiment_id=resource.experiment_id("p")) as run:
        mlflow.log_metric("rmse", 1.5)
    return client.get_run(run.info.run_id).data.metrics["rmse"]


def mlflow_store(path: Path) -> None:
    """A complete store created by MLflow itself, as an older platform did."""
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "art"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_during_mlflows_own_migration_leaves_a_store_the_platform_repairs(tmp_path):
    """SIGKILL while MLflow migrates a fresh store in place (an older platform's first run, or
    `mlflow ui` first): the store is half-migrated, holds nothing, and training still logs a run.
    The kill comes once the store's revision is set and not yet the head, i.e. mid-migration."""
    path = tmp_path / "mlflow.db"
    child = start_child(path, "mlflow")
    try:
        while not (path.exists() and schema(path)[0]) and child.poll() is None:
            time.sleep(0.005)
    finally:
        kill(child)
    assert half_migrated(path), "the kill must land mid-migration to reproduce the break"
    assert log_a_run(path) == 1.5
    assert not half_migrated(path)


@pytest.mark.parametrize("how", ["mlflow", "platform"])
def test_training_logs_a_run_after_a_kill_at_any_moment_of_the_first_migration(tmp_path, how):
    """Kills at several moments of a first initialisation; with the platform's own client the
    store is never seen half-made: absent, or complete at the head revision."""
    for delay in (0.05, 0.2, 0.4, 0.6, 0.9, 1.3):
        path = tmp_path / f"{delay}" / "mlflow.db"
        path.parent.mkdir()
        child = start_child(path, how)
        time.sleep(delay)
        kill(child)
        if how == "platform" and path.exists():
            assert not half_migrated(path), f"killed after {delay} s"
        assert log_a_run(path) == 1.5, f"killed after {delay} s"
        assert not half_migrated(path)


# What a kill mid-migration leaves: a batch table of alembic's, or a revision short of the head.
DAMAGES = pytest.mark.parametrize(
    "damage",
    [
        "CREATE TABLE _alembic_tmp_latest_metrics (x INTEGER)",
        "UPDATE alembic_version SET version_num = '0a8213491aaa'",
    ],
    ids=["leftover_tmp_table", "old_revision"],
)


@DAMAGES
def test_half_migrated_store_holding_no_runs_is_rebuilt(tmp_path, damage):
    path = tmp_path / "mlflow.db"
    mlflow_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(damage)
    assert half_migrated(path)
    assert log_a_run(path) == 1.5
    assert not half_migrated(path)


@DAMAGES
def test_half_migrated_store_holding_runs_is_refused_untouched(tmp_path, damage):
    path = tmp_path / "mlflow.db"
    mlflow_store(path)
    client = mlflow.MlflowClient(f"sqlite:///{path}", f"sqlite:///{path}")
    client.create_run(client.create_experiment("p", artifact_location=str(tmp_path / "art")))
    client.create_registered_model("m")
    with sqlite3.connect(path) as conn:
        conn.execute(damage)
    before = sha256(path)
    with pytest.raises(TrackingStoreBroken) as refused:
        tracking(path).client()
    message = str(refused.value)
    assert str(path) in message and "1 run" in message and "1 registered model" in message
    assert "mlflow db upgrade" in message and "left as it is" in message
    assert sha256(path) == before


def test_a_tracking_server_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    MlflowTracking(tracking_uri="http://127.0.0.1:9").client()  # no request until one is made
    assert list(tmp_path.iterdir()) == []
