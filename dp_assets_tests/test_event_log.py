"""Dagster's SQLite event log keeps a few connections open in our processes (event_log.py)."""

from __future__ import annotations

import os
import time

from dagster import AssetKey, AssetMaterialization, DagsterInstance
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from dp_assets.event_log import OPEN_FILES, keep_connections_open, open_shards
from dp_assets_tests.conftest import cli_env, fresh_python


def materialized(run_id: str, asset: str) -> EventLogEntry:
    data = StepMaterializationData(AssetMaterialization(AssetKey(["t", asset])))
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value, "job", event_specific_data=data
    )
    return EventLogEntry(
        user_message="", level=20, job_name="job", run_id=run_id, error_info=None,
        timestamp=time.time(), dagster_event=event,
    )  # fmt: skip


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_importing_dp_assets_patches_every_process_running_our_code(tmp_path):
    probe = (
        "import dp_assets; from dp_assets import event_log as e; "
        "from dagster._core.storage.event_log.sqlite.sqlite_event_log import "
        "SqliteEventLogStorage as S; print(S._connect is e._connect)"
    )
    assert fresh_python(probe, cli_env(tmp_path)) == "True"


def test_events_are_stored_and_read_back_through_open_connections(tmp_path):
    keep_connections_open()
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, SqliteEventLogStorage)
        for i in range(5):
            storage.store_event(materialized("run-a", f"a{i}"))
        # Another instance on the same home (as another process would be) sees every event.
        with DagsterInstance.local_temp(str(tmp_path)) as other:
            assert len(other.get_records_for_run("run-a").records) == 5
            assert other.get_latest_materialization_event(AssetKey(["t", "a4"])) is not None
        assert set(open_shards(storage)) == {"index", "run-a"}


def test_only_the_most_recently_used_files_stay_open(tmp_path):
    keep_connections_open()
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.store_event(materialized("warm-up", "x"))
        before = open_files()
        for i in range(3 * OPEN_FILES):
            storage.store_event(materialized(f"run-{i}", "x"))
        engines = open_shards(storage)
        assert len(engines) == OPEN_FILES
        assert {"index", f"run-{3 * OPEN_FILES - 1}"} <= set(engines) and "run-0" not in engines
        assert open_files() - before <= 3 * OPEN_FILES  # a file, its WAL and shared memory
        # A closed file opens again when a run is read later.
        assert len(storage.get_records_for_run("run-0").records) == 1


def test_wipe_closes_the_files_before_deleting_them(tmp_path):
    keep_connections_open()
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.store_event(materialized("run-w", "w"))
        instance.wipe()
        assert "run-w" not in open_shards(storage)
        assert storage.get_records_for_run("run-w").records == []
        storage.store_event(materialized("run-w", "w"))  # a new file, not the deleted one
        assert len(storage.get_records_for_run("run-w").records) == 1
        assert os.path.exists(storage.path_for_shard("run-w"))


def test_a_forked_child_opens_its_own_connections(tmp_path):
    keep_connections_open()
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.store_event(materialized("parent", "p"))
        child = os.fork()
        if child == 0:  # SQLite connections must not cross a fork: the child starts with none
            fresh = open_shards(storage) == []
            storage.store_event(materialized("child", "c"))
            os._exit(0 if fresh and open_shards(storage) == ["child", "index"] else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert open_shards(storage) == ["parent", "index"]
        assert len(storage.get_records_for_run("child").records) == 1
