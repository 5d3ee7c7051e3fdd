"""The compare bench's source disk: a GPT disk image with ext4, NTFS and FAT32 partitions filled
like a technician's disk, built once per work folder and size, and the loop devices it runs on.

Layout (as issue 14's 16 GiB disk, scaled by the disk size): ext4 10/16, NTFS 4/16, FAT32 the
rest, 1 MiB aligned. Each filesystem is filled to the same share of its size (``used`` bytes over
the disk) with a realistic mix:

- ext4: a copy of this machine's real /usr/share and /usr/lib files (35 % of its data),
  ``tree.usr_tree`` (synthetic /usr, ~5 %), text logs (10 %), random "media" files (the rest);
- NTFS: ``tree.windows_tree`` (~5 %), real /usr/share files (20 %), logs (10 %), media;
- FAT32: ``tree.small_tree`` files, text documents (10 %), random photos (the rest).

Random media do not compress; /usr files and logs do (lz4 shrinks the whole mix by ~25-35 %).
Each filesystem is built in a sparse file by clonebay's test-disk builders, copied into the disk
image, and every hole of the disk is then written as zeros: free space on a real disk is
physical blocks, and reading a hole would flatter tools that copy free space (dd).

A finished disk is recorded next to it as ``<name>.json``; an image without it is rebuilt.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clonebay.testdisks import ext, fat, ntfs, tree
from clonebay.testdisks.files import data_runs, sparse_copy, sparse_file
from volumes import domain_used

GIB, MIB = 1 << 30, 1 << 20
PARTCLONE = {"ext4": "partclone.extfs", "ntfs": "partclone.ntfs", "fat32": "partclone.fat32"}
GPT_TYPE = {"ext4": "8300", "ntfs": "0700", "fat32": "0700"}
SHARES = (("ext4", 10), ("ntfs", 4), ("fat32", 2))  # sixteenths of the disk


@dataclass(frozen=True)
class Part:
    """One partition of the source disk and what partclone -D says is in use on it."""

    number: int
    fstype: str
    start: int
    size: int
    used: int
    files: int

    @property
    def partclone(self) -> str:
        return PARTCLONE[self.fstype]


@dataclass(frozen=True)
class SourceDisk:
    path: str
    size: int
    parts: list[Part] = field(default_factory=list)
    build_seconds: float = 0.0

    @property
    def used(self) -> int:
        return sum(p.used for p in self.parts)

    def part(self, fstype: str) -> Part:
        return next(p for p in self.parts if p.fstype == fstype)

    def describe(self) -> str:
        parts = ", ".join(
            f"p{p.number} {p.fstype} {p.size / GIB:.2f} GiB ({p.used / GIB:.2f} GiB used,"
            f" {p.files} files)"
            for p in self.parts
        )
        return (
            f"{self.size / GIB:.0f} GiB GPT disk, {self.used / GIB:.2f} GiB used"
            f" ({self.used / 1e9:.2f} GB): {parts}"
        )


def _note(t: tree.Tree, rel: str) -> None:
    t.files[rel] = ""  # content hashes are not needed here
    parts = rel.split("/")[:-1]
    t.dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))


def add_real_files(t: tree.Tree, prefix: str, sources: list[str], budget: int) -> int:
    """Copy regular files from this machine's ``sources`` (sorted walk, each under 64 MiB) under
    ``prefix`` until ``budget`` bytes; returns the bytes copied."""
    copied = 0
    for top in sources:
        for folder, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                src = Path(folder) / name
                if src.is_symlink() or not src.is_file() or "\\" in name:
                    continue
                size = src.stat().st_size
                if size > 64 * MIB or copied + size > budget:
                    continue
                rel = f"{prefix}/{src.relative_to('/usr')}"
                dst = t.root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, dst)
                except OSError:
                    continue
                _note(t, rel)
                copied += -(-size // 4096) * 4096  # what it takes in 4 KiB blocks
                if copied >= budget - 4096:
                    return copied
    return copied


def add_logs(t: tree.Tree, folder: str, budget: int, rng: random.Random) -> None:
    """Text logs of 4-48 MiB each: timestamped lines drawn from a few thousand messages."""
    services = ["sshd", "kernel", "systemd", "cron", "NetworkManager", "dockerd", "postgres"]
    messages = [tree.text_bytes(rng, rng.randint(30, 140)).decode() for _ in range(3000)]
    n = 0
    while budget > 0:
        size = min(budget, rng.randint(4, 48) * MIB)
        lines: list[str] = []
        length, second = 0, 1_700_000_000 + n * 86_400
        while length < size:
            batch = rng.choices(messages, k=2000)
            for msg in batch:
                second += rng.randint(0, 3)
                svc = rng.choice(services)
                line = f"{second} host {svc}[{rng.randint(100, 9999)}]: {msg}\n"
                lines.append(line)
                length += len(line)
        rel = f"{folder}/service-{n:03d}.log"
        t.add_file(rel, "".join(lines).encode()[:size])
        budget -= size
        n += 1


def add_media(t: tree.Tree, pattern: str, budget: int, *, lo: int, hi: int, seed: int) -> None:
    """Random (incompressible) files of ``lo``-``hi`` MiB named ``pattern.format(n)``."""
    rng = random.Random(seed)
    n = 0
    while budget >= MIB:
        size = min(budget, rng.randint(lo, hi) * MIB) // 4096 * 4096
        t.add_random_file(pattern.format(n), size, rng)
        budget -= size
        n += 1


def _overhead(fstype: str, size: int, work: Path) -> int:
    """Bytes partclone -D marks as used on an empty filesystem of this size."""
    empty = work / f"empty-{fstype}.img"
    if fstype == "ext4":
        ext.build_ext(empty, size, tree.Tree(_mkdir(work / "empty")), variant="ext4")
    elif fstype == "ntfs":
        ntfs.make_ntfs(empty, size, label="Windows")
    else:
        fat.make_fat(empty, size, 32, label="DATA")
    used = domain_used(empty, PARTCLONE[fstype])
    empty.unlink()
    return used


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build_fs(fstype: str, image: Path, size: int, *, used: int, start: int, work: Path) -> int:
    """Build one filesystem filled to about ``used`` bytes; returns its file count."""
    budget = max(0, used - _overhead(fstype, size, work))
    rng = random.Random(size ^ used)
    root = _mkdir(work / f"tree-{fstype}")
    if fstype == "ext4":
        t = tree.usr_tree(root, files=max(500, min(40_000, budget // 20 // 7000)), big_file=0)
        files_meta = t.file_count * 2048  # inodes of small files: directories, tails
        left = budget - t.total_bytes - files_meta
        left -= add_real_files(t, "usr-real", ["/usr/share", "/usr/lib"], int(budget * 0.35))
        logs = int(budget * 0.10)
        add_logs(t, "var/log/services", logs, rng)
        add_media(t, "home/user/Videos/clip{:04d}.mp4", left - logs, lo=16, hi=192, seed=21)
        ext.build_ext(image, size, t, variant="ext4", label="benchroot")
    elif fstype == "ntfs":
        t = tree.windows_tree(root, files=max(500, min(20_000, budget // 20 // 7000)), pagefile=0)
        left = budget - t.total_bytes - 1024 * t.file_count  # an MFT record per file
        left -= add_real_files(t, "Program Files/usr", ["/usr/share"], int(budget * 0.20))
        logs = int(budget * 0.10)
        add_logs(t, "Windows/Logs/CBS", logs, rng)
        add_media(t, "Users/Public/Videos/movie{:04d}.mp4", left - logs, lo=16, hi=192, seed=22)
        ntfs.build_ntfs(image, size, t, label="Windows", start_sector=start // 512)
    else:
        t = tree.small_tree(root, files=300)
        left = budget - t.total_bytes - 4096 * t.file_count
        docs = int(budget * 0.10)
        add_logs(t, "DOCS", docs, rng)
        add_media(t, "DCIM/100CAMERA/IMG_{:04d}.JPG", left - docs, lo=2, hi=12, seed=23)
        fat.build_fat(image, size, t, bits=32, label="DATA", start_sector=start // 512)
    count = t.file_count
    shutil.rmtree(root)
    return count


def fill_holes(path: Path) -> None:
    """Write zeros over every hole of ``path`` (free space as physical blocks, in place)."""
    size = path.stat().st_size
    zeros = bytes(8 * MIB)
    fd = os.open(path, os.O_RDWR)
    try:
        pos = 0
        for start, length in [*data_runs(fd, size), (size, 0)]:
            while pos < start:
                n = min(start - pos, len(zeros))
                os.pwrite(fd, zeros[:n], pos)
                pos += n
            pos = max(pos, start + length)
        os.fsync(fd)
    finally:
        os.close(fd)


def layout(size: int) -> list[tuple[str, int, int]]:
    """(fstype, start, size) of each partition of a ``size``-byte disk."""
    unit = (size - 2 * MIB) // 16 // MIB * MIB
    out, start = [], MIB
    for i, (fstype, share) in enumerate(SHARES):
        part = share * unit if i < len(SHARES) - 1 else size - MIB - start - MIB
        out.append((fstype, start, part))
        start += part
    return out


def source_disk(work: Path, size_gib: int, used_gib: float) -> SourceDisk:
    """The source disk of ``size_gib`` GiB with about ``used_gib`` GiB in use, built if missing."""
    folder = _mkdir(work.resolve() / "disks")
    name = f"disk-{size_gib}g-used{round(used_gib * 1024)}m"
    image, record = folder / f"{name}.img", folder / f"{name}.json"
    if image.exists() and record.exists():
        data = json.loads(record.read_text())
        data["parts"] = [Part(**p) for p in data["parts"]]
        return SourceDisk(**data)
    record.unlink(missing_ok=True)
    started = time.monotonic()
    size = size_gib * GIB
    partial = folder / f"{name}.building"
    sparse_file(partial, size)
    argv = ["sgdisk", "-U", "R"]
    plan = layout(size)
    for i, (fstype, start, psize) in enumerate(plan, start=1):
        argv += [f"-n{i}:{start // 512}:+{psize // 1024}K", f"-t{i}:{GPT_TYPE[fstype]}"]
    subprocess.run([*argv, str(partial)], check=True, capture_output=True)
    parts = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=f"build-{name}-") as tmp:
        for number, (fstype, start, psize) in enumerate(plan, start=1):
            print(f"  building p{number} {fstype}", flush=True)
            fs_image = Path(tmp) / f"p{number}.img"
            want = int(used_gib * GIB * psize / size)
            files = _build_fs(fstype, fs_image, psize, used=want, start=start, work=Path(tmp))
            used = domain_used(fs_image, PARTCLONE[fstype])
            sparse_copy(fs_image, partial, start)
            fs_image.unlink()
            parts.append(Part(number, fstype, start, psize, used, files))
    fill_holes(partial)
    os.replace(partial, image)
    disk = SourceDisk(str(image), size, parts, round(time.monotonic() - started, 1))
    record.write_text(json.dumps(asdict(disk), indent=2) + "\n")
    return disk


def target_file(work: Path, index: int, size: int) -> Path:
    """A sparse target file of ``size`` bytes (its loop device is discarded before each run)."""
    path = _mkdir(work.resolve() / "targets") / f"target-{index}.img"
    if not path.exists() or path.stat().st_size != size:
        sparse_file(path, size)
    return path


class Loops:
    """Loop devices this bench attached, and only those, detached again by ``close``."""

    def __init__(self, direct_io: bool = True) -> None:
        self.direct_io = direct_io
        self.devices: list[str] = []

    def attach(self, path: Path | str, *, read_only: bool = False) -> str:
        argv = ["losetup", "--find", "--show", f"--direct-io={'on' if self.direct_io else 'off'}"]
        dev = subprocess.run(
            [*argv, *(["--read-only"] if read_only else []), str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.devices.append(dev)
        refresh_partitions(dev)
        return dev

    def detach(self, dev: str) -> None:
        subprocess.run(["partx", "-d", dev], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
        self.devices.remove(dev)

    def close(self) -> None:
        for dev in reversed(list(self.devices)):
            self.detach(dev)


def refresh_partitions(dev: str) -> None:
    """Make the kernel's partition devices of ``dev`` match its table (loop devices here are
    attached without partscan; ``partx`` adds and removes them)."""
    subprocess.run(["partx", "-d", dev], check=False, capture_output=True)
    subprocess.run(["partx", "-a", dev], check=False, capture_output=True)


def part_dev(dev: str, number: int) -> str:
    return f"{dev}p{number}"


def blank(dev: str) -> None:
    """Forget ``dev``'s partitions and discard all of it (the backing file becomes holes:
    every target starts as a fresh, zeroed disk)."""
    subprocess.run(["partx", "-d", dev], check=False, capture_output=True)
    subprocess.run(["blkdiscard", "-f", dev], check=True, capture_output=True)
