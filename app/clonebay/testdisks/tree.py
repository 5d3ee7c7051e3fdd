"""File trees to put on test filesystems, generated from a seed, with a record of their content.

A ``Tree`` is a folder on the host plus the truth about it: every regular file's sha256, the
symlinks, hard links, extended attributes and (for NTFS) alternate data streams it carries. The
filesystem builders copy a Tree onto a fresh filesystem; tests read the files back from a copy and
compare against the record.

Content is a realistic mix: text-like files (compress ~3-5x with LZ4), binary-like files with
repeated structure, and random bytes (incompressible), in the proportions a system disk shows.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "config",
    "library",
    "module",
    "kernel",
    "driver",
    "system",
    "window",
    "service",
    "update",
    "package",
    "shared",
    "object",
    "header",
    "include",
    "version",
    "license",
    "copyright",
    "install",
]


@dataclass
class Tree:
    """A generated folder and the record of what is in it (paths are relative, '/'-separated)."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of content
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> target
    hardlinks: dict[str, str] = field(default_factory=dict)  # extra name -> first name
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # path -> name -> value
    streams: dict[str, dict[str, bytes]] = field(default_factory=dict)  # path -> ADS name -> data
    dirs: set[str] = field(default_factory=set)

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum((self.root / p).stat().st_size for p in self.files)

    def add_file(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._note_dirs(rel)
        path.write_bytes(data)
        self.files[rel] = hashlib.sha256(data).hexdigest()

    def add_random_file(self, rel: str, size: int, rng: random.Random) -> None:
        """A large file of random bytes, written in 4 MiB pieces and hashed as it goes."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._note_dirs(rel)
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            left = size
            while left:
                piece = rng.randbytes(min(left, 4 << 20))
                out.write(piece)
                digest.update(piece)
                left -= len(piece)
        self.files[rel] = digest.hexdigest()

    def add_symlink(self, rel: str, target: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._note_dirs(rel)
        os.symlink(target, path)
        self.symlinks[rel] = target

    def add_hardlink(self, rel: str, existing: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._note_dirs(rel)
        os.link(self.root / existing, path)
        self.hardlinks[rel] = existing
        self.files[rel] = self.files[existing]

    def add_xattr(self, rel: str, name: str, value: bytes) -> None:
        os.setxattr(self.root / rel, name, value, follow_symlinks=False)
        self.xattrs.setdefault(rel, {})[name] = value

    def add_stream(self, rel: str, name: str, data: bytes) -> None:
        """Record an alternate data stream; the NTFS builder writes it (the host cannot)."""
        self.streams.setdefault(rel, {})[name] = data

    def _note_dirs(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))


def text_bytes(rng: random.Random, size: int) -> bytes:
    """Text-like content: words and numbers in lines (compresses like source and config files)."""
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        line += f" = {rng.randint(0, 99999)}\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def binary_bytes(rng: random.Random, size: int) -> bytes:
    """Binary-like content: random records with zero padding (compresses ~2x, like ELF/PE)."""
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(rng.randint(16, 256))
        out += bytes(rng.randint(0, 256))
    return bytes(out[:size])


def mixed_bytes(rng: random.Random, size: int) -> bytes:
    """One of text, binary or random content, in about 5:3:2 proportion."""
    pick = rng.random()
    if pick < 0.5:
        return text_bytes(rng, size)
    if pick < 0.8:
        return binary_bytes(rng, size)
    return rng.randbytes(size)


def small_size(rng: random.Random) -> int:
    """File sizes skewed small, as on a system disk: most under 8 KiB, some up to 256 KiB."""
    return int(min(256 << 10, rng.lognormvariate(7.5, 1.6)))


def usr_tree(root: Path, files: int = 20_000, big_file: int = 200 << 20, seed: int = 1) -> Tree:
    """A /usr-like tree: many small files in nested folders, symlinks, hard links, xattrs, and
    one big random file (``big_file`` bytes; 0 for none)."""
    rng = random.Random(seed)
    tree = Tree(root)
    root.mkdir(parents=True, exist_ok=True)
    top = ["bin", "lib", "share/doc", "share/man/man1", "include", "lib/python3/dist-packages"]
    for i in range(files):
        folder = f"usr/{rng.choice(top)}/pkg{rng.randint(0, max(1, files // 200))}"
        name = f"{folder}/file{i:06d}.{rng.choice(['so', 'py', 'h', 'txt', 'gz', '1'])}"
        tree.add_file(name, mixed_bytes(rng, small_size(rng)))
    names = sorted(tree.files)
    for i in range(min(200, len(names))):
        tree.add_symlink(f"usr/bin/link{i:04d}", "../" + names[i * 7 % len(names)][4:])
    for i in range(min(50, len(names))):
        tree.add_hardlink(f"usr/lib/hard{i:04d}", names[i * 13 % len(names)])
    tree.add_symlink("usr/dangling", "does/not/exist")
    for i in range(min(100, len(names))):
        tree.add_xattr(names[i * 11 % len(names)], "user.clonebay", f"value-{i}".encode())
    tree.add_file("etc/hostname", b"clonebay-test\n")
    tree.add_file("etc/fstab", b"# static file system information\n")
    tree.add_file("empty-file", b"")
    if big_file:
        tree.add_random_file("var/big/random.bin", big_file, rng)
    return tree


def windows_tree(root: Path, files: int = 5_000, pagefile: int = 64 << 20, seed: int = 2) -> Tree:
    """A Windows-like tree: Windows/System32, Program Files, Users with long and non-ASCII
    names, a pagefile.sys-like file of ``pagefile`` bytes, and an alternate data stream."""
    rng = random.Random(seed)
    tree = Tree(root)
    root.mkdir(parents=True, exist_ok=True)
    folders = [
        "Windows/System32",
        "Windows/System32/drivers",
        "Windows/SysWOW64",
        "Windows/WinSxS/amd64_microsoft-windows-servicingstack_31bf3856ad364e35",
        "Program Files/Common Files/Microsoft Shared",
        "Program Files (x86)/Vendor App",
        "ProgramData/Microsoft/Windows/Start Menu/Programs",
        "Users/Public/Documents",
        "Users/Jörg Müller/Documents/Übersicht",
        "Users/Jörg Müller/AppData/Local/Temp",
        "Users/技术员/桌面",
    ]
    for i in range(files):
        folder = rng.choice(folders)
        ext = rng.choice(["dll", "exe", "sys", "mui", "txt", "log", "ini"])
        tree.add_file(f"{folder}/file{i:05d}.{ext}", mixed_bytes(rng, small_size(rng)))
    long_name = "A very long file name that goes on " + "and on " * 25 + "until 250 characters"
    tree.add_file(f"Users/Public/Documents/{long_name[:240]}.txt", text_bytes(rng, 5000))
    tree.add_file("Users/Jörg Müller/Documents/Ångström – Straße ☃.txt", text_bytes(rng, 3000))
    tree.add_file("Windows/System32/config/SYSTEM", binary_bytes(rng, 2 << 20))
    tree.add_file("Users/Public/Documents/with-stream.txt", b"main data stream\n")
    tree.add_stream(
        "Users/Public/Documents/with-stream.txt", "Zone.Identifier", b"[ZoneTransfer]\nZoneId=3\n"
    )
    if pagefile:
        tree.add_random_file("pagefile.sys", pagefile, rng)
    return tree


def efi_tree(root: Path, seed: int = 3) -> Tree:
    """An EFI system partition's tree: EFI/BOOT/BOOTX64.EFI, EFI/Microsoft/Boot, EFI/debian."""
    rng = random.Random(seed)
    tree = Tree(root)
    root.mkdir(parents=True, exist_ok=True)
    tree.add_file("EFI/BOOT/BOOTX64.EFI", binary_bytes(rng, 900 << 10))
    tree.add_file("EFI/Microsoft/Boot/bootmgfw.efi", binary_bytes(rng, 1500 << 10))
    tree.add_file("EFI/Microsoft/Boot/BCD", binary_bytes(rng, 32 << 10))
    tree.add_file("EFI/debian/grubx64.efi", binary_bytes(rng, 2 << 20))
    tree.add_file("EFI/debian/grub.cfg", text_bytes(rng, 200))
    for i in range(40):
        tree.add_file(
            f"EFI/Microsoft/Boot/en-US/res{i:02d}.mui", binary_bytes(rng, small_size(rng))
        )
    return tree


def small_tree(root: Path, files: int = 300, seed: int = 4, big_file: int = 0) -> Tree:
    """A few hundred mixed files in a few folders (filesystem variants, FAT12, quick tests)."""
    rng = random.Random(seed)
    tree = Tree(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        tree.add_file(f"DIR{i % 7}/SUB{i % 3}/F{i:05d}.DAT", mixed_bytes(rng, small_size(rng) // 4))
    if big_file:
        tree.add_random_file("BIG.BIN", big_file, rng)
    return tree
