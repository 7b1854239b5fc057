"""``dp init``, ``dp add-source`` and ``dp project``: start a project, add a source, see what the
platform discovers."""

from __future__ import annotations

import re
from pathlib import Path

from dp_assets.project import NAME, Projects, ProjectError, load_project

PROJECT_YAML = """\
# A dp_assets project: serve it with DP_PROJECT={folder} (with the sample: DP_PROJECT=utility:{folder})
name: {name}
description: ""
owner: team:{name}
"""
READMES = {
    "sources": "One declaration per source: <name>.yaml (start one with `dp add-source`); files\n"
    "arrive in $DP_DATA_DIR/inbox/<name>/. A <name>.py defining SOURCE where a declaration\n"
    "cannot say it.\n",
    "views": "Integrated views: <name>.sql (becomes exploitation.<name>), or <name>.py defining\n"
    "ASSETS.\n",
    "pipelines": "One spec per analysis need: <name>.yaml, or <name>.py defining SPEC.\n",
}


def init_project(folder: Path, name: str | None = None) -> str:
    folder = folder.expanduser().resolve()
    name = name or re.sub(r"[^a-z0-9_]", "_", folder.name.lower()).lstrip("_0123456789")
    if not NAME.match(name or ""):
        raise SystemExit(f"dp init: {name!r} is not a project name (lower-case letters, digits, _)")
    if (folder / "project.yaml").exists():
        raise SystemExit(f"dp init: {folder / 'project.yaml'} exists: not overwritten")
    for sub, readme in READMES.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "README").write_text(readme)
    (folder / "project.yaml").write_text(PROJECT_YAML.format(folder=folder, name=name))
    return (
        f"created project {name!r} in {folder}\n"
        f"next: dp add-source {folder} <source> --sample <file>, then DP_PROJECT={folder} make ui"
    )


def add_source(folder: Path, source: str, sample: Path) -> str:
    from dp_assets.sources.declared import DeclarationError
    from dp_assets.sources.sniff import scaffold

    folder = folder.expanduser().resolve()
    if not (folder / "project.yaml").exists():
        raise SystemExit(f"dp add-source: {folder} is not a project (no project.yaml): dp init it")
    if not NAME.match(source):
        raise SystemExit(f"dp add-source: {source!r}: use lower-case letters, digits and _")
    target = folder / "sources" / f"{source}.yaml"
    if target.exists():
        raise SystemExit(f"dp add-source: {target} exists: not overwritten")
    target.parent.mkdir(exist_ok=True)
    target.write_text(scaffold(source, sample))
    try:
        load_project(folder)
    except (ProjectError, DeclarationError) as error:  # the guess needs an edit before it loads
        return f"wrote {target}; edit it, it does not load yet: {error}"
    return f"wrote {target}: check the guessed types, units and time zone, then drop files in the inbox"


def describe(catalog: Projects) -> str:
    lines = []
    for project in catalog.projects:
        lines.append(f"project {project.name} ({project.root})")
        lines.append(f"  sources:   {', '.join(project.sources) or '-'}")
        views = sorted({key.to_user_string() for v in project.views for key in v.keys})
        lines.append(f"  views:     {', '.join(views) or '-'}")
        lines.append(f"  pipelines: {', '.join(project.pipelines) or '-'}")
    return "\n".join(lines)
