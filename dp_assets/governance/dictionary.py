"""The data dictionary, built from what the code already declares (pure: no Dagster, no I/O).

Every table's columns, types and descriptions come from the Pandera schemas (through each asset's
``dagster/column_schema``), owners, zones and upstream assets from the asset graph, the source
format from the landing assets' physical metadata, and the stored types from DuckDB itself. A
stored column that no schema describes shows up with no description: the check fails on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pandera.polars as pa

PII_SUFFIX = "_pseudonym"  # PII columns hold keyed hashes; raw PII exists only in landed files


@dataclass(frozen=True)
class CatalogTable:
    """What the asset graph says about one stored table."""

    table: str
    asset: str
    zone: str
    owner: str
    description: str
    upstream: list[str]
    source_format: str | None
    columns: list[tuple[str, str, str | None]]  # (name, declared type, description)


class DataDictionaryRow(pa.DataFrameModel):
    table_name: str = pa.Field(description="Schema-qualified DuckDB table")
    column_name: str = pa.Field(description="Column of the table")
    declared_type: str = pa.Field(
        nullable=True,
        description="Type in the Pandera schema; null when no schema declares the column",
    )
    stored_type: str = pa.Field(
        nullable=True, description="Type DuckDB stores; null when the table is not stored yet"
    )
    description: str = pa.Field(
        nullable=True, description="What the column means, from the Pandera schema"
    )
    pii: str = pa.Field(
        isin=("none", "pseudonymized"), description="Whether the column derives from personal data"
    )
    owner: str = pa.Field(description="Team owning the table")
    zone: str = pa.Field(description="Zone or pipeline the table belongs to (its asset group)")
    asset: str = pa.Field(description="Dagster asset that writes the table")
    source_format: str = pa.Field(
        nullable=True, description="Raw format the data came in, for tables read from one source"
    )
    upstream: str = pa.Field(description="Assets the table is built from, comma-separated")

    class Config:
        strict = True
        unique = ["table_name", "column_name"]


def catalog_entry(table: str, schema: type[pa.DataFrameModel], **facts) -> CatalogTable:
    """A table written outside the one-asset-one-table rule (bookkeeping shared by several assets)."""
    columns = [(n, str(c.dtype), c.description) for n, c in schema.to_schema().columns.items()]
    return CatalogTable(
        table=table, description=(schema.__doc__ or "").strip(), columns=columns, **facts
    )


def inherited(undeclared: pl.DataFrame, declared: pl.DataFrame) -> pl.DataFrame:
    """Undeclared columns that a table the asset reads has under the same name are that column
    passed through (a pipeline's sandbox selecting from a view, its features from the sandbox):
    they get its description, saying where from, through as many tables as it passed; failing
    that, the description a table reading it declares. Others keep none."""
    tables = pl.concat([undeclared.select("asset", "table_name"),
                        declared.select("asset", "table_name")]).unique()  # fmt: skip
    reads = (
        undeclared.select("table_name", "column_name", up=pl.col("upstream").str.split(", "))
        .explode("up")
        .join(tables.rename({"asset": "up", "table_name": "from_table"}), on="up")
        .drop("up")
    )
    known = declared.select(
        from_table="table_name", column_name="column_name", text="description"
    ).drop_nulls("text")
    found = pl.DataFrame(
        schema={"table_name": pl.String, "column_name": pl.String, "text": pl.String}
    )
    while True:
        new = (
            reads.join(found, on=["table_name", "column_name"], how="anti")
            .join(known, on=["from_table", "column_name"])
            .group_by("table_name", "column_name")
            .agg(pl.col("text").sort().first())
        )
        if new.is_empty():
            break
        found = pl.concat([found, new])
        known = pl.concat([known, new.rename({"table_name": "from_table"})])
    # Still undescribed: a column a reader of the table declares (a sandbox's entity column,
    # computed in its SQL, that the pipeline's features table declares).
    readers = (
        pl.concat(
            [declared.select("table_name", "upstream"), undeclared.select("table_name", "upstream")]
        )
        .select(from_table="table_name", up=pl.col("upstream").str.split(", "))
        .explode("up")
        .join(tables.rename({"asset": "up"}), on="up")
        .select("table_name", "from_table")
        .unique()
    )
    below = (
        undeclared.select("table_name", "column_name")
        .join(found, on=["table_name", "column_name"], how="anti")
        .join(readers, on="table_name")
        .join(known, on=["from_table", "column_name"])
    )
    found = pl.concat(
        [found, below.group_by("table_name", "column_name").agg(pl.col("text").sort().first())]
    )
    origin = (
        pl.concat([reads.join(known, on=["from_table", "column_name"]), below], how="diagonal")
        .group_by("table_name", "column_name")
        .agg(pl.col("from_table").sort().first())
    )
    return (
        undeclared.join(
            found.join(origin, on=["table_name", "column_name"]),
            on=["table_name", "column_name"],
            how="left",
        )
        .with_columns(
            description=pl.coalesce("description", pl.format("{} (from {})", "text", "from_table"))
        )
        .drop("text", "from_table")
    )


def build_dictionary(tables: list[CatalogTable], stored: pl.DataFrame) -> pl.DataFrame:
    """Rows for every declared column, plus every stored column nobody declared.

    ``stored`` has the DuckDB columns: table_name, column_name, stored_type.
    """
    declared = pl.DataFrame(
        [
            {
                "table_name": t.table,
                "column_name": name,
                "declared_type": dtype,
                "description": text,
                "pii": "pseudonymized" if name.endswith(PII_SUFFIX) else "none",
                "owner": t.owner,
                "zone": t.zone,
                "asset": t.asset,
                "source_format": t.source_format,
                "upstream": ", ".join(sorted(t.upstream)),
            }  # fmt: skip
            for t in tables
            for name, dtype, text in t.columns
        ],
        schema={c: pl.String for c in DataDictionaryRow.to_schema().columns if c != "stored_type"},
    )
    # From the tables, not their declared columns: a table may declare none (a YAML pipeline's
    # sandbox), and its stored columns still belong to its asset.
    table_facts = pl.DataFrame(
        [
            {
                "table_name": t.table,
                "owner": t.owner,
                "zone": t.zone,
                "asset": t.asset,
                "source_format": t.source_format,
                "upstream": ", ".join(sorted(t.upstream)),
            }
            for t in tables
        ],  # fmt: skip
        schema={
            c: pl.String
            for c in ("table_name", "owner", "zone", "asset", "source_format", "upstream")
        },  # fmt: skip
    ).unique("table_name", keep="first", maintain_order=True)
    # Stored columns no schema declares, including whole tables no asset declares: no description.
    undeclared = (
        stored.join(declared, on=["table_name", "column_name"], how="anti")
        .join(table_facts, on="table_name", how="left")
        .with_columns(
            declared_type=pl.lit(None, pl.String),
            description=pl.lit(None, pl.String),
            pii=pl.lit("none"),
            owner=pl.col("owner").fill_null("unknown"),
            zone=pl.col("zone").fill_null(pl.col("table_name").str.split(".").list.first()),
            asset=pl.col("asset").fill_null("none"),
            upstream=pl.col("upstream").fill_null(""),
        )
    )
    rows = pl.concat(
        [
            declared.join(stored, on=["table_name", "column_name"], how="left"),
            inherited(undeclared, declared),
        ],
        how="diagonal",
    )
    return rows.select(list(DataDictionaryRow.to_schema().columns)).sort(
        "zone", "table_name", "column_name"
    )


def markdown_document(dictionary: pl.DataFrame, tables: list[CatalogTable]) -> str:
    """One section per table: what it is, who owns it, where it comes from, its columns."""
    lines = [
        "# Data dictionary",
        "",
        "Generated from the Pandera schemas and the asset graph; do not edit.",
        "",
    ]
    for t in sorted(tables, key=lambda t: (t.zone, t.table)):
        lines += [f"## `{t.table}`", "", t.description, "",
                  f"- asset: `{t.asset}`; zone: {t.zone}; owner: {t.owner}",
                  f"- upstream: {', '.join(f'`{u}`' for u in sorted(t.upstream)) or 'the inbox'}"]  # fmt: skip
        if t.source_format:
            lines.append(f"- source format: {t.source_format}")
        lines += ["", "| column | type | stored as | PII | description |", "|---|---|---|---|---|"]
        for row in dictionary.filter(pl.col("table_name") == t.table).iter_rows(named=True):
            lines.append(
                f"| `{row['column_name']}` | {row['declared_type'] or ''} | {row['stored_type'] or ''} "
                f"| {row['pii']} | {row['description'] or '**undescribed**'} |"
            )
        lines.append("")
    return "\n".join(lines)
