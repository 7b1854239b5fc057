"""The backbone on a PostgreSQL-backed Dagster instance (deploy/dagster.yaml): a real server started
with initdb and pg_ctl on 127.0.0.1 (conftest's ``postgres``), then `dagster asset materialize` as
CI would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_backbone_materializes_on_a_postgres_instance(tmp_path, postgres):
    import psycopg2

    database = postgres.create_database("dagster")
    env = cli_env(
        tmp_path,
        REPO / "deploy" / "dagster.yaml",
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT=str(postgres.port),
        DAGSTER_PG_USERNAME="dagster",
        DAGSTER_PG_PASSWORD="trust-auth-ignores-it",
        DAGSTER_PG_DB=database,
    )
    generate(tmp_path / "data", SampleParams(days=4, meters=6, seed=8))
    result = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select",
         "group:landing or group:formatted or group:exploitation"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    with psycopg2.connect(
        host="127.0.0.1", port=postgres.port, user="dagster", dbname=database
    ) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT status FROM runs")
            assert [status for (status,) in cursor.fetchall()] == ["SUCCESS"]
            cursor.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            assert cursor.fetchone()[0] == 20  # landing 5, formatted 10, exploitation 5
