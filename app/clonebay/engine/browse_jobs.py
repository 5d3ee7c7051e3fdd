"""Browsing jobs for the CLI and the TUI: mount, edit, umount, ls, extract.

``IMAGE[:PART]`` names an image and optionally one of its partitions: a region name (``p2``),
a partition number (``2``), a label (``Windows``) or a mount folder name (``p2-Windows``).
Without PART, paths start with a partition folder (``p2-Windows/Users``) and only that
partition is mounted. ``ls`` and ``extract`` mount what they need read-only in a temporary
folder and always unmount it (browse/mounts.py), so nothing is left mounted behind them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonebay.browse import mounts
from clonebay.browse.drivers import for_fstype
from clonebay.browse.extract import ExtractReport, planned_bytes
from clonebay.browse.extract import extract as extract_files
from clonebay.browse.listing import Entry, list_path
from clonebay.errors import UsageError
from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import LOCKED_TYPES, LockedError
from clonebay.imaging.manifest import RegionEntry
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.stream_convert import is_stream_file


@dataclass(frozen=True)
class Partition:
    """A partition of an image as browsing shows it."""

    region: str
    folder: str  # name of its folder under a mount point
    fstype: str
    label: str
    size: int
    mountable: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def split_target(text: str) -> tuple[str, str | None]:
    """``IMAGE[:PART]`` -> (image, part or None); an image path that exists wins over a colon."""
    if os.path.isdir(text) or ":" not in text:
        return text, None
    image, _, part = text.rpartition(":")
    return image, part or None


def refuse_stream(image: str) -> None:
    """Browsing needs random access through the image's index: a stream file has none."""
    if is_stream_file(image):
        raise UsageError(
            f"{image} is an image stream, which is read front to back and cannot be browsed:"
            f" convert it into an image directory first (clonebay convert {image} DIR)"
        )


def partitions(image: str) -> list[Partition]:
    """The image's partitions (and whole-disk regions), with the folder each mounts at."""
    refuse_stream(image)
    with ImageReader(image) as reader:
        regions = [r for r in reader.regions if r.kind in ("partition", "disk")]
    return [_partition(r) for r in regions]


def _partition(r: RegionEntry) -> Partition:
    folder = mounts.folder_name(r.name, r.label, r.fstype)
    mountable = for_fstype(r.fstype) is not None or r.fstype in LOCKED_TYPES  # with its key
    return Partition(r.name, folder, r.fstype, r.label, r.size, mountable)


def find_partition(image: str, part: str) -> Partition:
    """The partition ``part`` names (region, number, label or folder name)."""
    found = partitions(image)
    for match in (
        lambda p: part in (p.region, p.folder),
        lambda p: part.isdigit() and p.region == f"p{part}",
        lambda p: bool(p.label) and p.label.casefold() == part.casefold(),
    ):
        hits = [p for p in found if match(p)]
        if len(hits) == 1:
            return hits[0]
    names = ", ".join(f"{p.region} ({p.folder})" for p in found) or "none"
    raise UsageError(f"{image}: no single partition {part!r} (partitions: {names})")


def _locate(image: str, part: str | None, path: str) -> tuple[Partition, str]:
    """The partition a request is about and the path inside it."""
    if part is not None:
        return find_partition(image, part), path
    head, _, rest = path.strip("/").partition("/")
    if not head:
        raise UsageError(f"{image}: name a partition (IMAGE:PART, or a path like p2-Windows/...)")
    return find_partition(image, head), rest


def _mounted_root(state: mounts.MountState, partition: Partition) -> Path:
    for fs in state.mounts:
        if fs.region == partition.region:
            return Path(fs.directory)
    why = state.skipped.get(partition.region, "no driver for it")
    if partition.fstype in LOCKED_TYPES:
        raise LockedError(why)
    raise UsageError(f"{partition.region} ({partition.fstype or 'unknown'}) cannot be read: {why}")


@dataclass
class Listing:
    partition: Partition
    entries: list[Entry]
    reader_stats: dict[str, Any]


def ls(
    image: str,
    part: str | None,
    path: str = "",
    *,
    recursive: bool = False,
    keys: Keyring | None = None,
) -> Listing | None:
    """Entries under ``path`` of a partition; None when no partition is named (the caller then
    shows ``partitions(image)``). ``keys`` open a BitLocker or LUKS partition."""
    if part is None and not path.strip("/"):
        return None
    partition, inner = _locate(image, part, path)
    if not partition.mountable:
        raise UsageError(f"{partition.region} holds {partition.fstype or 'unknown data'}: no files")
    with mounts.temporary_mount(image, [partition.region], keys) as state:
        entries = list_path(_mounted_root(state, partition), inner, recursive=recursive)
        stats = mounts.view_stats(state)
    return Listing(partition, entries, stats)


@dataclass
class Extracted:
    partition: Partition
    report: ExtractReport
    errors: list[str]  # what the image view said about damaged frames


# After each file, link or folder copied: its path, the counts so far, the bytes planned in all.
ExtractProgress = Callable[[str, ExtractReport, int], None]


def extract(
    image: str,
    part: str | None,
    paths: list[str],
    dest: str,
    progress: ExtractProgress | None = None,
    *,
    keys: Keyring | None = None,
) -> Extracted:
    """Copy ``paths`` of one partition into the folder ``dest``; ``progress`` may raise to stop
    between two files (the mount is undone all the same)."""
    located = [_locate(image, part, p) for p in paths]
    partition = located[0][0]
    if any(p.region != partition.region for p, _ in located):
        raise UsageError("extract from one partition at a time")
    with mounts.temporary_mount(image, [partition.region], keys) as state:
        root = _mounted_root(state, partition)
        inners = [inner or "." for _, inner in located]
        hook = None if progress is None else _with_total(progress, planned_bytes(root, inners))
        report = extract_files(root, inners, Path(dest), hook)
        errors = list(mounts.view_stats(state)["last_errors"])
    return Extracted(partition, report, errors)


def _with_total(progress: ExtractProgress, total: int) -> Callable[[str, ExtractReport], None]:
    def hook(path: str, report: ExtractReport) -> None:
        progress(path, report, total)

    return hook


def mount(
    image: str, mountpoint: str, *, edit: bool = False, keys: Keyring | None = None
) -> mounts.MountState:
    """Mount every filesystem of ``image`` under ``mountpoint`` (the view stays running);
    ``keys`` open its BitLocker and LUKS volumes (read-only)."""
    refuse_stream(image)
    return mounts.mount_image(image, mountpoint, edit=edit, keys=keys)


def umount(mountpoint: str, *, commit: bool = False) -> dict[str, Any]:
    """Unmount; for an edit, ``commit`` appends the changes to the image, else they are dropped."""
    state = mounts.umount_image(mountpoint, commit=commit)
    return {
        "mountpoint": state.mountpoint,
        "image": state.image,
        "edit": state.edit,
        "changed_chunks": state.changed_chunks,
        "committed": bool(state.revision),
        "revision": state.revision,
    }
