"""`dagster dev` (webserver and daemon, as `make ui` starts it), and its GraphQL API: for
bench/signals.py, bench/drop.py and the daemon tests (pyproject.toml puts bench/ on the tests'
path)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dagster_dev(env: dict, log: Path, timeout_s: float = 180) -> Iterator[int]:
    """``dagster dev`` on a free port of 127.0.0.1 with ``env`` (its output in ``log``), until it
    answers; yields the port, and kills its process group on the way out."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
            env={**env, "PATH": f"{BIN}:{os.environ['PATH']}"},
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            # processes started here may ignore SIGTERM: defaults restored, the group killed after
            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"dagster dev did not start: {log}") from None
                    time.sleep(1)
            yield port
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def graphql(port: int, query: str, timeout_s: float = 60) -> dict:
    """The ``data`` of a GraphQL query to the webserver on ``port``; raises on errors."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL: {body['errors']}")
    return body["data"]
