"""MLflow tracking and model registry, configured once for the platform.

dagster-mlflow's ``mlflow_tracking`` keeps one MLflow run per Dagster run and leaves it open, so
two pipelines materialized together would log into the same run. Here each pipeline has its own
experiment, each training its own run, and evaluation logs into the run of the model it evaluates.
Defaults: ``sqlite:///$DP_DATA_DIR/mlflow.db`` with artifacts under ``$DP_DATA_DIR/mlartifacts``;
``MLFLOW_TRACKING_URI`` switches to a tracking server (whose own artifact store is then used).
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from dp_assets.frozen import import_frozen


class MlflowTracking(ConfigurableResource):
    tracking_uri: str = Field(description="MLflow tracking and registry URI")
    artifact_root: str | None = Field(
        default=None, description="Where new experiments keep artifacts; None: the server's default"
    )

    def client(self):
        mlflow = import_frozen("mlflow")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    def model_version(self, name: str, alias: str):
        """The registered version holding ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def load_lightgbm(self, name: str, version: str | int):
        """A registered LightGBM model version, from this resource's registry."""
        self.client()  # MLflow's registry URI is process-global: point it at this resource first
        return import_frozen("mlflow.lightgbm").load_model(f"models:/{name}/{version}")
