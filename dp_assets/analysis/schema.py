"""Tables every analytical pipeline shares: examples, evaluation, predictions."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.exploitation.schema import CUSTOMER_ID_PATTERN
from dp_assets.sources.schema import UtcTimestamp
from dp_projects.utility.model import REGIONS, TARIFFS

SPLITS = ("train", "validation", "score")


class Example(pa.DataFrameModel):
    """The columns every features table has; a pipeline's model adds its feature columns."""

    customer_id: str = pa.Field(
        str_matches=CUSTOMER_ID_PATTERN, description="Customer the example is about"
    )
    as_of: pl.Date = pa.Field(
        description="Prediction time: the example uses only data up to the end of this day (UTC)"
    )
    split: str = pa.Field(
        isin=SPLITS,
        description="train (the past), validation (the most recent labelled window) or score "
        "(the latest day, label not known yet)",
    )
    label: Optional[float] = pa.Field(
        nullable=True, description="What the model learns to predict; null when not known yet"
    )
    region: Optional[str] = pa.Field(
        nullable=True,
        isin=REGIONS,
        description="Customer's region (a segment for evaluation, not a feature)",
    )
    tariff: Optional[str] = pa.Field(
        nullable=True,
        isin=TARIFFS,
        description="Customer's tariff (a segment for evaluation, not a feature)",
    )

    class Config:
        strict = True
        unique = ["customer_id", "as_of"]


class EvaluationRow(pa.DataFrameModel):
    """One metric of one model on the validation window, overall or for one segment."""

    model: str = pa.Field(
        isin=("challenger", "baseline", "champion"), description="Which predictor"
    )
    model_version: Optional[int] = pa.Field(
        nullable=True, description="Registered model version; null for the baseline"
    )
    segment_column: str = pa.Field(
        description="'all', or the column the rows were grouped by (region, tariff)"
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


class Prediction(pa.DataFrameModel):
    """A batch prediction by the champion, with the challenger's in the shadow: the record
    monitoring later joins with actuals."""

    customer_id: str = pa.Field(
        str_matches=CUSTOMER_ID_PATTERN, description="Customer predicted for"
    )
    as_of: pl.Date = pa.Field(
        description="Prediction time: data up to the end of this day was used"
    )
    prediction: float = pa.Field(description="The model's output (kWh, or churn probability)")
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

    class Config:
        strict = True
        unique = ["customer_id", "as_of"]


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
    """Population stability of one feature: the training window against the latest window."""

    computed_at: UtcTimestamp = pa.Field(description="When the drift was measured, UTC")
    feature: str = pa.Field(description="Feature column")
    psi: float = pa.Field(
        ge=0.0,
        description="Population stability index (deciles of the training window, nulls a bin of "
        "their own): below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 a significant shift",
    )
    train_mean: Optional[float] = pa.Field(nullable=True, description="Mean in the training window")
    recent_mean: Optional[float] = pa.Field(nullable=True, description="Mean in the latest window")
    train_window: str = pa.Field(description="First..last as-of day of the training window")
    recent_window: str = pa.Field(description="First..last as-of day of the latest window")
    drifted: bool = pa.Field(description="True when psi is above the pipeline's threshold")

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
