"""Failpoints: crash on purpose at a named point, to prove a killed run leaves the last good state.

``DP_CRASH_AT=<point>`` makes the process kill itself with SIGKILL (no cleanup, no exception
handlers, like the OOM killer or a pulled plug) when it reaches that point. Unset, it costs one
environment lookup.
"""

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("DP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
