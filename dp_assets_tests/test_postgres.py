"""The backbone on a PostgreSQL-backed Dagster instance (deploy/dagster.yaml): a real server started
with initdb and pg_ctl on 127.0.0.1, then `dagster asset materialize` as CI would run it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster; yields its port. As root, it runs as the postgres user
    (initdb refuses root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries are not installed: `make test` installs them")
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="dp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *args: subprocess.run(
        [*as_user, *args], check=True, capture_output=True, text=True
    )  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "dagster")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(root / "data"),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        run(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "dagster",
            "dagster",
        )
        yield port
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_backbone_materializes_on_a_postgres_instance(tmp_path, postgres):
    import psycopg2

    env = cli_env(
        tmp_path,
        REPO / "deploy" / "dagster.yaml",
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT=str(postgres),
        DAGSTER_PG_USERNAME="dagster",
        DAGSTER_PG_PASSWORD="trust-auth-ignores-it",
        DAGSTER_PG_DB="dagster",
    )
    generate(tmp_path / "data", SampleParams(days=4, meters=6, seed=8))
    result = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select",
         "group:landing or group:formatted or group:exploitation"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    with psycopg2.connect(
        host="127.0.0.1", port=postgres, user="dagster", dbname="dagster"
    ) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT status FROM runs")
            assert [status for (status,) in cursor.fetchall()] == ["SUCCESS"]
            cursor.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            assert cursor.fetchone()[0] == 20  # landing 5, formatted 10, exploitation 5
