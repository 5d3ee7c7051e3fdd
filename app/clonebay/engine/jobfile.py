"""The unattended job file: one save, restore or clone, written down so that nobody needs to be at
the keyboard (a lab imaging a row of machines, the live ISO's ``clonebay.job=`` boot option).

The file is TOML (docs/live.md has the full reference)::

    job = "clone"                 # clone | save | restore
    source = "serial:S3Z9NB0K"    # what to read
    target = "by-id:nvme-Samsung_SSD_980_1TB_S64ANS0T"   # what to overwrite

    [options]
    grow = "proportional"         # clone, restore: proportional | last | none
    verify = true                 # clone (default true), restore (default false)

A disk is named by a *selector*, because device names (/dev/sda) change from boot to boot and
from machine to machine while serial numbers do not:

  ``serial:TEXT``  the disk whose serial number is TEXT (case-insensitive)
  ``model:TEXT``   the disk whose model is TEXT (case-insensitive; must be unique)
  ``wwn:TEXT``     the disk whose World Wide Name is TEXT
  ``by-id:NAME``   the disk that /dev/disk/by-id/NAME points at
  ``/dev/...``     a device path as it is (also /dev/disk/by-id/... and by-path links)

Which fields are disks: clone reads a disk and writes a disk; save reads a disk and writes an
image (a directory path, or a tape such as /dev/nst0); restore reads an image and writes a disk.
A selector must match exactly one disk, never the live medium; none or several is an error that
names the candidates. Everything here is pure (parse, match, build the command line) except
``read_job_text``, which reads a file or fetches an http(s) URL.
"""

from __future__ import annotations

import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clonebay.errors import InputError
from clonebay.model import Disk

JOBS = ("clone", "save", "restore")
SELECTOR_KINDS = ("serial", "model", "wwn", "by-id")
GROW = ("proportional", "last", "none")
BY_ID_DIR = "/dev/disk/by-id/"
# (job, field) -> is the field a disk? The other fields are image paths.
_DISK_FIELDS = {
    ("clone", "source"): True,
    ("clone", "target"): True,
    ("save", "source"): True,
    ("save", "target"): False,
    ("restore", "source"): False,
    ("restore", "target"): True,
}
# option -> (type, jobs it applies to)
_OPTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "grow": (str, ("clone", "restore")),
    "verify": (bool, ("clone", "restore")),
    "partition": (int, ("save",)),
    "codec": (str, ("save",)),
    "overwrite": (bool, ("save",)),
    "region": (str, ("restore",)),
    "dry_run": (bool, JOBS),
}


class JobFileError(InputError):
    """A job file that cannot be run as written: the message says which field and why."""

    title = "Bad job file"


@dataclass(frozen=True)
class Selector:
    """How a job file names a disk: ``kind`` is serial, model, wwn, by-id or path."""

    kind: str
    value: str

    def __str__(self) -> str:
        return self.value if self.kind == "path" else f"{self.kind}:{self.value}"

    def matches(self, disk: Disk) -> bool:
        want = self.value.strip().casefold()
        if self.kind == "serial":
            return bool(disk.serial) and disk.serial.strip().casefold() == want
        if self.kind == "model":
            return bool(disk.model) and disk.model.strip().casefold() == want
        if self.kind == "wwn":
            return bool(disk.wwn) and disk.wwn.strip().casefold() == want
        if self.kind == "by-id":
            return any(link == BY_ID_DIR + self.value for link in disk.by_id)
        return disk.path == self.value or self.value in disk.by_id


def parse_selector(text: str) -> Selector:
    """``serial:X``, ``model:X``, ``wwn:X``, ``by-id:X`` or a path (see the module docstring)."""
    kind, sep, value = text.partition(":")
    if sep and kind in SELECTOR_KINDS:
        if not value.strip():
            raise JobFileError(f"{text!r}: nothing after {kind}:")
        return Selector(kind, value.strip())
    if text.startswith("/"):
        return Selector("path", text)
    raise JobFileError(
        f"{text!r} names no disk: use serial:..., model:..., wwn:..., by-id:... or a /dev path"
    )


@dataclass(frozen=True)
class Job:
    """One parsed job file. ``source``/``target`` are selectors for disks, paths for images."""

    job: str
    source: str
    target: str
    options: dict[str, Any]
    origin: str = "<job>"

    def is_disk(self, field_name: str) -> bool:
        return _DISK_FIELDS[(self.job, field_name)]


def _field(data: dict[str, Any], name: str, origin: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise JobFileError(f"{origin}: {name} must be a non-empty string")
    return value.strip()


def parse_job(text: str, origin: str = "<job>") -> Job:
    """A job file's TOML text -> Job, checked field by field; JobFileError names what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{origin}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"job", "source", "target", "options"})
    if unknown:
        raise JobFileError(f"{origin}: unknown key(s) {', '.join(unknown)}")
    job = _field(data, "job", origin)
    if job not in JOBS:
        raise JobFileError(f"{origin}: job must be one of {', '.join(JOBS)}, not {job!r}")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise JobFileError(f"{origin}: [options] must be a table")
    for key, value in options.items():
        if key not in _OPTIONS:
            raise JobFileError(f"{origin}: unknown option {key!r}")
        kind, jobs = _OPTIONS[key]
        if job not in jobs:
            raise JobFileError(f"{origin}: option {key!r} does not apply to {job}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise JobFileError(f"{origin}: option {key!r} must be a {kind.__name__}")
    if options.get("grow", "proportional") not in GROW:
        raise JobFileError(f"{origin}: option grow must be one of {', '.join(GROW)}")
    parsed = Job(
        job, _field(data, "source", origin), _field(data, "target", origin), options, origin
    )
    for name in ("source", "target"):
        value = getattr(parsed, name)
        if parsed.is_disk(name):
            parse_selector(value)
        elif value == "-":
            raise JobFileError(f"{origin}: {name} cannot be - (no terminal or pipe at boot)")
    return parsed


def match_disk(selector: Selector, disks: Sequence[Disk]) -> Disk:
    """The one disk ``selector`` names among ``disks`` (the live medium never counts)."""
    found = [d for d in disks if not d.is_live_medium and selector.matches(d)]
    if len(found) == 1:
        return found[0]
    if not found:
        seen = ", ".join(f"{d.path} ({d.model or '?'}, serial {d.serial or '?'})" for d in disks)
        raise JobFileError(f"no disk matches {selector}; disks seen: {seen or 'none'}")
    paths = ", ".join(d.path for d in found)
    raise JobFileError(f"{selector} matches {len(found)} disks ({paths}): name one by serial")


def resolve(job: Job, disks: Sequence[Disk]) -> tuple[str, str]:
    """(source, target) as paths the CLI takes: selectors matched against ``disks``."""
    ends = []
    for name in ("source", "target"):
        value: str = getattr(job, name)
        ends.append(match_disk(parse_selector(value), disks).path if job.is_disk(name) else value)
    if job.is_disk("source") and job.is_disk("target") and ends[0] == ends[1]:
        raise JobFileError(f"{job.origin}: source and target are the same disk ({ends[0]})")
    return ends[0], ends[1]


def command_line(job: Job, source: str, target: str) -> list[str]:
    """The ``clonebay`` arguments that run ``job`` on the resolved ``source`` and ``target``."""
    opts = job.options
    argv = [job.job, source, target]
    if job.job in ("clone", "restore"):
        default_grow = "proportional" if job.job == "clone" else "none"
        argv += ["--grow", str(opts.get("grow", default_grow))]
    if job.job == "clone" and not opts.get("verify", True):
        argv.append("--no-verify")
    if job.job == "restore":
        if opts.get("verify", False):
            argv.append("--verify")
        if "region" in opts:
            argv += ["--region", str(opts["region"])]
    if job.job == "save":
        argv += ["--codec", str(opts.get("codec", "lz4"))]
        if "partition" in opts:
            argv += ["--partition", str(opts["partition"])]
        if opts.get("overwrite", False):
            argv.append("--overwrite")
    if opts.get("dry_run", False):
        argv.append("--dry-run")
    return argv


def read_job_text(spec: str, timeout: float = 30.0) -> str:
    """The text of the job file ``spec``: a local path, or an http(s) URL fetched once."""
    if spec.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(spec, timeout=timeout) as response:
                body: bytes = response.read(1 << 20)
        except (urllib.error.URLError, OSError) as exc:
            raise JobFileError(f"cannot fetch the job file {spec}: {exc}") from exc
        return body.decode("utf-8")
    try:
        with open(spec, encoding="utf-8") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise JobFileError(f"cannot read the job file {spec}: {exc.strerror}") from exc
