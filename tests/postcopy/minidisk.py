"""A small installed-looking disk for host tests of the post-copy pass (no boot): GPT, an ESP
(FAT32, filled with mtools) holding \\EFI\\debian\\grubx64.efi and its grub.cfg and no fallback
loader, an ext4 root with the files a Debian system has that name its identity (hostname,
hosts, machine-id, D-Bus machine-id, SSH host keys, persistent net rules, fstab by UUID), and a
swap partition named in fstab and in initramfs-tools' resume file. Made in a second from
mkfs tools; the QEMU-booted Debian disk is tests/postcopy/debian_disk.py."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
ESP_START, ESP_SIZE = 1 * MiB, 64 * MiB
ROOT_START, ROOT_SIZE = 65 * MiB, 128 * MiB
SWAP_START, SWAP_SIZE = 193 * MiB, 16 * MiB
DISK_SIZE = 210 * MiB
FAKE_GRUB = b"MZ-not-really-grub-" * 100


@dataclass(frozen=True)
class MiniDisk:
    path: Path
    root_uuid: str
    swap_uuid: str
    esp_serial: str
    machine_id: str


def sh(*argv: str, stdin: bytes | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, input=stdin).stdout.decode()


def put(image: Path, disk: Path, start: int) -> None:
    """``image`` written into ``disk`` at byte ``start`` (whole MiB; holes kept)."""
    sh(
        "dd",
        f"if={image}",
        f"of={disk}",
        "bs=1M",
        f"seek={start // MiB}",
        "conv=notrunc,sparse",
        "status=none",
    )


def take(disk: Path, start: int, size: int, suffix: str) -> str:
    """``size`` bytes of ``disk`` at ``start`` copied into a file beside it."""
    part = disk.with_suffix(suffix)
    sh(
        "dd",
        f"if={disk}",
        f"of={part}",
        "bs=1M",
        f"skip={start // MiB}",
        f"count={size // MiB}",
        "status=none",
    )
    return str(part)


def build(path: Path, work: Path, *, hostname: str = "source-host") -> MiniDisk:
    work.mkdir(parents=True, exist_ok=True)
    root_uuid, swap_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    esp_serial = "1A2B-3C4D"
    machine_id = uuid.uuid4().hex
    tree = work / "root"
    for d in (
        "etc/ssh",
        "etc/udev/rules.d",
        "var/lib/dbus",
        "boot/grub",
        "etc/initramfs-tools/conf.d",
        "etc/default",
    ):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
    )
    (tree / "etc/hostname").write_text(hostname + "\n")
    (tree / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n"
    )
    (tree / "etc/machine-id").write_text(machine_id + "\n")
    (tree / "var/lib/dbus/machine-id").write_text(machine_id + "\n")
    (tree / "etc/udev/rules.d/70-persistent-net.rules").write_text(
        'SUBSYSTEM=="net", ATTR{address}=="52:54:00:aa:bb:cc", NAME="eth0"\n'
    )
    (tree / "etc/fstab").write_text(
        f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
        f"UUID={esp_serial} /boot/efi vfat umask=0077 0 1\n"
        f"UUID={swap_uuid} none swap sw 0 0\n"
    )
    (tree / "etc/initramfs-tools/conf.d/resume").write_text(f"RESUME=UUID={swap_uuid}\n")
    (tree / "boot/grub/grub.cfg").write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"linux /vmlinuz root=UUID={root_uuid} ro\n"
    )
    for kind in ("rsa", "ed25519"):
        sh(
            "ssh-keygen",
            "-q",
            "-t",
            kind,
            "-N",
            "",
            "-C",
            f"root@{hostname}",
            "-f",
            str(tree / f"etc/ssh/ssh_host_{kind}_key"),
        )
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    parts = (
        (ESP_START, ESP_SIZE, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        (ROOT_START, ROOT_SIZE, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        (SWAP_START, SWAP_SIZE, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
    )
    layout = "label: gpt\n" + "".join(
        f"start={start // 512}, size={size // 512}, type={kind}\n" for start, size, kind in parts
    )
    sh("sfdisk", "-q", str(path), stdin=layout.encode())
    esp = work / "esp.img"
    with open(esp, "wb") as f:
        f.truncate(ESP_SIZE)
    sh("mkfs.fat", "-F", "32", "-i", esp_serial.replace("-", ""), str(esp))
    loader = work / "grubx64.efi"
    loader.write_bytes(FAKE_GRUB)
    cfg = work / "grub.cfg"
    cfg.write_text(
        f"search.fs_uuid {root_uuid} root hd0,gpt2\n"
        "set prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
    )
    sh("mmd", "-i", str(esp), "::/EFI", "::/EFI/debian")
    sh("mcopy", "-i", str(esp), str(loader), str(cfg), "::/EFI/debian/")
    root = work / "root.img"
    sh(
        "mkfs.ext4",
        "-q",
        "-F",
        "-U",
        root_uuid,
        "-d",
        str(tree),
        str(root),
        str(ROOT_SIZE // 1024) + "k",
    )
    swap = work / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(SWAP_SIZE)
    sh("mkswap", "-U", swap_uuid, str(swap))
    for image, start in ((esp, ESP_START), (root, ROOT_START), (swap, SWAP_START)):
        put(image, path, start)
    return MiniDisk(path, root_uuid, swap_uuid, esp_serial, machine_id)


def read_root_file(disk: Path, rel: str) -> str:
    """A file of the root, read by debugfs (an oracle apart from clonebay's own mount)."""
    return sh("debugfs", "-R", f"cat /{rel}", _root_image(disk))


def _root_image(disk: Path) -> str:
    return take(disk, ROOT_START, ROOT_SIZE, ".root")


def put_root_image(disk: Path, part: Path) -> None:
    """Write an edited copy of the root (from ``_root_image``) back into the disk."""
    put(part, disk, ROOT_START)


def esp_image(disk: Path) -> str:
    """The ESP copied out, for fsck.fat."""
    return take(disk, ESP_START, ESP_SIZE, ".esp")


def esp_fsck_clean(disk: Path) -> None:
    proc = subprocess.run(
        ["fsck.fat", "-n", esp_image(disk)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def esp_file(disk: Path, path: str) -> bytes | None:
    proc = subprocess.run(
        ["mtype", "-i", f"{disk}@@{ESP_START}", f"::/{path}"], capture_output=True, check=False
    )
    return proc.stdout if proc.returncode == 0 else None
