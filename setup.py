from setuptools import find_namespace_packages, setup

setup(
    name="dp_assets",
    version="0.1.0",
    description="A data-product platform on Dagster software-defined assets",
    # Namespace packages too: a project's folders (dp_assets/projects/utility/...) have no
    # __init__.py, as a user's need not; their declarations ship with them.
    packages=find_namespace_packages(include=["dp_assets", "dp_assets.*"]),
    package_data={"dp_assets.projects": ["**/*.yaml", "**/*.sql"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "dagster==1.13.*",
        "dagster-webserver==1.13.*",
        "dagster-duckdb",
        "dagster-duckdb-polars",
        "dagster-mlflow",
        "dagster-postgres",  # deploy/dagster.yaml: PostgreSQL instance storage
        "mlflow>=3,<4",
        # Pinned to the version the extension wheels below are built for (duckdb 2.0 would also
        # break dagster-duckdb-polars: no DuckDBPyConnection.arrow; see FIELD_NOTES).
        "duckdb==1.5.5",
        # The DuckLake warehouse (DP_WAREHOUSE=ducklake) loads these by path: `INSTALL` needs
        # network, and a wheel ships with the venv like any other dependency.
        "duckdb-extension-ducklake==1.5.5",
        "duckdb-extension-postgres-scanner==1.5.5",
        "polars>=1.30",
        "pandera[polars]>=0.24",
        "lightgbm>=4",
        # dagster-mlflow pins pandas<3; said here so the resolver never has to guess.
        "pandas<3",
    ],
    # duckdb-cli: the `duckdb` shell for querying the warehouse, same version line as the library.
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist", "ruff", "duckdb-cli==1.5.5"],
        # A lake's data path on object storage (s3://, gs://, az://): DuckDB's extensions for it.
        "object-storage": ["duckdb-extension-httpfs==1.5.5", "duckdb-extension-azure==1.5.5"],
    },
    entry_points={"console_scripts": ["dp=dp_assets.cli:main"]},
)
