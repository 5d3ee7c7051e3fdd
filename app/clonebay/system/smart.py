"""A disk's SMART health, read with smartctl (smartmontools), in words a technician acts on.

``read_health(path)`` runs ``smartctl --json=c -a`` on the disk under ``path`` (a partition's
health is its disk's) and returns a ``Health``: a verdict (good, warning, failing, unknown), the
reasons in plain words, and the numbers behind them. Devices that have no SMART of their own
(loop devices, image files, device-mapper and RAID devices, virtio disks) are "unknown" with the
reason, without asking smartctl; so is everything smartctl cannot read. Nothing here raises: a
disk's health is a fact shown beside it, never a reason for a command to fail.

What decides the verdict (``parse``, a pure function of smartctl's JSON and exit status):

- smartctl's exit status is a bit mask (smartctl(8), RETURN VALUES). Bits 0-1 (the command line
  or opening the device failed): "unknown" with smartctl's own message. Bit 2 (a SMART or other
  command failed): "unknown" only when no health data came back (QEMU's CD drive and its USB
  disk asked as plain SCSI set it and say SMART is unavailable); what was read still counts.
  Bit 3 (the overall self-assessment says FAILING): "failing". Bit 4 (a pre-failure attribute at
  or below its threshold now: the disk's maker expects it to fail): "failing". Bit 5 (an
  attribute at or below its threshold in the past, or an old-age one now): "warning". Bit 6 (the
  ATA error log has entries) does not count: healthy disks collect them too (a loose cable's CRC
  errors); the sector counts say more. Bit 7 (a self-test in the log failed): "warning".
- ATA attributes 5 (reallocated), 197 (pending) and 198 (offline uncorrectable) above 0:
  "warning", each named with its count (the raw value as smartctl reads it for that model).
- NVMe's health log: a critical warning bit for spare, reliability, read-only media or the
  backup memory: "failing"; for temperature or the persistent memory region: "warning"; media
  errors above 0 and percentage used at 100 or more (past the rated endurance): "warning".
- SCSI and SAS: the grown defect list counts as reallocated sectors, the error counter log's
  uncorrected errors as uncorrectable.

smartctl gets ``TIMEOUT`` seconds, then it is killed: a USB bridge that does not understand the
pass-through command can hang it (a process stuck inside the kernel ends when the kernel's own
command timeout gives up). Each answer is kept for the session, per disk (``_cache``): asked again
(the TUI's refresh, the CLI's warning before a job) it costs nothing, and a disk swapped for
another at the same path (a new diskseq in sysfs) is asked afresh.
"""

from __future__ import annotations

import enum
import json
import os
import re
import stat
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clonebay.errors import ToolMissingError
from clonebay.system.run import run

TIMEOUT = 20.0  # seconds: room for a spun-down hard disk's spin-up (up to ~10 s) and its reply
SYS_DEV_BLOCK = Path("/sys/dev/block")

# smartctl(8), RETURN VALUES
CANNOT_PARSE, CANNOT_OPEN, COMMAND_FAILED = 1 << 0, 1 << 1, 1 << 2
DISK_FAILING, PREFAIL_NOW, ATTRIBUTE_PAST = 1 << 3, 1 << 4, 1 << 5
ERROR_LOG, SELFTEST_ERRORS = 1 << 6, 1 << 7

# Block devices with no SMART of their own, by kernel name.
NO_SMART = (
    (re.compile(r"loop\d+$"), "a loop device has no SMART"),
    (re.compile(r"dm-\d+$"), "a device-mapper device (LVM, LUKS) has no SMART: its disks do"),
    (re.compile(r"md\d+$"), "a software RAID device has no SMART: its member disks do"),
    (re.compile(r"z?ram\d+$"), "a RAM disk has no SMART"),
    (re.compile(r"nbd\d+$"), "a network block device has no SMART"),
    (re.compile(r"x?vd[a-z]+$"), "a virtual machine's virtio or Xen disk has no SMART"),
    (re.compile(r"mmcblk\d+$"), "an SD card or eMMC has no SMART that smartctl reads"),
)

# NVMe base specification, SMART / Health Information log, byte 0 (critical warning)
NVME_CRITICAL = (
    (0x01, "available spare below its threshold", True),
    (0x02, "temperature outside its limits", False),
    (0x04, "reliability degraded by media or internal errors", True),
    (0x08, "media placed in read-only mode", True),
    (0x10, "volatile memory backup failed", True),
    (0x20, "persistent memory region read-only", False),
)


class Verdict(enum.Enum):
    GOOD = "good"
    WARNING = "warning"  # worn or with bad sectors: copy it soon, and once
    FAILING = "failing"  # SMART itself says the disk fails, or is about to
    UNKNOWN = "unknown"  # no SMART, or it could not be read (the reasons say why)


@dataclass(frozen=True)
class Health:
    """What SMART says of one disk; a number is None where the disk does not report it."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    passed: bool | None = None  # the overall self-assessment
    reallocated: int | None = None
    pending: int | None = None
    uncorrectable: int | None = None
    media_errors: int | None = None  # NVMe
    percentage_used: int | None = None  # NVMe, and SCSI's endurance indicator
    temperature: int | None = None  # °C

    @property
    def worrying(self) -> bool:
        """Failing or warning: a job that reads this disk says so first."""
        return self.verdict in (Verdict.WARNING, Verdict.FAILING)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": self.verdict.value, "reasons": list(self.reasons)}

    def numbers(self) -> list[str]:
        """The figures read, short: "SMART passed", "0 reallocated", "31 °C"."""
        words = []
        if self.passed is not None:
            words.append("SMART passed" if self.passed else "SMART FAILED")
        for value, unit in (
            (self.reallocated, "reallocated"),
            (self.pending, "pending"),
            (self.uncorrectable, "uncorrectable"),
            (self.media_errors, "media errors"),
            (self.percentage_used, "% used"),
            (self.temperature, "°C"),
        ):
            if value is not None:
                words.append(f"{value} {unit}")
        return words

    def text(self) -> str:
        """ "warning: 3 reallocated sectors (SMART passed, 3 reallocated, 31 °C)"."""
        head = self.verdict.value + (": " + "; ".join(self.reasons) if self.reasons else "")
        numbers = self.numbers()
        return head + (f" ({', '.join(numbers)})" if numbers else "")


def job_warning(path: str, health: Health) -> list[str]:
    """The lines to show before a job reads ``path`` ([] unless its SMART is worrying)."""
    if not health.worrying:
        return []
    return [
        f"SMART health of {path}: {health.verdict.value} ({'; '.join(health.reasons)})",
        "a disk in this state can fail for good under a long read: copy it before anything else,"
        " and read it only once",
    ]


# --- reading ------------------------------------------------------------------------------

_cache: dict[tuple[str, str], Health] = {}
_cache_lock = threading.Lock()


def read_health(path: str, *, timeout: float = TIMEOUT) -> Health:
    """The SMART health of the disk at (or holding) ``path``; never raises (module docstring)."""
    device, seq, why = _disk_of(path)
    if why:
        return Health(Verdict.UNKNOWN, (why,))
    with _cache_lock:
        known = _cache.get((device, seq))
    if known is not None:
        return known
    health = _ask(device, timeout)
    with _cache_lock:
        _cache[(device, seq)] = health
    return health


def read_all(paths: Sequence[str]) -> dict[str, Health]:
    """``read_health`` of each path, all at once: the slowest disk sets the time, not the sum."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        return dict(zip(paths, pool.map(read_health, paths), strict=True))


def _disk_of(path: str) -> tuple[str, str, str]:
    """(the whole disk's /dev path, its diskseq, "") or ("", "", why it has no SMART)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return "", "", f"cannot be looked at: {exc.strerror}"
    if stat.S_ISREG(info.st_mode):
        return "", "", "an image file has no SMART"
    if not stat.S_ISBLK(info.st_mode):
        return "", "", "not a disk: no SMART"
    sysdir = (SYS_DEV_BLOCK / f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}").resolve()
    if (sysdir / "partition").exists():
        sysdir = sysdir.parent
    for pattern, why in NO_SMART:
        if pattern.match(sysdir.name):
            return "", "", why
    try:
        seq = (sysdir / "diskseq").read_text().strip()
    except OSError:
        seq = ""  # before Linux 5.15
    return f"/dev/{sysdir.name}", seq, ""


def _ask(device: str, timeout: float) -> Health:
    try:
        proc = run(["smartctl", "--json=c", "-a", device], check=False, timeout=timeout)
    except ToolMissingError as exc:
        return Health(Verdict.UNKNOWN, (exc.message,))
    except subprocess.TimeoutExpired:
        why = f"smartctl did not answer within {timeout:g} s (a USB bridge can hang on SMART)"
        return Health(Verdict.UNKNOWN, (why,))
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        why = f"smartctl gave no JSON (exit status {proc.returncode})"
        return Health(Verdict.UNKNOWN, (why,))
    return parse(data, proc.returncode)


# --- smartctl's JSON ------------------------------------------------------------------------


def parse(data: Mapping[str, Any], exit_status: int | None = None) -> Health:
    """``Health`` from smartctl's JSON (``--json -a``) and exit status (default: the one the
    JSON records). Pure: the tests feed it captured output (tests/data/smart/)."""
    if exit_status is None:
        exit_status = int(data.get("smartctl", {}).get("exit_status", 0))
    if exit_status & (CANNOT_PARSE | CANNOT_OPEN):
        return Health(Verdict.UNKNOWN, (_message(data) or "smartctl could not open the device",))
    support = data.get("smart_support")
    if support is not None and not support.get("available", False):
        return Health(Verdict.UNKNOWN, ("SMART not supported by this device",))
    if support is not None and not support.get("enabled", False):
        return Health(Verdict.UNKNOWN, ("SMART is turned off on this device",))
    passed = data.get("smart_status", {}).get("passed")
    nvme = data.get("nvme_smart_health_information_log")
    facts = _Facts(passed=passed, temperature=data.get("temperature", {}).get("current"))
    if nvme is not None:  # smartctl's NVMe "FAILED" is a critical warning bit: decoded there
        facts.nvme(nvme)
    else:
        if passed is False or exit_status & DISK_FAILING:
            facts.add(Verdict.FAILING, "SMART overall test FAILED")
        facts.ata(data.get("ata_smart_attributes", {}).get("table", []), exit_status)
        facts.scsi(data)
    if exit_status & SELFTEST_ERRORS:
        facts.add(Verdict.WARNING, "a self-test in the disk's log failed")
    return facts.health(_message(data))


def _message(data: Mapping[str, Any]) -> str:
    """smartctl's own error messages ("smartctl: /dev/vda: Unable to detect device type")."""
    messages = data.get("smartctl", {}).get("messages", [])
    errors = [m["string"] for m in messages if m.get("severity") == "error" and "string" in m]
    return "smartctl: " + "; ".join(errors) if errors else ""


def _raw(row: Mapping[str, Any] | None) -> int | None:
    """An ATA attribute's raw count: the first number of smartctl's reading of the raw bytes
    (it knows each model's layout, e.g. "0 (Min/Max 31/31)"), else the 48-bit raw value."""
    if row is None:
        return None
    raw = row.get("raw", {})
    found = re.match(r"\d+", str(raw.get("string", "")))
    return int(found.group()) if found else int(raw.get("value", 0))


def _sectors(n: int, what: str) -> str:
    """ "1 pending sector", "12 pending sectors"."""
    return f"{n} {what} sector{'' if n == 1 else 's'}"


class _Facts:
    """The findings and numbers gathered while ``parse`` reads one answer."""

    def __init__(self, *, passed: bool | None, temperature: int | None) -> None:
        self.findings: list[tuple[Verdict, str]] = []
        self.numbers: dict[str, int] = {}
        self.passed = passed
        self.temperature = temperature

    def add(self, verdict: Verdict, reason: str) -> None:
        self.findings.append((verdict, reason))

    def ata(self, table: list[Mapping[str, Any]], exit_status: int) -> None:
        rows = {int(row["id"]): row for row in table if "id" in row}
        for number, name in ((5, "reallocated"), (197, "pending"), (198, "uncorrectable")):
            value = _raw(rows.get(number))
            if value is not None:
                self.numbers[name] = value
                if value > 0:
                    self.add(Verdict.WARNING, _sectors(value, name))
        now = past = False
        for row in table:
            when = row.get("when_failed", "")
            attribute = f"attribute {row.get('id')} {row.get('name', '')}".rstrip()
            if when == "now" and row.get("flags", {}).get("prefailure"):
                now = True
                self.add(Verdict.FAILING, f"{attribute} is at its failure threshold now")
            elif when:
                past = True
                held = "is at its threshold now" if when == "now" else "was at its threshold"
                self.add(Verdict.WARNING, f"{attribute} {held}")
        if exit_status & PREFAIL_NOW and not now:
            self.add(Verdict.FAILING, "a pre-failure attribute is at its threshold")
        if exit_status & ATTRIBUTE_PAST and not past:
            self.add(Verdict.WARNING, "an attribute reached its threshold in the past")

    def nvme(self, log: Mapping[str, Any]) -> None:
        critical = int(log.get("critical_warning", 0))
        if critical:
            meant = [(failing, words) for bit, words, failing in NVME_CRITICAL if critical & bit]
            verdict = Verdict.FAILING if any(f for f, _ in meant) else Verdict.WARNING
            words = ", ".join(w for _, w in meant) or "a bit the specification does not name"
            self.add(verdict, f"NVMe critical warning {critical:#x}: {words}")
        for name in ("media_errors", "percentage_used"):
            if name in log:
                self.numbers[name] = int(log[name])
        errors = self.numbers.get("media_errors", 0)
        if errors:
            self.add(Verdict.WARNING, f"NVMe media errors: {errors}")
        used = self.numbers.get("percentage_used", 0)
        if used >= 100:
            self.add(Verdict.WARNING, f"NVMe percentage used {used} %")
        if self.temperature is None and "temperature" in log:
            self.temperature = int(log["temperature"])

    def scsi(self, data: Mapping[str, Any]) -> None:
        if "scsi_grown_defect_list" in data:
            defects = int(data["scsi_grown_defect_list"])
            self.numbers["reallocated"] = defects
            if defects:
                self.add(Verdict.WARNING, f"{defects} grown defects (reallocated sectors)")
        counters = data.get("scsi_error_counter_log")
        if isinstance(counters, Mapping):
            errors = sum(
                int(c.get("total_uncorrected_errors", 0))
                for c in counters.values()
                if isinstance(c, Mapping)
            )
            self.numbers["uncorrectable"] = errors
            if errors:
                self.add(Verdict.WARNING, f"{errors} uncorrected read, write or verify errors")
        if "scsi_percentage_used_endurance_indicator" in data:
            used = int(data["scsi_percentage_used_endurance_indicator"])
            self.numbers["percentage_used"] = used
            if used >= 100:
                self.add(Verdict.WARNING, f"percentage used {used} %")

    def health(self, message: str) -> Health:
        verdicts = {v for v, _ in self.findings}
        if Verdict.FAILING in verdicts:
            verdict = Verdict.FAILING
        elif verdicts:
            verdict = Verdict.WARNING
        elif self.passed is not None or self.numbers:
            verdict = Verdict.GOOD
        else:  # smartctl answered but said nothing about health
            why = message or "smartctl read no health data from this device"
            return Health(Verdict.UNKNOWN, (why,))
        n = self.numbers.get
        return Health(
            verdict,
            tuple(reason for _, reason in self.findings),
            self.passed,
            n("reallocated"),
            n("pending"),
            n("uncorrectable"),
            n("media_errors"),
            n("percentage_used"),
            self.temperature,
        )
