"""The inbox sensor: asks for a landing run when files arrive, without rescanning what it saw.

The cursor is the newest inode change time (``st_ctime_ns``) already handed to a run. A new file
gets a fresh ctime when it is created or moved into the inbox, even if the collector preserved its
modification time, so comparing against the cursor finds exactly the new arrivals. A file not yet
quiet (still being written, see ``landing.store``) holds the cursor below its own ctime, so a later
tick hands it out once it is quiet.
"""

import hashlib

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from dp_assets.landing.store import scan_inbox
from dp_assets.settings import Settings

LAND_JOB = "land"


def build_inbox_sensor(settings: Settings):
    sources = list(settings.catalog().sources)

    @sensor(
        name="inbox_sensor",
        job_name=LAND_JOB,
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Requests an ingest run when new files appear under {settings.inbox}",
    )
    def inbox_sensor(context: SensorEvaluationContext):
        cursor = int(context.cursor or 0)
        inbox = scan_inbox(settings, sources, newer_than_ns=cursor)
        new = inbox.files
        waiting = [s.changed_ns for s in inbox.skipped if s.kind == "waiting"]
        if not new:
            return SkipReason(f"no new files in the inbox ({len(waiting)} not yet quiet)")
        newest = max(f.changed_ns for f in new)
        context.update_cursor(str(min([newest, *(ns - 1 for ns in waiting)])))
        # Files handed out again while an older one waits are the same request (deduplicated by
        # its key); with the waiting file among them, a new one.
        handed = hashlib.sha256(repr(sorted((f.path, f.changed_ns) for f in new)).encode())
        return RunRequest(
            run_key=f"inbox-{newest}-{handed.hexdigest()[:12]}",
            tags={"dp/new_files": str(len(new))},
        )

    return inbox_sensor
