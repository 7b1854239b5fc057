"""The leakage guard: features must not change when the future is cut off (pure polars).

It applies to time series (a spec with a ``time`` column): examples are rebuilt from the sandbox
truncated after a few past days of that column. For every as-of day up to
such a cut, the rebuilt examples must be exactly the ones built from the full sandbox: a feature
that differs, or an example that exists in one build but not the other, used data from after its
as-of day. Labels are exempt: they look ahead by definition.

Each rebuild costs about as much as the features step itself, so above ``SAMPLE_ENTITIES`` the
guard runs on at most that many entities, every k-th of the sorted ids: a leak is a property of
the feature code, and a few hundred entities over every day show it. Both sides of the
comparison are then built from the sample alone, so features relative to the other entities (a
median of the day) compare like with like.
"""

from __future__ import annotations

import polars as pl

from dp_assets.analysis.spec import PipelineSpec

SAMPLE_ENTITIES = 500


def cut_days(sandbox: pl.DataFrame, time: str, cuts: int = 3) -> list:
    days = sandbox[time].unique().sort()
    return sorted({days[int(len(days) * f)] for f in (0.5, 0.75, 0.9)[:cuts]})


def future_leaks(
    spec: PipelineSpec,
    sandbox: pl.DataFrame,
    examples: pl.DataFrame,
    sample: int = SAMPLE_ENTITIES,
) -> pl.DataFrame:
    """One row per leak found: cut, <entity>, as_of, column ('<row>' for a missing example).

    ``examples`` are the ones built from the whole ``sandbox``; with more than ``sample`` entities
    the guard rebuilds them from a sample instead (see the module)."""
    if spec.time is None:
        raise ValueError(f"{spec.name}: the leakage guard applies to time series only")
    entity, time, key = spec.entity.column, spec.time, spec.key
    features = spec.features_in(examples.columns)
    entities = sandbox[entity].unique().sort()
    if entities.len() > sample:
        chosen = entities.gather_every(-(-entities.len() // sample)).implode()
        sandbox = sandbox.filter(pl.col(entity).is_in(chosen))
        examples = spec.build_examples(sandbox)
    leaks = []
    for cut in cut_days(sandbox, time):
        full = examples.filter(pl.col("as_of") <= cut).select(*key, *features)
        truncated = spec.build_examples(sandbox.filter(pl.col(time) <= cut))
        truncated = truncated.filter(pl.col("as_of") <= cut).select(*key, *features)
        # The builds keep the sandbox's row order, so without a leak they are equal row for row,
        # which equals() tells in milliseconds. Only otherwise does the join below name the leaks
        # (a join of two empty frames still gives the result its columns).
        if full.equals(truncated):
            full, truncated = full.clear(), truncated.clear()
        # One full join pairs the two builds: an example on one side only is a leak of its own,
        # and a paired one leaks in every feature that differs.
        paired = full.with_columns(_full=True).join(
            truncated.with_columns(_cut=True), on=key, how="full", coalesce=True, suffix="__cut"
        )
        alone = pl.col("_full").is_null() | pl.col("_cut").is_null()
        differs = {"<row>": alone} | {
            c: ~alone & ~pl.col(c).eq_missing(pl.col(f"{c}__cut")) for c in features
        }
        leaks.append(
            paired.select(*key, **differs)
            .filter(pl.any_horizontal(*differs))
            .unpivot(index=key, variable_name="column")
            .filter("value")
            .select(pl.lit(cut).alias("cut"), *key, "column")
        )
    return pl.concat(leaks)
