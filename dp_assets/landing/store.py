"""The persistent landing: immutable, content-hashed copies of every file dropped into the inbox.

``inbox/<source>/<name>`` is copied to ``landing/<source>/<yyyy>/<mm>/<dd>/<hhmmss>_<sha12>_<name>``
(arrival time, UTC), made read-only, and only then removed from the inbox. A file whose content
already landed for that source is recorded as a re-delivery and not copied again. Files outside a
known source folder land under ``_unknown`` and are quarantined, so nothing received is lost.

The copy is written to a temporary name and renamed, so a crash never leaves a partial file; the
path is derived from the file's own attributes, so a retry after a crash overwrites, never forks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dp_assets.landing.schema import UNKNOWN_SOURCE
from dp_assets.settings import Settings

IGNORED_SUFFIXES = (
    ".part",
    ".tmp",
    ".partial",
    ".crdownload",
)  # still being written by a collector
SAFE_NAME_CHARS = 100


@dataclass(frozen=True)
class InboxFile:
    path: Path
    source: str
    original_name: str
    size_bytes: int
    arrival_time: dt.datetime
    changed_ns: int  # st_ctime_ns: set when the file appears, even if the collector kept its mtime


def is_pending(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def scan_inbox(inbox: Path, sources: Iterable[str], newer_than_ns: int = 0) -> list[InboxFile]:
    """Files waiting in the inbox, oldest first. A file outside a known source folder is ``_unknown``."""
    known = set(sources)
    found = []
    if not inbox.is_dir():
        return found
    for root, dirs, names in os.walk(inbox):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if not is_pending(name) or not path.is_file() or path.is_symlink():
                continue
            stat = path.stat()
            if stat.st_ctime_ns <= newer_than_ns:
                continue
            relative = path.relative_to(inbox)
            top = relative.parts[0] if len(relative.parts) > 1 else None
            source = top if top in known else UNKNOWN_SOURCE
            original = str(relative.relative_to(top)) if source != UNKNOWN_SOURCE else str(relative)
            found.append(
                InboxFile(
                    path=path,
                    source=source,
                    original_name=original,
                    size_bytes=stat.st_size,
                    arrival_time=dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
                    changed_ns=stat.st_ctime_ns,
                )
            )
    return sorted(found, key=lambda f: (f.arrival_time, f.source, f.original_name))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_name(name: str) -> str:
    """A file-system-safe rendering of a delivered name: no separators, no leading dots."""
    cleaned = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", name)).lstrip("._")
    return cleaned[-SAFE_NAME_CHARS:] or "unnamed"


def landed_relpath(file: InboxFile, sha256: str) -> Path:
    at = file.arrival_time
    return (
        Path("landing")
        / file.source
        / f"{at:%Y}"
        / f"{at:%m}"
        / f"{at:%d}"
        / f"{at:%H%M%S}_{sha256[:12]}_{safe_name(file.original_name)}"
    )


def copy_immutable(source: Path, target: Path) -> None:
    """Copy through a temporary name and rename, then make the copy read-only."""
    _commit_immutable(target, lambda tmp: shutil.copyfile(source, tmp))


def write_immutable(target: Path, data: bytes) -> None:
    """``copy_immutable`` for content in memory (an erasure's rewritten file)."""
    _commit_immutable(target, lambda tmp: tmp.write_bytes(data))


def _commit_immutable(target: Path, write: Callable[[Path], object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)  # a crashed attempt's leftover is read-only: cannot be overwritten
    write(tmp)
    os.chmod(tmp, 0o444)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def quarantine(
    settings: Settings, source: str, landed: Path, sha256: str, name: str, reason: str
) -> Path:
    """Put a copy of a landed file in ``quarantine/<source>/`` beside a ``.reason.txt``."""
    target = settings.quarantine / source / f"{sha256[:12]}_{safe_name(name)}"
    if not target.exists():
        copy_immutable(settings.data_dir / landed, target)
    target.with_name(target.name + ".reason.txt").write_text(
        f"source: {source}\nfile: {name}\nsha256: {sha256}\nlanded: {landed}\nreason: {reason}\n"
    )
    return target


def land_files(
    settings: Settings,
    files: list[InboxFile],
    landed: dict[tuple[str, str], str],
    recorded: set[tuple] = frozenset(),
) -> list[dict]:
    """Copy new content into the persistent landing; return one manifest row per delivery.

    ``landed`` maps (source, sha256) to the landed path of content seen before; it is updated so
    the same content twice in one batch is one landing and one re-delivery. ``recorded`` holds the
    ``delivery_key`` of deliveries already in the manifest: such a file is a leftover of a run that
    committed but died before clearing the inbox, and is not recorded twice.
    """
    now = dt.datetime.now(dt.UTC)
    rows = []
    for file in files:
        sha = sha256_of(file.path)
        if delivery_key(file.source, file.original_name, file.changed_ns) in recorded:
            continue
        previous = landed.get((file.source, sha))
        path = previous or str(landed_relpath(file, sha))
        if previous is None:
            copy_immutable(file.path, settings.data_dir / path)
            landed[(file.source, sha)] = path
        reason = None
        if file.source == UNKNOWN_SOURCE:
            reason = "not in a known source folder: collectors drop files into inbox/<source>/"
            quarantine(settings, UNKNOWN_SOURCE, Path(path), sha, file.original_name, reason)
        rows.append(
            {
                "source": file.source,
                "original_name": file.original_name,
                "size_bytes": file.size_bytes,
                "sha256": sha,
                "arrival_time": file.arrival_time,
                "inbox_changed_ns": file.changed_ns,
                "landed_at": now,
                "landed_path": path,
                "redelivery": previous is not None,
                "quarantine_reason": reason,
            }
        )
    return rows


def delivery_key(source: str, original_name: str, changed_ns: int) -> tuple:
    """What identifies one delivery: the same name with the same inode change time is the same file."""
    return (source, original_name, changed_ns)


def clear_inbox(files: Iterable[InboxFile]) -> None:
    """Remove landed files from the inbox (only after their manifest rows are committed)."""
    for file in files:
        file.path.unlink(missing_ok=True)
