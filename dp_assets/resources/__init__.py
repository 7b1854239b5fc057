from dp_assets.resources.data_dir import DataDir
from dp_assets.resources.warehouse import Warehouse, WarehouseLocked

__all__ = ["DataDir", "Warehouse", "WarehouseLocked"]
