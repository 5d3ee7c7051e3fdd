"""Linux swap test images: mkswap on a sparse file, with a chosen label, UUID and page size.

A swap area holds no files, so instead of ``file_hashes`` this module offers ``identity`` (what
blkid reads from the header: TYPE, LABEL, UUID, VERSION) and ``fsck`` (blkid recognises a swap
area and swaplabel can read it). ``hibernate`` turns an area into what a hibernated Linux leaves
behind, for the raw-copy path.
"""

from __future__ import annotations

import os
from pathlib import Path

from clonebay.system.run import output, run
from clonebay.testdisks.files import sparse_file

MiB = 1 << 20


def build_swap(
    path: Path,
    size: int = 64 * MiB,
    *,
    label: str = "clonebay-swap",
    uuid: str = "8c1b3a4e-5d6f-4a7b-9c8d-0e1f2a3b4c5d",
    page_size: int | None = None,
) -> Path:
    """A swap area filling a new sparse file of ``size`` bytes."""
    sparse_file(path, size)
    argv = ["mkswap", "-L", label, "-U", uuid]
    if page_size is not None:
        argv += ["-p", str(page_size)]
    run([*argv, str(path)])
    return path


def identity(image: Path) -> dict[str, str]:
    """blkid's low-level probe of ``image``: TYPE, LABEL, UUID, VERSION ... as a dict."""
    text = output(["blkid", "-p", "-o", "export", str(image)], ok_codes=(0, 2))
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def fsck(image: Path) -> None:
    """Raise AssertionError unless blkid sees a swap area and swaplabel reads its header."""
    found = identity(image)
    if found.get("TYPE") != "swap":
        raise AssertionError(f"{image}: blkid sees {found.get('TYPE')!r}, not a swap area")
    run(["swaplabel", str(image)])


def swaplabel(image: Path) -> dict[str, str]:
    """``swaplabel``'s view of the header: {"LABEL": ..., "UUID": ...}."""
    text = output(["swaplabel", str(image)])
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields}


def hibernate(image: Path, page_size: int = 4096, signature: bytes = b"S1SUSPEND\0") -> None:
    """Write a hibernation signature where the swap magic was, as the kernel does on suspend,
    plus some stand-in image data in the following pages."""
    fd = os.open(image, os.O_WRONLY)
    try:
        os.pwrite(fd, b"SWAPSPACE2", page_size - 20)  # struct swsusp_header.orig_sig
        os.pwrite(fd, signature.ljust(10, b"\0"), page_size - 10)
        os.pwrite(fd, b"hibernated memory " * 1000, page_size * 3)
    finally:
        os.close(fd)
