"""One module per analytical pipeline, each defining ``SPEC``; every module here is picked up, so
adding a pipeline is adding a module (``_``-prefixed ones are helpers they share)."""

import importlib
import pkgutil

from dp_assets.analysis.spec import PipelineSpec

PIPELINES: dict[str, PipelineSpec] = {}
for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("_"):
        continue
    _spec = importlib.import_module(f"{__name__}.{_module.name}").SPEC
    PIPELINES[_spec.name] = _spec
