"""NTFS: which clusters a copy must carry, and whether the volume may be copied that way.

The map is the cluster allocation bitmap, the $DATA of $Bitmap (MFT record 6): bit i set means
cluster i is in use. $Bitmap's own location comes from its record, which is found through $MFT
(record 0, located by the boot sector). Added to the bitmap: the boot sector area (the first
8 KiB, $Boot) and the backup boot sector, which sits in the last sector of the partition, just
past the clusters the bitmap counts. Cross-checks keep a wrong map from passing quietly: fixups
on every record, runlists inside the volume, a bitmap long enough for every cluster and marking
$MFT, $MFTMirr and itself as used.

State, from the same structures: $VOLUME_INFORMATION's dirty flag gives DIRTY (still copied
natively; the clusters every in-use MFT record references are added in case the bitmap lags
behind); a $LogFile restart area with records to replay gives DIRTY copied raw (a committed
allocation may exist only in the log: after replay on the target it would point at clusters a
native copy never carried); a valid hiberfil.sys header gives HIBERNATED, copied raw (see
DESIGN.md, "Locked and unusual volumes"). BitLocker volumes ("-FVE-FS-") are not NTFS to
this module; ``is_bitlocker`` lets the dispatcher recognise them.

Spec: Linux-NTFS "NTFS Documentation" ("$Bitmap", "$Boot", "$Volume"); ntfs-3g layout.h.
"""

from __future__ import annotations

import struct
from dataclasses import replace

from clonebay.errors import FilesystemError
from clonebay.fs import extents
from clonebay.fs.ntfs_layout import (
    AT_DATA,
    AT_VOLUME_INFORMATION,
    AT_VOLUME_NAME,
    OEM_ID,
    RECORD_IN_USE,
    BootSector,
    parse_boot,
    parse_record,
)
from clonebay.fs.ntfs_mft import READ_PIECE, Mft, load_mft, pick, pread
from clonebay.fs.ntfs_state import is_hibernated, logfile_state
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

BITLOCKER_ID = b"-FVE-FS-"
BOOT_AREA = 8192  # $Boot: the boot sector and the boot loader that follows it
MFT, MFTMIRR, VOLUME, BITMAP = 0, 1, 3, 6

# $VOLUME_INFORMATION value: reserved, major and minor version, flags.
VOLUME_INFORMATION = struct.Struct("<QBBH")
VOLUME_IS_DIRTY = 0x0001
KNOWN_VERSIONS = ((1, 2), (3, 0), (3, 1))


def detect(head: bytes) -> bool:
    """NTFS OEM id at offset 3 (BitLocker volumes carry "-FVE-FS-" there instead)."""
    return head[3:11] == OEM_ID


def is_bitlocker(head: bytes) -> bool:
    """A BitLocker-encrypted volume (Vista and later write "-FVE-FS-" as OEM id)."""
    return head[3:11] == BITLOCKER_ID


def probe(src: ByteSource) -> Volume:
    """Parse an NTFS volume: geometry, label, serial, state and the used byte runs."""
    head = pread(src, 512, 0, "boot sector")
    if is_bitlocker(head):
        raise FilesystemError(f"{src.name}: BitLocker-encrypted volume, not plain NTFS")
    boot = parse_boot(head, f"{src.name}: boot sector")
    if boot.volume_bytes > src.size:
        raise FilesystemError(
            f"{src.name}: truncated partition: the NTFS boot sector says {boot.volume_bytes}"
            f" bytes, the partition holds {src.size}"
        )
    mft = load_mft(src, boot)
    label, dirty = volume_information(mft)
    base = Volume(
        fstype="ntfs",
        size=min(boot.volume_bytes + boot.sector_size, src.size),
        used=(),
        copy=CopyMethod.NATIVE,
        label=label,
        uuid=f"{boot.serial:016X}",
        block_size=boot.cluster_size,
    )
    if is_hibernated(mft):
        return replace(
            base,
            used=(Extent(0, src.size),),
            copy=CopyMethod.RAW,
            state=VolumeState.HIBERNATED,
            reason="Windows is hibernated or used Fast Startup (hiberfil.sys holds a saved"
            " system): copied whole; only this machine should resume it",
        )
    log = logfile_state(mft)
    if not log.clean:
        return replace(
            base,
            used=(Extent(0, src.size),),
            copy=CopyMethod.RAW,
            state=VolumeState.DIRTY,
            reason=f"$LogFile not clean ({log.detail}): clusters its records allocate are not in"
            " $Bitmap or the MFT until Windows replays them, so the whole partition is copied",
        )
    used = bitmap_extents(mft)
    check_system_files(mft, used)
    state, notes = volume_state(mft, dirty)
    if state is VolumeState.DIRTY:
        missing = extents.subtract(extents.normalize(referenced_extents(mft)), used)
        if missing:
            notes.append(f"{extents.total(missing)} bytes referenced by the MFT, free in $Bitmap")
        used = extents.normalize([*used, *missing])
    used = extents.clip(extents.normalize([*used, *boot_extents(src, boot)]), src.size)
    return replace(base, used=used, state=state, notes=tuple(notes))


def volume_state(mft: Mft, dirty: bool) -> tuple[VolumeState, list[str]]:
    """CLEAN, or DIRTY when the volume's dirty flag is set (with a clean $LogFile: ``probe``
    sends a volume whose log has records to replay to a raw copy before asking this)."""
    boot = mft.boot
    notes = [f"{boot.cluster_size} B clusters, {boot.record_size} B MFT records"]
    state = VolumeState.CLEAN
    if dirty:
        state = VolumeState.DIRTY
        notes.append("dirty flag set: Windows will check the volume at next boot")
    return state, notes


def boot_extents(src: ByteSource, boot: BootSector) -> list[Extent]:
    """$Boot, and the backup boot sector: Windows and mkntfs write it in the sector just past
    the volume (``total_sectors``); ntfsresize writes it in the partition's last sector, which
    differs when the partition is not a whole number of clusters long. Both are kept."""
    sector = boot.sector_size
    runs = [Extent(0, BOOT_AREA), Extent(boot.volume_bytes, sector)]
    last = src.size - sector
    if last > boot.volume_bytes:
        copy = pread(src, sector, last, "backup boot sector")
        if copy[3:11] == OEM_ID and copy[510:512] == b"\x55\xaa":
            runs.append(Extent(last, sector))
    return runs


def volume_information(mft: Mft) -> tuple[str, bool]:
    """(label, dirty flag) from $Volume's $VOLUME_NAME and $VOLUME_INFORMATION."""
    attrs = mft.attributes(VOLUME)
    where = mft.where(VOLUME)
    names = pick(attrs, AT_VOLUME_NAME)
    label = ""
    if names and names[0].value is not None:
        label = names[0].value.decode("utf-16-le", "replace")
    infos = pick(attrs, AT_VOLUME_INFORMATION)
    if len(infos) != 1 or infos[0].value is None or len(infos[0].value) < 12:
        raise FilesystemError(f"{where}: no usable $VOLUME_INFORMATION")
    _, major, minor, flags = VOLUME_INFORMATION.unpack_from(infos[0].value)
    if (major, minor) not in KNOWN_VERSIONS:
        raise FilesystemError(f"{where}: NTFS version {major}.{minor} is not supported")
    return label, bool(flags & VOLUME_IS_DIRTY)


def bitmap_extents(mft: Mft) -> tuple[Extent, ...]:
    """The clusters $Bitmap marks as used, as byte runs, read in large pieces."""
    boot = mft.boot
    data = mft.data(BITMAP, AT_DATA)
    where = data.where
    if data.special:
        raise FilesystemError(f"{where}: compressed, encrypted or sparse $Bitmap")
    need = -(-boot.clusters // 8)
    if data.initialized_size < need:
        raise FilesystemError(
            f"{where}: bitmap of {data.initialized_size} bytes is shorter than the"
            f" {need} bytes needed for {boot.clusters} clusters"
        )
    runs: list[Extent] = []
    for offset in range(0, need, READ_PIECE):
        piece = data.read(mft.src, boot.cluster_size, offset, min(READ_PIECE, need - offset))
        count = min(len(piece) * 8, boot.clusters - offset * 8)
        runs.extend(
            extents.from_bitmap(
                piece, boot.cluster_size, count, base=offset * 8 * boot.cluster_size
            )
        )
    return extents.normalize(runs)


def check_system_files(mft: Mft, used: tuple[Extent, ...]) -> None:
    """$MFT, $MFTMirr and $Bitmap must be marked used, or the bitmap is not what it claims."""
    boot = mft.boot
    cluster = boot.cluster_size
    mirror = mft.data(MFTMIRR, AT_DATA)
    for number, stream in ((MFT, mft.stream), (MFTMIRR, mirror), (BITMAP, mft.data(BITMAP))):
        own = extents.normalize(
            Extent(r.lcn * cluster, r.length * cluster) for r in stream.runs if r.lcn is not None
        )
        if not extents.contains(used, own):
            raise FilesystemError(
                f"{mft.where(number)}: its clusters are not all marked used in $Bitmap"
                " (inconsistent volume)"
            )
    if not mirror.runs or mirror.runs[0].lcn != boot.mftmirr_lcn:
        raise FilesystemError(f"{mft.where(MFTMIRR)}: does not start at the boot sector's LCN")


def referenced_extents(mft: Mft) -> list[Extent]:
    """Clusters of every non-resident attribute of every in-use MFT record (dirty volumes)."""
    boot = mft.boot
    cluster = boot.cluster_size
    out: list[Extent] = []
    for number, raw in mft.iter_records():
        if raw[:4] != b"FILE" or not struct.unpack_from("<H", raw, 0x16)[0] & RECORD_IN_USE:
            continue
        record = parse_record(raw, number, mft.where(number))
        for attr in record.attributes:
            for run in attr.runs:
                if run.lcn is None:
                    continue
                if run.lcn + run.length > boot.clusters:
                    raise FilesystemError(
                        f"{mft.where(number)}: attribute {attr.type:#x} has a run past the end"
                        f" of the volume (LCN {run.lcn} + {run.length})"
                    )
                out.append(Extent(run.lcn * cluster, run.length * cluster))
    return out
