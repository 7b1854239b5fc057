"""The utility's erasure hook (``project.yaml``: ``erasure: erasure.py:find_subject``).

A person is known to the utility by their platform ``customer_id`` (a subject key of its views,
``project.yaml``: ``subject_keys``); the raw files know them by CRM record and meter, and the
formatted zone by email pseudonym. ``dp erase --key customer_id=CUS-...`` therefore needs all of
those: found here through ``exploitation.customer_id_map``.
"""

from __future__ import annotations

import duckdb
import polars as pl

from dp_assets.governance.erasure import Key, Subject, UnknownSubject
from dp_assets.resources.tables import table_exists


def find_subject(conn: duckdb.DuckDBPyConnection, subject: Subject) -> dict[Key, pl.DataFrame]:
    """The CRM records, meters and email pseudonyms of the customer ids the request names."""
    requested = subject.values(("customer_id",))
    if requested is None:
        return {}
    if not table_exists(conn, "exploitation.customer_id_map"):
        raise UnknownSubject(
            "no exploitation.customer_id_map yet: materialize the exploitation zone first"
        )
    conn.register("_requested", requested)
    try:
        records = conn.execute(
            "SELECT source_system, source_customer_id FROM exploitation.customer_id_map "
            "WHERE customer_id IN (SELECT customer_id FROM _requested)"
        ).pl()
        if records.is_empty():
            ids = ", ".join(requested["customer_id"])
            raise UnknownSubject(
                f"{ids}: not a customer id in exploitation.customer_id_map "
                "(ids look like CUS-0A1B2C3D4E)"
            )
        conn.register("_records", records)
        mine = conn.execute(
            "SELECT f.meter_id, f.email_pseudonym FROM formatted.customers f "
            "JOIN _records USING (source_system, source_customer_id)"
        ).pl()
        current = conn.execute(
            "SELECT meter_id FROM exploitation.customers "
            "WHERE customer_id IN (SELECT customer_id FROM _requested)"
        ).pl()
    finally:
        conn.unregister("_requested")
        conn.unregister("_records")
    return {
        ("source_system", "source_customer_id"): records,
        ("meter_id",): pl.concat([mine.select("meter_id"), current]),
        ("email_pseudonym",): mine.select("email_pseudonym"),
    }
