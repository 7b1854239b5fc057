"""Paths and environment, read in one place.

All state lives under ``DP_DATA_DIR`` (default ``./data``)::

    inbox/<source>/...      temporal landing: collectors drop files here
    landing/<source>/...    persistent landing: immutable copies, one per distinct content
    quarantine/<source>/... files that could not be parsed, each beside a ``.reason.txt``
    warehouse.duckdb        the warehouse (schemas landing, formatted, exploitation, one per pipeline)
    lake/, tmp/             with DP_WAREHOUSE=ducklake: the lake's Parquet files (by default) and spills
    mlflow.db, mlartifacts/ MLflow tracking store, model registry and artifacts
    secrets/pii_key         the pseudonymization key when DP_PII_KEY is not set

The warehouse backend is ``DP_WAREHOUSE``: ``duckdb`` (default, the file above) or ``ducklake``, a
DuckLake that many processes and machines share: ``DP_LAKE_CATALOG`` is its catalog (required), a
DuckLake catalog string such as ``postgres:dbname=lake host=10.0.0.5 port=5432 user=dagster`` (the
password from ``PGPASSWORD`` or ``~/.pgpass``, as libpq reads them), or a local
``.../metadata.ducklake`` DuckDB file to try it without a server (one process at a time, then);
``DP_LAKE_DATA_PATH`` is where the Parquet files go (default ``$DP_DATA_DIR/lake/``; an object store
path such as ``s3://bucket/lake/`` needs DuckDB's httpfs extension and a secret, untested here).

The Dagster instance lives under ``DAGSTER_HOME`` (the Makefile puts it in ``data/dagster_home``).

The landing, quarantine and secrets hold raw personal data: owner-only (folders 0700, files 0400),
or readable by the group with ``DP_GROUP_ACCESS=1`` (0750, 0440). ``DP_INBOX_QUIET_S`` (default 10)
is how long a file must stay unchanged before it is taken (see ``landing.store``).

Evidence links (asset metadata to MLflow, MLflow runs back to Dagster) point at the UIs' addresses:
``DP_MLFLOW_UI_URL`` (default ``http://127.0.0.1:5000``, where ``make mlflow-ui`` serves) and
``DP_DAGSTER_UI_URL`` (default ``http://127.0.0.1:3000``, ``make ui``'s). Set them when the UIs run
elsewhere (another host or port, behind a proxy, with a path prefix).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from dp_assets.project import Projects, load_projects, project_paths

WAREHOUSE_FILE = "warehouse.duckdb"
WAREHOUSE_BACKENDS = ("duckdb", "ducklake")
INBOX_QUIET_S = 10.0
MLFLOW_UI_URL = "http://127.0.0.1:5000"
DAGSTER_UI_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Access:
    """Who may read raw data: modes of its folders and files, and the process umask."""

    folder: int
    file: int
    umask: int

    def make_dirs(self, folder: Path) -> None:
        """``mkdir -p`` giving each folder it creates this mode (mkdir alone applies the umask)."""
        if folder.is_dir():
            return
        self.make_dirs(folder.parent)
        try:
            folder.mkdir()
        except FileExistsError:  # created meanwhile by another writer
            return
        os.chmod(folder, self.folder)


def access() -> Access:
    """Owner-only, or group-readable when ``DP_GROUP_ACCESS`` is set (to anything but 0)."""
    if os.environ.get("DP_GROUP_ACCESS", "0") not in ("", "0"):
        return Access(folder=0o750, file=0o440, umask=0o027)
    return Access(folder=0o700, file=0o400, umask=0o077)


def restrict_umask() -> None:
    """Make what DuckDB, SQLite and MLflow create (the warehouse and its WAL, mlflow.db and its
    journal, artifacts) unreadable to others: they take their modes from the umask, and a chmod
    after the fact would miss the files they create and delete as they go."""
    os.umask(access().umask)


# Every platform process (code server, run and step workers, the dp CLI) imports this module
# before it writes anything.
restrict_umask()


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # The project folders served (``DP_PROJECT``, default the built-in sample utility).
    projects: tuple[Path, ...] = field(default_factory=lambda: tuple(project_paths()))
    # The warehouse backend and, for a lake, its catalog and data path (see the module docstring).
    warehouse_backend: str = field(
        default_factory=lambda: os.environ.get("DP_WAREHOUSE") or "duckdb"
    )
    lake_catalog: str = field(default_factory=lambda: os.environ.get("DP_LAKE_CATALOG", ""))
    lake_data: str = field(default_factory=lambda: os.environ.get("DP_LAKE_DATA_PATH", ""))

    def __post_init__(self) -> None:
        if self.warehouse_backend not in WAREHOUSE_BACKENDS:
            raise ValueError(
                f"DP_WAREHOUSE={self.warehouse_backend!r}: expected one of {WAREHOUSE_BACKENDS}"
            )
        if self.warehouse_backend == "ducklake" and not self.lake_catalog:
            raise ValueError(
                "DP_WAREHOUSE=ducklake needs DP_LAKE_CATALOG: a DuckLake catalog such as "
                "'postgres:dbname=lake host=127.0.0.1 user=dagster', or a metadata.ducklake file"
            )

    @classmethod
    def from_env(cls) -> Settings:
        return cls(Path(os.environ.get("DP_DATA_DIR", "data")).resolve())

    def catalog(self) -> Projects:
        """The projects' sources, views and pipelines (loaded once per process)."""
        return load_projects(self.projects)

    @property
    def inbox(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def access(self) -> Access:
        return access()

    @property
    def inbox_quiet_s(self) -> float:
        """Seconds a file's size and mtime must stay unchanged before it is taken from the inbox."""
        return float(os.environ.get("DP_INBOX_QUIET_S", INBOX_QUIET_S))

    @property
    def warehouse(self) -> Path:
        """The DuckDB file (the ``duckdb`` backend's warehouse)."""
        return self.data_dir / WAREHOUSE_FILE

    @property
    def lake_data_path(self) -> str:
        """Where a lake's Parquet files live: ``DP_LAKE_DATA_PATH``, else ``lake/`` in the data
        dir (a path or an object-store URL; DuckLake wants the trailing slash)."""
        return self.lake_data or f"{self.data_dir / 'lake'}/"

    @property
    def mlflow_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` when set (a tracking server), else a SQLite store in the data dir."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str | None:
        """Artifacts of new experiments: under the data dir, unless a tracking server keeps them
        (with a database URI and no location MLflow would write ./mlruns wherever it runs)."""
        server = self.mlflow_tracking_uri.startswith(("http://", "https://", "databricks"))
        return None if server else str(self.data_dir / "mlartifacts")

    @property
    def mlflow_ui_url(self) -> str:
        """Where people open MLflow's UI (``DP_MLFLOW_UI_URL``): the base of links to runs,
        registered versions and plots."""
        return os.environ.get("DP_MLFLOW_UI_URL") or MLFLOW_UI_URL

    @property
    def dagster_ui_url(self) -> str:
        """Where people open Dagster's UI (``DP_DAGSTER_UI_URL``): the base of links to runs."""
        return os.environ.get("DP_DAGSTER_UI_URL") or DAGSTER_UI_URL

    @property
    def sample_manifest(self) -> Path:
        """Ground truth written by ``dp sample-data``; kept outside the inbox so it is never landed."""
        return self.data_dir / "sample_data_manifest.json"

    def pii_key(self) -> bytes:
        """The pseudonymization key: ``DP_PII_KEY`` from the environment.

        Without it, a random key is generated once per data dir (``secrets/pii_key``, owner-only
        like the landing) so a local demo works and pseudonyms stay stable across runs. Production
        sets ``DP_PII_KEY``.
        """
        if key := os.environ.get("DP_PII_KEY"):
            return key.encode()
        path = self.data_dir / "secrets" / "pii_key"
        if not path.exists():
            self.access.make_dirs(path.parent)
            tmp = path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)  # a crashed attempt's, read-only
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(self.access.file)
            tmp.replace(path)
        return path.read_text().strip().encode()
