"""A mapping file for mass deployment: which machine gets which host name.

One row per machine, keyed by any of: a network card's MAC address (``mac``), the board's DMI
serial number (``dmi_serial``), or the target disk's serial (``disk_serial``); the row gives
``hostname`` and may carry other per-machine values (kept and reported, for scripts).

CSV (a header line names the columns)::

    mac,dmi_serial,disk_serial,hostname,room
    52:54:00:12:34:01,,,lab-pc-01,B12
    ,VMware-56 4d,,lab-pc-02,B12

TOML::

    [[machine]]
    mac = "52:54:00:12:34:01"
    hostname = "lab-pc-01"

Each receiver looks for its own row: one whose MAC is one of its cards, or whose DMI or disk
serial is its own. Two rows that match one machine, a row with no key or no host name, two rows
with one host name or one key are refused when the file is read, before anything is written.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.engine.postcopy.linux import check_hostname
from clonebay.errors import InputError, UsageError

KEYS = ("mac", "dmi_serial", "disk_serial")
NET = Path("/sys/class/net")
DMI_SERIAL = Path("/sys/class/dmi/id/product_serial")


@dataclass(frozen=True)
class Row:
    """One machine of the mapping file."""

    line: int
    hostname: str
    keys: dict[str, str]  # "mac" -> "52:54:00:12:34:01" (normalised), ...
    values: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.keys.items())


@dataclass(frozen=True)
class Machine:
    """What identifies the machine a receiver runs on."""

    macs: tuple[str, ...]
    dmi_serial: str = ""
    disk_serial: str = ""

    def describe(self) -> str:
        parts = [f"MAC {m}" for m in self.macs]
        if self.dmi_serial:
            parts.append(f"DMI serial {self.dmi_serial}")
        if self.disk_serial:
            parts.append(f"disk serial {self.disk_serial}")
        return ", ".join(parts) or "no MAC or serial found"


def _norm(key: str, value: str) -> str:
    value = value.strip()
    if key == "mac":
        return value.lower().replace("-", ":")
    return value


def _row(line: int, raw: dict[str, str], where: str) -> Row:
    data = {
        str(k).strip().lower(): str(v).strip()
        for k, v in raw.items()
        if k is not None and v is not None
    }
    name = data.pop("hostname", "")
    if not name:
        raise InputError(f"{where}, row {line}: no hostname")
    try:
        check_hostname(name)
    except UsageError as exc:
        raise InputError(f"{where}, row {line}: {exc.message}") from exc
    keys = {k: _norm(k, data.pop(k)) for k in KEYS if data.get(k)}
    for k in KEYS:
        data.pop(k, None)
    if not keys:
        raise InputError(
            f"{where}, row {line}: no mac, dmi_serial or disk_serial to know the machine by"
        )
    return Row(line, name, keys, data)


def read_mapping(path: str) -> list[Row]:
    """The rows of a CSV or TOML mapping file, checked."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read the mapping file {path}: {exc.strerror}") from exc
    rows: list[Row] = []
    if file.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not TOML: {exc}") from exc
        machines = data.get("machine", [])
        if not isinstance(machines, list):
            raise InputError(f"{path}: [[machine]] tables expected")
        rows = [
            _row(i + 1, {k: str(v) for k, v in m.items()}, path) for i, m in enumerate(machines)
        ]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "hostname" not in [
            f.strip().lower() for f in reader.fieldnames
        ]:
            raise InputError(
                f"{path}: the first line must name the columns, with hostname among them"
            )
        rows = [_row(i + 2, r, path) for i, r in enumerate(reader)]
    if not rows:
        raise InputError(f"{path}: no machine rows")
    _check_unique(rows, path)
    return rows


def _check_unique(rows: list[Row], path: str) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        for item in [
            f"hostname {row.hostname.lower()}",
            *(f"{k} {v}" for k, v in row.keys.items()),
        ]:
            if item in seen:
                raise InputError(f"{path}: rows {seen[item]} and {row.line} both have {item}")
            seen[item] = row.line


def this_machine(disk_serial: str = "") -> Machine:
    """This machine's network cards (those with a device behind them; every interface but
    loopback when there is none, as in a network namespace), DMI serial and the disk's."""
    cards: list[tuple[bool, str]] = []
    if NET.is_dir():
        for card in sorted(NET.iterdir()):
            mac = _read(card / "address").lower()
            if card.name != "lo" and mac and mac != "00:00:00:00:00:00":
                cards.append(((card / "device").exists(), mac))
    physical = [mac for real, mac in cards if real]
    macs = physical or [mac for _, mac in cards]
    return Machine(tuple(dict.fromkeys(macs)), _read(DMI_SERIAL), disk_serial)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def find_row(rows: list[Row], machine: Machine) -> Row | None:
    """The row for ``machine``; None when no row names it; refused when two do."""
    hits = []
    for row in rows:
        mac = row.keys.get("mac")
        dmi = row.keys.get("dmi_serial")
        disk = row.keys.get("disk_serial")
        if (
            (mac and mac in machine.macs)
            or (dmi and dmi == machine.dmi_serial)
            or (disk and disk == machine.disk_serial)
        ):
            hits.append(row)
    if len(hits) > 1:
        lines = ", ".join(str(r.line) for r in hits)
        raise InputError(
            f"rows {lines} of the mapping file all match this machine ({machine.describe()})"
        )
    return hits[0] if hits else None
