"""Disks appearing and vanishing while clonebay runs, as lists of model.Disk (no Textual here).

A watcher listens on a pyudev netlink Monitor for block-device uevents and, after each burst of
events, lists the disks again and reports what changed against the previous list. Listing again
instead of decoding the event keeps one source of truth (system/udev.py) and catches everything
an event implies: ``partx -a`` sends one event per partition; attaching a loop device sends only
"change" events for a loop node that already existed.

Which events arrive:
  - with a udev daemon (/run/udev/control exists) the "udev" source: events after udev's rules
    ran, so /dev/disk/by-id links and ID_* properties are in place;
  - without one (a minimal live system, a container) the "kernel" source: raw kernel uevents.
    Loop devices attached with losetup do send them (measured: three "change" events for
    loop0 on attach, one on detach).
Mounting and unmounting send no uevent, but the kernel marks /proc/self/mountinfo readable with
POLLPRI on every mount table change, so that file is watched too: a disk turns "mounted" in the
list without a refresh.

A uevent can arrive before sysfs shows everything about the device (seen with losetup under
load: the "change" event came while the new loop device did not list yet, and no further event
followed), so for SETTLE seconds after an event the list is read again at every wake-up.

If no netlink socket can be opened (no permission, no netlink in a sandbox) the watcher falls
back to listing the disks every ``poll_interval`` seconds (2 s: a disk plugged in shows within
the time a technician takes to look at the screen).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyudev

from clonebay.model import Disk
from clonebay.system import udev

UDEV_CONTROL = "/run/udev/control"
MOUNTINFO = "/proc/self/mountinfo"
POLL_INTERVAL = 2.0
WAKE_MS = 500  # how often the loop looks at the stop Event
BURST_MS = 100  # events closer together than this are one change (partx: one per partition)
SETTLE = 2.0  # seconds after an event during which the list is read again at every wake
MAX_BURST = 1024  # bound the draining of a burst

DiskLister = Callable[[], list[Disk]]


@dataclass(frozen=True)
class DiskChange:
    """The disks now, and which appeared, vanished or changed (size, mounts, partitions...)."""

    disks: tuple[Disk, ...]
    added: tuple[Disk, ...] = ()
    removed: tuple[Disk, ...] = ()
    changed: tuple[Disk, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff(old: list[Disk], new: list[Disk]) -> DiskChange:
    """What changed between two listings, matched by device path."""
    before = {d.path: d for d in old}
    after = {d.path: d for d in new}
    return DiskChange(
        tuple(new),
        added=tuple(d for p, d in after.items() if p not in before),
        removed=tuple(d for p, d in before.items() if p not in after),
        changed=tuple(d for p, d in after.items() if p in before and before[p] != d),
    )


class HotplugUnavailableError(OSError):
    """No uevent source could be opened; the caller polls instead."""


def event_source() -> str:
    """ "udev" when a udev daemon runs (its events come after its rules), else "kernel"."""
    return "udev" if os.path.exists(UDEV_CONTROL) else "kernel"


def open_monitor(source: str | None = None) -> pyudev.Monitor:
    """A started netlink monitor for block devices, or HotplugUnavailableError."""
    try:
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source or event_source())
        monitor.filter_by("block")
        monitor.start()
    except (OSError, ValueError, ImportError) as exc:
        raise HotplugUnavailableError(f"cannot listen for disk events: {exc}") from exc
    return monitor


class DiskWatcher:
    """Calls ``on_change`` with a DiskChange whenever the list of disks changes.

    ``run(stop)`` blocks until ``stop`` is set (run it in a thread); ``mode`` then says how it
    watched: "udev", "kernel" or "poll". The callback runs in the watcher's thread.
    """

    def __init__(
        self,
        on_change: Callable[[DiskChange], None],
        list_disks: DiskLister = udev.list_disks,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.on_change = on_change
        self.list_disks = list_disks
        self.poll_interval = poll_interval
        self.mode = ""
        self.current: list[Disk] = []
        self.ready = threading.Event()  # set once the first listing is taken

    def run(self, stop: threading.Event, *, monitor: bool = True) -> None:
        """Watch until ``stop``. The monitor opens before the first listing, so a disk that
        arrives in between is not missed; that first listing is reported with every disk as
        added."""
        mon = None
        if monitor:
            try:
                mon = open_monitor()
            except HotplugUnavailableError:
                mon = None
        self.current = self.list_disks()
        self.ready.set()
        self.on_change(DiskChange(tuple(self.current), added=tuple(self.current)))
        if mon is not None:
            self.mode = event_source()
            self._watch(mon, stop)
            return
        self.mode = "poll"
        while not stop.wait(self.poll_interval):
            self.rescan()

    def rescan(self) -> DiskChange:
        """List the disks again; report to ``on_change`` if anything changed."""
        new = self.list_disks()
        change = diff(self.current, new)
        self.current = new
        if change:
            self.on_change(change)
        return change

    def _watch(self, monitor: pyudev.Monitor, stop: threading.Event) -> None:
        poller = select.poll()
        poller.register(monitor.fileno(), select.POLLIN)
        mountinfo = _open_mountinfo()
        if mountinfo is not None:
            poller.register(mountinfo, select.POLLPRI | select.POLLERR)
        settle_until = 0.0
        try:
            while not stop.is_set():
                ready = poller.poll(WAKE_MS)
                if ready:
                    self._drain(monitor, poller)
                    settle_until = time.monotonic() + SETTLE
                elif time.monotonic() > settle_until:
                    continue
                self.rescan()
        finally:
            if mountinfo is not None:
                os.close(mountinfo)

    def _drain(self, monitor: pyudev.Monitor, poller: select.poll) -> None:
        """Take every pending uevent of this burst (their content does not matter: the disks
        are listed again afterwards)."""
        for _ in range(MAX_BURST):
            for _ in range(MAX_BURST):
                try:
                    if monitor.poll(timeout=0) is None:
                        break
                except OSError:  # ENOBUFS: events were lost; the listing that follows is whole
                    break
            if not poller.poll(BURST_MS):
                return


def _open_mountinfo() -> int | None:
    try:
        return os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
