"""dp_assets: a data-product platform on Dagster software-defined assets."""

import os

# Polars hands freed memory back to the OS within 0.5-1 s (its jemalloc defaults), so a step that
# allocates and frees gigabytes, as formatting a year of files does, pays millions of page faults
# (at M a quarter of the formatting CPU time was the kernel's). Kept for 5 s, freed pages are reused
# instead: 3.3 M -> 1.4 M faults for vendor B's formatting. Set before polars loads (it appends
# this to its own defaults); a _RJEM_MALLOC_CONF of the user's own wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")

from dp_assets.event_log import keep_connections_open  # noqa: E402
from dp_assets.project import register_built_in  # noqa: E402

register_built_in()  # the sample project's modules importable as dp_projects.utility.*

keep_connections_open()  # Dagster's SQLite event log reuses its connections (event_log.py)

from dp_assets.definitions import defs  # noqa: E402

__all__ = ["defs"]
