"""Fixtures: every test gets its own data dir and Dagster instance under a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterInstance, Definitions

from dp_assets.definitions import build_defs
from dp_assets.project import load_projects, project_paths
from dp_assets.resources import Warehouse
from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# The default project (the sample utility) the tests run on, as the platform discovers it.
SAMPLE = load_projects(tuple(project_paths("")))
SOURCES, PIPELINES = SAMPLE.sources, SAMPLE.pipelines
BACKBONE = AssetSelection.groups("landing", "formatted", "exploitation")


class Platform:
    """The real definitions pointed at a temporary data dir, with helpers tests share."""

    def __init__(self, root: Path):
        self.settings = Settings(root / "data")
        self.settings.data_dir.mkdir(parents=True)
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        self.instance = DagsterInstance.from_config(str(home))
        self.defs: Definitions = build_defs(self.settings)

    def materialize(
        self, selection: AssetSelection | None = None, raise_on_error: bool = True, run_config=None
    ):
        """Run the implicit asset job of the real defs, as `dagster asset materialize` does."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        keys = sorted(selection.resolve(self.defs.resolve_asset_graph())) if selection else None
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=keys,
            raise_on_error=raise_on_error,
            run_config=run_config,
        )

    def drop(self, source: str, name: str, data: bytes) -> Path:
        path = self.settings.inbox / source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    @property
    def warehouse(self) -> Warehouse:
        return self.defs.resources["warehouse"]

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        with self.warehouse.get_connection() as conn:
            return conn.execute(query, params or []).fetchall()

    def frame(self, query: str):
        return self.warehouse.query(query)


def cli_env(
    root: Path, instance_yaml: Path = REPO / "dagster.yaml", **extra: str
) -> dict[str, str]:
    """Environment for running `dagster`/`dp` as subprocesses: a data dir and a Dagster home under
    ``root`` (``instance_yaml`` copied in), a fixed PII key, no inbox quiet time, MLflow in the
    data dir."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(instance_yaml, home / "dagster.yaml")
    env = {**os.environ, "DP_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(home)}
    # Files the tests drop are complete at once: no quiet time before the landing takes them.
    env.update(DP_PII_KEY="test-key-not-a-secret", DP_INBOX_QUIET_S="0", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def fresh_python(code: str, env: dict[str, str]) -> str:
    """What ``code`` prints (stripped) in a new interpreter with ``env``, run from the repository:
    for what only a process's start shows (imports, allocator settings, the collector)."""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed PII key, and MLflow in the data dir whatever the caller's environment says."""
    monkeypatch.setenv("DP_PII_KEY", "test-key-not-a-secret")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DP_INBOX_QUIET_S", "0")  # files dropped by tests are taken at once


@pytest.fixture
def platform(tmp_path, monkeypatch) -> Platform:
    isolate(monkeypatch)
    platform = Platform(tmp_path)
    yield platform
    platform.instance.dispose()


# Enough history for the 30-day churn horizon, a validation window and training; seed 3 has
# churners in both windows.
WORLD = SampleParams(days=100, meters=40, seed=3)


@contextmanager
def isolated_platform(root: Path) -> Iterator[Platform]:
    """A ``Platform`` under ``root`` in the tests' environment (``isolate``), for module fixtures:
    the instance is disposed and the environment restored afterwards."""
    mp = pytest.MonkeyPatch()
    isolate(mp)
    platform = Platform(root)
    try:
        yield platform
    finally:
        platform.instance.dispose()
        mp.undo()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sample data materialized through every asset, pipelines and governance included."""
    with isolated_platform(tmp_path_factory.mktemp("world")) as platform:
        generate(platform.settings.data_dir, WORLD)
        result = platform.materialize()
        assert result.success
        yield platform, result
