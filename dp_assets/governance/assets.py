"""Dagster wiring of the governance zone: the data dictionary as a table and a document."""

import hashlib
import os

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    MetadataValue,
    asset,
)

from dp_assets.governance.dictionary import (
    CatalogTable,
    DataDictionaryRow,
    build_dictionary,
    catalog_entry,
    markdown_document,
)
from dp_assets.metadata import (
    LAST_IN_RUN,
    OWNER,
    WAREHOUSE_POOL,
    markdown,
    plain,
    spec_metadata,
    stored_table_results,
    stored_tables,
    schema_check_spec,
)
from dp_assets.resources import DataDir, Warehouse
from dp_assets.resources.tables import replace_table_with

TABLE = "governance.data_dictionary"
KEY = AssetKey(["governance", "data_dictionary"])
DICTIONARY_CRON = "30 3 * * *"  # daily, after the night's deliveries and the training at 03:00
STORED_COLUMNS = """
    SELECT schema_name || '.' || table_name AS table_name, column_name, data_type AS stored_type
    FROM duckdb_columns() WHERE database_name = current_database() AND NOT internal
"""


def catalog(specs: list) -> list[CatalogTable]:
    """One entry per stored table, from the asset specs (the first asset writing a shared table)."""
    by_key = {spec.key: spec for spec in specs}
    tables: dict[str, CatalogTable] = {}
    for table, spec in stored_tables(specs).items():
        zone, name = spec.key.path[0], spec.key.path[-1]
        landing = (
            by_key.get(AssetKey(["landing", name.removesuffix("_rejects")]))
            if zone == "formatted"
            else None
        )
        tables[table] = CatalogTable(
            table=table,
            asset=spec.key.to_user_string(),
            zone=spec.group_name,
            owner=", ".join(spec.owners),
            description=spec.description or "",
            upstream=[dep.asset_key.to_user_string() for dep in spec.deps],
            source_format=plain(landing.metadata.get("physical/format")) if landing else None,
            columns=[
                (c.name, c.type, c.description)
                for c in spec.metadata["dagster/column_schema"].columns
            ],
        )
    return list(tables.values()) + bookkeeping_tables(specs)


def bookkeeping_tables(specs: list) -> list[CatalogTable]:
    """Tables several assets share, declared here since no single asset owns them: the formatted
    zone's file outcomes, the quarantine's acknowledgements, and the ``_platform`` tables an asset lists as its bookkeeping
    (``platform/bookkeeping``), upstream of them what that asset reads."""
    from dp_assets.exploitation.incremental import BOOKKEEPING
    from dp_assets.formatted.assets import OUTCOMES
    from dp_assets.formatted.schema import FileOutcome
    from dp_assets.landing.quarantine import ACKS, QuarantineAck

    return [
        catalog_entry(
            OUTCOMES, FileOutcome, asset="formatted/<source> (each its own rows)",
            zone="formatted", owner=OWNER, upstream=["landing/<source>"],
            source_format=None,
        ),
        catalog_entry(
            ACKS, QuarantineAck, asset="written by `dp quarantine ack` (read by formatted/<source>)",
            zone="landing", owner=OWNER, upstream=[], source_format=None,
        ),
        *(catalog_entry(
            table, BOOKKEEPING[table], asset=f"{spec.key.to_user_string()} (its bookkeeping)",
            zone="_platform", owner=OWNER,
            upstream=[dep.asset_key.to_user_string() for dep in spec.deps], source_format=None,
        ) for spec in sorted(specs, key=lambda s: s.key)
          for table in plain(spec.metadata.get("platform/bookkeeping")) or ()),
    ]  # fmt: skip


def build_data_dictionary_asset(assets: list):
    """The dictionary of the tables ``assets`` (assets or specs) store.

    It reads the asset specs and the warehouse's catalog, not the tables: no lineage edge from
    each (the graph drew one from every table). Its code version is a digest of the catalog it
    documents, so that Dagster sees it change whenever a table's declared columns, descriptions,
    owner or upstream do; automation then rebuilds it. The stored side (the types DuckDB holds)
    follows when the changed assets rewrite their tables, after the next delivery for daily
    data: a daily rebuild takes that in, and a run that includes the dictionary runs it last.
    """
    specs = [spec for a in assets for spec in (a.specs if isinstance(a, AssetsDefinition) else [a])]
    itself = catalog_entry(
        TABLE, DataDictionaryRow, asset=KEY.to_user_string(), zone="governance", owner=OWNER,
        upstream=["every table above"], source_format=None,
    )  # fmt: skip
    tables = [*catalog(specs), itself]
    digest = hashlib.sha256(repr(tables).encode()).hexdigest()[:12]

    @asset(
        key=KEY,
        description=f"Every table of every zone with its columns, types, descriptions, PII flag, owner, "
        f"source format and upstream assets ({TABLE}, and docs/data_dictionary.md in the data dir), "
        "generated from the Pandera schemas and the asset graph. Rebuilt when a declared schema "
        "changes, daily, and last in a run that includes it",
        group_name="governance",
        owners=[OWNER],
        kinds={"duckdb", "markdown"},
        code_version=digest,
        op_tags=LAST_IN_RUN,
        automation_condition=(
            AutomationCondition.code_version_changed()
            | AutomationCondition.cron_tick_passed(DICTIONARY_CRON)
        )
        & ~AutomationCondition.in_progress(),
        metadata=spec_metadata(DataDictionaryRow, TABLE),
        check_specs=[
            schema_check_spec(KEY),
            AssetCheckSpec(
                "every_column_described",
                asset=KEY,
                description="Every column stored in the warehouse has a description in a Pandera schema",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def data_dictionary(data_dir: DataDir, warehouse: Warehouse):
        with warehouse.transaction() as conn:
            dictionary = build_dictionary(tables, conn.execute(STORED_COLUMNS).pl())
            replace_table_with(conn, TABLE, dictionary)
            document = data_dir.settings.data_dir / "docs" / "data_dictionary.md"
            document.parent.mkdir(parents=True, exist_ok=True)
            tmp = document.with_suffix(".tmp")
            tmp.write_text(markdown_document(dictionary, tables))
            os.replace(tmp, document)
            materialization, check = stored_table_results(
                conn, TABLE, DataDictionaryRow, KEY, tables=MetadataValue.int(len(tables)),
                document=MetadataValue.path(str(document)),
            )  # fmt: skip
        undescribed = dictionary.filter(dictionary["description"].is_null())
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="every_column_described",
            passed=undescribed.is_empty(),
            metadata={
                "undescribed columns": MetadataValue.int(undescribed.height),
                "columns": markdown(
                    undescribed.select("table_name", "column_name", "stored_type"), rows=50
                ),
            },
        )

    return data_dictionary
