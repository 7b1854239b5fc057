"""Entity resolution of CRM records into one row per real person (pure polars).

Two records are the same person when they share a meter or an email pseudonym; the relation is
closed transitively (connected components by min-label propagation). The platform id is derived
from the smallest member record, so it is stable as long as that record exists. Attributes come
from the most trusted record: CRM alpha before beta, newer exports before older ones.
"""

from __future__ import annotations

import hashlib

import polars as pl

LINK_COLUMNS = ("meter_id", "email_pseudonym")
SYSTEM_TRUST = {"crm_alpha": 0, "crm_beta": 1}
ATTRIBUTES = [
    "name_pseudonym", "email_pseudonym", "address_pseudonym", "city", "region", "tariff",
    "meter_id", "contract_start", "contract_end",
]  # fmt: skip


def cluster_labels(records: pl.DataFrame, links: tuple[str, ...] = LINK_COLUMNS) -> pl.Series:
    """For each record, the smallest row position in its connected component."""
    frame = (
        records.select(*links).with_row_index("label").with_columns(pl.col("label").cast(pl.Int64))
    )
    while True:
        before = frame["label"]
        for column in links:
            frame = frame.with_columns(
                label=pl.when(pl.col(column).is_not_null())
                .then(pl.col("label").min().over(column))
                .otherwise(pl.col("label"))
            )
        # Shortcut: a label points at a record whose own label may be smaller still.
        frame = frame.with_columns(label=frame["label"].gather(frame["label"]))
        if frame["label"].equals(before):
            return frame["label"]


def customer_id(member: str) -> str:
    return "CUS-" + hashlib.sha256(member.encode()).hexdigest()[:10].upper()


def resolve(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CRM records (latest per source id, with ``exported_at``) -> (customers, id map)."""
    records = records.with_columns(
        member=pl.concat_str("source_system", pl.lit(":"), "source_customer_id"),
        trust=pl.col("source_system").replace_strict(SYSTEM_TRUST, return_dtype=pl.Int32),
    ).sort("member")
    records = records.with_columns(cluster=cluster_labels(records))
    ids = (
        records.group_by("cluster")
        .agg(pl.col("member").min())
        .with_columns(
            customer_id=pl.col("member").map_elements(customer_id, return_dtype=pl.String)
        )
    )
    records = records.join(ids.select("cluster", "customer_id"), on="cluster")
    ranked = records.sort("trust", pl.col("exported_at"), descending=[False, True])
    customers = (
        ranked.group_by("customer_id", maintain_order=True)
        .agg(
            # A null contract_end means "still running": the trusted record's null wins over a value.
            *[pl.col(a).drop_nulls().first().alias(a) for a in ATTRIBUTES if a != "contract_end"],
            pl.col("contract_end").first(),
            source_systems=pl.col("source_system").unique().sort().str.join(","),
            source_records=pl.len().cast(pl.Int64),
        )
        .sort("customer_id")
    )
    id_map = records.select("source_system", "source_customer_id", "customer_id").sort(
        "source_system", "source_customer_id"
    )
    return customers, id_map
