"""Entity resolution across CRMs: transitive links, stable ids, trusted attributes."""

from __future__ import annotations

import datetime as dt

import polars as pl

from dp_projects.utility.views._entity_resolution import cluster_labels, resolve

D = dt.date(2020, 1, 1)


def records(*rows):
    columns = [
        "source_system",
        "source_customer_id",
        "meter_id",
        "email_pseudonym",
        "tariff",
        "contract_end",
    ]
    frame = pl.DataFrame(
        [dict(zip(columns, r)) for r in rows], schema_overrides={"contract_end": pl.Date}
    )
    return frame.with_columns(
        name_pseudonym=pl.lit("n"), address_pseudonym=pl.lit("a"), city=pl.lit("c"), region=pl.lit("north"),
        contract_start=pl.lit(D), exported_at=pl.lit(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
    )  # fmt: skip


def test_links_are_transitive():
    frame = pl.DataFrame(
        {"meter_id": ["m1", "m1", "m2", "m3"], "email_pseudonym": [None, "e1", "e1", None]}
    )
    labels = cluster_labels(frame).to_list()
    assert labels[0] == labels[1] == labels[2] != labels[3]


def test_resolve_merges_people_and_prefers_alpha():
    customers, id_map = resolve(records(
        ("crm_beta", "700001", "MTR-000001", "e1", "G12", D),
        ("crm_alpha", "ALP-1", "MTR-000001", None, "G11", None),
        ("crm_beta", "700002", "MTR-000002", "e2", "G12", None),
    ))  # fmt: skip
    assert customers.height == 2
    merged = customers.filter(pl.col("meter_id") == "MTR-000001").row(0, named=True)
    assert (
        merged["tariff"] == "G11" and merged["contract_end"] is None
    )  # alpha wins, its null included
    assert merged["email_pseudonym"] == "e1"  # filled from beta where alpha has nothing
    assert merged["source_systems"] == "crm_alpha,crm_beta" and merged["source_records"] == 2
    assert id_map.height == 3 and id_map["customer_id"].n_unique() == 2


def test_customer_ids_are_stable_across_input_order():
    rows = [("crm_alpha", f"ALP-{i}", f"MTR-00000{i}", f"e{i}", "G11", None) for i in range(5)]
    first, _ = resolve(records(*rows))
    second, _ = resolve(records(*reversed(rows)))
    assert first["customer_id"].to_list() == second["customer_id"].to_list()
    assert all(c.startswith("CUS-") for c in first["customer_id"])
