from dp_assets.resources.data_dir import DataDir
from dp_assets.resources.mlflow_tracking import MlflowTracking
from dp_assets.resources.warehouse import Warehouse, WarehouseLocked

__all__ = ["DataDir", "MlflowTracking", "Warehouse", "WarehouseLocked"]
