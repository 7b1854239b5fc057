from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from dp_assets.settings import Settings


class DataDir(ConfigurableResource):
    """Where platform state lives (``DP_DATA_DIR``); see ``dp_assets.settings``."""

    path: str

    @property
    def settings(self) -> Settings:
        return Settings(Path(self.path))
