"""Release versions: every release is written whole into a folder of its own and made current by one pointer.

    <release>/CURRENT                          the current version id, one line; written last (atomically)
    <release>/versions/<version>/              llava/, idefics/, hf/ (data/ + README.md), preview.html
    <release>/versions/<version>/release.json  the manifest (version, formats, counts, every file with its size),
                                               written once everything else is

A version id is `<UTC time to the millisecond>Z-<8 hex>` (`20261201T101500.123Z-1a2b3c4d`): ids sort by time
and the digest (of the run id) keeps two releases of one millisecond apart. The pointer is the only file a reader
needs and the only one a release replaces: locally it is written to a temporary name and renamed, on S3 it is one
PUT, so a reader sees the old version or the new one — a release that fails or is killed half-way leaves the
previous one current, untouched. Readers resolve it through `current_release_path`, or by hand:

    R=.viscon/storage/viscon_100k_release; ls "$R/versions/$(cat "$R/CURRENT")/hf"
    aws s3 cp s3://bucket/prefix/viscon_100k_release/CURRENT -     # on S3

After the pointer is written, older complete versions beyond `keep` are deleted, and so are incomplete versions
(a release that failed or was killed) older than `STALE_INCOMPLETE_S`: a younger one may still be being written.
Versions newer than the current one are never touched (a concurrent release that has not published yet).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from upath import UPath

from viscon_dagster.core.exports.storage_io import file_sizes, remove_tree
from viscon_dagster.core.files.atomic import write_text_atomic

POINTER = "CURRENT"
VERSIONS = "versions"
MANIFEST = "release.json"
DEFAULT_KEEP = 2
STALE_INCOMPLETE_S = 24 * 3600
# what the release folder held before versions: removed once a versioned release is current
LEGACY_ENTRIES = ("llava", "idefics", "hf", "preview.html")
VERSION_RE = re.compile(r"(\d{8}T\d{6}\.\d{3})Z-([0-9a-f]{8})")
TIME_FORMAT = "%Y%m%dT%H%M%S.%f"


class ReleaseNotFound(FileNotFoundError):
    """No release is current where one was looked for."""


class IncompleteVersion(RuntimeError):
    """A version folder lacks its manifest or a file the manifest lists."""


def new_version_id(now: datetime | None = None, salt: str | None = None) -> str:
    """A fresh id: the UTC time to the millisecond and 8 hex of `salt` (the run id; random without one)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    digest = hashlib.sha256((salt or uuid.uuid4().hex).encode()).hexdigest()[:8]
    return f"{now.strftime(TIME_FORMAT)[:-3]}Z-{digest}"


def check_version_id(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise ValueError(f"not a release version id: {version!r} (expected e.g. 20261201T101500.123Z-1a2b3c4d)")
    return version


def version_time(version: str) -> datetime:
    stamp = VERSION_RE.fullmatch(check_version_id(version)).group(1)
    return datetime.strptime(stamp + "000", TIME_FORMAT).replace(tzinfo=UTC)


def version_path(release: UPath, version: str) -> UPath:
    return release / VERSIONS / check_version_id(version)


def read_pointer(release: UPath) -> str | None:
    """The version `<release>/CURRENT` names; None when there is none. A malformed pointer is an error."""
    try:
        text = (release / POINTER).read_text()
    except FileNotFoundError:
        return None
    version = text.strip()
    if not VERSION_RE.fullmatch(version):
        raise ValueError(f"{release / POINTER}: not a release version id: {text[:80]!r}")
    return version


def current_version_path(release: UPath) -> UPath:
    """The folder of the current version of the release at `release`.

    A release folder written before versions (formats at its top, no pointer) is returned as it is, so readers
    keep working until its next release."""
    version = read_pointer(release)
    if version is not None:
        return version_path(release, version)
    if any((release / name).exists() for name in LEGACY_ENTRIES[:3]):
        return release
    raise ReleaseNotFound(f"no current release at {release} (no {POINTER} file): materialize the release first")


def current_release_path(root: UPath, name: str) -> UPath:
    """The current version's folder of release `name` (an asset key path, e.g. `viscon_100k_release`) below
    the storage root; its `hf/` is what `datasets.load_dataset(str(path / "hf"), "leaky")` reads."""
    release = root
    for part in name.split("/"):
        release = release / part
    return current_version_path(release)


def _ls(folder: UPath) -> list[str]:
    """Names directly below `folder`, read from the store (no cached listing)."""
    if not folder.exists():
        return []
    fs = folder.fs
    fs.invalidate_cache(folder.path)
    base = folder.path.rstrip("/")
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder.path, detail=False)
                  if p.rstrip("/") != base)


def list_versions(release: UPath) -> list[str]:
    """Every version folder's id, oldest first (complete or not; other names are ignored)."""
    return [n for n in _ls(release / VERSIONS) if VERSION_RE.fullmatch(n)]


def write_manifest(folder: UPath, version: str, **info: Any) -> dict[str, Any]:
    """List every file of the version folder with its size into its `release.json`: the mark that it is
    complete. `info` (formats, counts, shards, …) rides along."""
    files = {rel: size for rel, size in file_sizes(folder).items() if rel != MANIFEST}
    manifest = {"version": check_version_id(version), "created": version_time(version).isoformat(),
                **info, "files": files}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


def read_manifest(folder: UPath) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def require_complete(folder: UPath) -> dict[str, Any]:
    """The version's manifest, after checking that every file it lists is there with its size."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise IncompleteVersion(f"{folder} has no {MANIFEST}: the release that wrote it did not finish")
    sizes = file_sizes(folder)
    wrong = sorted(rel for rel, size in manifest["files"].items() if sizes.get(rel) != size)
    if wrong:
        raise IncompleteVersion(f"{folder}: {len(wrong)} file(s) of its manifest missing or of another size, "
                                f"e.g. {wrong[:3]}")
    return manifest


@dataclass
class Published:
    version: str  # the version this release wrote
    current: str  # the version current after publishing (this one, unless a newer release published first)
    previous: str | None  # the version current before
    kept: list[str] = field(default_factory=list)  # complete versions left, newest first (the current one first)
    removed: list[str] = field(default_factory=list)  # versions deleted (old complete ones, stale incomplete ones)
    incomplete: list[str] = field(default_factory=list)  # unfinished versions left (maybe still being written)

    @property
    def became_current(self) -> bool:
        return self.current == self.version

    def metadata(self) -> dict[str, Any]:
        return {"version": self.version, "current_version": self.current, "previous_version": self.previous,
                "kept_versions": self.kept, "removed_versions": self.removed,
                "incomplete_versions": self.incomplete}


def publish(release: UPath, version: str, *, keep: int = DEFAULT_KEEP, now: datetime | None = None,
            stale_incomplete_s: float = STALE_INCOMPLETE_S) -> Published:
    """Make the complete version `version` current (one pointer write), then delete what `keep` lets go.

    A pointer naming a newer version (a release that started later and published first) is left as it is."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the current version), got {keep}")
    require_complete(version_path(release, version))
    previous = read_pointer(release)
    current = version
    if previous is not None and previous > version:
        current = previous
    else:
        write_text_atomic(release / POINTER, version + "\n")
        for name in LEGACY_ENTRIES:  # the unversioned layout's files are stale now: readers must not find them
            remove_tree(release / name)
    removed, kept, incomplete = prune(release, current, keep=keep, now=now, stale_incomplete_s=stale_incomplete_s)
    return Published(version, current, previous, kept, removed, incomplete)


def prune(release: UPath, current: str, *, keep: int = DEFAULT_KEEP, now: datetime | None = None,
          stale_incomplete_s: float = STALE_INCOMPLETE_S) -> tuple[list[str], list[str], list[str]]:
    """(removed, kept, incomplete left): keep `current` and the `keep - 1` newest complete versions before it."""
    now = now or datetime.now(UTC)
    older = [v for v in reversed(list_versions(release)) if v < current]  # newest first
    complete = [v for v in older if (version_path(release, v) / MANIFEST).exists()]
    stale = [v for v in older if v not in complete
             and now - version_time(v) > timedelta(seconds=stale_incomplete_s)]
    removed = complete[keep - 1:] + stale
    for v in removed:
        remove_tree(version_path(release, v))
    incomplete = [v for v in list_versions(release) if v not in removed
                  and not (version_path(release, v) / MANIFEST).exists()]
    return sorted(removed), [current, *complete[:keep - 1]], incomplete
