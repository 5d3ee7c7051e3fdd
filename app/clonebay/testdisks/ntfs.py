"""NTFS test images: mkntfs on a sparse file, a Tree copied in through an ntfs-3g FUSE mount.

ntfscp cannot make folders, so the image file is mounted with ntfs-3g (root, /dev/fuse) and the
tree is copied with plain file operations: folders, files in the Tree's order, hard links,
symlinks (ntfs-3g stores them as reparse points), and alternate data streams written as
``user.<stream>`` extended attributes (``streams_interface=xattr``). Unmounting a FUSE file
system returns before the ntfs-3g daemon has flushed and closed the image, so ``mounted`` waits
for the daemon process itself to exit (a pidfd, no sleeping) before the image is used.

Variants for tests: any cluster size (mkntfs allows 512 B to 2 MiB), a fragmented $MFT with an
attribute list (``build_fragmented_mft``), a hibernated volume (``add_hiberfil``) and a dirty one
(``make_dirty``: ntfsresize shrinks the volume and marks it dirty, as it does for Windows).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clonebay.system.procs import holders, wait_pidfds
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_file
from clonebay.testdisks.tree import Tree

MiB = 1 << 20
BUILD_OPTIONS = "big_writes,streams_interface=xattr"
READ_OPTIONS = "ro,streams_interface=xattr"
STREAM_PREFIX = "user."
DAEMON_EXIT_TIMEOUT = 120.0  # seconds for ntfs-3g to flush and exit after umount


def make_ntfs(
    path: Path,
    size: int,
    *,
    label: str = "DATA",
    cluster_size: int = 4096,
    sector_size: int = 512,
    start_sector: int = 2048,
) -> Path:
    """An empty NTFS volume filling a new sparse file of ``size`` bytes.

    ``start_sector`` goes into the boot sector's hidden sectors field, as if the volume were a
    partition starting there; geometry 255 heads / 63 sectors as on PCs.
    """
    sparse_file(path, size)
    argv = ["mkntfs", "-F", "-Q", "-s", str(sector_size), "-c", str(cluster_size)]
    argv += ["-p", str(start_sector), "-H", "255", "-S", "63", "-L", label, str(path)]
    run(argv)
    return path


@contextmanager
def mounted(image: Path, *, read_only: bool = False) -> Iterator[Path]:
    """Mount ``image`` with ntfs-3g in a temporary folder; on exit unmount and wait until the
    daemon has written everything back and closed the image."""
    mnt = Path(tempfile.mkdtemp(prefix="clonebay-ntfs-"))
    pidfds: list[int] = []
    try:
        options = READ_OPTIONS if read_only else BUILD_OPTIONS
        before = set(holders(image))
        run(["ntfs-3g", "-o", options, str(image), str(mnt)])
        try:
            for pid in set(holders(image)) - before:
                try:
                    pidfds.append(os.pidfd_open(pid))
                except ProcessLookupError:
                    continue
            yield mnt
        finally:
            run(["umount", str(mnt)])
            wait_pidfds(pidfds, DAEMON_EXIT_TIMEOUT, "ntfs-3g")
    finally:
        for fd in pidfds:
            os.close(fd)
        mnt.rmdir()


def copy_tree(tree: Tree, root: Path) -> None:
    """Copy ``tree`` into the folder ``root`` (a mounted NTFS volume), streams included."""
    for folder in sorted(tree.dirs):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for rel in tree.files:  # the Tree's order: builders rely on it to place data
        if rel not in tree.hardlinks:
            shutil.copyfile(tree.root / rel, root / rel)
    for rel, existing in tree.hardlinks.items():
        os.link(root / existing, root / rel)
    for rel, target in tree.symlinks.items():
        os.symlink(target, root / rel)
    for rel, streams in tree.streams.items():
        for name, data in streams.items():
            os.setxattr(root / rel, STREAM_PREFIX + name, data)


def build_ntfs(
    path: Path,
    size: int,
    tree: Tree,
    *,
    label: str = "DATA",
    cluster_size: int = 4096,
    sector_size: int = 512,
    start_sector: int = 2048,
) -> Path:
    """An NTFS image of ``size`` bytes at ``path`` holding ``tree``."""
    make_ntfs(
        path,
        size,
        label=label,
        cluster_size=cluster_size,
        sector_size=sector_size,
        start_sector=start_sector,
    )
    with mounted(path) as mnt:
        copy_tree(tree, mnt)
    return path


def build_fragmented_mft(
    path: Path, work: Path, size: int = 256 * MiB, files: int = 6000, seed: int = 6
) -> Tree:
    """An image whose $MFT is split into hundreds of runs, with an attribute list in record 0.

    ntfs-3g keeps file data out of the MFT zone while there is room elsewhere, and grows $MFT
    16 records at a time right after its end. A filler file takes 86% of the free space (all of
    it outside the zone), so the small files that follow put their data in the zone: each MFT
    extension then finds its next clusters taken and starts a new run. 6,000 files give ~320
    runs, more than record 0 can hold (measured with ntfs-3g 2022.10.3, 4 KiB clusters).
    """
    make_ntfs(path, size, label="FRAG")
    rng = random.Random(seed)
    tree = Tree(work)
    work.mkdir(parents=True, exist_ok=True)
    with mounted(path) as mnt:
        vfs = os.statvfs(mnt)
        filler = int(vfs.f_bavail * vfs.f_frsize * 0.86) // 4096 * 4096
        tree.add_random_file("filler.bin", filler, rng)
        for i in range(files):
            tree.add_file(f"f{i:05d}.bin", rng.randbytes(rng.randint(800, 1500)))
        copy_tree(tree, mnt)
    return tree


def add_hiberfil(image: Path, magic: bytes = b"HIBR", size: int = 4 * MiB) -> None:
    """Put a hiberfil.sys whose header starts with ``magic`` into the root folder.

    b"HIBR"/b"hibr" is what Windows leaves after hibernating or a Fast Startup shutdown;
    b"wake" (or zeros) after it resumed.
    """
    header = magic + struct.pack("<I", 1) + bytes(4096 - len(magic) - 4)
    body = random.Random(9).randbytes(size - len(header))
    with mounted(image) as mnt:
        (mnt / "hiberfil.sys").write_bytes(header + body)


def make_dirty(image: Path, shrink: int = MiB) -> None:
    """Shrink the volume by ``shrink`` bytes with ntfsresize, which marks it dirty so that
    Windows runs chkdsk, then cut the file to the new size as a partition editor would.

    ntfsresize keeps whole clusters and writes the backup boot sector in the new last sector, so
    a few sectors between the volume's end and that backup belong to no cluster.
    """
    new_size = image.stat().st_size - shrink
    run(["ntfsresize", "-f", "-f", "-P", "-s", str(new_size), str(image)])
    os.truncate(image, new_size)


def hash_folder(root: Path, *, streams: bool = False) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (and ``path:stream`` of each stream)."""
    out: dict[str, str] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            rel = path.relative_to(root).as_posix()
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for piece in iter(lambda: f.read(4 * MiB), b""):
                    digest.update(piece)
            out[rel] = digest.hexdigest()
            if streams:
                for attr in os.listxattr(path):
                    if attr.startswith(STREAM_PREFIX):
                        data = os.getxattr(path, attr)
                        out[f"{rel}:{attr[len(STREAM_PREFIX) :]}"] = hashlib.sha256(
                            data
                        ).hexdigest()
    return out


def file_hashes(image: Path, *, streams: bool = False) -> dict[str, str]:
    """Read every regular file of the image back (mounted read-only): path -> sha256.

    With ``streams``, every alternate data stream is included as ``path:stream``.
    """
    with mounted(image, read_only=True) as mnt:
        return hash_folder(mnt, streams=streams)


def expected_hashes(tree: Tree, *, streams: bool = False) -> dict[str, str]:
    """What ``file_hashes`` must return for an image built from ``tree``."""
    out = dict(tree.files)
    if streams:
        for rel, named in tree.streams.items():
            for name, data in named.items():
                out[f"{rel}:{name}"] = hashlib.sha256(data).hexdigest()
    return out


def fsck(image: Path) -> None:
    """``ntfsfix -n`` must report the volume processed successfully; since that check is weak
    (it reads $MFT, $MFTMirr and the boot sectors), the image must also mount read-only."""
    proc = run(["ntfsfix", "-n", str(image)], check=False)
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode != 0 or "processed successfully" not in text:
        raise AssertionError(f"ntfsfix -n {image} exited {proc.returncode}:\n{text}")
    with mounted(image, read_only=True) as mnt:
        os.listdir(mnt)
