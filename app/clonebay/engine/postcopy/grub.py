"""GRUB's boot code and configuration, renewed in a chroot of the target's own system.

GRUB's pieces name where the rest lives: boot.img in the MBR holds the sector of core.img;
core.img (in the post-MBR gap or a BIOS boot partition) and an EFI grubx64.efi made by
grub-install hold a ``search.fs_uuid`` for the filesystem with /boot/grub; grub.cfg names the
root by UUID. After a copy those are stale when partitions moved on an MBR disk (core.img's
blocklists), when filesystem UUIDs were renewed (``--new-ids``), or when asked
(``--reinstall-grub``). Then, with the target's own tools:

- BIOS: ``grub-install --target=i386-pc DISK`` when the disk carries GRUB's boot code and the
  system has GRUB's i386-pc modules;
- UEFI: ``grub-install --target=x86_64-efi --no-nvram`` into a scratch FAT (the host may have
  no vfat driver), whose EFI/<id>/ files are then copied onto the real ESP with mtools and read
  back; a fallback loader that was a copy of the old loader is renewed the same way;
- ``update-grub`` when UUIDs changed (grub.cfg's root=UUID, search lines);
- ``update-initramfs -u`` when the initramfs names a device whose id changed (resume, crypttab).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from clonebay.engine.postcopy import esp as esp_files
from clonebay.engine.postcopy import mounts
from clonebay.engine.postcopy.changes import Change, Skip
from clonebay.engine.postcopy.chroot import Chroot
from clonebay.engine.postcopy.esp import mtool
from clonebay.engine.postcopy.systems import Installed, inside
from clonebay.system import loopdev
from clonebay.system.run import run

GRUB_MARK = b"GRUB"  # boot.img's error message text ("GRUB \0Geom\0Hard Disk...") in the MBR
SCRATCH_ESP = 64 << 20


def has_bios_grub(target: str) -> bool:
    """Whether the target's MBR holds GRUB's boot.img."""
    with open(target, "rb") as f:
        mbr = f.read(440)
    return GRUB_MARK in mbr


def bios_install(ch: Chroot, where: str) -> list[Change]:
    """GRUB's boot code for BIOS, by the target's own grub-install."""
    ch.run("grub-install", "--target=i386-pc", "--recheck", ch.disk)
    with open(ch.disk, "rb") as f:
        mbr = f.read(440)
    if GRUB_MARK not in mbr:
        return []
    digest = hashlib.sha256(mbr).hexdigest()[:16]
    return [
        Change(where, "grub boot code (BIOS)", "", "reinstalled", f"MBR read back, sha256 {digest}")
    ]


def efi_install(
    ch: Chroot, target: str, esp: Installed, bootloader_id: str, where: str
) -> list[Change]:
    """GRUB for UEFI into a scratch FAT, then its files onto the target's ESP."""
    changes = []
    with tempfile.TemporaryDirectory(prefix="clonebay-grub-") as tmp:
        fat = Path(tmp) / "esp.img"
        with open(fat, "wb") as f:
            f.truncate(SCRATCH_ESP)
        run(["mkfs.fat", "-F", "32", str(fat)])
        dev = loopdev.attach(str(fat))
        at = inside(ch.root, "boot/efi")
        at.mkdir(exist_ok=True)
        try:
            run(["fusefat", "-o", f"rw+,fsname={dev}", dev, str(at)], timeout=60)
            try:
                with ch.device(dev):
                    ch.run(
                        "grub-install",
                        "--target=x86_64-efi",
                        "--efi-directory=/boot/efi",
                        f"--bootloader-id={bootloader_id}",
                        "--no-nvram",
                    )
            finally:
                mounts.unmount_keep(at)
        finally:
            loopdev.detach(dev)
        made = mtool(
            ["mdir", "-/", "-b", "-i", str(fat), f"::/EFI/{bootloader_id}"]
        ).stdout.decode()
        files = [
            ln[3:] for ln in made.splitlines() if ln.startswith("::/") and not ln.endswith("/")
        ]
        old = _loader_digest(target, esp, bootloader_id)
        for path in files:
            local = Path(tmp) / Path(path).name
            mtool(["mcopy", "-n", "-o", "-i", str(fat), f"::/{path}", str(local)])
            changes.append(_put(target, esp, local, path))
        fallback = esp_files.FALLBACK
        if old and esp_files.file_digest(target, esp, fallback) == old:
            new = Path(tmp) / Path(_main_loader(files)).name
            changes.append(_put(target, esp, new, fallback))
    return changes


def _main_loader(files: list[str]) -> str:
    names = {Path(f).name.lower(): f for f in files}
    return names.get("shimx64.efi") or names.get("grubx64.efi") or files[0]


def _loader_digest(target: str, esp: Installed, bootloader_id: str) -> str:
    for name in ("shimx64.efi", "grubx64.efi"):
        digest = esp_files.file_digest(target, esp, f"EFI/{bootloader_id}/{name}")
        if digest:
            return digest
    return ""


def _put(target: str, esp: Installed, local: Path, dest: str) -> Change:
    digest = esp_files.put(target, esp, local, dest)
    shown = "\\" + dest.replace("/", "\\")
    return Change(esp.where, "grub (UEFI) file", "", shown, f"sha256 {digest[:16]}")


def efi_bootloader_ids(ch: Chroot, esp_paths: list[str]) -> list[str]:
    """ESP folders that hold this system's GRUB (EFI/<id>/grubx64.efi), when the system has
    GRUB's x86_64-efi modules."""
    if not ch.has("usr/lib/grub/x86_64-efi"):
        return []
    ids = []
    for path in esp_paths:
        parts = path.split("/")
        if (
            len(parts) == 3
            and parts[0].lower() == "efi"
            and parts[2].lower() == "grubx64.efi"
            and parts[1].lower() != "boot"
        ):
            ids.append(parts[1])
    return ids


@contextlib.contextmanager
def no_os_prober(ch: Chroot) -> Iterator[None]:
    """os-prober, when the target's GRUB config enables it, mounts every partition of every
    disk of the machine running the pass to look for other systems, the source among them
    (and a read-only ext4 mount still replays a journal). For the length of update-grub it is
    the target's own ``true``: grub.cfg then offers only the target's systems."""
    prober = ch.root / "usr/bin/os-prober"
    true = ch.root / "usr/bin/true"
    if not (prober.is_file() and not prober.is_symlink() and true.is_file()):
        yield
        return
    run(["mount", "--bind", str(true), str(prober)], timeout=60)
    try:
        yield
    finally:
        mounts.unmount_keep(prober)


def update_config(ch: Chroot, where: str, root_uuid: str) -> tuple[list[Change], list[Skip]]:
    """grub.cfg made anew by the target's update-grub, kept only when it names the root by
    its UUID. grub-mkconfig writes ``root=UUID=`` only when /dev/disk/by-uuid has the root
    (udev, as in the live system); without it, it would name the loop device the chroot runs
    on (``root=/dev/loop0p3``), which no boot can find: then the grub.cfg whose ids were
    replaced in place (engine/postcopy/refs.py) is put back, and the report says why."""
    cfg = ch.root / "boot/grub/grub.cfg"
    if not (ch.has("usr/sbin/update-grub") and cfg.is_file()):
        return [], []
    before = cfg.read_bytes()
    with no_os_prober(ch):
        ch.run("update-grub")
    after = cfg.read_bytes()
    text = after.decode(errors="replace")
    if f"root=UUID={root_uuid}" not in text or ch.disk in text:
        cfg.write_bytes(before)
        if cfg.read_bytes() != before:
            raise OSError(f"{where}: /boot/grub/grub.cfg could not be put back")
        why = (
            "update-grub named the root by a device of this machine, not by its UUID (no"
            " /dev/disk/by-uuid here): the grub.cfg with its ids replaced in place is kept"
        )
        return [], [Skip(where, "grub.cfg regenerated", why)]
    change = Change(
        where,
        "grub.cfg",
        hashlib.sha256(before).hexdigest()[:16],
        hashlib.sha256(after).hexdigest()[:16],
        f"update-grub; names root=UUID={root_uuid}",
    )
    return [change], []


def update_initramfs(ch: Chroot, where: str) -> list[Change]:
    if not ch.has("usr/sbin/update-initramfs"):
        return []
    ch.run("update-initramfs", "-u", "-k", "all")
    return [Change(where, "initramfs", "", "rebuilt for the new ids", "update-initramfs")]
