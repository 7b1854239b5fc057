"""Projects: one team's sources, views and pipelines, in a folder the platform discovers.

A project is a folder anywhere on disk (``DP_PROJECT=<dir>``; several joined by ``:``); the sample
utility in ``dp_assets/projects/utility`` is the default and is loaded the same way::

    <project>/
      project.yaml          name, description, owner; optional ``sample_data: <file.py>:<function>``
                            (writes sample files), ``subject_keys: [[column, ...], ...]`` (a
                            person's keys in its views) and ``erasure: <file.py>:<function>``
                            (an erasure request -> every key of that person)
      sources/<name>.yaml   a declared source (``dp_assets.sources.declared``)
      sources/<name>.py     a source a declaration cannot say: a module defining ``SOURCE``
      views/<name>.sql      an integrated view (``dp_assets.exploitation.views``)
      views/<name>.py       Python views: a module defining ``ASSETS`` (assets and asset checks)
      pipelines/<name>.yaml a pipeline spec (``dp_assets.analysis.spec``)
      pipelines/<name>.py   a pipeline whose features need code: a module defining ``SPEC``
      *.py                  hooks, named from a declaration as ``hooks.py:function``

Adding a source, view or pipeline is adding one file: there is no registry. A project's Python
files are imported as the package ``dp_projects.<name>`` whatever its folder is called, so they
import each other as ``from dp_projects.<name>.hooks import ...``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

BUILT_IN = Path(__file__).parent / "projects"
DEFAULT = "utility"
PACKAGE = "dp_projects"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
ABOUT = ("name", "description", "owner", "sample_data", "erasure", "subject_keys")  # project.yaml


class ProjectError(Exception):
    """A project cannot be loaded; the message says which file and what to change."""


@dataclass(frozen=True)
class Project:
    name: str
    root: Path
    description: str = ""
    owner: str = "team:data-platform"
    sample_data: str | None = None  # hook reference: writes sample files into an inbox
    erasure: str | None = None  # hook reference: an erasure request -> every key of the person
    subject_keys: tuple[tuple[str, ...], ...] = ()  # a person's keys beyond the sources' own
    sources: dict = field(default_factory=dict)  # name -> Source
    views: list = field(default_factory=list)  # Dagster asset and asset-check definitions
    pipelines: dict = field(default_factory=dict)  # name -> PipelineSpec

    @property
    def package(self) -> str:
        return f"{PACKAGE}.{self.name}"

    def module(self, relative: str | Path) -> types.ModuleType:
        """The project's Python file ``relative`` (e.g. ``sources/customers.py``), imported."""
        parts = Path(relative).with_suffix("").parts
        return importlib.import_module(".".join((self.package, *parts)))

    def hook(self, ref: str) -> Callable[..., Any]:
        """``"hooks.py:function"`` -> that function of the project's ``hooks.py``."""
        file, sep, name = ref.partition(":")
        if not sep or not file.endswith(".py") or not name.isidentifier():
            raise ProjectError(f"{self.name}: hook {ref!r} is not '<file>.py:<function>'")
        if not (self.root / file).is_file():
            raise ProjectError(f"{self.name}: hook {ref!r}: no file {self.root / file}")
        try:
            return getattr(self.module(file), name)
        except AttributeError:
            raise ProjectError(f"{self.name}: hook {ref!r}: {file} defines no {name!r}") from None


@dataclass(frozen=True)
class Projects:
    """Every project the platform serves, with their sources, views and pipelines merged: the
    zones are shared, so two projects naming the same source or pipeline is an error."""

    projects: tuple[Project, ...]
    sources: dict
    views: list
    pipelines: dict

    @property
    def assets(self) -> list:
        from dagster import AssetChecksDefinition

        return [v for v in self.views if not isinstance(v, AssetChecksDefinition)]

    @property
    def checks(self) -> list:
        from dagster import AssetChecksDefinition

        return [v for v in self.views if isinstance(v, AssetChecksDefinition)]

    @property
    def sample_data(self) -> list[tuple[Project, Callable]]:
        return [(p, p.hook(p.sample_data)) for p in self.projects if p.sample_data]


def project_paths(value: str | None = None) -> list[Path]:
    """The folders ``DP_PROJECT`` names (``:``-separated; a bare name is a built-in project)."""
    value = value if value is not None else os.environ.get("DP_PROJECT", "")
    paths = []
    for entry in filter(None, (e.strip() for e in value.split(os.pathsep))):
        built_in = BUILT_IN / entry
        paths.append(built_in if NAME.match(entry) and built_in.is_dir() else Path(entry))
    return paths or [BUILT_IN / DEFAULT]


@cache
def load_projects(paths: tuple[Path, ...]) -> Projects:
    projects = tuple(load_project(p) for p in paths)
    names = [p.name for p in projects]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ProjectError(f"two projects served are named {twice[0]!r}: rename one")
    return Projects(
        projects,
        sources=_merged(projects, "sources"),
        views=[v for p in projects for v in p.views],
        pipelines=_merged(projects, "pipelines"),
    )


def _merged(projects: Iterable[Project], kind: str) -> dict:
    merged, owner = {}, {}
    for project in projects:
        for name, item in getattr(project, kind).items():
            if name in merged:
                raise ProjectError(
                    f"{kind[:-1]} {name!r} is declared by both projects {owner[name]!r} and "
                    f"{project.name!r}: zones are shared, rename one"
                )
            merged[name], owner[name] = item, project.name
    return merged


def load_project(root: Path) -> Project:
    """Read the folder ``root``: ``project.yaml`` and every source, view and pipeline in it."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ProjectError(f"project folder {root} does not exist (DP_PROJECT)")
    about = _read_yaml(root / "project.yaml") if (root / "project.yaml").exists() else {}
    name = about.get("name", root.name)
    if not isinstance(name, str) or not NAME.match(name):
        raise ProjectError(
            f"{root / 'project.yaml'}: name {name!r} must be lower-case letters, digits and _ "
            "(it names the project's Python package)"
        )
    unknown = set(about) - set(ABOUT)
    if unknown:
        raise ProjectError(f"{root / 'project.yaml'}: unknown keys {sorted(unknown)}")
    _register_package(name, root)
    project = Project(
        name=name,
        root=root,
        description=about.get("description", ""),
        owner=about.get("owner", Project.owner),
        sample_data=about.get("sample_data"),
        erasure=about.get("erasure"),
        subject_keys=_subject_keys(root, about.get("subject_keys", [])),
    )
    project.sources.update(_sources(project))
    project.views.extend(_views(project))
    project.pipelines.update(_pipelines(project))
    return project


def _subject_keys(root: Path, keys: Any) -> tuple[tuple[str, ...], ...]:
    """``[[customer_id], [a, b]]``: each key a list of column names, as a source declares them."""
    if not isinstance(keys, list) or not all(
        isinstance(k, list) and k and all(isinstance(c, str) and NAME.match(c) for c in k)
        for k in keys
    ):
        raise ProjectError(
            f"{root / 'project.yaml'}: subject_keys must be a list of keys, each a list of "
            f"column names (e.g. [[customer_id]]), not {keys!r}"
        )
    return tuple(tuple(k) for k in keys)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ProjectError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: expected a mapping of keys to values")
    return data


def _files(project: Project, folder: str, *suffixes: str) -> list[Path]:
    """The project's files ``folder/*<suffix>``, by name: discovery order is stable. A file's stem
    names a table, a schema or an inbox folder, so it must be a plain lower-case name, and one
    name has one file."""
    where = project.root / folder
    found = [p for p in where.iterdir() if p.suffix in suffixes] if where.is_dir() else []
    files = sorted(p for p in found if p.is_file() and not p.name.startswith(("_", ".")))
    for path in files:
        if not NAME.match(path.stem):
            raise ProjectError(
                f"{path}: {path.stem!r} cannot name a table: use lower-case letters, digits and _"
            )
    stems = [p.stem for p in files]
    if twice := sorted({s for s in stems if stems.count(s) > 1}):
        both = [p.name for p in files if p.stem == twice[0]]
        raise ProjectError(f"{where}: {' and '.join(both)} declare the same {twice[0]!r}: keep one")
    return files


def _attribute(project: Project, path: Path, name: str) -> Any:
    relative = path.relative_to(project.root)
    module = project.module(relative)
    if not hasattr(module, name):
        raise ProjectError(f"{path}: defines no {name} (every {relative.parent}/*.py must)")
    return getattr(module, name)


def _named(project: Project, folder: str, attribute: str, load: Callable) -> dict:
    """``folder``'s declarations (``load(path, project)``) and modules (defining ``attribute``),
    by name: the file's."""
    found = {}
    for path in _files(project, folder, ".yaml", ".yml", ".py"):
        item = _attribute(project, path, attribute) if path.suffix == ".py" else load(path, project)
        if item.name != path.stem:
            kind = folder.removesuffix("s")
            raise ProjectError(f"{path}: declares {kind} {item.name!r}: name it after the file")
        found[item.name] = item
    return found


def _sources(project: Project) -> dict:
    from dp_assets.sources.declared import load_source

    return _named(project, "sources", "SOURCE", load_source)


def _views(project: Project) -> list:
    views = []
    for path in _files(project, "views", ".sql", ".py"):
        if path.suffix == ".py":
            views.extend(_attribute(project, path, "ASSETS"))
        else:
            from dp_assets.exploitation.views import load_sql_view

            views.extend(load_sql_view(path, project))
    return views


def _pipelines(project: Project) -> dict:
    from dp_assets.analysis.spec import load_pipeline

    return _named(project, "pipelines", "SPEC", load_pipeline)


def _register_package(name: str, root: Path) -> None:
    """Make ``dp_projects.<name>`` the package of the folder ``root`` (its subfolders are
    subpackages, with or without ``__init__.py``)."""
    if PACKAGE not in sys.modules:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = []
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    package = f"{PACKAGE}.{name}"
    if (loaded := sys.modules.get(package)) is not None:
        if list(loaded.__path__) == [str(root)]:
            return
        # Another folder of that name loaded before in this process (a test's): forget its modules.
        for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[module]
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    setattr(sys.modules[PACKAGE], name, module)


def register_built_in() -> None:
    """Make the built-in projects importable before any is loaded."""
    for root in sorted(BUILT_IN.iterdir()):
        if root.is_dir() and NAME.match(root.name):
            _register_package(root.name, root.resolve())
