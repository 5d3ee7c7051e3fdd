"""The process that serves a FUSE view, started by mounts.py and outliving ``clonebay mount``.

``python -m clonebay.browse.daemon --ready-fd N parts IMAGE DIR [--scratch S]`` serves the
partition files of IMAGE at DIR (writable, copy-on-write into S, when S is given);
``... fat PARTFILE DIR`` serves the FAT volume in PARTFILE read-only (fatfs.py);
``... cow DIR OVERLAY --disk PATH --offset N --size N`` (or ``--image IMAGE --region NAME``)
serves one volume as a writable file over a base that is never written (cowfile.py);
``... unlocked PARTFILE DIR`` serves the plaintext of the BitLocker or LUKS volume in PARTFILE
read-only as ``DIR/volume``, with the keys it reads from standard input (fs/unlock.py). The process
runs libfuse's loop in the foreground of its own session; when the kernel's INIT request
arrives the mount is live, and the daemon writes ``ready`` to fd N, so the starter waits on a
pipe, not a clock. It ends when DIR is unmounted. Its stderr is the view's log.
"""

from __future__ import annotations

import argparse
import ctypes.util
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FUSE_THREADS = 8  # requests served at once (libfuse3's default max_threads is 10)


def _prefer_fuse3() -> None:
    """mfusepy loads libfuse 2 when both are installed; fuse3 is the one Debian keeps current
    (and the only one with a setuid helper on the live system)."""
    if "FUSE_LIBRARY_NAME" not in os.environ and ctypes.util.find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"


def _signal_ready(fd: int | None) -> None:
    if fd is not None:
        os.write(fd, b"ready\n")
        os.close(fd)


def serve(operations: Any, mountpoint: str, *, ready_fd: int | None, writable: bool) -> None:
    """Run the FUSE loop for ``operations`` until ``mountpoint`` is unmounted."""
    import mfusepy

    original_init = getattr(operations, "init", None)

    def init(path: str) -> None:
        if original_init is not None:
            original_init(path)
        _signal_ready(ready_fd)

    operations.init = init
    options: dict[str, Any] = {"foreground": True, "fsname": "clonebay", "allow_other": True}
    options["ro" if not writable else "rw"] = True
    if mfusepy.fuse_version_major == 3:
        options["max_threads"] = FUSE_THREADS
    mfusepy.FUSE(operations, mountpoint, **options)


def _die_with_parent() -> None:
    """A copy-on-write view lives for one job: when the job's process dies (killed, crashed),
    the kernel sends this daemon SIGTERM (PR_SET_PDEATHSIG), and libfuse unmounts and exits."""
    PR_SET_PDEATHSIG = 1  # noqa: N806 (the kernel's name)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the prctl
        sys.exit(1)


def _cow_operations(args: argparse.Namespace) -> Any:
    from clonebay.browse import cowfile
    from clonebay.browse.cowfs import CowFileFS

    _die_with_parent()

    if args.image:
        read_at, close, size = cowfile.image_base(args.image, args.region)
    else:
        size = args.size
        read_at, close = cowfile.disk_base(args.disk, args.offset, size)
    overlay = cowfile.BlockOverlay(read_at, size, Path(args.overlay))
    return CowFileFS(overlay, close)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clonebay-view")
    parser.add_argument("--ready-fd", type=int)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("parts")
    p.add_argument("image")
    p.add_argument("mountpoint")
    p.add_argument("--scratch")
    f = sub.add_parser("fat")
    f.add_argument("partition")
    f.add_argument("mountpoint")
    c = sub.add_parser("cow")
    c.add_argument("mountpoint")
    c.add_argument("overlay")
    c.add_argument("--disk")
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--size", type=int, default=0)
    c.add_argument("--image")
    c.add_argument("--region")
    u = sub.add_parser("unlocked")
    u.add_argument("partition")
    u.add_argument("mountpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s clonebay-view %(levelname)s: %(message)s"
    )
    logging.getLogger("mfusepy").setLevel(logging.CRITICAL)  # it logs every EIO with a trace
    _prefer_fuse3()
    if args.kind == "parts":
        from clonebay.browse.cow import Overlay
        from clonebay.browse.fusefs import CACHE_FRAMES, PartitionsFS
        from clonebay.imaging.reader import ImageReader

        reader = ImageReader(args.image, cache_frames=CACHE_FRAMES)
        overlay = Overlay(reader, Path(args.scratch)) if args.scratch else None
        operations: Any = PartitionsFS(reader, overlay)
        writable = overlay is not None
    elif args.kind == "cow":
        operations, writable = _cow_operations(args), True
    elif args.kind == "unlocked":
        from clonebay.browse.unlockfs import unlocked_operations

        operations, writable = unlocked_operations(args.partition, sys.stdin.buffer.read()), False
    else:
        from clonebay.browse.fatfs import FatFS

        operations = FatFS(args.partition)
        writable = False
    parent = os.getppid()
    try:
        serve(operations, args.mountpoint, ready_fd=args.ready_fd, writable=writable)
    except RuntimeError:  # libfuse's loop ended on a signal (mfusepy raises its status)
        if os.getppid() == parent:
            raise
    finally:
        if args.kind == "cow" and os.getppid() != parent:  # the job died: its view is litter
            shutil.rmtree(Path(args.overlay).parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
