"""LUKS volumes made by cryptsetup on plain files, without device-mapper, with a real ext4 inside.

``cryptsetup reencrypt --encrypt --reduce-device-size 16M --force-offline-reencrypt`` encrypts a
file in place from userspace (the kernel's crypto API through AF_ALG, no dm-crypt): it moves the
data 8 MiB up, writes a LUKS2 header and keyslot area in front and encrypts everything after it.
The ext4 made with ``mkfs.ext4 -d`` before is then the plaintext of the new volume. LUKS1
reencryption needs device-mapper in cryptsetup 2.6, so LUKS1 volumes are LUKS2 ones turned into
LUKS1 by ``cryptsetup convert --type luks1`` (same volume key, same data at 8 MiB).

The passphrase goes in a key file (its bytes exactly: what a terminal gives without the newline),
never on a command line. KDF parameters are cryptsetup's cheapest (PBKDF2 1000 iterations, Argon2
4 passes over 32 KiB) so that a test unlocks in milliseconds; the oracle for the volume key is
``cryptsetup luksDump --dump-volume-key``.

``with_json`` edits a LUKS2 header's JSON in both copies and signs them again: hostile headers
that pass the checksum and must still be refused for what they say.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonebay.system.run import run

MiB = 1 << 20
PASSPHRASE = "correct hörse battery staple"  # not ASCII: cryptsetup reads the UTF-8 bytes
SHIFT = "16M"  # --reduce-device-size: the data moves up by half of it (8 MiB)
KDF = {
    "pbkdf2": ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"),
    "argon2i": ("--pbkdf", "argon2i", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"),
    "argon2id": ("--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"),
}
CSUM = 448  # LUKS2 binary header: where the checksum field starts (64 bytes)


@dataclass(frozen=True)
class Case:
    """One kind of volume: LUKS version, data cipher and key size, sector size, KDF, hash."""

    name: str
    version: int
    cipher: str
    key_bits: int
    sector: int
    kdf: str
    hash: str = "sha256"


CASES = (
    Case("luks2-xts-512", 2, "aes-xts-plain64", 512, 512, "pbkdf2"),
    Case("luks2-xts-4k-argon2id", 2, "aes-xts-plain64", 256, 4096, "argon2id"),
    Case("luks2-cbc-essiv-argon2i", 2, "aes-cbc-essiv:sha256", 256, 512, "argon2i", "sha512"),
    Case("luks1-xts", 1, "aes-xts-plain64", 512, 512, "pbkdf2"),
    Case("luks1-cbc-essiv-sha1", 1, "aes-cbc-essiv:sha256", 256, 512, "pbkdf2", "sha1"),
)


def secret_file(folder: Path, data: bytes, name: str = "passphrase") -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def encrypt_in_place(image: Path, case: Case, key_file: Path) -> None:
    """Turn the plain ``image`` into a LUKS volume of ``case`` whose plaintext it was."""
    run(
        [
            "cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
            "--reduce-device-size", SHIFT, "--force-offline-reencrypt",
            "--cipher", case.cipher, "--key-size", str(case.key_bits),
            "--sector-size", str(case.sector), "--hash", case.hash, *KDF[case.kdf],
            "--key-file", str(key_file), str(image),
        ]
    )  # fmt: skip
    if case.version == 1:
        run(["cryptsetup", "convert", "--batch-mode", "--type", "luks1", str(image)])


def format_header(image: Path, key_file: Path, *extra: str, version: int = 2) -> None:
    """``luksFormat`` on ``image`` (no filesystem inside: header and key slot tests)."""
    run(
        [
            "cryptsetup", "luksFormat", "--batch-mode", "--type", f"luks{version}",
            *KDF["pbkdf2"], *extra, "--key-file", str(key_file), str(image),
        ]
    )  # fmt: skip


def add_key(image: Path, key_file: Path, new_key_file: Path) -> None:
    run(
        [
            "cryptsetup", "luksAddKey", "--batch-mode", *KDF["pbkdf2"],
            "--key-file", str(key_file), str(image), str(new_key_file),
        ]
    )  # fmt: skip


def volume_key(image: Path, key_file: Path, version: int) -> bytes:
    """The volume key as cryptsetup dumps it (LUKS1 still calls it the master key)."""
    words = ("master", "master") if version == 1 else ("volume", "volume")
    with tempfile.TemporaryDirectory(prefix="clonebay-luks-") as tmp:
        out = Path(tmp) / "key"
        run(
            [
                "cryptsetup", "luksDump", "--batch-mode", f"--dump-{words[0]}-key",
                f"--{words[1]}-key-file", str(out), "--key-file", str(key_file), str(image),
            ]
        )  # fmt: skip
        return out.read_bytes()


def opens_with(image: Path, key_file: Path) -> bool:
    """Whether cryptsetup itself accepts ``key_file`` for ``image`` (``--test-passphrase``)."""
    argv = ["cryptsetup", "open", "--test-passphrase", "--key-file", str(key_file), str(image)]
    return run(argv, check=False).returncode == 0


def dump_fields(image: Path) -> dict[str, str]:
    """``cryptsetup luksDump`` as "Name: value" pairs (first occurrence of each name)."""
    text = run(["cryptsetup", "luksDump", str(image)]).stdout.decode()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() not in fields:
            fields[name.strip()] = value.strip()
    return fields


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def sign(data: bytearray, offset: int, hdr_size: int) -> None:
    """Recompute the sha256 checksum of the LUKS2 header copy at ``offset``."""
    copy = data[offset : offset + hdr_size]
    copy[CSUM : CSUM + 64] = bytes(64)
    data[offset + CSUM : offset + CSUM + 64] = hashlib.sha256(copy).digest().ljust(64, b"\0")


def with_json_text(data: bytes, text: bytes) -> bytes:
    """``data`` (a LUKS2 volume) with ``text`` as the JSON of both header copies, signed."""
    out = bytearray(data)
    hdr_size = struct.unpack_from(">Q", out, 8)[0]
    assert len(text) < hdr_size - 4096, "JSON does not fit its area"
    for offset in (0, hdr_size):
        out[offset + 4096 : offset + hdr_size] = text.ljust(hdr_size - 4096, b"\0")
        sign(out, offset, hdr_size)
    return bytes(out)


def json_of(data: bytes) -> dict[str, Any]:
    """The JSON of the primary LUKS2 header copy in ``data``."""
    hdr_size = struct.unpack_from(">Q", data, 8)[0]
    tree: dict[str, Any] = json.loads(data[4096:hdr_size].split(b"\0", 1)[0])
    return tree


def with_json(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """``data`` with ``edit`` applied to the JSON of both LUKS2 header copies, signed again."""
    tree = json_of(data)
    edit(tree)
    return with_json_text(data, json.dumps(tree).encode())
