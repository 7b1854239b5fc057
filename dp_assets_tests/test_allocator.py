"""Polars' allocator keeps freed pages for a few seconds (dp_assets/__init__.py); the effect on page
faults and time is measured by bench/run.py, not here."""

from __future__ import annotations

from dp_assets_tests.conftest import cli_env, fresh_python

PROBE = "import os, dp_assets, polars; print(os.environ['_RJEM_MALLOC_CONF'])"


def allocator_conf(tmp_path, **extra: str) -> str:
    """The jemalloc options polars loaded with, in a fresh process (the last of a key wins)."""
    env = cli_env(tmp_path, **extra)
    if not extra:
        env.pop("_RJEM_MALLOC_CONF", None)
    return fresh_python(PROBE, env)


def test_polars_keeps_freed_pages_unless_the_user_configures_its_allocator(tmp_path):
    # Ours comes after polars' own defaults, so it is the one jemalloc applies.
    assert allocator_conf(tmp_path).endswith(",dirty_decay_ms:5000,muzzy_decay_ms:5000")
    own = allocator_conf(tmp_path, _RJEM_MALLOC_CONF="dirty_decay_ms:0")
    assert own.endswith(",dirty_decay_ms:0") and "5000" not in own
