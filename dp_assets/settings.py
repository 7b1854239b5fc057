"""Paths and environment, read in one place.

All state lives under ``DP_DATA_DIR`` (default ``./data``)::

    inbox/<source>/...      temporal landing: collectors drop files here
    landing/<source>/...    persistent landing: immutable copies, one per distinct content
    quarantine/<source>/... files that could not be parsed, each beside a ``.reason.txt``
    warehouse.duckdb        the warehouse (schemas landing, formatted, exploitation, one per pipeline)
    mlflow.db, mlartifacts/ MLflow tracking store, model registry and artifacts
    secrets/pii_key         the pseudonymization key when DP_PII_KEY is not set

The Dagster instance lives under ``DAGSTER_HOME`` (the Makefile puts it in ``data/dagster_home``).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

WAREHOUSE_FILE = "warehouse.duckdb"


@dataclass(frozen=True)
class Settings:
    data_dir: Path

    @classmethod
    def from_env(cls) -> Settings:
        return cls(Path(os.environ.get("DP_DATA_DIR", "data")).resolve())

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
    def warehouse(self) -> Path:
        return self.data_dir / WAREHOUSE_FILE

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
    def sample_manifest(self) -> Path:
        """Ground truth written by ``dp sample-data``; kept outside the inbox so it is never landed."""
        return self.data_dir / "sample_data_manifest.json"

    def pii_key(self) -> bytes:
        """The pseudonymization key: ``DP_PII_KEY`` from the environment.

        Without it, a random key is generated once per data dir (``secrets/pii_key``, mode 600) so a
        local demo works and pseudonyms stay stable across runs. Production sets ``DP_PII_KEY``.
        """
        if key := os.environ.get("DP_PII_KEY"):
            return key.encode()
        path = self.data_dir / "secrets" / "pii_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()
