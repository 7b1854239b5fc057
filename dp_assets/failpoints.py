"""Failpoints: crash on purpose at a named point, to prove a killed run leaves the last good state.

``DP_CRASH_AT=<point>`` makes the process kill itself with SIGKILL (no cleanup, no exception
handlers, like the OOM killer or a pulled plug) when it reaches that point; ``<point>@<n>`` when it
reaches it the n-th time (a point inside a loop). Unset, it costs one environment lookup.
"""

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get("DP_CRASH_AT")
    if not wanted or not wanted.startswith(name):
        return
    _reached[name] += 1
    if wanted in (name, f"{name}@{_reached[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)
