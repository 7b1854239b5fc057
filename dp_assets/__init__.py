"""dp_assets: a data-product platform on Dagster software-defined assets."""

from dp_assets.definitions import defs

__all__ = ["defs"]
