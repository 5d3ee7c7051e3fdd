"""Writing a stick: the live ISO, then an images partition after it (layout: system/stick.py).

``check_stick`` makes every refusal before anything is written: the device must be a whole disk
(not a partition, not a file) with 512-byte logical sectors, pass the guard (system/guard.py: not
the running system, nothing on it mounted or held, not the disk the ISO lies on), and hold the ISO
plus ``MIN_IMAGES``; the tools must be there and the ISO must be an isohybrid image clonebay
understands. ``write_stick`` then writes in an order that leaves a plainly unfinished stick when
it stops half way (DESIGN §5: the partition table comes last):

1. zero the system area (old partition tables and boot code), the last MiB (a stale backup GPT)
   and the first MiB where the images partition goes (an old filesystem's signature);
2. copy the ISO from byte 32 KiB on in 4 MiB writes (direct I/O, system/directio.py), fsync;
3. read that back from the medium and compare its SHA-256 with the ISO's;
4. write the backup GPT at the end, then the system area with the new tables, fsync, read both
   back and compare;
5. make the kernel see the partitions (BLKRRPART; for a loop device without partition scanning,
   ``partx``), then mkfs with the label, and check the result with ``blkid -p``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clonebay.errors import (
    DeviceError,
    SafetyError,
    ToolMissingError,
    UsageError,
    VerifyError,
)
from clonebay.model import Progress
from clonebay.system import guard
from clonebay.system.blockdev import SourceDevice, TargetDevice, device_size, sector_sizes
from clonebay.system.run import output, run
from clonebay.system.stick import (
    FS_KINDS,
    MIB,
    SECTOR,
    SYSTEM_AREA,
    ImagesFs,
    StickPlan,
    backup_gpt,
    parse_iso,
    patch_head,
    plan_stick,
)
from clonebay.system.tools import missing

CHUNK = 4 * MIB
BLKRRPART = 0x125F
SYS_CLASS_BLOCK = Path("/sys/class/block")
ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class StickResult:
    device: str
    iso: str
    iso_size: int
    iso_sha256: str
    partition: str  # the images partition's device node
    number: int
    start: int
    size: int
    fs: str
    label: str
    gpt: bool  # the GPT was updated as well as the MBR


def check_stick(iso: str, device: str, fs: ImagesFs, label: str) -> StickPlan:
    """Every refusal, before anything is written; the plan when there is none."""
    _check_tools(fs)
    try:
        info = os.stat(device)
    except OSError as exc:
        raise UsageError(f"{device}: {exc.strerror}") from exc
    if not stat.S_ISBLK(info.st_mode):
        raise UsageError(f"{device} is not a block device: give the whole stick, e.g. /dev/sdb")
    name = _sys_name(info.st_rdev)
    if (SYS_CLASS_BLOCK / name / "partition").exists():
        raise SafetyError(
            f"{device} is a partition; make-stick writes a whole disk (the stick itself, e.g."
            f" /dev/{_parent(name)}); nothing was written"
        )
    guard.check_target(iso, device)
    with SourceDevice(iso) as src:
        head = src.io.read(SYSTEM_AREA + 2048, 0)
        layout = parse_iso(head, src.size)
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size, logical = device_size(fd), sector_sizes(fd)[0]
    finally:
        os.close(fd)
    if logical != SECTOR:
        raise SafetyError(
            f"{device} has {logical}-byte logical sectors; the ISO's partition tables count"
            f" {SECTOR}-byte sectors and would not boot there; nothing was written"
        )
    return plan_stick(layout, size, fs, label)


def _check_tools(fs: ImagesFs) -> None:
    kind = FS_KINDS[fs]
    needs = {kind.mkfs[0]: kind.package, "partx": "util-linux", "blkid": "util-linux"}
    absent = missing(needs)
    if absent:
        packages = " ".join(sorted({needs[p] for p in absent}))
        raise ToolMissingError(
            f"missing program(s): {', '.join(absent)}; install them with: apt-get install"
            f" {packages}"
        )


def _sys_name(devnum: int) -> str:
    """The kernel's name of a block device number (sdb, loop3p1)."""
    link = Path(f"/sys/dev/block/{os.major(devnum)}:{os.minor(devnum)}")
    return link.resolve().name


def _parent(name: str) -> str:
    return (SYS_CLASS_BLOCK / name).resolve().parent.name


def write_stick(
    plan: StickPlan, iso: str, device: str, progress: ProgressFn | None = None
) -> StickResult:
    """Write the ISO and the images partition as planned (after ``check_stick`` and the
    user's confirmation)."""
    run(["partx", "--delete", device], check=False)  # old partitions' nodes: none is in use
    with SourceDevice(iso) as src, TargetDevice(device) as tgt:
        if tgt.size != plan.device_size or src.size != plan.layout.size:
            raise SafetyError(
                f"{device} or {iso} changed size since the plan was made; nothing was written"
            )
        head = src.io.read(SYSTEM_AREA, 0)
        patched = patch_head(head, plan)
        backup = backup_gpt(patched, plan)
        _wipe(tgt, plan)
        digest, body = _copy(src, tgt, head, progress)
        _verify_body(tgt, plan, body, progress)
        if backup is not None:
            tgt.write_at(backup[1], backup[0])
        tgt.write_at(patched, 0)
        tgt.sync()
        tgt.drop_range(0, 0)
        if tgt.read(SYSTEM_AREA, 0) != patched or (
            backup is not None and tgt.read(len(backup[1]), backup[0]) != backup[1]
        ):
            raise VerifyError(f"the partition tables read back from {device} differ")
        rescanned = _rescan(tgt.fd)
    node = _partition_node(device, plan, rescanned)
    kind = FS_KINDS[plan.fs]
    force = ["-F"] if plan.fs is ImagesFs.EXT4 else []  # no question: the checks were made
    run([*kind.mkfs[:-1], *force, kind.mkfs[-1], plan.label, node])
    _check_filesystem(node, plan)
    return StickResult(
        device,
        iso,
        plan.layout.size,
        digest,
        node,
        plan.slot,
        plan.start,
        plan.size,
        plan.fs.value,
        plan.label,
        plan.layout.gpt_header is not None,
    )


def _wipe(tgt: TargetDevice, plan: StickPlan) -> None:
    """Zero what could make a half-written stick look whole or carry old data into the new
    layout: the system area (boot code and tables), the last MiB (a stale backup GPT that
    tools would find at the end) and the images partition's first MiB (an old filesystem)."""
    tgt.zero(0, SYSTEM_AREA)
    tgt.zero(tgt.size - MIB, MIB)
    tgt.zero(plan.start, MIB)
    tgt.sync()


def _report(progress: ProgressFn | None, region: str, done: int, total: int, t0: float) -> None:
    if progress is None:
        return
    elapsed = max(time.monotonic() - t0, 1e-6)
    rate = done / elapsed
    eta = (total - done) / rate if rate else None
    done = min(done, total)
    progress(Progress(region, done, total, rate, eta, "stick"))


def _copy(
    src: SourceDevice, tgt: TargetDevice, head: bytes, progress: ProgressFn | None
) -> tuple[str, str]:
    """Copy the ISO past its system area (which comes last, with the tables): the whole ISO's
    SHA-256 (to compare with a published one) and the copied part's."""
    whole, body = hashlib.sha256(head), hashlib.sha256()
    buf = memoryview(mmap.mmap(-1, CHUNK))  # page-aligned: direct writes need no bounce copy
    total, t0 = src.size - SYSTEM_AREA, time.monotonic()
    for offset in range(SYSTEM_AREA, src.size, CHUNK):
        view = buf[: min(CHUNK, src.size - offset)]
        if src.io.read_into(view, offset) != len(view):
            raise DeviceError(f"{src.path}: short read at byte {offset}")
        whole.update(view)
        body.update(view)
        tgt.write_at(view, offset)
        _report(progress, "copy ISO", offset + CHUNK - SYSTEM_AREA, total, t0)
    tgt.sync()
    return whole.hexdigest(), body.hexdigest()


def _verify_body(
    tgt: TargetDevice, plan: StickPlan, expected: str, progress: ProgressFn | None
) -> None:
    """Read the copied ISO back from the medium and compare its hash."""
    tgt.drop_range(0, 0)  # a buffered read-back (no O_DIRECT) must not read the page cache
    digest, size, t0 = hashlib.sha256(), plan.layout.size, time.monotonic()
    for offset in range(SYSTEM_AREA, size, CHUNK):
        digest.update(tgt.read(min(CHUNK, size - offset), offset))
        _report(progress, "verify ISO", offset + CHUNK - SYSTEM_AREA, size - SYSTEM_AREA, t0)
    if digest.hexdigest() != expected:
        raise VerifyError(
            f"the ISO read back from {tgt.path} differs from {plan.layout.size} bytes written"
            " (a failing or fake-capacity stick?); it has no partition table and will not"
            " boot: try another stick"
        )


def _rescan(fd: int) -> bool:
    """Ask the kernel to read the new tables (BLKRRPART); False when it would not (a loop
    device without partition scanning: EINVAL; partitions busy: EBUSY)."""
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBUSY):
            raise DeviceError(f"re-reading the partition table failed: {exc.strerror}") from exc
        return False
    return True


def _partition_node(device: str, plan: StickPlan, rescanned: bool) -> str:
    """The images partition's node, once the kernel has it where planned (partx adds it when
    the kernel's own scan did not: loop devices here often have no partition scanning)."""
    name = _sys_name(os.stat(device).st_rdev)
    node = _find_partition(name, plan)
    if node is None:
        # partx --add adds each entry by BLKPG; the ESP inside the ISO's partition fails as
        # overlapping, so only the images partition is asked for by number.
        if not rescanned:
            run(["partx", "--add", device], check=False)
        node = _find_partition(name, plan) or _partx_one(device, name, plan)
    return node


def _partx_one(device: str, name: str, plan: StickPlan) -> str:
    run(["partx", "--add", "--nr", str(plan.slot), device], check=False)
    node = _find_partition(name, plan)
    if node is None:
        raise DeviceError(
            f"the kernel does not show partition {plan.slot} of {device} after the tables were"
            " written (the ISO is on the stick, verified): unplug and replug it, then run"
            f" mkfs.{plan.fs.value} -L {plan.label} on its partition {plan.slot}"
        )
    return node


def _find_partition(name: str, plan: StickPlan) -> str | None:
    """/dev/NAME of partition ``plan.slot`` of disk ``name`` if its start and size agree."""
    for part in (SYS_CLASS_BLOCK / name).iterdir():
        try:
            number = int((part / "partition").read_text())
            start = int((part / "start").read_text()) * SECTOR
            size = int((part / "size").read_text()) * SECTOR
        except (OSError, ValueError):
            continue
        if number == plan.slot and start == plan.start and size == plan.size:
            return f"/dev/{part.name}"
    return None


def _check_filesystem(node: str, plan: StickPlan) -> None:
    """blkid -p (probing the device itself, no cache) must see the filesystem and label."""
    text = output(["blkid", "-p", "-o", "export", node], ok_codes=(0, 2))
    found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if found.get("TYPE") != plan.fs.value or found.get("LABEL") != plan.label:
        raise VerifyError(
            f"{node} should hold {plan.fs.value} labelled {plan.label} after mkfs; blkid sees"
            f" {found.get('TYPE', 'nothing')} {found.get('LABEL', '')}".rstrip()
        )
