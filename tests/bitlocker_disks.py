"""BitLocker volumes with a valid NTFS inside, and reading them back, with dislocker as the oracle.

The shipped volumes (tests/bitlocker_data.py) were made by Windows but their NTFS is not
consistent. A test that copies one needs a real NTFS inside, so a copy of a shipped volume is
unlocked read-write with dislocker-fuse, ``mkntfs`` formats the decrypted file and ntfs-3g writes a
Windows-like tree into it. dislocker refuses writes into BitLocker's metadata areas (EFAULT), so
the NTFS is made smaller than the offset of the first area (the rest of the volume is BitLocker's
and unused): ``ntfs_bytes``. Reading back goes through dislocker-fuse (read-only) and ntfs-3g, code
that is not clonebay's; the password is given on dislocker's command line, which is fine for a
test's own oracle and is never done by clonebay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from clonebay.fs import extents
from clonebay.fs.bitlocker_protectors import ProtectorKind
from clonebay.system.procs import holders
from clonebay.system.run import run
from tests.bitlocker_data import BEK, Shipped, load_shipped
from tests.edgedisks import gpt_disk, layout, mkext, put
from tests.oracles import partclone_used

MIB = 1 << 20
NTFS_BYTES = 32 * MIB  # below the first FVE metadata area of VOLUME (33.6 MiB)
VOLUME = "bitlk-aes-xts-128"  # AES-XTS 128, a password and a recovery password protector
TREE = {  # path -> size: a Windows-like tree, 13.7 MB in all
    "Windows/System32/config/SYSTEM": 3_145_728,
    "Windows/System32/config/SOFTWARE": 4_194_304,
    "Windows/System32/drivers/etc/hosts": 824,
    "Users/tech/Documents/report.docx": 1_234_567,
    "Users/tech/Pictures/site.jpg": 2_500_001,
    "Users/tech/Desktop/notes.txt": 1_000,
    "ProgramData/Vendor/data.bin": 2_621_440,
}


def _wait_released(path: Path) -> None:
    """Until no process holds ``path`` (ntfs-3g writes its last data as it exits)."""
    end = time.monotonic() + 60
    while holders(path) and time.monotonic() < end:
        time.sleep(0.1)


def method_of(volume: Shipped) -> list[str]:
    """dislocker's options for the first secret ``volume`` has: password, recovery password,
    startup key (.BEK), or its clear key (protection suspended)."""
    if volume.password:
        return [f"-u{volume.password}"]
    if ProtectorKind.STARTUP_KEY in volume.protectors.values():
        return ["-f", str(volume.path.parent / BEK)]
    if volume.recovery:
        return [f"-p{next(iter(volume.recovery))}"]
    return ["-c"]


@contextlib.contextmanager
def unlocked(volume: Path, secret: str = "", *, offset: int = 0, writable: bool = False,
             recovery: bool = False, method: Sequence[str] = ()) -> Iterator[Path]:  # fmt: skip
    """The decrypted file dislocker-fuse serves for the BitLocker volume at ``offset``, opened
    with ``secret`` (a password, or the recovery password) or dislocker's options ``method``."""
    point = Path(tempfile.mkdtemp(prefix="clonebay-dislocker-"))
    how = list(method) or [f"-p{secret}" if recovery else f"-u{secret}"]
    argv = ["dislocker-fuse", "-V", str(volume), "-O", str(offset), *how]
    run([*argv, *([] if writable else ["-r"]), "--", str(point)])
    try:
        yield point / "dislocker-file"
    finally:
        run(["umount", str(point)])
        _wait_released(volume)
        point.rmdir()


@contextlib.contextmanager
def mounted_ntfs(file: Path, *, writable: bool = False) -> Iterator[Path]:
    point = Path(tempfile.mkdtemp(prefix="clonebay-ntfs-"))
    run(["ntfs-3g", "-o", "rw" if writable else "ro", str(file), str(point)])
    try:
        yield point
    finally:
        run(["umount", str(point)])
        _wait_released(file)
        point.rmdir()


def fill_volume(
    volume: Path, method: Sequence[str], ntfs_bytes: int, seed: int = 7
) -> dict[str, str]:
    """Format the NTFS inside BitLocker ``volume`` (``ntfs_bytes`` long; opened with dislocker's
    ``method``) and write TREE into it; returns each file's SHA-256."""
    rng = random.Random(seed)
    sums = {}
    with unlocked(volume, method=method, writable=True) as plain:
        run(["mkntfs", "-F", "-Q", "-L", "Windows", str(plain), str(ntfs_bytes // 512)])
        with mounted_ntfs(plain, writable=True) as root:
            for rel, size in TREE.items():
                data = rng.randbytes(size)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
                sums[rel] = hashlib.sha256(data).hexdigest()
            os.sync()
    return sums


def read_tree(
    volume: Path,
    secret: str,
    ntfs_bytes: int,
    *,
    offset: int = 0,
    recovery: bool = False,
    method: Sequence[str] = (),
) -> dict[str, str]:
    """Each TREE file's SHA-256 as dislocker and ntfs-3g read it, once ``ntfsfix -n`` passed on
    the NTFS's ``ntfs_bytes`` (ntfsfix looks for the backup boot sector at the file's end)."""
    with unlocked(volume, secret, offset=offset, recovery=recovery, method=method) as plain:
        with tempfile.TemporaryDirectory() as tmp:
            alone = Path(tmp) / "ntfs.img"
            with plain.open("rb") as fin, alone.open("wb") as fout:
                fout.write(fin.read(ntfs_bytes))
            run(["ntfsfix", "-n", str(alone)])
        with mounted_ntfs(plain) as root:
            return {
                rel: hashlib.sha256((root / rel).read_bytes()).hexdigest()
                for rel in TREE
                if (root / rel).is_file()
            }


class Source:
    """A GPT disk image: p1 the BitLocker VOLUME with a valid NTFS holding TREE, p2 ext4."""

    def __init__(self, disk: Path, volume: Shipped, sums: dict[str, str], used: int) -> None:
        self.disk = disk
        self.volume = volume
        self.sums = sums
        self.used = used  # the NTFS's used bytes as partclone counts them
        self.start = layout(disk)[1][0] * 512

    @property
    def recovery(self) -> str:
        """Its recovery password (the volume's password is ``volume.password``)."""
        return next(iter(self.volume.recovery))


def bitlocker_disk(work: Path, name: str = VOLUME) -> Source:
    """Build the Source disk in ``work`` with the shipped volume ``name`` as p1 (about 10 s)."""
    volume = load_shipped(work)[name]
    method = method_of(volume)
    sums = fill_volume(volume.path, method, NTFS_BYTES)
    with unlocked(volume.path, method=method) as plain:
        used = extents.total(partclone_used(plain, "ntfs"))
    mib = volume.path.stat().st_size // MIB
    specs = (f"1:2048:+{mib}M", "2:0:+40M")
    disk = gpt_disk(work / "disk.img", (mib + 60) * MIB, *specs, typecodes=["1:0700"])
    parts = layout(disk)
    assert parts[1][1] * 512 == volume.path.stat().st_size
    put(disk, volume.path, parts[1][0] * 512)
    mkext(disk, parts[2][0] * 512, parts[2][1] * 512)
    return Source(disk, volume, sums, used)
