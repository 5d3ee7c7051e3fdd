"""A Services with recorded data, for the snapshot tests only: a technician's bench with four
disks (a Windows NVMe source, a blank 2 TB target, the live USB stick, a mounted data disk), two
images, and a job frozen mid-copy. The same pixels on every machine, which real disks (random
GUIDs, dates, this machine's own disks) cannot give.

What the pictures show is built by the real code paths: the Plan comes from
engine.plan.make_plan and the save plan's regions from engine.regions.source_regions on these
reports; only the facts a machine would report (disks, partitions, guard verdicts in the
guard's own words, an image manifest, progress events) are written down here. The flow tests
(test_flows.py) check the same screens against real disks and real jobs."""

from __future__ import annotations

import threading
from typing import Any

from clonebay.engine.inspect import DiskReport, PartitionReport
from clonebay.engine.jobs import JobPlan, PlanLine
from clonebay.engine.layout.plan import Grow, Plan, make_plan
from clonebay.engine.regions import source_regions
from clonebay.errors import CancelledError, DeviceError
from clonebay.model import CopyMethod, Disk, Extent, Partition, PartitionTable, Volume
from clonebay.model import VolumeState as State
from clonebay.system.smart import Health, Verdict
from clonebay.tui.jobs import JobKind, JobRequest, Outcome, StateSink, Tick, TickSink
from clonebay.tui.services import (
    ExtractSummary,
    ExtractTick,
    FileEntry,
    ImageEntry,
    ImagePartition,
    Role,
    Services,
)

MIB, GIB = 1 << 20, 1 << 30
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

NVME = Disk(
    "/dev/nvme0n1",
    1_000_204_886_016,
    "Samsung SSD 970 EVO Plus 1TB",
    "S4EWNX0R123456",
    transport="nvme",
    partitions=("nvme0n1p1", "nvme0n1p2", "nvme0n1p3", "nvme0n1p4"),
)
BLANK = Disk("/dev/sda", 2_000_398_934_016, "ST2000DM008-2FR102", "ZFL1ABCD", transport="sata")
LIVE = Disk(
    "/dev/sdb",
    30_752_636_928,
    "SanDisk Ultra",
    "4C530001230412",
    transport="usb",
    removable=True,
    partitions=("sdb1",),
    mountpoints=("/run/live/medium",),
    is_live_medium=True,
)
DATA = Disk(
    "/dev/sdc",
    1_000_204_886_016,
    "WDC WD10EZEX-08WN4A0",
    "WD-WCC6Y7654321",
    transport="sata",
    rotational=True,
    partitions=("sdc1",),
    mountpoints=("/mnt/data",),
)
DISKS = [NVME, BLANK, LIVE, DATA]
REFUSALS = {  # the guard's words for each target (system/guard.py)
    DATA.path: f"{DATA.path} is mounted (/mnt/data): unmount it first; nothing was written",
    LIVE.path: f"{LIVE.path} holds the running system; it can never be a target",
}


HEALTH = {  # what smartctl would say of each (system/smart.py)
    NVME.path: Health(Verdict.GOOD, (), True, media_errors=0, percentage_used=3, temperature=38),
    BLANK.path: Health(Verdict.GOOD, (), True, 0, 0, 0, temperature=31),
    LIVE.path: Health(
        Verdict.UNKNOWN, ("smartctl: /dev/sdb: Unknown USB bridge [0x0781:0x5583 (0x100)]",)
    ),
    DATA.path: Health(Verdict.WARNING, ("8 reallocated sectors",), True, 8, 0, 0, temperature=36),
}


def _vol(fs: str, size: int, used: int, label: str = "", state: State = State.CLEAN) -> Volume:
    copy = CopyMethod.RAW if fs == "unknown" else CopyMethod.NATIVE
    reason = "no known filesystem" if fs == "unknown" else ""
    return Volume(fs, size, (Extent(0, used),), copy, state, label, reason=reason)


def _gpt(disk: Disk, parts: list[tuple[int, int, str, Volume]]) -> DiskReport:
    partitions = tuple(Partition(n, start, v.size, type_id=t) for n, start, t, v in parts)
    table = PartitionTable(
        "gpt", 512, disk.size, partitions, "1F2E3D4C-0000-4000-8000-00000000C0DE"
    )
    reports = tuple(
        PartitionReport(p, v) for p, (_, _, _, v) in zip(partitions, parts, strict=True)
    )
    return DiskReport(disk.path, table, reports, None)


REPORTS = {
    NVME.path: _gpt(
        NVME,
        [
            (1, 1 * MIB, ESP, _vol("fat32", 260 * MIB, 34 * MIB, "SYSTEM")),
            (2, 261 * MIB, MSR, _vol("unknown", 16 * MIB, 16 * MIB)),
            (3, 277 * MIB, BASIC, _vol("ntfs", 930 * GIB, 212 * GIB, "Windows", State.DIRTY)),
            (4, 277 * MIB + 930 * GIB, BASIC, _vol("ntfs", 768 * MIB, 520 * MIB, "Recovery")),
        ],
    ),
    BLANK.path: DiskReport(
        BLANK.path,
        PartitionTable("none", 512, BLANK.size, ()),
        (),
        Volume("unknown", BLANK.size, (Extent(0, BLANK.size),), CopyMethod.RAW, State.UNKNOWN),
    ),
    LIVE.path: _gpt(LIVE, [(1, 1 * MIB, BASIC, _vol("fat32", 28 * GIB, 1 * GIB, "CLONEBAY"))]),
    DATA.path: _gpt(DATA, [(1, 1 * MIB, LINUX, _vol("ext4", 931 * GIB, 402 * GIB, "data"))]),
}

IMAGE = "/srv/images/win11-workstation.image"
IMAGES = [
    ImageEntry(
        IMAGE,
        "win11-workstation.image",
        NVME.model,
        "2025-03-14T09:30:00Z",
        NVME.size,
        98 * GIB,
        6,
    ),
    ImageEntry(
        "/srv/images/unfinished.image",
        "unfinished.image",
        problem="incomplete: no manifest.json (not finished)",
    ),
]


def image_info() -> dict[str, Any]:
    """What engine.jobs.image_info says of the workstation image."""
    report = REPORTS[NVME.path]
    regions = [
        {
            "name": r.name,
            "kind": r.kind,
            "disk_offset": r.disk_offset,
            "size": r.size,
            "fstype": r.volume.fstype if r.volume else "",
            "label": r.volume.label if r.volume else "",
            "copy": r.copy,
            "used_bytes": r.used_bytes,
            "reason": r.volume.reason if r.volume else "raw area outside partitions",
        }
        for r in source_regions(report)
    ]
    return {
        "image": IMAGE,
        "source": {"path": NVME.path, "model": NVME.model, "size": NVME.size},
        "table": {"kind": "gpt"},
        "regions": regions,
        "warnings": [],
    }


# What browsing the workstation image shows (engine/browse_jobs.partitions, browse/listing.py).
PARTITIONS = [
    ImagePartition("p1", "p1-SYSTEM", "fat32", "SYSTEM", 260 * MIB, True),
    ImagePartition("p2", "p2-empty-msr", "empty-msr", "", 16 * MIB, False),
    ImagePartition("p3", "p3-Windows", "ntfs", "Windows", 930 * GIB, True),
    ImagePartition("p4", "p4-Recovery", "ntfs", "Recovery", 768 * MIB, True),
]
WINDOWS = PARTITIONS[2]
MTIME = 1_741_944_600_000_000_000  # 2025-03-14 09:30 UTC
HOME = "Users/Jörg Müller"


def _entry(path: str, kind: str = "file", size: int = 0, minutes: int = 0) -> FileEntry:
    mode = 0o777 if kind == "dir" else 0o644
    return FileEntry(path, kind, mode, size, MTIME + minutes * 60 * 10**9, 0, 0, 1)


FOLDERS = {
    "": [
        _entry("Program Files", "dir"),
        _entry("ProgramData", "dir"),
        _entry("Users", "dir"),
        _entry("Windows", "dir"),
        _entry("pagefile.sys", size=8 * GIB),
        _entry("hiberfil.sys", size=6 * GIB),
    ],
    "Users": [_entry("Users/Public", "dir"), _entry(HOME, "dir")],
    HOME: [
        _entry(f"{HOME}/AppData", "dir", minutes=-9000),
        _entry(f"{HOME}/Desktop", "dir", minutes=-30),
        _entry(f"{HOME}/Documents", "dir", minutes=-60),
        _entry(f"{HOME}/Pictures", "dir", minutes=-3000),
        _entry(f"{HOME}/NTUSER.DAT", size=3 * MIB, minutes=-2),
        _entry(f"{HOME}/Steuererklärung 2024.pdf", size=1_843_200, minutes=-20000),
        _entry(f"{HOME}/Angebot Müller GmbH.docx", size=48_213, minutes=-4000),
        _entry(f"{HOME}/notes.txt", size=2_310, minutes=-120),
    ],
}
EXTRACTED = ExtractSummary(
    "/mnt/usb/recovered",
    412,
    37,
    0,
    1_523 * MIB,
    ((f"{HOME}/Documents/Buchhaltung/2024.xlsx", "Input/output error"),),
    (
        f"read of p3 at 81604378624 (+65536): {IMAGE}/packs/000012.pack, region p3,"
        " offset 81604378624: frame at pack offset 30867456: lz4 payload does not decode",
    ),
)


def _plan_lines(report: DiskReport) -> tuple[PlanLine, ...]:
    lines = []
    for r in source_regions(report):
        fs = r.volume.fstype if r.volume else ""
        note = r.volume.reason if r.volume and r.copy == "raw" else ""
        lines.append(PlanLine(r.name, r.disk_offset, r.size, r.copy, fs, r.used_bytes, note))
    return tuple(lines)


# A clone of the NVMe disk onto the 2 TB disk, frozen while it copies the Windows partition.
TOTAL = 213 * GIB
TICKS = [
    Tick("Copying", "1", 34 * MIB, 34 * MIB, 34 * MIB, TOTAL, 580e6, 380.0, "read"),
    Tick("Copying", "3", 80 * GIB, 212 * GIB, 80 * GIB + 34 * MIB, TOTAL, 601e6, 232.0, "read"),
]
FROZEN = Tick(
    "Copying", "3", 87 * GIB, 212 * GIB, 87 * GIB + 34 * MIB, TOTAL, 612e6, 219.0, "write"
)


class RecordedServices(Services):
    """Services answering from the records above; the job stops at FROZEN until cancelled."""

    def __init__(self) -> None:
        super().__init__((), machine_disks=False, image_dir="/srv/images")
        self.ticked = threading.Event()

    def disks(self) -> list[Disk]:
        return list(DISKS)

    def inspect(self, path: str, fresh: bool = False) -> DiskReport:
        if path not in REPORTS:
            raise DeviceError(f"cannot open {path} for reading: No such file or directory")
        return REPORTS[path]

    def health(self, path: str) -> Health:
        return HEALTH.get(path, Health(Verdict.UNKNOWN, ("an image file has no SMART",)))

    def refusal(self, role: Role, disk: Disk, source: str | None = None) -> str:
        if role is not Role.TARGET:
            return ""
        if disk.path == source:
            return f"the target {disk.path} is the source {source}; nothing was written"
        return REFUSALS.get(disk.path, "")

    def watch(self, on_change: Any, stop: threading.Event) -> None:
        del on_change
        stop.wait()

    def images(self, folder: str) -> list[ImageEntry]:
        return list(IMAGES)

    def image_info(self, path: str) -> dict[str, Any]:
        return image_info()

    def verify_image(self, path: str, sink: TickSink) -> str:
        return "OK (25113 frames)"

    def free_space(self, folder: str) -> int:
        return 1_288 * GIB

    def clone_journal(self, source: str, target: str) -> None:
        return None  # no interrupted clone among the recorded disks

    def clone_plan(self, source: str, target: str, grow: Grow) -> Plan:
        return make_plan(REPORTS[source], BLANK.size if target == BLANK.path else 0, grow)

    def windows_facts(self, source: str) -> list[str]:
        return [
            "Windows on p3: DESKTOP-7Q2K9, NOT generalized (copies keep its SID), machine SID"
            " S-1-5-21-3623811015-3361044348-30300820"
        ]

    def save_plan(self, source: str) -> JobPlan:
        return JobPlan(f"save {source}", _plan_lines(REPORTS[source]))

    def restore_plan(self, image: str, target: str, grow: Grow) -> JobPlan:
        return JobPlan(f"restore {image}", _plan_lines(REPORTS[NVME.path]))

    def partitions(self, image: str) -> list[ImagePartition]:
        return list(PARTITIONS)

    def list_dir(self, image: str, region: str, path: str) -> list[FileEntry]:
        return list(FOLDERS.get(path, []))

    def extract(
        self,
        image: str,
        region: str,
        paths: Any,
        dest: str,
        *,
        sink: Any,
        cancel: threading.Event,
    ) -> ExtractSummary:
        sink(ExtractTick(f"{HOME}/Documents/Rechnung.pdf", 200, 20, 700 * MIB, 1_525 * MIB, 1))
        return EXTRACTED

    def run(
        self,
        request: JobRequest,
        sink: TickSink,
        cancel: threading.Event,
        on_state: StateSink | None = None,
    ) -> Outcome:
        for tick in [*TICKS, FROZEN]:
            sink(tick)
        self.ticked.set()
        cancel.wait()
        raise CancelledError("cancelled by the user\nthe clone stopped: /dev/sda is incomplete")


DONE = Outcome(
    JobKind.CLONE,
    "done",
    f"{NVME.path} was cloned onto {BLANK.path}.",
    (
        "212.6 GiB copied.",
        "p3: ntfs grown to fill 1862.9 GiB",
    ),
    "Verified: all 54426 chunks read back from the target match.",
    "Remove the source disk before the first boot: both disks now carry the same IDs"
    " (disk GUID, partition GUIDs, filesystem UUIDs) and the firmware or the OS may boot"
    " or mount the wrong one.",
)
