"""Tables every analytical pipeline shares: evaluation, predictions, promotions, monitoring.

The examples table and a prediction's key columns depend on the pipeline's entity and time
column: ``PipelineSpec.examples_schema`` and ``prediction_schema`` build them."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.sources.schema import UtcTimestamp


class EvaluationRow(pa.DataFrameModel):
    """One metric of one model on the validation window, overall or for one segment."""

    model: str = pa.Field(
        isin=("challenger", "baseline", "champion"), description="Which predictor"
    )
    model_version: Optional[int] = pa.Field(
        nullable=True, description="Registered model version; null for the baseline"
    )
    segment_column: str = pa.Field(
        description="'all', or the column the rows were grouped by (a segment)"
    )
    segment: str = pa.Field(description="'all', or the segment's value")
    metric: str = pa.Field(
        description="Metric name (mae, rmse, mape, roc_auc, log_loss, precision_at_k)"
    )
    value: Optional[float] = pa.Field(
        nullable=True, description="Metric value; null where undefined (one class only)"
    )
    rows: int = pa.Field(ge=0, description="Validation examples the metric was computed on")

    class Config:
        strict = True


class PredictionColumns(pa.DataFrameModel):
    """A batch prediction by the champion, with the challenger's in the shadow: the record
    monitoring later joins with actuals (after the pipeline's key columns)."""

    prediction: float = pa.Field(
        description="The model's output (the predicted value, or the probability of the class)"
    )
    model_name: str = pa.Field(description="Registered model name (the pipeline)")
    model_version: int = pa.Field(ge=1, description="Registered model version that predicted")
    challenger_prediction: Optional[float] = pa.Field(
        nullable=True,
        description="Shadow prediction of the challenger when it is not the champion (never served)",
    )
    challenger_version: Optional[int] = pa.Field(
        nullable=True, ge=1, description="Registered version of the shadow challenger"
    )
    predicted_at: UtcTimestamp = pa.Field(description="When the batch was scored, UTC")


class Promotion(pa.DataFrameModel):
    """One decision of the champion/challenger gate."""

    decided_at: UtcTimestamp = pa.Field(description="When the gate decided, UTC")
    challenger_version: int = pa.Field(ge=1, description="Registered version that was evaluated")
    champion_before: Optional[int] = pa.Field(
        nullable=True, description="Champion version before the decision"
    )
    champion_after: Optional[int] = pa.Field(
        nullable=True, description="Champion version after the decision"
    )
    promoted: bool = pa.Field(description="Whether the challenger became champion")
    metric: str = pa.Field(description="The primary metric the gate compared")
    challenger_value: float = pa.Field(
        description="The challenger's primary metric on the validation window"
    )
    baseline_value: float = pa.Field(
        description="The naive baseline's primary metric on the same window"
    )
    champion_value: Optional[float] = pa.Field(
        nullable=True, description="The previous champion's, when there was one"
    )
    reason: str = pa.Field(description="Why the challenger was or was not promoted")

    class Config:
        strict = True


class DriftRow(pa.DataFrameModel):
    """One feature's stability: the rows it was trained on against the latest window."""

    computed_at: UtcTimestamp = pa.Field(description="When the drift was measured, UTC")
    feature: str = pa.Field(description="Feature column")
    psi: Optional[float] = pa.Field(
        ge=0.0,
        nullable=True,
        description="Population stability index of the known values (deciles of training, an "
        "empty bin weighs half a row): below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 a "
        "significant shift; null when not evaluated",
    )
    train_mean: Optional[float] = pa.Field(nullable=True, description="Mean in the training window")
    recent_mean: Optional[float] = pa.Field(nullable=True, description="Mean in the latest window")
    train_window: str = pa.Field(
        description="First..last as-of day of the training rows compared (a seasonal feature: "
        "the same calendar days of earlier years; a snapshot: the train split's rows)"
    )
    recent_window: str = pa.Field(
        description="First..last as-of day of the latest window (a snapshot: the rows scored)"
    )
    drifted: bool = pa.Field(
        description="True when the status fails the check: drifted or feed break"
    )
    # Added with the status; rows measured before it hold nulls.
    train_rows: Optional[int] = pa.Field(nullable=True, description="Training rows compared")
    recent_rows: Optional[int] = pa.Field(nullable=True, description="Rows of the latest window")
    status: Optional[str] = pa.Field(
        nullable=True,
        isin=("stable", "drifted", "feed break", "expected to move", "not evaluated"),
        description="stable, drifted (PSI above the threshold), feed break (a unit change, a "
        "stuck sensor, values gone missing), expected to move (seasonal or declared: reported, "
        "never failing) or not evaluated (too few rows)",
    )
    reason: Optional[str] = pa.Field(nullable=True, description="Why the status, in one line")

    class Config:
        strict = True
        unique = ["computed_at", "feature"]


class LiveAccuracyRow(pa.DataFrameModel):
    """A metric of stored predictions against the actuals that arrived later, per as-of day."""

    as_of: pl.Date = pa.Field(description="Day the predictions were made as of")
    model: str = pa.Field(
        isin=("champion", "challenger"), description="champion (served) or challenger (shadow)"
    )
    model_version: int = pa.Field(ge=1, description="Registered model version that predicted")
    metric: str = pa.Field(description="Metric name, as in the evaluation table")
    value: Optional[float] = pa.Field(
        nullable=True, description="Metric value; null where undefined (one class only)"
    )
    rows: int = pa.Field(ge=1, description="Predictions with an actual on that day")

    class Config:
        strict = True
        unique = ["as_of", "model", "model_version", "metric"]
