from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from dp_assets.settings import Settings


class DataDir(ConfigurableResource):
    """Where platform state lives (``DP_DATA_DIR``); see ``dp_assets.settings``."""

    path: str
    projects: list[str] = []  # project folders; empty: DP_PROJECT's

    @property
    def settings(self) -> Settings:
        if self.projects:
            return Settings(Path(self.path), tuple(Path(p) for p in self.projects))
        return Settings(Path(self.path))
