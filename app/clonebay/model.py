"""The nouns clonebay works with, as frozen dataclasses.

pyudev devices, pyparted objects and on-disk structures are converted into these once, at the
boundary (system/ and fs/), so the engine and the TUI never see a library object. All sizes and
offsets are in bytes unless a name says otherwise (``*_sector``, ``*_lba``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Extent:
    """A run of bytes ``[start, start + length)`` inside a disk, a partition or a filesystem."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


class VolumeState(enum.Enum):
    """What an offline look at a volume says about its consistency or protection."""

    CLEAN = "clean"
    DIRTY = "dirty"  # NTFS dirty flag, FAT dirty bit, ext not cleanly unmounted
    NEEDS_RECOVERY = "needs-recovery"  # ext journal needs replay
    ERRORS = "errors"  # ext recorded errors
    HIBERNATED = "hibernated"  # Windows hibernation or Fast Startup
    ENCRYPTED = "encrypted"  # BitLocker, LUKS
    UNKNOWN = "unknown"


class CopyMethod(enum.Enum):
    """How a volume's bytes are copied: only the used blocks, or every byte (zeros skipped)."""

    NATIVE = "native"
    RAW = "raw"


@dataclass(frozen=True)
class Volume:
    """What the prober found in a partition (or a whole unpartitioned device).

    ``used`` lists the byte runs, relative to the start of the partition, that a copy must carry
    for the filesystem to be whole; for a RAW volume it is the whole partition. ``reason`` says
    why a volume is copied raw (or is empty for native copies).
    """

    fstype: str  # "ext2", "ext3", "ext4", "ntfs", "fat12", "fat16", "fat32", "swap", ...
    size: int
    used: tuple[Extent, ...]
    copy: CopyMethod
    state: VolumeState = VolumeState.CLEAN
    label: str = ""
    uuid: str = ""
    block_size: int = 512
    reason: str = ""
    notes: tuple[str, ...] = ()
    decrypted: bool = False  # read through its unlocked view: the copy is plaintext (--decrypt)

    @property
    def used_bytes(self) -> int:
        return sum(e.length for e in self.used)


@dataclass(frozen=True)
class Partition:
    """One entry of a partition table. ``number`` is the kernel's (sda1 -> 1, logical from 5)."""

    number: int
    start: int
    size: int
    kind: str = "primary"  # "primary", "extended", "logical" (MBR); "primary" for GPT
    type_id: str = ""  # MBR: "0x83"; GPT: partition type GUID
    name: str = ""  # GPT name
    guid: str = ""  # GPT unique partition GUID
    flags: tuple[str, ...] = ()  # "boot", "esp", "bios_grub", "hidden", ...
    attributes: int = 0  # GPT attribute bits

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A disk's label: ``kind`` is "gpt", "msdos" or "none" (a filesystem on the whole disk)."""

    kind: str
    sector_size: int
    disk_size: int
    partitions: tuple[Partition, ...]
    disk_id: str = ""  # GPT disk GUID, or MBR signature as 0x%08x
    first_usable: int = 0  # byte offset of the first byte a partition may use (GPT)
    last_usable: int = 0  # byte offset of the last usable byte + 1 (GPT)

    def data_partitions(self) -> tuple[Partition, ...]:
        """Partitions that hold data: an extended partition is only a container."""
        return tuple(p for p in self.partitions if p.kind != "extended")


@dataclass(frozen=True)
class Disk:
    """A whole block device (or an image file treated as one) as the host sees it."""

    path: str  # /dev/sda, /dev/loop3, or an image file
    size: int
    model: str = ""
    serial: str = ""
    wwn: str = ""
    transport: str = ""  # "usb", "sata", "nvme", "firewire", "virtio", "scsi", "loop", "file"
    removable: bool = False
    read_only: bool = False
    rotational: bool = False
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    partitions: tuple[str, ...] = ()  # kernel names of partitions (sda1, ...)
    mountpoints: tuple[str, ...] = ()  # where this disk or its partitions are mounted
    holders: tuple[str, ...] = ()  # dm/md devices stacked on it
    is_live_medium: bool = False
    by_id: tuple[str, ...] = field(default=())

    @property
    def in_use(self) -> bool:
        return bool(self.mountpoints or self.holders)


@dataclass(frozen=True)
class Progress:
    """One progress event of a job."""

    region: str
    done: int
    total: int
    bytes_per_second: float = 0.0
    eta_seconds: float | None = None
    bottleneck: str = ""
