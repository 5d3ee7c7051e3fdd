"""Small real disks for the Plan's edge cases: tables written by sgdisk and sfdisk on sparse
files, ext4 made by mkfs.ext4 straight into a partition (``-E offset``), NTFS made by mkntfs and
copied in. No hand-made tables: the Plan is tested on what the partitioning tools write."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clonebay.system.run import output, run
from clonebay.testdisks.files import sparse_copy, sparse_file

MIB = 1 << 20
CLONEBAY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "clonebay"


def gpt_disk(path: Path, size: int, *specs: str, typecodes: Sequence[str] = ()) -> Path:
    """A sparse file of ``size`` bytes with a GPT made by sgdisk: ``specs`` as for -n
    ("1:2048:0": partition 1 from sector 2048 to sgdisk's default end, the last usable LBA)."""
    sparse_file(path, size)
    argv = ["sgdisk", "-o", *(f"-n{s}" for s in specs), *(f"-t{t}" for t in typecodes)]
    run([*argv, str(path)])
    return path


def mbr_disk(path: Path, size: int, script: str) -> Path:
    """A sparse file of ``size`` bytes with an MBR made by sfdisk from ``script``."""
    sparse_file(path, size)
    run(["sfdisk", "--quiet", str(path)], input_bytes=f"label: dos\n{script}".encode())
    return path


def layout(path: Path | str) -> dict[int, tuple[int, int]]:
    """{number: (start, size)} in sectors, as sfdisk reads the table (the oracle)."""
    table = json.loads(output(["sfdisk", "--json", str(path)]))["partitiontable"]
    found = ((re.search(r"(\d+)$", p["node"]), p["start"], p["size"]) for p in table["partitions"])
    return {int(m.group(1)): (start, size) for m, start, size in found if m}


def sector_size_of(path: Path | str) -> int:
    """The sector size sfdisk reads the table with."""
    return int(json.loads(output(["sfdisk", "--json", str(path)]))["partitiontable"]["sectorsize"])


def mkext(
    image: Path, start: int, size: int, *, block: int = 4096, root: Path | None = None
) -> None:
    """mkfs.ext4 into ``size`` bytes at byte ``start`` of ``image`` (``root``: files to put in)."""
    argv = ["mkfs.ext4", "-F", "-q", "-b", str(block), "-E", f"offset={start}"]
    if root is not None:
        argv += ["-d", str(root)]
    run([*argv, str(image), f"{size // 1024}k"])


def put(image: Path, fs_image: Path, start: int) -> None:
    """Copy a filesystem image into ``image`` at byte ``start`` (holes kept)."""
    sparse_copy(fs_image, image, start)


def sha256(path: Path | str) -> str:
    return output(["sha256sum", str(path)]).split()[0]


def clonebay(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a technician runs it (LC_ALL=C so messages are stable)."""
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(
        [str(CLONEBAY), *args], capture_output=True, text=True, env=env, check=False
    )


@contextmanager
def loop(image: Path, *, sector_size: int = 512, partscan: bool = False) -> Iterator[str]:
    """``image`` as a loop device with ``sector_size``-byte logical sectors; detached after."""
    argv = ["losetup", "--find", "--show", "--sector-size", str(sector_size)]
    if partscan:
        argv.append("--partscan")
    dev = output([*argv, str(image)]).strip()
    try:
        yield dev
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
