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
        only_one = pl.concat(
            [full.join(truncated, on=KEY, how="anti"), truncated.join(full, on=KEY, how="anti")]
        )
        both = full.join(truncated, on=KEY, suffix="__cut")
        found = [only_one.select(*KEY, column=pl.lit("<row>"))] + [
            both.filter(~pl.col(c).eq_missing(pl.col(f"{c}__cut"))).select(*KEY, column=pl.lit(c))
            for c in features
        ]
        leaks.append(pl.concat(found).with_columns(cut=pl.lit(cut)))
    return pl.concat(leaks).select("cut", *KEY, "column")
