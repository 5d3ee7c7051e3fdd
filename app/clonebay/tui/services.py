"""The TUI's one door to the machine: disks, what is on them, guards, images, plans, jobs, and
the files inside images (browsing).

Screens never call the engine or system/ themselves; they call a Services object from a worker
thread. This one does it for real. Keeping the door narrow means the snapshot tests can hand the
app a Services with recorded data (fixed disks, a fixed clock-free image list) and get the same
pixels on every machine, while the flow tests use this class on real disk images.

Disks come from udev (this machine's disks) plus any image files named on the command line,
which stand in for disks (transport "file"): the demo and the tests use them.

Image stores (engine/stores): the partitions that can hold images are listed only when the
machine's disks are (``list_stores``): listing mounts each partition read-only for a moment,
and a Services over a few named files (the tests) has no business with the machine's other
disks. The store chosen stays mounted until another is chosen or ``close_store`` (tui/
store_session.py).

Locked volumes (BitLocker, LUKS): the session keeps one Keyring, and every inspect, plan and job
started here gets it, so a volume unlocked once is copied by its used blocks in every job that
follows. A secret joins it only after it opened a volume (``unlock``; tui/unlocking.py), and
the cached reports are dropped then: they were read without it.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonebay.browse.extract import ExtractReport
from clonebay.browse.listing import Entry
from clonebay.engine import (
    CloneOptions,
    DiskReport,
    Grow,
    JobPlan,
    Partition,
    Plan,
    browse_jobs,
    clone_plan,
    inspect_disk,
    jobs,
)
from clonebay.engine import stores as store_api
from clonebay.errors import CancelledError, ClonebayError, SafetyError, UsageError
from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import LockedError
from clonebay.imaging.stream_convert import is_stream_file
from clonebay.model import Disk
from clonebay.system import guard, hotplug, smart, udev
from clonebay.system.blockdev import FileSource
from clonebay.system.run import run
from clonebay.tui.jobs import (
    JobKind,
    JobRequest,
    Outcome,
    OverallMeter,
    StateSink,
    TickSink,
    run_job,
)
from clonebay.tui.store_choice import AcceptKey, StoreChoice
from clonebay.tui.store_session import StoreSession
from clonebay.tui.unlocking import Secret, copy_of, find, keep, trial_keyring

MANIFEST = "manifest.json"
POWER_OFF = ("systemctl", "poweroff")  # what "power off when done" runs

# Reading a partition table goes through pyparted, which must not run in two threads at once:
# everything that reads one runs under this lock, jobs included (they inspect their source
# first); so does everything that uses the session's Keyring (the probers record in it the keys
# they opened). And system/parttable.read_table leaves pyparted's exception handler registered when
# the device cannot be opened; pyparted drops a reference to the handler on every new
# registration, so the third unreadable disk in a row frees it and the process dies (SIGSEGV,
# measured with /dev/vda opened without permission). Until parttable clears the handler on that
# path too, a device is opened read-only here first and refused before pyparted sees it.
PARTED = threading.Lock()


def _readable(path: str) -> None:
    """DeviceError unless ``path`` can be opened for reading (see PARTED above)."""
    with FileSource(path):
        pass


class Role(enum.Enum):
    """What a disk is picked for; the guards depend on it."""

    SOURCE = "source"
    TARGET = "target"
    BROWSE = "browse"


@dataclass(frozen=True)
class ImageEntry:
    """One image directory found under a folder; ``problem`` is set when it cannot be read."""

    path: str
    name: str
    source: str = ""  # the source disk: path and model
    created: str = ""
    source_size: int = 0
    stored_bytes: int = 0
    regions: int = 0
    problem: str = ""


FileEntry = Entry  # one file, folder or link of a partition in an image (browse/listing.py)
ImagePartition = Partition  # a partition of an image as browsing shows it (engine/browse_jobs.py)


@dataclass(frozen=True)
class ExtractTick:
    """Progress of an extraction, after each file, link or folder copied."""

    path: str  # the entry just done, relative to the partition's root
    files: int
    folders: int
    bytes: int
    total: int  # bytes of all the files to copy
    failed: int


@dataclass(frozen=True)
class ExtractSummary:
    """What an extraction copied, and each file it could not read with the reason."""

    dest: str
    files: int
    folders: int
    links: int
    bytes: int
    failed: tuple[tuple[str, str], ...]  # (path, why), e.g. ("Users/a.doc", "Input/output error")
    image_errors: tuple[str, ...]  # what the image reader said: file, region, offset of damage


def file_disk(path: str) -> Disk:
    """An image file standing in for a disk (the demo's disks)."""
    size = os.path.getsize(path)
    return Disk(path=path, size=size, model=f"image file {Path(path).name}", transport="file")


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class Services:
    """Real disks, guards, images and jobs (see the module docstring)."""

    def __init__(
        self,
        disk_paths: Sequence[str] = (),
        *,
        machine_disks: bool = True,
        image_dir: str = ".",
        power_off_command: Sequence[str] = POWER_OFF,
        power_off_delay: int = 30,
        list_stores: bool | None = None,
    ) -> None:
        self.disk_paths = list(disk_paths)
        self.machine_disks = machine_disks
        self.image_dir = image_dir
        self.power_off_command = tuple(power_off_command)
        self.power_off_delay = power_off_delay
        self.list_stores = machine_disks if list_stores is None else list_stores
        self.store_session = StoreSession()
        self._reports: dict[str, DiskReport] = {}
        self._lock = threading.Lock()
        self.keyring = Keyring()  # secrets that opened a locked volume (see the docstring)

    @property
    def keys(self) -> Keyring | None:
        """The session's Keyring, None while it holds no secret (the CLI without --key)."""
        return self.keyring if self.keyring else None

    # --- disks ---------------------------------------------------------------------------

    def disks(self) -> list[Disk]:
        """The disks named on the command line first, then this machine's other disks."""
        machine = udev.list_disks() if self.machine_disks else []
        named: list[Disk] = []
        for path in self.disk_paths:
            if _is_block(path):
                found = udev.find_disk(path)
                if found is not None:
                    named.append(found)
            elif os.path.isfile(path):
                named.append(file_disk(path))
        paths = {os.path.realpath(d.path) for d in named}
        return named + [d for d in machine if os.path.realpath(d.path) not in paths]

    def inspect(self, path: str, fresh: bool = False) -> DiskReport:
        """What is on a disk (partition table, filesystems), cached until ``forget``."""
        with self._lock:
            cached = None if fresh else self._reports.get(path)
        if cached is not None:
            return cached
        with PARTED:
            _readable(path)
            report = inspect_disk(path, self.keys)
        with self._lock:
            self._reports[path] = report
        return report

    def unlock(self, path: str, number: int, secret: Secret) -> str:
        """Try ``secret`` on the encrypted volume ``number`` (0: the whole disk) of ``path``, in
        a worker (BitLocker stretches a key for about 0.5 s): "" when it opens it, and it is
        kept for the session; else why not, in the prober's words (it is not kept)."""
        volume = find(self.inspect(path), number)
        if volume is None:
            raise UsageError(f"{path} has no BitLocker or LUKS volume numbered {number}")
        trial = trial_keyring(secret, volume.volume.fstype)
        with PARTED:
            _readable(path)
            tried = find(inspect_disk(path, trial), number)
            opened = tried is not None and not tried.locked
            if opened:
                keep(self.keyring, trial)
        if not opened:
            said = tried.refusal if tried is not None else ""
            return said or f"the {secret.kind(volume.volume.fstype)} does not open it"
        self.forget()
        return ""

    def health(self, path: str) -> smart.Health:
        """What SMART says of a disk (smartctl, up to smart.TIMEOUT s the first time: call it
        from a worker); kept for the session (system/smart.py)."""
        return smart.read_health(path)

    def health_warning(self, source: str) -> list[str]:
        """The lines the Plan shows when the job reads a worn or failing disk ([] otherwise)."""
        return smart.job_warning(source, self.health(source))

    def forget(self, *paths: str) -> None:
        """Drop cached reports (after a job wrote the disk, or hotplug said it changed)."""
        with self._lock:
            for path in paths or list(self._reports):
                self._reports.pop(path, None)

    def refusal(self, role: Role, disk: Disk, source: str | None = None) -> str:
        """Why ``disk`` may not be picked for ``role`` (the guard's words), or ""."""
        if disk.size == 0:
            return "no medium (size 0)"
        if role is not Role.TARGET:
            return ""
        if disk.read_only:
            return "read-only: the device refuses writes"
        try:
            if source is not None:
                guard.check_not_source(source, disk.path)
            guard.check_target_free(disk.path)
        except SafetyError as exc:
            return exc.message
        return ""

    def watch(self, on_change: Callable[[hotplug.DiskChange], None], stop: threading.Event) -> None:
        """Report disk changes until ``stop`` (blocking: run it in a worker thread)."""
        watcher = hotplug.DiskWatcher(on_change, self.disks)
        watcher.run(stop, monitor=self.machine_disks)

    # --- images --------------------------------------------------------------------------

    def images(self, folder: str) -> list[ImageEntry]:
        """Images in ``folder`` and one level below, by name: image directories, and stream
        files (a single file that starts with the stream magic, e.g. ``disk.cbs``)."""
        base = Path(folder)
        candidates = [base, *sorted(base.iterdir())]
        found = []
        for cand in candidates:
            if cand.is_dir() and (cand / MANIFEST).is_file():
                found.append(self.image_entry(str(cand)))
            elif cand.is_dir() and (cand / "packs").is_dir():
                found.append(
                    ImageEntry(
                        str(cand), cand.name, problem="incomplete: no manifest.json (not finished)"
                    )
                )
            elif cand != base and is_stream_file(cand):
                found.append(self.image_entry(str(cand)))
        return found

    def image_entry(self, path: str) -> ImageEntry:
        name = Path(path).name
        try:
            info = jobs.image_head_info(path)
        except ClonebayError as exc:
            return ImageEntry(path, name, problem=exc.message)
        src = info["source"]
        what = str(src.get("model", "") or src.get("path", ""))
        return ImageEntry(
            path,
            name,
            what,
            str(info["created"]),
            int(src.get("size", 0) or 0),
            int(info["totals"].get("stored_bytes", 0)),
            len(info["regions"]),
        )

    def image_info(self, path: str) -> dict[str, Any]:
        return jobs.image_head_info(path)

    def verify_image(self, path: str, sink: TickSink) -> str:
        """Re-read every frame; returns a one-line verdict (problems are not raised)."""
        report = jobs.verify_image(path, OverallMeter({"read": "Verifying"}, sink))
        if report.ok:
            return f"OK ({report.frames} frames)"
        return f"{len(report.problems)} problem(s): {report.problems[0]}"

    def interrupted_save(self, image: str) -> jobs.InterruptedSave | None:
        """What the incomplete image ``image`` holds up to its checkpoint (None when it is not
        an incomplete image): for the question whether to resume it."""
        return jobs.interrupted_save(image)

    def clone_journal(self, source: str, target: str) -> jobs.InterruptedClone | None:
        """The journal a clone of ``source`` onto ``target`` left when it stopped (None: no
        such clone), read only: whether to ask about it."""
        return jobs.clone_journal(source, target)

    def interrupted_clone(self, source: str, target: str) -> jobs.InterruptedClone | None:
        """That journal, and whether the clone can be resumed: planned again and checked as
        ``clone --resume`` does (it reads the partition table), with the session's keys."""
        with PARTED:
            _readable(source)
            return jobs.interrupted_clone(source, target, self.keys)

    def free_space(self, folder: str) -> int:
        return shutil.disk_usage(folder).free

    # --- image stores --------------------------------------------------------------------

    def stores(self, job_devices: Sequence[str] = ()) -> list[store_api.StoreInfo]:
        """The partitions that could hold images; those on ``job_devices`` (the job's source
        or targets) and other unusable ones with the reason (see the module docstring)."""
        if not self.list_stores:
            return []
        return store_api.list_local(list(job_devices))

    def remembered_stores(self) -> list[StoreChoice]:
        """The stores opened in this session, the last one first (credentials included)."""
        return self.store_session.remembered()

    def test_store(self, choice: StoreChoice, accept: AcceptKey | None = None) -> int:
        """Mount the store, look at its folder, unmount it: its free bytes, or StoreError in
        plain words. ``accept`` is asked about an SSH host key seen for the first time."""
        return self.store_session.test(choice, accept)

    def open_store(
        self,
        choice: StoreChoice,
        *,
        job_devices: Sequence[str] = (),
        write: bool = False,
        accept: AcceptKey | None = None,
    ) -> str:
        """Mount the store (the previous one is unmounted) and keep it mounted: the path of
        its folder. A disk store on one of ``job_devices`` is refused (SafetyError)."""
        return self.store_session.open(
            choice, job_devices=tuple(job_devices), write=write, accept=accept
        )

    def close_store(self) -> None:
        """Unmount the open store for good (the app is leaving)."""
        self.store_session.close()

    # --- files inside images -------------------------------------------------------------
    # Each call mounts the one partition it needs read-only in a temporary folder and unmounts
    # it before returning, also on errors (engine/browse_jobs.py): about 0.2 s per folder on the
    # demo disk, and nothing stays mounted while the technician looks at the screen.

    def partitions(self, image: str) -> list[ImagePartition]:
        """The image's partitions; ``mountable`` is False for swap, raw and unknown data."""
        return browse_jobs.partitions(image)

    def list_dir(self, image: str, region: str, path: str) -> list[FileEntry]:
        """The entries of the folder ``path`` ("" for the root) of partition ``region``."""
        listing = browse_jobs.ls(image, region, path, keys=self._keys_copy())
        return [] if listing is None else listing.entries

    def unlock_partition(
        self, image: str, part: ImagePartition, secret: Secret | None = None
    ) -> str:
        """Whether the locked partition ``part`` of ``image`` opens for browsing: with the
        session's keys (no ``secret``) or with ``secret``, which the session then keeps. ""
        when it opens (its root was listed), else why not in the engine's words."""
        keys = self._keys_copy() if secret is None else trial_keyring(secret, part.fstype)
        if keys is None:
            return "no key given yet"
        try:
            browse_jobs.ls(image, part.region, "", keys=keys)
        except LockedError as exc:
            return exc.message
        if secret is not None:
            with PARTED:
                keep(self.keyring, keys)
            self.forget()
        return ""

    def _keys_copy(self) -> Keyring | None:
        """The session's keys for a browse, which does not hold PARTED: a copy, so its probes
        never change the Keyring an inspect may be reading."""
        with PARTED:
            return copy_of(self.keyring) if self.keyring else None

    def extract(
        self,
        image: str,
        region: str,
        paths: Sequence[str],
        dest: str,
        *,
        sink: Callable[[ExtractTick], None],
        cancel: threading.Event,
    ) -> ExtractSummary:
        """Copy ``paths`` of partition ``region`` into the folder ``dest`` (in a worker thread).
        A file that cannot be read is named in the summary and the others are copied; ``cancel``
        stops between two files with CancelledError (the partition is unmounted all the same)."""

        def progress(path: str, report: ExtractReport, total: int) -> None:
            if cancel.is_set():
                raise CancelledError(
                    f"cancelled by the user after {report.files} files;"
                    f" what was copied so far is in {dest}"
                )
            sink(
                ExtractTick(
                    path, report.files, report.folders, report.bytes, total, len(report.failed)
                )
            )

        done = browse_jobs.extract(
            image, region, list(paths), dest, progress, keys=self._keys_copy()
        )
        r = done.report
        return ExtractSummary(
            dest, r.files, r.folders, r.links, r.bytes, tuple(r.failed), tuple(done.errors)
        )

    # --- plans and jobs ------------------------------------------------------------------

    def clone_plan(self, source: str, target: str, grow: Grow) -> Plan:
        with PARTED:
            _readable(source)
            return clone_plan(source, target, CloneOptions(grow=grow, fit=grow, keys=self.keys))

    def windows_facts(self, source: str) -> list[str]:
        """Each Windows of a source disk: computer name, sysprep state, machine SID, and a
        warning when it is not generalized (read without mounting; [] when unreadable)."""
        from clonebay.engine.postcopy.windows_probe import facts_lines

        try:
            with PARTED:
                report = inspect_disk(source, self.keys)
            return facts_lines(report)
        except ClonebayError:
            return []

    def save_plan(self, source: str) -> JobPlan:
        with PARTED:
            _readable(source)
            return jobs.save_plan(source, None, self.keys)

    def restore_plan(self, image: str, target: str, grow: Grow) -> JobPlan:
        with PARTED:
            return jobs.restore_plan(image, target, grow=grow, fit=grow)

    def power_off(self) -> None:
        """Power the machine off (the job ended well and the technician asked for it)."""
        run(list(self.power_off_command))

    def check_targets(self, targets: Sequence[str]) -> None:
        """Refuse several targets that are one another (the same disk twice, a partition of
        another target, a loop device over another); nothing is written."""
        jobs.check_distinct(list(targets))

    def run(
        self,
        request: JobRequest,
        sink: TickSink,
        cancel: threading.Event,
        on_state: StateSink | None = None,
    ) -> Outcome:
        """Run the job (in a worker thread); nothing else reads a partition table meanwhile.
        A job with several targets tells each target's state to ``on_state``. It gets the
        session's keys (locked volumes unlocked in the Plan are copied by their used blocks)."""
        request = dataclasses.replace(request, keys=self.keys)
        try:
            with PARTED:
                if request.kind is not JobKind.RESTORE:
                    _readable(request.source)
                return run_job(request, sink, cancel, on_state)
        finally:
            self.forget(request.source, *request.targets)
