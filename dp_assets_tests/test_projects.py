"""Projects: discovery of a folder's sources, views and pipelines, the errors a user meets, and the
`dp init` / `dp add-source` / `dp project` commands."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from dp_assets.project import ProjectError, load_project, load_projects, project_paths
from dp_assets_tests.conftest import REPO, cli_env

CSV_SOURCE = """\
description: Gadgets sold, one file per day
pattern: "*.csv"
columns:
  gadget: {required: true, description: Gadget id}
  sold_at: {type: timestamp, format: "%Y-%m-%d %H:%M", time_zone: Europe/Paris, description: When}
  price: {type: float, unit: cents, canonical: currency, ge: 0, description: Price paid}
key: [gadget, sold_at]
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_a_folder_is_a_project_and_each_file_one_source(tmp_path):
    root = write(tmp_path / "shop", {"project.yaml": "name: shop\n",
                                     "sources/gadgets.yaml": CSV_SOURCE,
                                     "sources/README": "not a declaration\n"})  # fmt: skip
    project = load_project(root)
    assert (project.name, list(project.sources)) == ("shop", ["gadgets"])
    assert project.sources["gadgets"].pattern == "*.csv"
    # Served next to the sample utility: both projects' sources, one catalog.
    both = load_projects((REPO / "dp_assets/projects/utility", root))
    assert {"gadgets", "meters_vendor_a"} <= set(both.sources)


def test_project_paths_name_built_in_projects_or_folders(tmp_path):
    assert project_paths("") == [REPO / "dp_assets/projects/utility"]
    assert project_paths(f"utility:{tmp_path}") == [REPO / "dp_assets/projects/utility", tmp_path]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"project.yaml": "name: My Shop\n"}, "name 'My Shop' must be lower-case"),
        ({"project.yaml": "name: shop\nowners: x\n"}, "unknown keys ['owners']"),
        ({"project.yaml": "name: [shop\n"}, "not valid YAML"),
        (
            {"project.yaml": "name: shop\n", "sources/gadgets.py": "X = 1\n"},
            "sources/gadgets.py: defines no SOURCE",
        ),
        (
            {"project.yaml": "name: shop\n", "pipelines/p.py": "import nothing_here\n"},
            "No module named 'nothing_here'",
        ),
        (
            {"project.yaml": "name: shop\n", "sources/pjm-load.yaml": CSV_SOURCE},
            "'pjm-load' cannot name a table",
        ),
        (
            {"project.yaml": "name: shop\n", "pipelines/p.yaml": "x: 1\n", "pipelines/p.py": ""},
            "p.py and p.yaml declare the same 'p'",
        ),
    ],
)
def test_a_broken_project_says_which_file_and_what(tmp_path, files, message):
    root = write(tmp_path / "shop", files)
    with pytest.raises((ProjectError, ImportError), match=message.replace("[", r"\[")):
        load_project(root)


def test_two_projects_declaring_one_source_is_an_error(tmp_path):
    roots = [
        write(tmp_path / n, {"project.yaml": f"name: {n}\n", "sources/gadgets.yaml": CSV_SOURCE})
        for n in ("shop_a", "shop_b")
    ]
    with pytest.raises(ProjectError, match="'gadgets' is declared by both projects 'shop_a'"):
        load_projects(tuple(roots))


def test_hooks_are_the_projects_own_modules(tmp_path):
    root = write(tmp_path / "hooked", {
        "project.yaml": "name: hooked\n",
        "hooks.py": "from dp_projects.hooked.helpers import twice\n\ndef four():\n    return twice(2)\n",
        "helpers.py": "def twice(x):\n    return 2 * x\n",
    })  # fmt: skip
    project = load_project(root)
    assert project.hook("hooks.py:four")() == 4
    with pytest.raises(ProjectError, match="defines no 'five'"):
        project.hook("hooks.py:five")
    with pytest.raises(ProjectError, match="is not '<file>.py:<function>'"):
        project.hook("hooks.four")


def test_dp_init_add_source_and_project(tmp_path):
    env = cli_env(tmp_path)
    dp = str(REPO / ".venv/bin/dp")
    folder = tmp_path / "my-grid"
    out = subprocess.run([dp, "init", str(folder)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "created project 'my_grid'" in out.stdout
    again = subprocess.run([dp, "init", str(folder)], env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "not overwritten" in again.stderr
    sample = tmp_path / "load.csv"
    sample.write_text("ds,y\n2024-03-01 00:00:00, 0.219 \n2024-03-01 01:00:00,NULL\n")
    out = subprocess.run([dp, "add-source", str(folder), "load", "--sample", str(sample)],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (folder / "sources/load.yaml").exists()
    env["DP_PROJECT"] = f"utility:{folder}"
    out = subprocess.run([dp, "project"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "project my_grid" in out.stdout and "sources:   load" in out.stdout
    # A guess that needs an edit (a column named like one the platform adds) is written, and said.
    sample.write_text("record_no,value\n1,2\n")
    out = subprocess.run([dp, "add-source", str(folder), "numbered", "--sample", str(sample)],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "edit it, it does not load yet" in out.stdout
    assert "'record_no' is a column the platform adds" in out.stdout


THROW_AWAY = {
    "project.yaml": "name: gadgets_team\nowner: team:gadgets\n",
    "views/gadgets_latest.sql": """\
        /*
        description: Each gadget's latest sale
        key: [gadget]
        columns:
          gadget: Gadget id
          sold_at: When it was sold, UTC
          price: Price paid, EUR
          colour: Its colour
          returned: yes or no
        */
        SELECT gadget, sold_at, price, colour, returned FROM formatted.gadgets
        QUALIFY row_number() OVER (PARTITION BY gadget ORDER BY sold_at DESC) = 1
        """,
    "pipelines/gadget_returns.yaml": """\
        description: Will the buyer return the gadget?
        task: classification
        sandbox: SELECT * FROM exploitation.gadgets_latest
        entity: {column: gadget, pattern: "^G-[0-9]{5}$"}
        label: {column: returned, positive: "yes"}
        exclude: [sold_at]
        features: all
        split: {by: holdout, fraction: 0.25, seed: 1}
        gate: {min_improvement_vs_baseline: 0.1}
        """,
}


GADGETS = CSV_SOURCE.replace(
    "key: [gadget, sold_at]",
    "  colour: {isin: [red, green, blue], description: Colour}\n"
    '  returned: {isin: ["yes", "no"], description: Returned within 30 days}\n'
    "key: [gadget, sold_at]",
)


def gadgets_csv(n: int = 800, seed: int = 5) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = ["gadget,sold_at,price,colour,returned"]
    for i in range(n):
        colour = rng.choice(["red", "green", "blue"])
        price = int(rng.integers(500, 20_000))
        odds = 0.15 + 0.5 * (colour == "red") * (price > 10_000)
        returned = "yes" if rng.random() < odds else "no"
        lines.append(
            f"G-{i:05d},2024-03-{1 + i % 28:02d} 10:{i % 60:02d},{price},{colour},{returned}"
        )
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_a_throw_away_project_next_to_the_sample_keeps_select_star_green(tmp_path):
    """`dagster asset materialize --select '*'` with a user's project (a source, a view, a
    snapshot pipeline) served beside the sample utility: green while the user's inbox is empty
    (their view and pipeline skip, saying why), green once their files arrive."""
    root = write(tmp_path / "gadgets_team", {**THROW_AWAY, "sources/gadgets.yaml": GADGETS})
    env = cli_env(tmp_path, DP_PROJECT=f"utility:{root}")
    bin_ = REPO / ".venv/bin"
    made = subprocess.run([bin_ / "dp", "sample-data", "--days", "100", "--meters", "40",
                           "--seed", "3"], env=env, capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr

    def materialize_all() -> str:
        run = subprocess.run(
            [bin_ / "dagster", "asset", "materialize", "-m", "dp_assets", "--select", "*"],
            env=env, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stderr

    log = materialize_all()
    assert "skipped" in log and "gadgets_latest" in log
    inbox = tmp_path / "data" / "inbox" / "gadgets"
    inbox.mkdir(parents=True)
    (inbox / "gadgets_2024-03.csv").write_text(gadgets_csv())
    materialize_all()
    import duckdb

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM exploitation.gadgets_latest").fetchone()[0] == 800
        auc = conn.sql(
            "SELECT value FROM gadget_returns.evaluation WHERE model = 'challenger' "
            "AND metric = 'roc_auc' AND segment_column = 'all'"
        ).fetchone()[0]
        assert auc > 0.6, auc
        # Columns the user described once (source, view) are described downstream too.
        undescribed = conn.sql(
            "SELECT table_name, column_name FROM governance.data_dictionary "
            "WHERE description IS NULL AND (table_name LIKE 'gadget%' OR table_name LIKE '%gadgets%')"
        ).fetchall()
        assert undescribed == []
        # The sample utility's chain ran beside it as always.
        assert conn.sql("SELECT count(*) FROM energy_forecast.predictions").fetchone()[0] > 0


@pytest.mark.slow
def test_a_project_served_alone_materializes_select_star(tmp_path):
    """`DP_PROJECT=<a user's folder>` only (a declared CSV source and a SQL view): `dagster asset
    materialize --select '*'` succeeds and builds the view; none of the sample utility's views
    (nor their tables) are served with it."""
    files = {"project.yaml": "name: gadgets_team\n", "sources/gadgets.yaml": GADGETS,
             "views/gadgets_latest.sql": THROW_AWAY["views/gadgets_latest.sql"]}  # fmt: skip
    root = write(tmp_path / "gadgets_team", files)
    env = cli_env(tmp_path, DP_PROJECT=str(root))
    inbox = tmp_path / "data" / "inbox" / "gadgets"
    inbox.mkdir(parents=True)
    (inbox / "gadgets_2024-03.csv").write_text(gadgets_csv(120))
    run = subprocess.run(
        [REPO / ".venv/bin/dagster", "asset", "materialize", "-m", "dp_assets", "--select", "*"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "meter_readings" not in run.stderr and "reporting/kpis" not in run.stderr
    import duckdb

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM exploitation.gadgets_latest").fetchone()[0] == 120
        tables = {t for (t,) in conn.sql(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()}  # fmt: skip
        assert "reporting.model_accuracy" in tables
        assert not {"exploitation.customers", "exploitation.meter_readings"} & tables


def test_a_misspelt_table_in_a_view_is_an_error_naming_it(tmp_path):
    from dp_assets.definitions import build_defs
    from dp_assets.settings import Settings

    root = write(tmp_path / "typo", {
        "project.yaml": "name: typo\n",
        "sources/gadgets.yaml": CSV_SOURCE,
        "views/priced.sql": "/*\ncolumns:\n  price: Price\n*/\nSELECT price FROM formatted.gadget\n",
    })  # fmt: skip
    with pytest.raises(ProjectError, match=r"exploitation/priced reads formatted/gadget, which no "
                       r"source or view defines \(did you mean formatted/gadgets\?\)"):  # fmt: skip
        build_defs(Settings(tmp_path / "data", (root,)))
