"""The model a snapshot pipeline serves: raw records in, predictions out.

The encoding travels inside the MLflow model: which columns are features, which are categorical
and their levels as learned at training. MLflow's scoring server loads this class from
``dp_assets`` (the environment it runs in) and the booster from the model's artifacts.
"""

from __future__ import annotations

import math

import mlflow.pyfunc
import pandas as pd


def level_text(value) -> str | None:
    """A category value as the training levels write it: a JSON record's ``14`` or ``14.0`` (an
    integer column with a null arrives as doubles) is the level ``'14'``; missing is None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def encode(frame: pd.DataFrame, features: list[str], levels: dict[str, list[str]]) -> pd.DataFrame:
    """The booster's input: categorical features as pandas categories of the training levels (an
    unseen or missing value is NaN, which LightGBM treats as missing), the others as doubles, so
    a missing value is NaN, never a type error (an integer column cannot hold one). A feature the
    records lack is missing; columns that are not features are ignored. Category values are
    compared as text (``level_text``), so a numeric category matches whatever its JSON type."""
    columns = {}
    for name in features:
        values = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
        if name in levels:
            text = [level_text(v) for v in values.astype(object)]
            columns[name] = pd.Categorical(text, categories=levels[name])
        else:
            columns[name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(columns, index=frame.index)


class RawRecords(mlflow.pyfunc.PythonModel):
    """LightGBM behind the pipeline's encoding of raw records."""

    def __init__(self, features: list[str], levels: dict[str, list[str]]):
        self.features, self.levels = features, levels
        self.booster = None

    def load_context(self, context):
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=context.artifacts["booster"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.booster.predict(encode(model_input, self.features, self.levels))
