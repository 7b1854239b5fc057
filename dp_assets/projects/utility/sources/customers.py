"""Customers: full exports of two CRM systems, CSV, told apart by their header.

- CRM alpha: ``customer_id`` like ``ALP-000123``, names "First Last", ISO dates.
- CRM beta: ``CustomerNo`` like ``700123``, names "LAST, First", dates ``dd.mm.yyyy``, meter numbers
  without the ``MTR-`` prefix.

The same person can appear in both. Names, emails and addresses are normalized ("First Last",
lower-case email, collapsed address) and then pseudonymized with the keyed hash, so the same person
gets the same pseudonym in both systems and no clear PII leaves the persistent landing.
"""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.privacy import pseudonymize
from dp_assets.sources.base import (
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    Unparseable,
    add_reasons,
    parse_failures,
    read_delimited,
)
from dp_assets.sources.schema import Lineage
from dp_projects.utility.model import METER_ID_PATTERN, REGIONS, TARIFFS, canonical_meter_id

COLUMNS = [
    "customer_id", "full_name", "email", "address", "city", "region", "tariff", "meter_id",
    "contract_start", "contract_end",
]  # fmt: skip
BETA_NAMES = {
    "CustomerNo": "customer_id", "Name": "full_name", "E-mail": "email", "Address": "address",
    "City": "city", "Region": "region", "TariffPlan": "tariff", "MeterNo": "meter_id",
    "StartDate": "contract_start", "EndDate": "contract_end",
}  # fmt: skip
SYSTEMS = ("crm_alpha", "crm_beta")
PII_COLUMNS = ("full_name", "email", "address")


class CustomerAttributes(pa.DataFrameModel):
    """What a CRM says about a person, normalized and pseudonymized (shared with exploitation)."""

    name_pseudonym: str = pa.Field(
        description="Keyed hash of the name normalized to 'First Last' (PII, pseudonymized)"
    )
    email_pseudonym: Optional[str] = pa.Field(
        nullable=True, description="Keyed hash of the lower-cased email (PII, pseudonymized)"
    )
    address_pseudonym: Optional[str] = pa.Field(
        nullable=True,
        description="Keyed hash of the normalized street address (PII, pseudonymized)",
    )
    city: Optional[str] = pa.Field(nullable=True, description="City of the supply address")
    region: str = pa.Field(isin=REGIONS, description="Service region of the supply address")
    tariff: str = pa.Field(isin=TARIFFS, description="Tariff the customer is billed on")
    meter_id: str = pa.Field(
        str_matches=METER_ID_PATTERN, description="Meter at the supply address"
    )
    contract_start: pl.Date = pa.Field(description="First day of the supply contract")
    contract_end: Optional[pl.Date] = pa.Field(
        nullable=True, description="Last day of the supply contract; null while it runs"
    )

    @pa.dataframe_check(error="contract_end before contract_start")
    def contract_ends_after_start(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("contract_end").is_null() | (pl.col("contract_end") >= pl.col("contract_start"))
        )


class Customer(CustomerAttributes, Lineage):
    """A formatted CRM record."""

    source_system: str = pa.Field(isin=SYSTEMS, description="CRM system the record comes from")
    source_customer_id: str = pa.Field(description="Customer id in that CRM system")


def parse(text: str) -> Parsed:
    header = text.lstrip().split("\n", 1)[0]
    if "CustomerNo" in header:
        system, renames = "crm_beta", BETA_NAMES
    elif "customer_id" in header:
        system, renames = "crm_alpha", {}
    else:
        raise Unparseable(f"header matches neither CRM export (alpha or beta): {header[:200]!r}")
    parsed = read_delimited(text, ",", COLUMNS, renames)
    return Parsed(parsed.records.with_columns(source_system=pl.lit(system)), parsed.notes)


def _date(col: str) -> pl.Expr:
    value = pl.col(col).str.strip_chars()
    return pl.coalesce(
        value.str.to_date("%Y-%m-%d", strict=False), value.str.to_date("%d.%m.%Y", strict=False)
    )


def normalize_name(col: str) -> pl.Expr:
    """'DOE, John' and ' john  doe ' -> 'John Doe'."""
    value = pl.col(col).str.strip_chars().str.replace_all(r"\s+", " ")
    last_first = value.str.extract(r"^([^,]+),\s*(.+)$", 1)
    first_last = pl.when(last_first.is_not_null()).then(
        pl.concat_str(value.str.extract(r"^([^,]+),\s*(.+)$", 2), pl.lit(" "), last_first)
    )
    return first_last.otherwise(value).str.to_titlecase()


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    frame = raw.with_columns(
        name=normalize_name("full_name"),
        email_norm=pl.col("email").str.strip_chars().str.to_lowercase(),
        address_norm=pl.col("address")
        .str.strip_chars()
        .str.replace_all(r"[\s,.]+", " ")
        .str.to_uppercase(),
        region_clean=pl.col("region").str.strip_chars().str.to_lowercase(),
        tariff_clean=pl.col("tariff").str.strip_chars().str.to_uppercase(),
        meter=canonical_meter_id("meter_id"),
        start=_date("contract_start"),
        end=_date("contract_end"),
    )
    frame = frame.with_columns(
        name_pseudonym=pseudonymize(frame["name"], ctx.pii_key),
        email_pseudonym=pseudonymize(frame["email_norm"], ctx.pii_key),
        address_pseudonym=pseudonymize(frame["address_norm"], ctx.pii_key),
        reject_reason=add_reasons(
            parse_failures({"meter": "meter_id", "start": "contract_start", "end": "contract_end"})
        ),
    )
    return frame.select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        "source_system",
        pl.col("customer_id").str.strip_chars().alias("source_customer_id"),
        "name_pseudonym",
        "email_pseudonym",
        "address_pseudonym",
        pl.col("city").str.strip_chars().str.to_titlecase(),
        pl.col("region_clean").alias("region"),
        pl.col("tariff_clean").alias("tariff"),
        pl.col("meter").alias("meter_id"),
        pl.col("start").alias("contract_start"),
        pl.col("end").alias("contract_end"),
        # The raw record holds clear PII: rejects keep only its position, the landing keeps the rest.
        pl.lit("<PII withheld: see the landed file at record_no>").alias("raw_record"),
        "reject_reason",
    )


SOURCE = Source(
    name="customers",
    description="Customer master data exported from two CRM systems (CSV)",
    physical=PhysicalFormat(
        format="csv",
        delimiter=",",
        time_zone="dates only",
        notes="two exports told apart by header: CRM alpha (ISO dates, 'First Last') and CRM beta "
        "(dd.mm.yyyy dates, 'LAST, First'); holds PII",
    ),
    schema=Customer,
    key=("source_system", "source_customer_id"),
    parse=parse,
    homogenize=homogenize,
    version="1",
    pii_columns=PII_COLUMNS,
    subject_keys=(("source_system", "source_customer_id"), ("meter_id",)),
)
