"""``clonebay mount`` / ``edit`` / ``umount``: an image's filesystems under one folder.

Mounting IMAGE at MOUNTPOINT is two layers:

1. the view (fusefs.py), a FUSE daemon that shows every partition as a file in
   ``MOUNTPOINT/.partitions``; it outlives the command and ends when that folder is unmounted;
2. each filesystem in those files, mounted by its driver (drivers.py) at ``MOUNTPOINT/pN-LABEL``:
   the kernel's ext4 through a loop device, ntfs-3g, or the FAT driver of fatfs.py.

Everything done is recorded as it happens in a state file (``/run/clonebay/mounts/``, keyed by
the mount point), so ``clonebay umount`` undoes exactly that, in reverse order, also after a
mount that failed halfway. Unmounting waits for each FUSE driver process to exit (a pidfd, no
clock): ntfs-3g writes its last changes on the way out, and the view must see them before an
edit is committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clonebay.browse import drivers
from clonebay.browse.cow import EditFailedError, changed_chunks, refuse_failed
from clonebay.browse.cow import commit as commit_edit
from clonebay.browse.fusefs import STATS_FILE
from clonebay.browse.locked import mount_locked, unmount_locked
from clonebay.browse.procs import mounted_at, start_daemon, wait_for_exit
from clonebay.errors import ClonebayError, SafetyError, UsageError
from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import LOCKED_TYPES
from clonebay.imaging.manifest import RegionEntry
from clonebay.imaging.reader import ImageReader
from clonebay.system.run import run

log = logging.getLogger(__name__)

RUN_DIR = Path(os.environ.get("CLONEBAY_RUN_DIR", "/run/clonebay"))
VIEW_DIR = ".partitions"


@dataclass
class FsMount:
    """One filesystem mounted from a partition file."""

    region: str
    fstype: str
    directory: str
    driver: str
    loop: str = ""
    pids: list[int] = field(default_factory=list)
    under: str = ""  # a locked volume: the unlocked view its filesystem is mounted from
    under_pid: int = 0  # that view's daemon


@dataclass
class MountState:
    """What ``mount`` did, so that ``umount`` undoes exactly that."""

    image: str
    mountpoint: str
    edit: bool
    work: str  # this mount's folder under RUN_DIR: the view's log, the edit's scratch
    view_pid: int = 0
    created_mountpoint: bool = False
    mounts: list[FsMount] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # region -> why it is not mounted
    changed_chunks: int = 0  # after an edit's unmount: chunks written
    revision: int = 0  # after a commit: the image's new revision

    @property
    def view(self) -> Path:
        return Path(self.mountpoint) / VIEW_DIR

    @property
    def scratch(self) -> Path:
        return Path(self.work) / "scratch"

    @property
    def log(self) -> Path:
        return Path(self.work) / "view.log"


def state_path(mountpoint: str | os.PathLike[str]) -> Path:
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:16]
    return RUN_DIR / "mounts" / f"{key}.json"


def save_state(state: MountState) -> None:
    path = state_path(state.mountpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_state(mountpoint: str | os.PathLike[str]) -> MountState:
    path = state_path(mountpoint)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{mountpoint} is not an image mounted by clonebay") from None
    data["mounts"] = [FsMount(**m) for m in data.get("mounts", [])]
    return MountState(**data)


def folder_name(number: str, label: str, fstype: str) -> str:
    """``p2-Windows``: the region name and the label (or the filesystem type), file-name safe."""
    tag = re.sub(r"[^\w.-]+", "_", label.strip()).strip("_") or fstype
    return f"{number}-{tag}" if tag else number


# -- mounting ----------------------------------------------------------------------------------


def mount_image(
    image: str,
    mountpoint: str,
    *,
    edit: bool = False,
    regions: Sequence[str] | None = None,
    keys: Keyring | None = None,
) -> MountState:
    """Mount ``image``'s filesystems under ``mountpoint`` (only ``regions`` when given); returns
    when all are mounted. ``edit``: read-write, copy-on-write (cow.py). ``keys``: secrets for
    BitLocker and LUKS volumes, whose files are shown read-only (locked.py)."""
    image = os.path.abspath(image)
    point = Path(os.path.abspath(mountpoint))
    if state_path(point).exists():
        raise SafetyError(f"{point} already has an image mounted: clonebay umount {point}")
    with ImageReader(image) as reader:
        wanted = [r for r in reader.regions if r.kind in ("partition", "disk")]
        manifest = reader.manifest
    if regions is not None:
        wanted = [r for r in wanted if r.name in regions]
    if point.exists() and (not point.is_dir() or any(point.iterdir())):
        raise UsageError(f"{point} must be an empty folder (or not exist yet)")
    work = RUN_DIR / "mounts" / state_path(point).stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    state = MountState(image, str(point), edit, str(work), created_mountpoint=not point.exists())
    point.mkdir(parents=True, exist_ok=True)
    save_state(state)
    try:
        state.view.mkdir()
        state.view_pid = start_view(state)
        save_state(state)
        for region in wanted:
            if region.fstype in LOCKED_TYPES:
                _mount_locked(state, region, keys)
                continue
            driver = drivers.for_fstype(region.fstype)
            if driver is None:
                state.skipped[region.name] = f"no driver for {region.fstype or 'unknown data'}"
                continue
            directory = point / folder_name(region.name, region.label, region.fstype)
            directory.mkdir()
            fs = FsMount(region.name, region.fstype, str(directory), driver.name)
            state.mounts.append(fs)
            save_state(state)
            try:
                driver.mount(state.view / region.name, fs, writable=edit, log_path=state.log)
            except ClonebayError as exc:
                state.mounts.remove(fs)
                directory.rmdir()
                state.skipped[region.name] = exc.message
            save_state(state)
    except BaseException:
        with contextlib.suppress(ClonebayError, OSError):
            umount_image(str(point), commit=False)
        raise
    log.debug("mounted %s (%d regions) at %s", image, len(manifest.regions), point)
    return state


def _mount_locked(state: MountState, region: RegionEntry, keys: Keyring | None) -> None:
    if state.edit:
        state.skipped[region.name] = f"{region.fstype} volumes are browsed read-only (mount)"
        return
    directory = Path(state.mountpoint) / folder_name(region.name, region.label, region.fstype)
    directory.mkdir()
    fs = FsMount(region.name, region.fstype, str(directory), "")
    state.mounts.append(fs)
    save_state(state)
    try:
        under = Path(state.work) / f"unlocked-{region.name}"
        mount_locked(state.view / region.name, fs, under, keys, state.log)
    except ClonebayError as exc:
        unmount_locked(fs)
        state.mounts.remove(fs)
        directory.rmdir()
        state.skipped[region.name] = exc.message
    save_state(state)


def start_view(state: MountState) -> int:
    """Start the view daemon and wait until its mount is live; returns its pid."""
    args = ["parts", state.image, str(state.view)]
    if state.edit:
        args += ["--scratch", str(state.scratch)]
    return start_daemon(args, state.log)


# -- unmounting --------------------------------------------------------------------------------


def umount_image(mountpoint: str, *, commit: bool = False) -> MountState:
    """Undo ``mount_image``: every filesystem, then the view; for an edit, commit or discard.

    A filesystem still in use (a shell inside it) stops the unmount before anything is lost:
    nothing is committed or discarded and the command can be run again. An edit that lost
    writes (its scratch area filled up) cannot be committed: it is discarded all the same, so
    that its RAM is freed, and EditFailedError says so once everything is unmounted."""
    state = load_state(mountpoint)
    if commit and not state.edit:
        raise UsageError(f"{mountpoint} was mounted read-only: there is nothing to commit")
    for fs in reversed(list(state.mounts)):
        drivers.unmount(fs)
        wait_for_exit(fs.pids)
        unmount_locked(fs)
        with contextlib.suppress(FileNotFoundError):
            Path(fs.directory).rmdir()
        state.mounts.remove(fs)
        _save_progress(state)
    if mounted_at(state.view):
        # Lazy: the loop devices and drivers above are gone, but the kernel may drop the
        # last reference to a partition file a moment after they exit; the daemon exits
        # (and wait_for_exit returns) once no one has a file open.
        run(["umount", "-l", str(state.view)])
    wait_for_exit([state.view_pid] if state.view_pid else [])
    state.view_pid = 0
    _save_progress(state)
    refused: EditFailedError | None = None
    if state.edit:
        state.changed_chunks = changed_chunks(state.scratch)
    if state.edit and commit:
        try:
            refuse_failed(Path(state.image), state.scratch)
        except EditFailedError as exc:
            where = f"{state.mountpoint} ({state.changed_chunks} changed chunks)"
            refused = EditFailedError(f"{exc.message}. The edit at {where} was discarded")
        else:
            note = f"clonebay edit at {state.mountpoint}"
            manifest = commit_edit(Path(state.image), state.scratch, note=note)
            state.revision = manifest.revision if manifest else 0
    with contextlib.suppress(FileNotFoundError):
        state.view.rmdir()
    if state.created_mountpoint:
        with contextlib.suppress(OSError):
            Path(state.mountpoint).rmdir()
    shutil.rmtree(state.work, ignore_errors=True)
    state_path(state.mountpoint).unlink(missing_ok=True)
    if refused is not None:
        raise refused
    return state


def _save_progress(state: MountState) -> None:
    """Note what umount has undone so far. /run full (an edit's scratch filled it) must not
    stop the unmount that frees it: a state file left behind only makes the next umount look
    again at mounts that are already gone."""
    try:
        save_state(state)
    except OSError as exc:
        log.warning("%s: the mount state could not be updated: %s", state.mountpoint, exc)


def view_stats(state: MountState) -> dict[str, Any]:
    """The view's reader statistics and last errors (fusefs.py's stats file)."""
    data: dict[str, Any] = json.loads((state.view / STATS_FILE).read_text())
    return data


@contextlib.contextmanager
def temporary_mount(
    image: str, regions: Sequence[str] | None = None, keys: Keyring | None = None
) -> Iterator[MountState]:
    """The image mounted read-only in a fresh folder for the duration of a ``with``."""
    base = RUN_DIR / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    point = Path(os.path.realpath(base)) / f"view-{os.getpid()}-{time.monotonic_ns()}"
    state = mount_image(image, str(point), regions=regions, keys=keys)
    try:
        yield state
    finally:
        umount_image(str(point))
