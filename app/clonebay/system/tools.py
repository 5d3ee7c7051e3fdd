"""External programs clonebay uses, declared once with the Debian package that provides them.

A job calls ``check_tools`` with the names it needs before it starts, so a missing program is
reported up front (all of them at once, with the apt-get line that fixes it) rather than halfway
through a copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

from clonebay.errors import ToolMissingError

# program -> Debian package
TOOLS: dict[str, str] = {
    "blkid": "util-linux",
    "blockdev": "util-linux",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "fsck.fat": "dosfstools",
    "fusermount": "fuse3",
    "fusermount3": "fuse3",
    "losetup": "util-linux",
    "lz4": "lz4",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mdel": "mtools",
    "mlabel": "mtools",
    "mshowfat": "mtools",
    "mattrib": "mtools",
    "mmd": "mtools",
    "mkfs.ext2": "e2fsprogs",
    "mkfs.ext3": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mkntfs": "ntfs-3g",
    "mkswap": "util-linux",
    "mount": "mount",
    "ntfs-3g": "ntfs-3g",
    "ntfscat": "ntfs-3g",
    "ntfscluster": "ntfs-3g",
    "ntfscp": "ntfs-3g",
    "ntfsfix": "ntfs-3g",
    "ntfsinfo": "ntfs-3g",
    "ntfsresize": "ntfs-3g",
    "partclone.extfs": "partclone",
    "partclone.ntfs": "partclone",
    "partclone.fat": "partclone",
    "partx": "util-linux",
    "resize2fs": "e2fsprogs",
    "setfattr": "attr",
    "sfdisk": "fdisk",
    "swaplabel": "util-linux",
    "cryptsetup": "cryptsetup-bin",
    "pvcreate": "lvm2",
    "sgdisk": "gdisk",
    "umount": "mount",
    "wipefs": "util-linux",
    "sshfs": "sshfs",
    "ssh-keyscan": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mount.cifs": "cifs-utils",
    "mount.nfs": "nfs-common",
    "mount.exfat-fuse": "exfat-fuse",
    "fusefat": "fusefat",
    "efibootmgr": "efibootmgr",
    "hivexsh": "libhivex-bin",
    "hivexget": "libhivex-bin",
    "hivexregedit": "libwin-hivex-perl",
    "tune2fs": "e2fsprogs",
    "chroot": "coreutils",
    "setpriv": "util-linux",
    "mkfs.exfat": "exfatprogs",
    "smartctl": "smartmontools",
}

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


def which(program: str) -> str | None:
    """Full path of ``program``, also looking in the sbin folders a user's PATH may lack."""
    return shutil.which(program, path=_SEARCH_PATH)


def missing(programs: Iterable[str]) -> list[str]:
    """The programs among ``programs`` that are not installed."""
    return [p for p in programs if which(p) is None]


def check_tools(programs: Iterable[str]) -> None:
    """Raise ToolMissingError naming every missing program and the packages that provide them."""
    absent = missing(programs)
    if absent:
        packages = sorted({TOOLS.get(p, p) for p in absent})
        raise ToolMissingError(
            f"missing program(s): {', '.join(absent)}; "
            f"install them with: apt-get install {' '.join(packages)}"
        )


def require(program: str) -> str:
    """Full path of one program, or ToolMissingError."""
    if os.sep in program:
        return program
    check_tools([program])
    path = which(program)
    assert path is not None
    return path
