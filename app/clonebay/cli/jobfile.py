"""The unattended job file: one save, restore or clone, written down so that nobody needs to be at
the keyboard (a lab imaging a row of machines, the live ISO's ``clonebay.job=`` boot option).

The file is TOML (docs/live.md has the full reference)::

    job = "clone"                 # clone | save | restore
    source = "serial:S3Z9NB0K"    # what to read
    target = "by-id:nvme-Samsung_SSD_980_1TB_S64ANS0T"   # what to overwrite
    yes = true                    # clone, restore: I confirm the target is overwritten

    [options]
    grow = "proportional"         # clone, restore: proportional | last | none
    verify = true                 # clone (default true), restore (default false)
    hostname = "lab-pc-07"        # clone, restore: the post-copy pass (also new_ids, map,
                                  # efi_entry, reinstall_grub, fixup = false)

A disk is named by a *selector*, because device names (/dev/sda) change from boot to boot and
from machine to machine while serial numbers do not:

  ``serial:TEXT``  the disk whose serial number is TEXT (case-insensitive)
  ``model:TEXT``   the disk whose model is TEXT (case-insensitive; must be unique)
  ``wwn:TEXT``     the disk whose World Wide Name is TEXT
  ``by-id:NAME``   the disk that /dev/disk/by-id/NAME points at
  ``/dev/...``     a device path as it is (also /dev/disk/by-id/... and by-path links)

Which fields are disks: clone reads a disk and writes a disk; save reads a disk and writes an
image (a directory path, a store URL such as ``smb://tech@nas/images/pc1.image`` or
``disk:LABEL=CLONEBAYIMG/pc1.image``, or a tape such as /dev/nst0); restore reads an image and
writes a disk. A store's password comes from the ``credentials`` option (a file of
``username=``/``password=`` lines, cli/stores.py), an SFTP server's key from ``host_key``.
A selector must match exactly one disk, never the live medium; none or several is an error that
names the candidates.

Nobody is at the keyboard to answer the CLI's question before a disk is overwritten, so the
technician confirms when writing the file: ``yes = true`` (or ``clonebay job --yes``). A clone or
restore job without it asks on a terminal and is refused without one (save writes an image and
asks nothing). The job file is a few lines: over 64 KiB, or not UTF-8, it is refused, never cut.
Fetched by URL, it must come over https, or carry the SHA-256 of its content in the URL
(``http://host/pc1.toml#sha256=HEX``), because whoever can change it in transit chooses which
disk is wiped.

Everything here is pure (parse, match, build the command line) except ``read_job_text``, which
reads a file or fetches a URL. It builds a ``clonebay`` command line, so it lives with the CLI.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clonebay.errors import ClonebayError, InputError, UsageError
from clonebay.model import Disk

JOBS = ("clone", "save", "restore")
CONFIRMED_JOBS = ("clone", "restore")  # the jobs that overwrite a disk: they need ``yes``
MAX_JOB_BYTES = 64 << 10  # a job file is a few hundred bytes; more is not a job file
PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")
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
    "credentials": (str, ("save", "restore")),  # a store's credentials file (cli/stores.py)
    "host_key": (str, ("save", "restore")),  # an SFTP store's pinned host key, SHA256:...
    # the post-copy pass (docs/cli.md, "After the copy")
    "hostname": (str, ("clone", "restore")),
    "new_ids": (bool, ("clone", "restore")),
    "map": (str, ("clone", "restore")),  # a mapping file: this machine's row names it
    "efi_entry": (bool, ("clone", "restore")),
    "reinstall_grub": (bool, ("clone", "restore")),
    "fixup": (bool, ("clone", "restore")),  # false: no post-copy pass
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
    yes: bool = False  # the technician's confirmation that the target is overwritten

    @property
    def needs_confirmation(self) -> bool:
        """Does running it overwrite a disk (and is it not only a dry run)?"""
        return self.job in CONFIRMED_JOBS and not self.options.get("dry_run", False)

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
    unknown = sorted(set(data) - {"job", "source", "target", "yes", "options"})
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
    yes = data.get("yes", False)
    if not isinstance(yes, bool):
        raise JobFileError(f"{origin}: yes must be true or false (without quotes), not {yes!r}")
    source, target = _field(data, "source", origin), _field(data, "target", origin)
    parsed = Job(job, source, target, options, origin, yes)
    for name in ("source", "target"):
        value = getattr(parsed, name)
        if parsed.is_disk(name):
            parse_selector(value)
        elif value == "-":
            raise JobFileError(f"{origin}: {name} cannot be - (no terminal or pipe at boot)")
        else:
            _check_store_url(value, f"{origin}: {name}")
    return parsed


def _check_store_url(value: str, where: str) -> None:
    """An image field may be a store URL (cli/stores.py); a malformed one is named here, before
    any disk is waited for."""
    from clonebay.engine import stores

    if stores.is_store_url(value):
        try:
            stores.parse(value)
        except ClonebayError as exc:
            raise JobFileError(f"{where}: {exc.message}") from exc


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
    if "credentials" in opts:
        argv += ["--credentials", str(opts["credentials"])]
    if "host_key" in opts:
        argv += ["--host-key", str(opts["host_key"])]
    argv += _postcopy_argv(opts)
    if opts.get("dry_run", False):
        argv.append("--dry-run")
    if job.yes and job.job in CONFIRMED_JOBS:
        argv.append("--yes")
    return argv


def _postcopy_argv(opts: dict[str, Any]) -> list[str]:
    """The post-copy options of a clone or restore job."""
    argv: list[str] = []
    if opts.get("hostname"):
        argv += ["--hostname", str(opts["hostname"])]
    if opts.get("map"):
        argv += ["--map", str(opts["map"])]
    if opts.get("new_ids", False):
        argv.append("--new-ids")
    if "efi_entry" in opts:
        argv.append("--efi-entry" if opts["efi_entry"] else "--no-efi-entry")
    if opts.get("reinstall_grub", False):
        argv.append("--reinstall-grub")
    if not opts.get("fixup", True):
        argv.append("--no-fixup")
    return argv


def read_job_text(spec: str, timeout: float = 30.0) -> str:
    """The text of the job file ``spec``: a local path, or a URL fetched once (https, or http
    with a ``#sha256=HEX`` pin the content must match)."""
    if spec.startswith(("http://", "https://")):
        return _decode(spec, _fetch(spec, timeout))
    try:
        with open(spec, "rb") as f:
            body = f.read(MAX_JOB_BYTES + 1)
    except OSError as exc:
        raise JobFileError(f"cannot read the job file {spec}: {exc.strerror}") from exc
    return _decode(spec, body)


def _fetch(spec: str, timeout: float) -> bytes:
    url, _, fragment = spec.partition("#")
    pin = PIN.fullmatch(fragment)
    if fragment and pin is None:
        raise UsageError(f"job file URL {spec}: the part after # must be sha256= and 64 hex digits")
    if url.startswith("http://") and pin is None:
        raise UsageError(
            f"refusing the job file {spec}: over plain http anyone on the way can change which"
            " disk it overwrites; use https://, or pin its content with"
            " #sha256=<sha256sum of the file> at the end of the URL"
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read(MAX_JOB_BYTES + 1)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise JobFileError(f"cannot fetch the job file {spec}: {exc}") from exc
    if pin is not None and len(body) <= MAX_JOB_BYTES:
        digest = hashlib.sha256(body).hexdigest()
        if digest != pin.group(1).lower():
            raise JobFileError(
                f"the job file {url} is not the one pinned in its URL: its SHA-256 is {digest},"
                f" the URL asks for {pin.group(1).lower()}; nothing was run"
            )
    return body


def _decode(spec: str, body: bytes) -> str:
    if len(body) > MAX_JOB_BYTES:
        raise JobFileError(
            f"the job file {spec} is larger than {MAX_JOB_BYTES >> 10} KiB: a job file is a few"
            " lines of TOML; is it the right file?"
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobFileError(
            f"the job file {spec} is not UTF-8 text (byte {exc.start} is 0x{body[exc.start]:02x});"
            " save it as UTF-8"
        ) from None
