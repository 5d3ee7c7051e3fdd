"""The EFI system partition: the removable fallback loader, and an NVRAM boot entry.

A UEFI machine boots what its NVRAM names. A disk cloned into another machine arrives with
no entry there (the source's entry stays with the source's board), and installers put their
loader only under their own folder (Debian: \\EFI\\debian\\shimx64.efi or grubx64.efi;
Windows: \\EFI\\Microsoft\\Boot\\bootmgfw.efi). What every firmware boots without an entry is
the removable fallback path, \\EFI\\BOOT\\BOOTX64.EFI. When that file is missing, the pass puts
the installed OS's loader there:

- shim (shimx64.efi) with the GRUB and MokManager it loads from its own folder (grubx64.efi,
  mmx64.efi) and grub.cfg; or GRUB alone (grubx64.efi, and grub.cfg beside it);
- Windows Boot Manager (bootmgfw.efi) when no Linux loader is there.

An existing fallback loader is never replaced. Each copied file is read back and compared.

The ESP is FAT, which the host kernel may not have: it is read and written with mtools at the
partition's byte offset in the target (``-i TARGET@@OFFSET``), as the demo and the tests do.

An NVRAM entry (``--efi-entry``) is added with efibootmgr, only when this machine boots by
UEFI (/sys/firmware/efi) and the target is a disk of it, then read back from efibootmgr's list.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clonebay.engine.postcopy.changes import Change, Skip
from clonebay.engine.postcopy.systems import Installed
from clonebay.errors import CommandError, DeviceError
from clonebay.system.run import run

FALLBACK = "EFI/BOOT/BOOTX64.EFI"
EFIVARS = Path("/sys/firmware/efi")
FREE = re.compile(r"([\d ]+) bytes free")
CLUSTER_SLACK = 64 << 10  # a file takes whole clusters (FAT32: up to 32 KiB each) and an entry
SHIM_COMPANIONS = ("grubx64.efi", "mmx64.efi", "grub.cfg")
GRUB_COMPANIONS = ("grub.cfg",)


@dataclass(frozen=True)
class Loader:
    """An installed OS's loader on the ESP and the files that go with it."""

    folder: str  # "EFI/debian"
    file: str  # "shimx64.efi"
    companions: tuple[str, ...]
    label: str  # "debian", "Windows Boot Manager"

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.file}"

    @property
    def efi_path(self) -> str:
        return "\\" + self.path.replace("/", "\\")


# mtools' own checks refuse FAT volumes that Windows and some firmware make (sectors per
# track that do not divide the size); a user's ~/.mtoolsrc must not change what it does;
# long names keep their non-ASCII letters under a UTF-8 locale.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null", "LC_ALL": "C.UTF-8"}


def mtool(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """One mtools program (mcopy, mdir, mmd ...) on an ESP, the same way everywhere."""
    return run(argv, check=check, env=MTOOLS_ENV)


def _image(target: str, esp: Installed) -> str:
    return f"{target}@@{esp.partition.start}"


def listing(target: str, esp: Installed) -> list[str]:
    """Every file path on the ESP ("EFI/debian/grubx64.efi"), as stored (FAT keeps case)."""
    try:
        out = mtool(["mdir", "-/", "-b", "-i", _image(target, esp), "::/"]).stdout
    except CommandError as exc:
        raise DeviceError(f"cannot read the EFI system partition {esp.where}: {exc}") from exc
    paths = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("::/"):
            paths.append(line[3:].rstrip("/"))
    return paths


def _lookup(paths: list[str]) -> dict[str, str]:
    return {p.lower(): p for p in paths}


def choose_loader(paths: list[str]) -> Loader | None:
    """The loader the fallback path should start: a Linux shim or GRUB first (it also offers
    Windows when os-prober found it), else Windows Boot Manager."""
    found = _lookup(paths)
    folders = sorted({str(PurePosixPath(p).parent) for p in paths if p.lower().startswith("efi/")})
    for folder in folders:
        low = folder.lower()
        if low in {"efi/boot", "efi/microsoft/boot", "efi"}:
            continue
        for file, companions in (
            ("shimx64.efi", SHIM_COMPANIONS),
            ("grubx64.efi", GRUB_COMPANIONS),
        ):
            if f"{low}/{file}" in found:
                present = tuple(c for c in companions if f"{low}/{c}" in found)
                real = str(PurePosixPath(found[f"{low}/{file}"]).parent)
                return Loader(
                    real,
                    PurePosixPath(found[f"{low}/{file}"]).name,
                    present,
                    PurePosixPath(real).name,
                )
    windows = found.get("efi/microsoft/boot/bootmgfw.efi")
    if windows:
        return Loader(
            str(PurePosixPath(windows).parent),
            PurePosixPath(windows).name,
            (),
            "Windows Boot Manager",
        )
    return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_bytes(target: str, esp: Installed) -> int:
    """Free space on the ESP, as mtools counts it."""
    out = mtool(["mdir", "-i", _image(target, esp), "::/"]).stdout.decode(errors="replace")
    found = FREE.search(out)
    return int(found.group(1).replace(" ", "")) if found else 0


def fetch(target: str, esp: Installed, path: str, local: Path) -> bool:
    """ESP file ``path`` copied to ``local``; False when it is not there."""
    image = _image(target, esp)
    proc = mtool(["mcopy", "-n", "-o", "-i", image, f"::/{path}", str(local)], check=False)
    return proc.returncode == 0 and local.exists()


def file_digest(target: str, esp: Installed, path: str) -> str:
    """The sha256 of ESP file ``path``, "" when it is not there."""
    with tempfile.TemporaryDirectory(prefix="clonebay-esp-") as tmp:
        local = Path(tmp) / "f"
        return _sha(local) if fetch(target, esp, path, local) else ""


def put(target: str, esp: Installed, local: Path, dest: str) -> str:
    """``local`` written to ESP path ``dest`` and read back; returns its sha256."""
    mtool(["mcopy", "-n", "-o", "-i", _image(target, esp), str(local), f"::/{dest}"])
    want = _sha(local)
    if file_digest(target, esp, dest) != want:
        raise DeviceError(f"{esp.where}: \\{dest} read back other bytes than were written")
    return want


def ensure_fallback(target: str, esp: Installed) -> tuple[list[Change], list[Skip], Loader | None]:
    """Put the installed loader at \\EFI\\BOOT\\BOOTX64.EFI when nothing is there: its
    companions first and the loader last, so a fallback path that exists is complete; nothing
    when the ESP has no room for all of them (said, never half done)."""
    paths = listing(target, esp)
    found = _lookup(paths)
    loader = choose_loader(paths)
    what = "efi fallback loader"
    if FALLBACK.lower() in found:
        why = f"\\{found[FALLBACK.lower()].replace('/', chr(92))} is already there (kept)"
        return [], [Skip(esp.where, what, why)], loader
    if loader is None:
        return [], [Skip(esp.where, what, "no known OS loader on the ESP")], None
    if not esp.editable:
        return [], [Skip(esp.where, what, esp.why_not)], loader
    image = _image(target, esp)
    names = [n for n in loader.companions if f"efi/boot/{n}".lower() not in found]
    copies = [(f"{loader.folder}/{n}", f"EFI/BOOT/{n}") for n in names]
    copies.append((loader.path, FALLBACK))  # the loader last
    changes = []
    with tempfile.TemporaryDirectory(prefix="clonebay-esp-") as tmp:
        work = Path(tmp)
        locals_ = []
        for i, (source, _) in enumerate(copies):
            local = work / f"{i}-{PurePosixPath(source).name}"
            if not fetch(target, esp, source, local):
                raise DeviceError(f"{esp.where}: \\{source} could not be read")
            locals_.append(local)
        need = sum(local.stat().st_size + CLUSTER_SLACK for local in locals_)
        free = free_bytes(target, esp)
        if need > free:
            why = (
                f"the ESP has {free} bytes free and the loader's files need {need}: the copy"
                " boots only where an NVRAM entry names its loader"
            )
            return [], [Skip(esp.where, what, why)], loader
        if not any(p.lower() == "efi/boot" or p.lower().startswith("efi/boot/") for p in paths):
            mtool(["mmd", "-i", image, "::/EFI/BOOT"])
        for (source, dest), local in zip(copies, locals_, strict=True):
            digest = put(target, esp, local, dest)
            shown = "\\" + dest.replace("/", "\\")
            after = f"{shown} = \\{source.replace('/', chr(92))}"
            kind = what if dest == FALLBACK else "efi fallback file"
            changes.append(Change(esp.where, kind, "(none)", after, f"sha256 {digest[:16]}"))
    os.sync()
    return changes, [], loader


def efi_booted() -> bool:
    return (EFIVARS / "efivars").is_dir()


def boot_entries() -> str:
    return run(["efibootmgr", "-v"]).stdout.decode(errors="replace")


def add_entry(disk: str, esp: Installed, loader: Loader) -> Change:
    """An NVRAM entry for ``loader`` on partition ``esp`` of ``disk``, read back."""
    label = f"{loader.label} (clonebay)"
    argv = ["efibootmgr", "--create", "--disk", disk, "--part", str(esp.partition.number)]
    run([*argv, "--loader", loader.efi_path, "--label", label])
    listed = boot_entries()
    line = next((ln for ln in listed.splitlines() if label in ln), "")
    if not line:
        raise DeviceError(f"efibootmgr made no entry {label!r}: its list does not show it")
    return Change(
        esp.where, "efi boot entry", "(none)", line.split()[0] + " " + label, "efibootmgr -v"
    )
