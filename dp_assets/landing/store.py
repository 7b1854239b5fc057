"""The persistent landing: immutable, content-hashed copies of every file dropped into the inbox.

``inbox/<source>/<name>`` is copied to ``landing/<source>/<yyyy>/<mm>/<dd>/<hhmmss>_<sha12>_<name>``
(arrival time, UTC), made read-only, and only then removed from the inbox. A file whose content
already landed for that source is recorded as a re-delivery and not copied again. Files outside a
known source folder land under ``_unknown`` and are quarantined, so nothing received is lost.

The copy is written to a temporary name and renamed, so a crash never leaves a partial file; the
path is derived from the file's own attributes, so a retry after a crash overwrites, never forks.
Each path is journaled (``landing/.pending-copies``) before it is written: the next run deletes
the copies a failed run left that no committed delivery references, and their ``.tmp`` files.

The inbox is written by others, so nothing in it is trusted. A file is taken only once it has been
quiet for ``DP_INBOX_QUIET_S`` (its mtime that long ago; a collector writing without the ``.part``
protocol may still be appending), or at once when its inode changed after its last write (renamed
into place, or its mtime set by the collector: ``mv``, ``cp -p``, ``rsync -t``). It is opened once,
without following symlinks, checked to be the regular file the scan saw, and hashed and copied
from that one descriptor. Symlinks, hard links (content shared with a file elsewhere), special
files and dot-files are never read: they stay in the inbox and are reported as skipped. A file
changed after its copy stays in the inbox too: it is a new delivery for the next run.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dp_assets.failpoints import crash_point
from dp_assets.landing.schema import UNKNOWN_SOURCE
from dp_assets.settings import Settings, access

IGNORED_SUFFIXES = (
    ".part",
    ".tmp",
    ".partial",
    ".crdownload",
)  # still being written by a collector
SAFE_NAME_CHARS = 100
PENDING_COPIES = ".pending-copies"  # in landing/: paths written by a run not yet committed
BLOCK = 1 << 20
# Opening a name swapped for a FIFO or a device must neither block nor take a terminal.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class InboxFile:
    path: Path
    source: str
    original_name: str  # readable and valid text: bytes that are not UTF-8 shown as \xNN
    original_name_hex: str | None  # the name's raw bytes when they are not UTF-8
    size_bytes: int
    arrival_time: dt.datetime
    changed_ns: int  # st_ctime_ns: set when the file appears, even if the collector kept its mtime
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns as scanned


@dataclass(frozen=True)
class Skipped:
    """An inbox entry not taken, and why. ``waiting`` ones are taken once quiet; ``refused`` ones
    stay until someone acts (never read: their content appears nowhere)."""

    source: str
    name: str
    why: str
    kind: str  # "waiting", "in progress" (a .part name), "refused" or "changed"
    changed_ns: int


@dataclass
class Inbox:
    files: list[InboxFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Landing:
    """What ``land_files`` did: manifest rows, the files it accounted for (to clear from the
    inbox) and those it left (changed or swapped since the scan)."""

    rows: list[dict] = field(default_factory=list)
    taken: list[InboxFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class NotAsScanned(Exception):
    """The inbox name no longer holds the regular file the scan saw."""


def display_name(raw: bytes) -> tuple[str, str | None]:
    """A delivered name (or relative path) as text, and its raw bytes in hex when they are not
    UTF-8: the text shows such bytes as ``\\xNN``, and the hex keeps the name exact, so a real name
    spelling ``\\xff`` (no hex) cannot be mistaken for the byte."""
    try:
        return raw.decode(), None
    except UnicodeDecodeError:
        return raw.decode(errors="backslashreplace"), raw.hex()


def refused(st: os.stat_result) -> str | None:
    """Why a file is not taken whatever its name, from its (l)stat; None if it may be."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device): not read"
    if st.st_nlink > 1:
        return f"a hard link ({st.st_nlink} links): shares its content with another file; not read"
    return None


def scan_inbox(settings: Settings, sources: Iterable[str], newer_than_ns: int = 0) -> Inbox:
    """Files waiting in the inbox, oldest first, and the entries skipped. A file outside a known
    source folder is ``_unknown``. Only entries whose inode changed after ``newer_than_ns``."""
    known, quiet_ns = set(sources), settings.inbox_quiet_s * 1e9
    inbox, found = settings.inbox, Inbox()
    if not inbox.is_dir():
        return found
    now_ns = time.time_ns()

    def place(path: Path) -> tuple[str, str, str | None]:
        relative = path.relative_to(inbox)
        top = relative.parts[0] if len(relative.parts) > 1 else None
        source = top if top in known else UNKNOWN_SOURCE
        inside = relative.relative_to(top) if source != UNKNOWN_SOURCE else relative
        return source, *display_name(os.fsencode(inside))

    def skip(path: Path, st: os.stat_result, why: str, kind: str = "refused") -> None:
        source, name, _ = place(path)
        found.skipped.append(Skipped(source, name, why, kind, st.st_ctime_ns))

    for root, dirs, names in os.walk(inbox):
        for d in list(dirs):
            path = Path(root) / d
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                dirs.remove(d)
                continue
            if stat.S_ISLNK(st.st_mode) or d.startswith("."):
                dirs.remove(d)
                if st.st_ctime_ns > newer_than_ns:
                    link = stat.S_ISLNK(st.st_mode)
                    skip(path, st, "a symlink: not followed" if link else "a hidden folder")
        for name in names:
            path = Path(root) / name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if st.st_ctime_ns <= newer_than_ns:
                continue
            if why := refused(st):
                skip(path, st, why)
            elif name.startswith("."):
                skip(path, st, "a dot-file: taken for a collector's temporary file; rename it")
            elif name.endswith(IGNORED_SUFFIXES):
                skip(path, st, "still being written: lands once renamed", "in progress")
            elif st.st_ctime_ns <= st.st_mtime_ns and now_ns - st.st_mtime_ns < quiet_ns:
                # Written to less than the quiet time ago, and not renamed since: maybe still open.
                skip(path, st, f"written less than {settings.inbox_quiet_s:g} s ago", "waiting")
            else:
                source, original, raw_hex = place(path)
                found.files.append(
                    InboxFile(
                        path=path,
                        source=source,
                        original_name=original,
                        original_name_hex=raw_hex,
                        size_bytes=st.st_size,
                        arrival_time=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
                        changed_ns=st.st_ctime_ns,
                        identity=_identity(st),
                    )
                )
    found.files.sort(key=lambda f: (f.arrival_time, f.source, f.original_name))
    return found


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_as_scanned(file: InboxFile) -> int:
    """A descriptor on the file the scan saw, or ``NotAsScanned`` (it is then not opened, or
    closed before any byte is read)."""
    try:
        fd = os.open(file.path, OPEN_FLAGS)
    except FileNotFoundError:
        raise NotAsScanned("gone since the scan") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotAsScanned("a symlink: not followed") from None
        raise
    st = os.fstat(fd)
    why = refused(st)
    if why is None and _identity(st)[:2] != file.identity[:2]:
        why = "replaced since the scan (another file under its name): taken next time"
    if why is None and _identity(st) != file.identity:
        why = "changed since the scan: taken next time"
    if why:
        os.close(fd)
        raise NotAsScanned(why)
    return fd


def _blocks(fd: int) -> Iterator[bytes]:
    offset = 0
    while block := os.pread(fd, BLOCK, offset):
        offset += len(block)
        yield block


def _sha256_checked(fd: int, file: InboxFile) -> str:
    """The descriptor's content hash; ``NotAsScanned`` if the file changed while it was read."""
    digest = hashlib.sha256()
    for block in _blocks(fd):
        digest.update(block)
    if _identity(os.fstat(fd)) != file.identity:
        raise NotAsScanned("changed while being read: taken next time")
    return digest.hexdigest()


def _copy_checked(fd: int, file: InboxFile, sha256: str, tmp: Path) -> None:
    """Copy the descriptor's content to ``tmp``; ``NotAsScanned`` if it is not what was hashed."""
    digest = hashlib.sha256()
    with tmp.open("xb") as out:
        for block in _blocks(fd):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != sha256 or _identity(os.fstat(fd)) != file.identity:
        raise NotAsScanned("changed while being copied: taken next time")


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


def _tmp_of(target: Path) -> Path:
    # Per process: two landings of one file in the same second (a run started by hand beside
    # automation's) write the same target, and neither may rename the other's half-written file.
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _commit_immutable(target: Path, write: Callable[[Path], object]) -> None:
    """Write ``target`` whole or not at all, read-only to its owner (and group, see ``access``)."""
    modes = access()
    modes.make_dirs(target.parent)
    tmp = _tmp_of(target)
    tmp.unlink(missing_ok=True)  # a crashed attempt's leftover is read-only: cannot be overwritten
    try:
        write(tmp)
        os.chmod(tmp, modes.file)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        crash_point("immutable:written")  # the temporary file written, not renamed
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def quarantine_path(settings: Settings, source: str, sha256: str, name: str) -> Path:
    return settings.quarantine / source / f"{sha256[:12]}_{safe_name(name)}"


def quarantine(
    settings: Settings, source: str, landed: Path, sha256: str, name: str, reason: str
) -> Path:
    """Put a copy of a landed file in ``quarantine/<source>/`` beside a ``.reason.txt``."""
    target = quarantine_path(settings, source, sha256, name)
    if not target.exists():
        copy_immutable(settings.data_dir / landed, target)
    text = f"source: {source}\nfile: {name}\nsha256: {sha256}\n" + (
        f"landed: {landed}\nreason: {reason}\n"
    )
    write_immutable(target.with_name(target.name + ".reason.txt"), text.encode())
    return target


def land_files(
    settings: Settings,
    files: list[InboxFile],
    landed: dict[tuple[str, str], str],
    recorded: set[tuple] = frozenset(),
) -> Landing:
    """Copy new content into the persistent landing; one manifest row per delivery.

    ``landed`` maps (source, sha256) to the landed path of content seen before; it is updated so
    the same content twice in one batch is one landing and one re-delivery. ``recorded`` holds the
    ``delivery_key`` of deliveries already in the manifest: such a file is a leftover of a run that
    committed but died before clearing the inbox, and is not recorded twice. Every path about to
    be written is first appended to the journal (``PENDING_COPIES``).
    """
    now = dt.datetime.now(dt.UTC)
    result = Landing()
    access().make_dirs(settings.landing)
    with (settings.landing / PENDING_COPIES).open("a") as journal:
        for file in files:
            key = delivery_key(file.source, file.original_name, file.original_name_hex,
                               file.changed_ns)  # fmt: skip
            if key in recorded:
                result.taken.append(file)
                continue
            try:
                row = _land_one(settings, file, landed, now, journal)
            except NotAsScanned as error:
                result.skipped.append(
                    Skipped(file.source, file.original_name, str(error), "changed", file.changed_ns)
                )
                continue
            result.rows.append(row)
            result.taken.append(file)
    return result


def _land_one(settings: Settings, file: InboxFile, landed: dict, now: dt.datetime, journal) -> dict:
    def journaled(*paths: Path) -> None:
        # Flushed, not fsynced: what a killed process wrote survives it; a power cut may leave
        # an orphan copy, never lose a delivery.
        journal.write("".join(f"{p.relative_to(settings.data_dir)}\n" for p in paths))
        journal.flush()

    fd = open_as_scanned(file)
    try:
        sha = _sha256_checked(fd, file)
        previous = landed.get((file.source, sha))
        path = previous or str(landed_relpath(file, sha))
        if previous is None:
            target = settings.data_dir / path
            journaled(target)
            _commit_immutable(target, lambda tmp: _copy_checked(fd, file, sha, tmp))
            landed[(file.source, sha)] = path
    finally:
        os.close(fd)
    reason = None
    if file.source == UNKNOWN_SOURCE:
        reason = "not in a known source folder: collectors drop files into inbox/<source>/"
        copy = quarantine_path(settings, UNKNOWN_SOURCE, sha, file.original_name)
        journaled(copy, copy.with_name(copy.name + ".reason.txt"))
        quarantine(settings, UNKNOWN_SOURCE, Path(path), sha, file.original_name, reason)
    return {
        "source": file.source,
        "original_name": file.original_name,
        "original_name_hex": file.original_name_hex,
        "size_bytes": file.size_bytes,
        "sha256": sha,
        "arrival_time": file.arrival_time,
        "inbox_changed_ns": file.changed_ns,
        "landed_at": now,
        "landed_path": path,
        "redelivery": previous is not None,
        "quarantine_reason": reason,
    }


def delivery_key(
    source: str, original_name: str, original_name_hex: str | None, changed_ns: int
) -> tuple:
    """What identifies one delivery: the same name with the same inode change time is the same file."""
    return (source, original_name, original_name_hex, changed_ns)


def clear_inbox(files: Iterable[InboxFile]) -> list[InboxFile]:
    """Remove landed files from the inbox (only after their manifest rows are committed), except
    those changed since they were copied (still being written to, or replaced): returned, left."""
    left = []
    for file in files:
        try:
            st = os.lstat(file.path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and _identity(st) == file.identity:
            file.path.unlink(missing_ok=True)
        else:
            left.append(file)
    return left


def pending_copies(settings: Settings) -> list[str]:
    """Paths the journal lists: written by runs that may not have committed."""
    journal = settings.landing / PENDING_COPIES
    return journal.read_text().splitlines() if journal.exists() else []


def discard_uncommitted(settings: Settings, pending: list[str], referenced: set[str]) -> int:
    """After a commit: delete the journaled copies under landing/ that no committed row references
    (a failed run's), and every journaled ``.tmp``; then the journal. Returns copies deleted."""
    deleted = 0
    for relative in dict.fromkeys(pending):
        path = settings.data_dir / relative
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        if relative.startswith("landing/") and relative not in referenced and path.exists():
            path.unlink()
            deleted += 1
    (settings.landing / PENDING_COPIES).unlink(missing_ok=True)
    return deleted
