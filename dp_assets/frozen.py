"""Long-lived imports frozen out of the cyclic garbage collector's walks.

A run worker imports the definitions (Dagster, pydantic, Pandera, polars) and, at its first model,
the ML stack (MLflow with its SQL store, LightGBM, scikit-learn, SciPy): some 500k objects that
never become garbage. The collector still walks them in every full collection, and Python's
shutdown collects several times while it tears the modules down: 1.7 s at the end of every run of
one more day at M, after the last step. ``gc.freeze()`` moves every object alive into a generation
the collector no longer visits (that exit takes 0.3 s). Reference counting still frees whatever
stops being used; only reference cycles among frozen objects are never collected, and those are
import-time state.
"""

import gc
import importlib
from functools import cache
from types import ModuleType


def freeze() -> None:
    """Freeze every object alive now: call once the process's long-lived state is built."""
    gc.freeze()


@cache
def import_frozen(name: str) -> ModuleType:
    """``importlib.import_module(name)`` once per process, then :func:`freeze`: for the heavy
    modules that steps import lazily, so that sensors and code servers never pay for them."""
    module = importlib.import_module(name)
    freeze()
    return module
