"""A volume of the source as a writable file, copy-on-write: where a shrink happens.

``CowView`` starts the view daemon (browse/cowfile.py) over one volume of the source (a
partition of a disk, or a region of a directory image) with its overlay in a scratch folder,
and yields the file a resizer can run on. When it is closed the daemon writes the list of
byte ranges it changed; ``Changes`` then tells the copy which ranges to read from the overlay
and which from the source, so the bulk of the copy bypasses FUSE. The source is opened
read-only by the daemon and never written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from clonebay.browse.cowfile import FILE, MAP_SUFFIX
from clonebay.browse.procs import mounted_at, start_daemon, wait_for_exit
from clonebay.errors import DeviceError
from clonebay.model import Extent
from clonebay.system.run import run

log = logging.getLogger(__name__)

OVERLAY = "overlay"


def scratch_root() -> Path:
    """Where overlays live unless ``--scratch`` says otherwise: $CLONEBAY_SCRATCH, else the
    system's temporary folder (on the live system, RAM)."""
    return Path(os.environ.get("CLONEBAY_SCRATCH") or tempfile.gettempdir())


@dataclass(frozen=True)
class Base:
    """Where a volume's bytes are read: ``size`` bytes at ``offset`` of the disk (or disk image
    file) ``disk``, or the region ``region`` of the directory image ``image``."""

    size: int
    disk: str = ""
    offset: int = 0
    image: str = ""
    region: str = ""

    def args(self) -> list[str]:
        """The daemon's arguments (absolute paths: libfuse moves the daemon to /)."""
        if self.image:
            return ["--image", os.path.abspath(self.image), "--region", self.region]
        disk = os.path.abspath(self.disk)
        return ["--disk", disk, "--offset", str(self.offset), "--size", str(self.size)]

    def where(self) -> str:
        if self.image:
            return f"region {self.region} of {self.image}"
        return f"{self.disk} at byte {self.offset}"


@dataclass(frozen=True)
class Changes:
    """What a closed view changed: byte ranges (in the volume) now in ``overlay``."""

    overlay: Path
    ranges: tuple[Extent, ...]

    @property
    def changed_bytes(self) -> int:
        return sum(e.length for e in self.ranges)


class CowView:
    """One volume as a writable file in ``scratch`` (a fresh folder is made inside it)."""

    def __init__(self, base: Base, scratch: Path, name: str) -> None:
        self.base = base
        scratch.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"shrink-{name}-", dir=scratch))
        self.mountpoint = self.work / "view"
        self.mountpoint.mkdir()
        self.overlay = self.work / OVERLAY
        self.log = self.work / "view.log"
        self.pid = 0
        args = ["cow", str(self.mountpoint), str(self.overlay), *base.args()]
        try:
            self.pid = start_daemon(args, self.log)
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise

    @property
    def file(self) -> str:
        return str(self.mountpoint / FILE)

    def __enter__(self) -> CowView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()
        if exc_type is not None:
            self.discard()

    def unmount(self) -> None:
        """Stop the view (the daemon writes its map and exits); idempotent."""
        if self.pid:
            if mounted_at(self.mountpoint):
                run(["umount", str(self.mountpoint)], check=False)
                if mounted_at(self.mountpoint):  # still busy: detach it, the daemon follows
                    run(["umount", "-l", str(self.mountpoint)], check=False)
            wait_for_exit([self.pid])
            self.pid = 0

    def changes(self) -> Changes:
        """The ranges the resizer changed; DeviceError when a write into the overlay failed
        (its folder filled up) or the daemon left no map (it died)."""
        self.unmount()
        path = self.overlay.with_name(self.overlay.name + MAP_SUFFIX)
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DeviceError(
                f"the copy-on-write view of {self.base.where()} ended without its list of"
                f" changes ({exc}); see {self.log}"
            ) from exc
        if body.get("failed"):
            raise DeviceError(
                f"the copy-on-write view of {self.base.where()} lost a write:"
                f" {body['failed']} (is {self.work.parent} full? --scratch DIR puts it elsewhere)"
            )
        ranges = tuple(Extent(int(s), int(n)) for s, n in body["ranges"])
        return Changes(self.overlay, ranges)

    def discard(self) -> None:
        """Remove the overlay and the view's folder."""
        self.unmount()
        for _ in range(3):
            try:
                shutil.rmtree(self.work)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.2)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.work)
