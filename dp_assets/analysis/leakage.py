"""The leakage guard: features must not change when the future is cut off (pure polars).

Examples are rebuilt from the sandbox truncated after a few past days. For every as-of day up to
such a cut, the rebuilt examples must be exactly the ones built from the full sandbox: a feature
that differs, or an example that exists in one build but not the other, used data from after its
as-of day. Labels are exempt: they look ahead by definition.
"""

from __future__ import annotations

import polars as pl

from dp_assets.analysis.spec import PipelineSpec

KEY = ["customer_id", "as_of"]


def cut_days(sandbox: pl.DataFrame, cuts: int = 3) -> list:
    days = sandbox["day"].unique().sort()
    return sorted({days[int(len(days) * f)] for f in (0.5, 0.75, 0.9)[:cuts]})


def future_leaks(spec: PipelineSpec, sandbox: pl.DataFrame, examples: pl.DataFrame) -> pl.DataFrame:
    """One row per leak found: cut, customer_id, as_of, column ('<row>' for a missing example)."""
    features = spec.feature_columns
    leaks = []
    for cut in cut_days(sandbox):
        full = examples.filter(pl.col("as_of") <= cut).select(*KEY, *features)
        truncated = spec.build_examples(sandbox.filter(pl.col("day") <= cut))
        truncated = truncated.filter(pl.col("as_of") <= cut).select(*KEY, *features)
        # The builds keep the sandbox's row order, so without a leak they are equal row for row,
        # which equals() tells in milliseconds. Only otherwise does the join below name the leaks
        # (a join of two empty frames still gives the result its columns).
        if full.equals(truncated):
            full, truncated = full.clear(), truncated.clear()
        # One full join pairs the two builds: an example on one side only is a leak of its own,
        # and a paired one leaks in every feature that differs.
        paired = full.with_columns(_full=True).join(
            truncated.with_columns(_cut=True), on=KEY, how="full", coalesce=True, suffix="__cut"
        )
        alone = pl.col("_full").is_null() | pl.col("_cut").is_null()
        differs = {"<row>": alone} | {
            c: ~alone & ~pl.col(c).eq_missing(pl.col(f"{c}__cut")) for c in features
        }
        leaks.append(
            paired.select(*KEY, **differs)
            .filter(pl.any_horizontal(*differs))
            .unpivot(index=KEY, variable_name="column")
            .filter("value")
            .select(pl.lit(cut).alias("cut"), *KEY, "column")
        )
    return pl.concat(leaks)
