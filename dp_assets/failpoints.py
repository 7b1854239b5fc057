"""Failpoints: stop on purpose at a named point, to prove what a killed or overlapping run leaves.

``DP_CRASH_AT=<point>`` makes the process kill itself with SIGKILL (no cleanup, no exception
handlers, like the OOM killer or a pulled plug) when it reaches that point; ``<point>@<n>`` when it
reaches it the n-th time (a point inside a loop).

``DP_WAIT_AT=<point>`` with ``DP_WAIT_FILE=<path>`` makes the process, each time it reaches the
point, create ``<path>.<pid>`` and wait (up to ten minutes) until ``<path>`` exists: so that a test
holds two runs at one point together (two writers of one table, both transactions open) before it
lets them go. Unset, they cost two environment lookups.
"""

import os
import signal
import time
from collections import Counter
from pathlib import Path

_reached: Counter[str] = Counter()
WAIT_S = 600


def crash_point(name: str) -> None:
    if os.environ.get("DP_WAIT_AT") == name:
        release = Path(os.environ["DP_WAIT_FILE"])
        Path(f"{release}.{os.getpid()}").touch()
        deadline = time.monotonic() + WAIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    wanted = os.environ.get("DP_CRASH_AT")
    if not wanted or not wanted.startswith(name):
        return
    _reached[name] += 1
    if wanted in (name, f"{name}@{_reached[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)
