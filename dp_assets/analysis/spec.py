"""What an analytical pipeline is: a small spec the factory turns into a chain of assets.

The spec names everything domain-specific (the entity, the time column or none, segments, label,
categorical features, the split); the factory knows none of it. ``load_pipeline`` reads the YAML
form that says the common cases without code (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pandera.polars as pa
import polars as pl

Task = Literal["regression", "classification"]
SPLITS = ("train", "validation", "score")
# Where a formatted row came from (dp_assets.sources.schema.Lineage): never a feature.
LINEAGE_COLUMNS = ("file_sha256", "record_no")


@dataclass(frozen=True)
class Gate:
    """How much better than the baseline and the current champion a challenger must be.

    Improvements are relative, on the primary metric of the task (MAE for regression, ROC AUC for
    classification): 0.15 means 15% lower MAE, or an AUC 15% of the way from the other's to 1.
    A challenger that ties the champion is never promoted, even with ``min_improvement_vs_champion``
    0 (the default, which promotes any strict improvement).
    """

    min_improvement_vs_baseline: float
    min_improvement_vs_champion: float = 0.0


@dataclass(frozen=True)
class Entity:
    """The column an example is about (one row per entity, or per entity and as-of day)."""

    column: str
    pattern: str | None = None  # a regular expression every value matches, or no check
    description: str = "The entity the example is about"


@dataclass(frozen=True)
class Split:
    """Which labelled examples validate.

    ``time``: the most recent ``validation_days`` labelled as-of days (training stops the label
    horizon before them). ``holdout``: a seeded share ``fraction`` of the labelled rows,
    stratified by label for classification. ``validation_file``: the rows read from landed files
    whose original name matches the glob ``file_pattern`` (the sandbox keeps ``file_sha256``).
    """

    by: Literal["time", "holdout", "validation_file"] = "time"
    validation_days: int = 14
    fraction: float = 0.2
    seed: int = 7
    file_pattern: str = ""


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    name: str
    description: str
    task: Task
    sandbox_query: str  # SQL over the exploitation or formatted zone: the pipeline's sandbox
    sandbox_deps: tuple[tuple[str, ...], ...]  # asset keys the query reads
    # sandbox -> examples: the entity, ``as_of`` (time series), ``label``, segments and features;
    # other columns are dropped, and the factory adds ``split``.
    build_examples: Callable[[pl.DataFrame], pl.DataFrame]
    entity: Entity
    gate: Gate
    # The sandbox's time column for a time series (examples are as of its days, ``as_of``); None
    # for a snapshot (one example per entity, no time axis).
    time: str | None = None
    horizon_days: int = 0  # time series: how far past the as-of day a label looks
    # Feature columns, described; None: every column the examples hold but the entity, as_of,
    # label, segments and the sandbox lineage (``features: all`` in YAML).
    features_schema: type[pa.DataFrameModel] | None = None
    sandbox_schema: type[pa.DataFrameModel] | None = None  # None: only the key is checked
    label_description: str = "What the model learns to predict; null when not known yet"
    segments: tuple[str, ...] = ()  # columns the evaluation groups by (features or not)
    # Features LightGBM splits on as categories (pandas category, levels learned at training);
    # string features are categorical whether listed or not.
    categorical: tuple[str, ...] = ()
    split: Split = Split()
    # Early stopping: the rounds are found on an inner split of the train rows (a time series:
    # the end of the train window; a snapshot: a seeded share), then the model is refit on the
    # whole train split; the validation split stays unseen for the evaluation and the gate.
    early_stopping_rounds: int | None = None
    # (train, examples) -> naive predictions; None: the training prior (classification) or mean.
    baseline: Callable[[pl.DataFrame, pl.DataFrame], np.ndarray] | None = None
    lgbm_params: dict = field(default_factory=dict)
    num_boost_round: int = 300
    # Feature -> +1 or -1: a LightGBM monotone constraint (the prediction only rises, or falls).
    monotone: dict[str, int] = field(default_factory=dict)
    precision_at_k: int = 20  # classification: how many top-scored entities count
    # Evaluation warns when the challenger's primary metric in a segment (with at least
    # min_segment_rows examples) is more than max_segment_gap (relative) worse than overall.
    max_segment_gap: float = 0.5
    min_segment_rows: int = 30
    # Monitoring: each feature of the latest drift_window_days (at least 7: a weekly cycle; a
    # snapshot: the rows scored) against the train split (monitoring.drift): PSI above
    # drift_threshold or a feed break fails. PSI needs drift_min_sample entities (a snapshot:
    # rows) in each window, else it is not evaluated: 150 keep the PSI of two samples of one
    # population under 0.19 with 10 bins, at 99.9%. drift_seasonal features are compared with
    # the same calendar days of earlier years, or reported when training holds none;
    # drift_expected_to_move ones are reported, never failing (both still fail on a feed
    # break). Live accuracy over the latest live_window_days with actuals may be
    # live_tolerance (relative) worse than at evaluation before its check fails.
    drift_threshold: float = 0.25
    drift_window_days: int = 7
    drift_min_sample: int = 150
    drift_seasonal: tuple[str, ...] = ()
    drift_expected_to_move: tuple[str, ...] = ()
    live_window_days: int = 7
    live_tolerance: float = 0.25
    owner: str = "team:data-science"
    # Feature or label -> the sandbox columns it is computed from (dagster/column_lineage); the
    # entity and segments come from their namesakes, as_of from the time column.
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source_file: str = ""  # the module or YAML file the spec came from: part of the code version

    def __post_init__(self):
        if self.time is None and self.split.by == "time":
            raise ValueError(f"{self.name}: a snapshot (no time column) splits by holdout or file")
        if self.time is not None and self.split.by != "time":
            raise ValueError(f"{self.name}: a time series splits by time")
        if self.drift_window_days < 7:
            raise ValueError(f"{self.name}: drift_window_days must be at least 7 (a weekly cycle)")
        if self.snapshot and self.drift_seasonal:
            raise ValueError(f"{self.name}: drift_seasonal needs a time column")

    @property
    def snapshot(self) -> bool:
        return self.time is None

    @property
    def key(self) -> list[str]:
        """What identifies an example: the entity, and the as-of day of a time series."""
        return [self.entity.column] if self.snapshot else [self.entity.column, "as_of"]

    @property
    def retrain_on(self) -> tuple[tuple[str, str], ...]:
        """(asset, check) under the pipeline whose failure starts a retraining: the monitoring
        signals that apply (a snapshot's label never arrives later)."""
        drift = (("drift", "psi_below_threshold"),)
        return drift if self.snapshot else (*drift, ("live_accuracy", "accuracy_holds"))

    def column_lineage(self) -> dict[str, tuple[str, ...]]:
        sandbox = f"{self.name}/sandbox"
        given = {c: (c,) for c in (self.entity.column, *self.segments)}
        if self.time:
            given["as_of"] = (self.time,)
        given |= self.lineage
        return {
            column: tuple(f"{sandbox}.{c}" for c in sources) for column, sources in given.items()
        }

    def training_params(self, seed: int, features: list[str]) -> dict:
        """LightGBM parameters: the spec's, made deterministic (same data and seed, same model)."""
        return {
            "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 2, "verbose": -1,
            **self.lgbm_params,
            **({"monotone_constraints": [self.monotone.get(c, 0) for c in features],
                "monotone_constraints_method": "advanced"} if self.monotone else {}),
        }  # fmt: skip

    @cached_property
    def examples_schema(self) -> type[pa.DataFrameModel]:
        """The features table: the platform's columns (entity, as_of, split, label, segments that
        are not features) and the declared features."""
        entity = self.entity
        fields: dict[str, tuple[Any, Any]] = {
            entity.column: (
                str,
                pa.Field(str_matches=entity.pattern, description=entity.description)
                if entity.pattern
                else pa.Field(description=entity.description),
            )
        }
        if self.time:
            fields["as_of"] = (pl.Date, pa.Field(description="Prediction time: the example uses "
                               "only data up to the end of this day (UTC)"))  # fmt: skip
        fields["split"] = (str, pa.Field(isin=SPLITS, description=_SPLIT_DOC[self.split.by]))
        fields["label"] = (
            Optional[float],
            pa.Field(nullable=True, description=self.label_description),
        )
        # With every other column a feature, a segment is one of them; else it is carried.
        declared = self.declared_features
        for segment in self.segments if declared is not None else ():
            if segment not in declared and segment not in fields:
                fields[segment] = (
                    Optional[str],
                    pa.Field(nullable=True, description="A segment for evaluation, not a feature"),
                )
        # Pandera orders the columns of the bases last to first: the platform's come first.
        return model(
            "Examples",
            {},
            bases=(self.features_schema, model("Platform", fields))
            if self.features_schema
            else (model("Platform", fields),),
            strict=self.features_schema is not None,
            unique=self.key,
        )

    @cached_property
    def prediction_schema(self) -> type[pa.DataFrameModel]:
        """A batch prediction by the champion, with the challenger's in the shadow."""
        from dp_assets.analysis.schema import PredictionColumns

        fields = {self.entity.column: (str, pa.Field(description=self.entity.description))}
        if self.time:
            fields["as_of"] = (pl.Date, pa.Field(description="Prediction time: data up to the "
                               "end of this day was used"))  # fmt: skip
        return model(
            "Prediction", {}, bases=(PredictionColumns, model("Keys", fields)), unique=self.key
        )

    @cached_property
    def sandbox_model(self) -> type[pa.DataFrameModel]:
        if self.sandbox_schema is not None:
            return self.sandbox_schema
        key = [self.entity.column] if self.snapshot else [self.entity.column, self.time]
        return model("Sandbox", {}, strict=False, unique=key)

    @property
    def declared_features(self) -> list[str] | None:
        if self.features_schema is None:
            return None
        return list(self.features_schema.to_schema().columns)

    @property
    def feature_columns(self) -> list[str]:
        """The declared feature columns (a spec with ``features: all`` knows them at run time:
        ``features_in``)."""
        if (declared := self.declared_features) is None:
            raise ValueError(f"{self.name}: features are every other column: see features_in")
        return declared

    def features_in(self, columns: Iterable[str]) -> list[str]:
        """The feature columns of a features table with ``columns``."""
        if (declared := self.declared_features) is not None:
            return declared
        platform = {*self.key, "split", "label", *LINEAGE_COLUMNS}
        return [c for c in columns if c not in platform]

    @property
    def stored_columns(self) -> list[str] | None:
        """The features table's columns, or None when they are every column the examples hold."""
        if self.features_schema is None:
            return None
        return list(self.examples_schema.to_schema().columns)


_SPLIT_DOC = {
    "time": "train (the past), validation (the most recent labelled window) or score (the "
    "latest day, label not known yet)",
    "holdout": "train, validation (a seeded stratified holdout of the labelled rows) or score "
    "(label not known)",
    "validation_file": "train, validation (rows from the landed validation file) or score "
    "(label not known)",
}


def model(
    name: str,
    fields: dict[str, tuple[Any, Any]],
    bases: tuple = (),
    strict: bool = True,
    unique: list[str] | None = None,
) -> type[pa.DataFrameModel]:
    """A Pandera DataFrameModel built from ``{column: (type, Field)}``: the columns of the bases
    (last to first), then these."""
    namespace: dict[str, Any] = {"__annotations__": {c: t for c, (t, _) in fields.items()}}
    namespace |= {c: f for c, (_, f) in fields.items()}
    namespace["Config"] = type("Config", (), {"strict": strict, "unique": unique})
    return type(name, (*bases, pa.DataFrameModel) if bases else (pa.DataFrameModel,), namespace)


class PipelineError(ValueError):
    """A pipeline declaration cannot be used; the message names the file and the key."""


_KEYS = {
    "name", "description", "task", "sandbox", "entity", "time", "label", "segments", "categorical",
    "features", "exclude", "horizon_days", "lags", "rolling_means", "calendar", "split",
    "early_stopping_rounds", "baseline", "gate", "lightgbm", "num_boost_round", "owner",
    "precision_at_k", "max_segment_gap", "min_segment_rows", "drift_threshold",
    "drift_window_days", "drift_min_sample", "drift_seasonal", "drift_expected_to_move",
}  # fmt: skip
CALENDAR = {
    "weekday": lambda d: d.dt.weekday(),
    "month": lambda d: d.dt.month(),
    "day_of_year": lambda d: d.dt.ordinal_day(),
}


def load_pipeline(path: Path, project) -> PipelineSpec:
    """A pipeline spec from its YAML declaration ``path`` (``project.hook`` resolves hooks).

    ::

        description: Income above 50K from the census record
        task: classification                # or regression
        sandbox: SELECT * FROM formatted.adult   # reads exploitation/formatted tables
        entity: person                      # or {column: person, pattern: "^P-[0-9]+$"}
        label: income                       # or {column: income, positive: ">50K"}
        segments: [sex, race]
        categorical: [education_num]        # string features are categorical anyway
        features: all                       # every other column; or hooks.py:build_examples
        exclude: [fnlwgt]                   # columns that are not features
        split: {by: validation_file, file_pattern: "adult.test*"}   # or {by: holdout, fraction: 0.2}
        early_stopping_rounds: 50           # on a share of the train rows, never the validation
        lightgbm: {learning_rate: 0.05}     # added to the task's objective (binary, regression)
        gate: {min_improvement_vs_baseline: 0.2}
        drift_expected_to_move: [capital_gain]   # reported, never failing (a feed break still does)

    A time series names its ``time`` column (daily) and declares features of the label column:
    ``lags: [1, 7]`` (its value that many days back, 1 = the as-of day), ``rolling_means: [7,
    28]``, ``calendar: [weekday, month]`` (of the target day), ``horizon_days: 1``; its baseline
    is the seasonal naive one (same weekday a week before the target) and it splits by time
    (``split: {by: time, validation_days: 56}``); ``drift_seasonal: [temperature]`` compares a
    feature with the same calendar days of earlier years, ``drift_window_days: 14`` (at least 7)
    and ``drift_min_sample: 150`` set the drift window and the entities it needs.
    """
    import yaml

    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PipelineError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{where}: expected a mapping of keys to values")
    if unknown := sorted(set(data) - _KEYS):
        raise PipelineError(f"{where}: unknown keys {unknown} (known: {sorted(_KEYS)})")

    def need(key: str, kind: type | tuple = str):
        if key not in data:
            raise PipelineError(f"{where}: '{key}' is required")
        if not isinstance(data[key], kind):
            raise PipelineError(f"{where}: '{key}' must be a {_kind(kind)}, not {data[key]!r}")
        return data[key]

    def columns(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise PipelineError(f"{where}: '{key}' must be a list of column names")
        return tuple(value)

    name = data.get("name", Path(path).stem)
    task = need("task")
    if task not in ("regression", "classification"):
        raise PipelineError(f"{where}: task must be regression or classification, not {task!r}")
    query = need("sandbox")
    from dp_assets.exploitation.views import tables_read

    try:
        deps = tuple(tuple(table.split(".")) for table in tables_read(query))
    except ValueError as error:
        raise PipelineError(f"{where}: 'sandbox': {error}") from None
    if not deps:
        raise PipelineError(
            f"{where}: 'sandbox' reads no exploitation.<view> or formatted.<source>"
        )

    raw_entity = need("entity", (str, dict))
    if isinstance(raw_entity, str):
        raw_entity = {"column": raw_entity}
    if "column" not in raw_entity or set(raw_entity) - {"column", "pattern", "description"}:
        raise PipelineError(f"{where}: 'entity' takes column, pattern and description")
    entity = Entity(**raw_entity)
    if entity.pattern:
        try:
            re.compile(entity.pattern)
        except re.error as error:
            raise PipelineError(f"{where}: entity pattern {entity.pattern!r}: {error}") from None

    raw_label = need("label", (str, dict))
    label = {"column": raw_label} if isinstance(raw_label, str) else raw_label
    if "column" not in label or set(label) - {"column", "positive", "description"}:
        raise PipelineError(f"{where}: 'label' takes column, positive and description")
    if "positive" in label and task != "classification":
        raise PipelineError(f"{where}: label 'positive' is for classification only")
    label_column = label["column"]
    time = data.get("time")
    raw_split = data.get("split", {"by": "time"} if time else {"by": "holdout"})
    if not isinstance(raw_split, dict) or set(raw_split) - set(Split.__dataclass_fields__):
        raise PipelineError(
            f"{where}: 'split' takes {sorted(Split.__dataclass_fields__)}, not {raw_split!r}"
        )
    split = Split(**raw_split)
    if split.by == "validation_file" and not split.file_pattern:
        raise PipelineError(f"{where}: split by validation_file needs file_pattern")

    segments, categorical, exclude = columns("segments"), columns("categorical"), columns("exclude")
    features = data.get("features", "all")
    lineage: dict[str, tuple[str, ...]] = {"label": (label_column,)}
    features_schema = None
    horizon = int(data.get("horizon_days", 1 if time else 0))
    if isinstance(features, str) and ":" in features:
        build = project.hook(features)
    elif features == "all" and not time:
        build = _snapshot_builder(label, task, exclude)
    elif features == "all" and time:
        build, features_schema, lineage = _series_builder(data, where, entity.column, time,
                                                          label_column, horizon, segments)  # fmt: skip
    else:
        raise PipelineError(
            f"{where}: 'features' is 'all' (every other column, or the declared lags, rolling "
            f"means and calendar of a time series) or a hook '<file>.py:<function>', not {features!r}"
        )

    if features == "all":  # a hook may compute what it needs; a declaration names columns
        named = (entity.column, *([time] if time else []), label_column, *segments, *categorical,
                 *exclude)  # fmt: skip
        build = _reading(build, tuple(dict.fromkeys(named)), where)

    baseline_name = data.get("baseline", "seasonal_naive" if time else "prior")
    if baseline_name == "seasonal_naive":
        if not time:
            raise PipelineError(f"{where}: baseline seasonal_naive needs a time column")
        baseline = _seasonal_naive(horizon)
        if (
            features_schema is not None
            and f"lag_{8 - horizon}" not in features_schema.to_schema().columns
        ):
            raise PipelineError(f"{where}: the seasonal naive baseline needs lags: [{8 - horizon}]")
    elif baseline_name == "prior":
        baseline = None
    else:
        baseline = project.hook(baseline_name)

    gate = data.get("gate", {"min_improvement_vs_baseline": 0.0})
    try:
        spec = PipelineSpec(
            name=name,
            description=data.get("description", name),
            task=task,
            sandbox_query=query,
            sandbox_deps=deps,
            build_examples=build,
            entity=entity,
            gate=Gate(**gate),
            time=time,
            horizon_days=horizon,
            features_schema=features_schema,
            label_description=label.get("description", f"{label_column}"
                                        + (f" is {label['positive']!r}" if "positive" in label else "")),
            segments=segments,
            categorical=categorical,
            split=split,
            early_stopping_rounds=data.get("early_stopping_rounds", 50),
            baseline=baseline,
            # Declared parameters add to the task's objective (or replace it), not to nothing.
            lgbm_params={"objective": "binary" if task == "classification" else "regression",
                         **data.get("lightgbm", {})},
            num_boost_round=data.get("num_boost_round", 500),
            owner=data.get("owner", getattr(project, "owner", "team:data-science")),
            lineage=lineage,
            source_file=where,
            **{k: data[k] for k in ("precision_at_k", "max_segment_gap", "min_segment_rows",
                                    "drift_threshold", "drift_window_days", "drift_min_sample")
               if k in data},
            **{k: columns(k) for k in ("drift_seasonal", "drift_expected_to_move") if k in data},
        )  # fmt: skip
    except (TypeError, ValueError) as error:
        raise PipelineError(f"{where}: {error}") from None
    return spec


def _kind(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {str: "text", dict: "mapping", list: "list", int: "number"}[k] for k in kinds
    )


def _label(label: dict, task: str) -> pl.Expr:
    column = pl.col(label["column"])
    if "positive" in label:
        return (
            pl.when(column.is_null())
            .then(None)
            .otherwise((column.cast(pl.String) == str(label["positive"])).cast(pl.Float64))
        )
    return column.cast(pl.Float64)


def _reading(build, named: tuple[str, ...], where: str):
    """``build`` after a check that the sandbox returns every column the declaration names: a
    misspelt label or segment is reported with the file and what the sandbox returns."""

    def build_examples(sandbox: pl.DataFrame) -> pl.DataFrame:
        if missing := [c for c in named if c not in sandbox.columns]:
            raise PipelineError(
                f"{where}: names {', '.join(missing)}, which the sandbox does not return (it "
                f"returns {', '.join(sandbox.columns)})"
            )
        return build(sandbox)

    return build_examples


def _snapshot_builder(label: dict, task: str, exclude: tuple[str, ...]):
    def build_examples(sandbox: pl.DataFrame) -> pl.DataFrame:
        dropped = [c for c in (*exclude, label["column"]) if c in sandbox.columns and c != "label"]
        return sandbox.with_columns(label=_label(label, task)).drop(dropped)

    return build_examples


def _series_builder(data, where, entity, time, label_column, horizon, segments):
    """Examples of a daily series: declared lags, rolling means and calendar parts of the
    target day, all from data up to the as-of day; the label is the value ``horizon`` days on."""
    lags = [int(v) for v in data.get("lags", [1, 8 - horizon])]
    means = [int(v) for v in data.get("rolling_means", [7])]
    calendar = data.get("calendar", ["weekday"])
    if unknown := sorted(set(calendar) - set(CALENDAR)):
        raise PipelineError(
            f"{where}: calendar parts {unknown} unknown (known: {sorted(CALENDAR)})"
        )
    if any(v < 1 for v in lags + means):
        raise PipelineError(f"{where}: lags and rolling means count days from 1 (the as-of day)")
    y = pl.col(label_column)
    exprs = {f"lag_{k}": y.shift(k - 1).over(entity) for k in lags}
    exprs |= {
        f"mean_{k}": y.rolling_mean(k, min_samples=max(1, k // 2)).over(entity) for k in means
    }
    target = pl.col(time) + pl.duration(days=horizon)
    exprs |= {f"target_{p}": CALENDAR[p](target).cast(pl.Int64) for p in calendar}
    fields = {c: (Optional[float], pa.Field(nullable=True, description=f"{label_column} "
              f"{'on the as-of day' if k == 1 else f'{k - 1} days before the as-of day'}"))
              for c, k in ((f"lag_{k}", k) for k in lags)}  # fmt: skip
    fields |= {f"mean_{k}": (Optional[float], pa.Field(nullable=True, description=f"Mean {label_column} "
               f"over the {k} days up to the as-of day")) for k in means}  # fmt: skip
    fields |= {f"target_{p}": (int, pa.Field(description=f"{p} of the target day (as-of day + "
               f"{horizon})")) for p in calendar}  # fmt: skip
    schema = model("Features", fields, strict=False)
    lineage = {c: (label_column,) for c in fields if not c.startswith("target_")}
    lineage |= {f"target_{p}": (time,) for p in calendar} | {"label": (label_column,)}

    def build_examples(sandbox: pl.DataFrame) -> pl.DataFrame:
        from dp_assets.analysis.timeseries import complete_days

        carried = [c for c in segments if c not in (entity, time, label_column)]
        days = complete_days(
            sandbox.select(entity, time, label_column, *carried), entity, time, carried=carried
        )
        return days.with_columns(
            as_of=pl.col(time), label=y.shift(-horizon).over(entity), **exprs
        ).filter(pl.all_horizontal(pl.col(f"lag_{k}").is_not_null() for k in lags))

    return build_examples, schema, lineage


def _seasonal_naive(horizon: int):
    column = f"lag_{8 - horizon}"  # the target's weekday one week before it

    def baseline(train: pl.DataFrame, frame: pl.DataFrame) -> np.ndarray:
        return frame[column].to_numpy()

    return baseline
