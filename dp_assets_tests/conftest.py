"""Fixtures: every test gets its own data dir and Dagster instance under a temporary directory.

``pytest --warehouse=ducklake`` (or ``DP_TEST_WAREHOUSE=ducklake``) runs every ``Platform`` on a
DuckLake instead of the DuckDB file: a PostgreSQL server started once per session (``postgres``),
a fresh catalog database per platform, Parquet files under the platform's data dir."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--warehouse",
        choices=("duckdb", "ducklake"),
        default=os.environ.get("DP_TEST_WAREHOUSE", "duckdb"),
        help="the warehouse backend every Platform runs on (ducklake: a PostgreSQL catalog)",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, user ``dagster``)."""

    port: int
    _names = itertools.count()

    def create_database(self, prefix: str = "db") -> str:
        """A new, empty database; its name."""
        import psycopg2

        name = f"{prefix}_{next(self._names)}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="dagster", dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def lake_catalog(self) -> str:
        """A DuckLake catalog string for a fresh database: one lake per platform."""
        name = self.create_database("lake")
        return f"postgres:dbname={name} host=127.0.0.1 port={self.port} user=dagster"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster started with initdb and pg_ctl for the session. As root, it runs as the
    postgres user (initdb refuses root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip(
            "PostgreSQL server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "`make system-deps` installs them"
        )
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="dp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "dagster")
    # Each lake connection holds a catalog connection; parallel writers need more than the
    # default 100.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300"
    run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", options,
        "-l", str(root / "log"), "-w", "start")  # fmt: skip
    try:
        yield Postgres(port)
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


# Set for the session when the platforms run on DuckLake (``--warehouse=ducklake``).
_LAKE_SERVER: Postgres | None = None


@pytest.fixture(scope="session", autouse=True)
def _warehouse_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    global _LAKE_SERVER
    if request.config.getoption("--warehouse") != "ducklake":
        yield
        return
    _LAKE_SERVER = request.getfixturevalue("postgres")
    try:
        yield
    finally:
        _LAKE_SERVER = None


def hold_back(data_dir: Path, files: list[dict], held: Path) -> None:
    """Move these sample files (manifest entries) from the inbox into ``held``, in their source
    folders, to be dropped later."""
    for f in files:
        (held / f["source"]).mkdir(parents=True, exist_ok=True)
        shutil.move(data_dir / "inbox" / f["source"] / f["name"], held / f["source"] / f["name"])


def lake_settings(data_dir: Path, catalog: str) -> Settings:
    """Settings for a platform whose warehouse is the DuckLake ``catalog`` (data under the data
    dir)."""
    return Settings(data_dir, warehouse_backend="ducklake", lake_catalog=catalog)


class Platform:
    """The real definitions pointed at a temporary data dir, with helpers tests share.

    ``lake_catalog``: the warehouse is that DuckLake; ``""`` the DuckDB file; by default (None)
    the session's backend decides (a fresh lake per platform with ``--warehouse=ducklake``)."""

    def __init__(self, root: Path, lake_catalog: str | None = None):
        if lake_catalog is None and _LAKE_SERVER is not None:
            lake_catalog = _LAKE_SERVER.lake_catalog()
        if lake_catalog:
            self.settings = lake_settings(root / "data", lake_catalog)
        else:
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


def on_its_warehouse(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the environment at the platform's lake, if it has one, so subprocesses (``dp``,
    ``dagster``) and settings read from the environment in steps use the same warehouse."""
    if platform.settings.warehouse_backend == "ducklake":
        monkeypatch.setenv("DP_WAREHOUSE", "ducklake")
        monkeypatch.setenv("DP_LAKE_CATALOG", platform.settings.lake_catalog)


@pytest.fixture
def platform(tmp_path, monkeypatch) -> Platform:
    isolate(monkeypatch)
    platform = Platform(tmp_path)
    on_its_warehouse(platform, monkeypatch)
    yield platform
    platform.instance.dispose()


# Enough history for the 30-day churn horizon, a validation window and training; seed 3 has
# churners in both windows.
WORLD = SampleParams(days=100, meters=40, seed=3)


@contextmanager
def isolated_platform(root: Path, lake_catalog: str | None = None) -> Iterator[Platform]:
    """A ``Platform`` under ``root`` in the tests' environment (``isolate``), for module fixtures:
    the instance is disposed and the environment restored afterwards."""
    mp = pytest.MonkeyPatch()
    isolate(mp)
    platform = Platform(root, lake_catalog)
    on_its_warehouse(platform, mp)
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


def score_served(tracking_uri: str, model_uri: str, records: list[dict]) -> list:
    """Start MLflow's scoring server for ``model_uri`` on 127.0.0.1, send ``records`` (raw rows,
    as a client would) and return its predictions; the server is stopped afterwards."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    venv_bin = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{venv_bin}:{os.environ['PATH']}"}  # fmt: skip
    server = subprocess.Popen(
        [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", model_uri,
         "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"scoring server did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": records}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, 9)
        server.wait()
