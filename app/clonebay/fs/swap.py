"""Linux swap areas: only the header page is worth copying.

A swap area's first page is its header (linux/include/linux/swap.h, ``union swap_header``): a
magic in the page's last 10 bytes, and at offset 1024 the version, the number of the last usable
page, a list of bad pages, a UUID and a label. Everything after that page is scratch space the
kernel rewrites after every boot, so a copy carries only the header: the target is then a valid,
empty swap area with the same UUID and label, which is what /etc/fstab and the initramfs look for.

The page size is the one of the machine that ran mkswap (4 KiB on x86, up to 64 KiB elsewhere),
so the magic is looked for at the end of each possible page size.

One exception: a hibernated Linux writes its memory image into swap and replaces the magic with a
hibernation signature (``S1SUSPEND`` from the kernel, ``ULSUSPEND`` from uswsusp, ``LINHIB0001``
and a binary magic from TuxOnIce). Resuming needs every byte of that image, so such an area is
copied raw and reported as HIBERNATED.
"""

from __future__ import annotations

import struct
import uuid as uuidlib

from clonebay.errors import FilesystemError
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")  # version 1; version 0 (no header fields)
# Hibernation signatures written over the swap magic at page_size - 10 (as blkid knows them).
HIBERNATION_MAGICS = (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001")
TUXONICE_MAGIC = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c"  # at offset 0
# linux/include/linux/swap.h, union swap_header.info from offset 1024 (host byte order of the
# machine that ran mkswap): version, last_page, nr_badpages, sws_uuid[16], sws_volume[16].
HEADER_OFFSET = 1024
HEADER = {"<": struct.Struct("<III16s16s"), ">": struct.Struct(">III16s16s")}
BADPAGES_OFFSET = 1536  # info.badpages[] after 117 words of padding


def _signature(head: bytes) -> tuple[int, bytes] | None:
    """(page size, the 10 bytes at its end) for the first page size carrying a known magic."""
    for size in PAGE_SIZES:
        if len(head) < size:
            break
        tail = head[size - 10 : size]
        if tail in SWAP_MAGICS or any(tail.startswith(m) for m in HIBERNATION_MAGICS):
            return size, tail
    if head[:8] == TUXONICE_MAGIC:
        return PAGE_SIZES[0], TUXONICE_MAGIC
    return None


def detect(head: bytes) -> bool:
    """A swap magic (or a hibernation signature) at the end of a 4..64 KiB page."""
    return _signature(head) is not None


def _identity(header: tuple[int, int, int, bytes, bytes]) -> tuple[str, str]:
    """(label, uuid) of a version-1 header; an all-zero UUID means none."""
    raw_uuid, raw_label = header[3], header[4]
    label = raw_label.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    uuid = str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else ""
    return label, uuid


def _header(page: bytes) -> tuple[str, tuple[int, int, int, bytes, bytes]] | None:
    """(byte order, fields) of a version-1 header in either byte order, or None."""
    for order, layout in HEADER.items():
        fields = layout.unpack_from(page, HEADER_OFFSET)
        if fields[0] == 1:
            return order, fields
    return None


def probe(src: ByteSource) -> Volume:
    """Parse a swap header; map only the header page (or everything if hibernated)."""
    found = _signature(src.pread(min(src.size, PAGE_SIZES[-1]), 0))
    if found is None:
        raise FilesystemError(f"{src.name}: no swap signature at the end of any page size")
    page_size, magic = found
    page = src.pread(page_size, 0)
    parsed = _header(page)
    label, uuid = _identity(parsed[1]) if parsed else ("", "")
    if magic not in SWAP_MAGICS:
        shown = magic.rstrip(b"\0").decode("ascii", errors="replace")
        return Volume(
            fstype="swap",
            size=src.size,
            used=(Extent(0, src.size),),
            copy=CopyMethod.RAW,
            state=VolumeState.HIBERNATED,
            label=label,
            uuid=uuid,
            block_size=page_size,
            reason=f"swap area holds a Linux hibernation image ({shown!r}); resuming needs"
            " all of it, so it is copied whole",
        )
    if magic == b"SWAP-SPACE":  # version 0: a page bitmap, no label or UUID
        return Volume("swap", src.size, (Extent(0, page_size),), CopyMethod.NATIVE,
                      block_size=page_size, notes=("old version 0 swap area",))  # fmt: skip
    if parsed is None:
        raise FilesystemError(
            f"{src.name}: swap header at offset {HEADER_OFFSET} has an unknown version"
        )
    _order, (_version, last_page, bad_pages, _uuid, _label) = parsed
    size = (last_page + 1) * page_size
    if last_page < 1 or size > src.size:
        raise FilesystemError(
            f"{src.name}: swap header says the area has {last_page + 1} pages of {page_size}"
            f" bytes but the volume has {src.size} bytes (truncated partition or bad header)"
        )
    if bad_pages > (page_size - BADPAGES_OFFSET) // 4:
        raise FilesystemError(
            f"{src.name}: swap header lists {bad_pages} bad pages, more than a header holds"
        )
    notes = (f"{bad_pages} bad pages listed in the header",) if bad_pages else ()
    return Volume(
        fstype="swap",
        size=size,
        used=(Extent(0, page_size),),
        copy=CopyMethod.NATIVE,
        label=label,
        uuid=uuid,
        block_size=page_size,
        notes=notes,
    )
