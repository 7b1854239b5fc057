"""The leakage guard: features must not change when the future is cut off (pure polars).

Examples are rebuilt from the sandbox truncated after a few past days. For every as-of day up to
such a cut, the rebuilt examples must be exactly the ones built from the full sandbox: a feature
that differs, or an example that exists in one build but not the other, used data from after its
as-of day. Labels are exempt: they look ahead by definition.

Each rebuild costs about as much as the features step itself, so above ``SAMPLE_CUSTOMERS`` the
guard runs on at most that many customers, every k-th of the sorted ids: a leak is a property of
the feature code, and a few hundred customers over every day show it. Both sides of the
comparison are then built from the sample alone, so features relative to the other customers (a
median of the day) compare like with like.
"""

from __future__ import annotations

import polars as pl

from dp_assets.analysis.spec import PipelineSpec

KEY = ["customer_id", "as_of"]
SAMPLE_CUSTOMERS = 500


def cut_days(sandbox: pl.DataFrame, cuts: int = 3) -> list:
    days = sandbox["day"].unique().sort()
    return sorted({days[int(len(days) * f)] for f in (0.5, 0.75, 0.9)[:cuts]})


def future_leaks(
    spec: PipelineSpec,
    sandbox: pl.DataFrame,
    examples: pl.DataFrame,
    sample: int = SAMPLE_CUSTOMERS,
) -> pl.DataFrame:
    """One row per leak found: cut, customer_id, as_of, column ('<row>' for a missing example).

    ``examples`` are the ones built from the whole ``sandbox``; with more than ``sample`` customers
    the guard rebuilds them from a sample instead (see the module)."""
    features = spec.feature_columns
    customers = sandbox["customer_id"].unique().sort()
    if customers.len() > sample:
        chosen = customers.gather_every(-(-customers.len() // sample)).implode()
        sandbox = sandbox.filter(pl.col("customer_id").is_in(chosen))
        examples = spec.build_examples(sandbox)
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
