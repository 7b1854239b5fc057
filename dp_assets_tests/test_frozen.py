"""Long-lived imports are frozen out of the garbage collector's walks (dp_assets/frozen.py)."""

from __future__ import annotations

import gc

from dp_assets.frozen import import_frozen
from dp_assets_tests.conftest import cli_env, fresh_python


def tracked(obj) -> bool:
    """Whether the cyclic collector still walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_a_lazy_import_is_frozen_and_made_once():
    module = import_frozen("dp_assets_tests.frozen_probe")
    assert module.MARK == "probe" and not tracked(module.__dict__)
    assert import_frozen("dp_assets_tests.frozen_probe") is module


def test_loading_the_definitions_freezes_what_they_imported(tmp_path):
    probe = (
        "import gc, dp_assets.definitions as d; "
        "print(any(o is d.__dict__ for o in gc.get_objects()))"
    )
    assert fresh_python(probe, cli_env(tmp_path)) == "False"
