"""The BitLocker volumes made by Windows that tests/data/bitlocker ships (cryptsetup's test
images): unpacked sparsely, and described as their images.conf says (see its README)."""

from __future__ import annotations

import configparser
import tarfile
from dataclasses import dataclass
from pathlib import Path

from clonebay.fs.bitlocker_protectors import ProtectorKind

TARBALL = Path(__file__).parent / "data" / "bitlocker" / "bitlocker-images.tar.xz"
BEK = "4381F759-C4F8-4DE0-BB61-FC33A831BDA5.BEK"
VOLUMES = [
    "bitlk-aes-cbc-128",
    "bitlk-aes-xts-128",
    "bitlk-aes-xts-256",
    "bitlk-aes-cbc-elephant-128",
    "bitlk-togo-aes-xts-128",
    "bitlk-aes-xts-128-eow",
    "bitlk-aes-xts-128-startup-key",
    "bitlk-aes-xts-128-two-recovery",
    "bitlk-aes-xts-128-clearkey-only",
]
READABLE = [v for v in VOLUMES if not v.endswith("-eow")]  # cryptsetup does not open -eow either
MODES = {"aes-xts-plain64": "xts", "aes-cbc-eboiv": "cbc", "aes-cbc-elephant": "cbc-elephant"}


@dataclass(frozen=True)
class Shipped:
    """One volume as images.conf describes it."""

    path: Path
    guid: str
    mode: str
    password: str
    protectors: dict[str, ProtectorKind]  # protector GUID -> kind
    recovery: dict[str, str]  # recovery password -> the GUID of the protector it opens
    sha256: str


def unpack_sparse(folder: Path) -> None:
    """Unpack the archive leaving runs of zeros as holes (~1 GiB apparent, a few MiB used)."""
    with tarfile.open(TARBALL) as tar:
        for member in tar.getmembers():
            reader = tar.extractfile(member) if member.isfile() else None
            if reader is None:
                continue
            with (folder / Path(member.name).name).open("wb") as out:
                while chunk := reader.read(1 << 20):
                    if chunk.count(0) == len(chunk):
                        out.seek(len(chunk), 1)
                    else:
                        out.write(chunk)
                out.truncate(member.size)


def load_shipped(folder: Path) -> dict[str, Shipped]:
    """Unpack the archive into ``folder`` and describe each volume as images.conf does."""
    unpack_sparse(folder)
    conf = configparser.ConfigParser()
    conf.read(folder / "images.conf")
    assert sorted(conf.sections()) == sorted(VOLUMES)
    volumes = {}
    for name in conf.sections():
        s = conf[name]
        kinds = {
            "PW_VMK_GUID": ProtectorKind.PASSWORD,
            "RP_VMK_GUID": ProtectorKind.RECOVERY_PASSWORD,
            "RP2_VMK_GUID": ProtectorKind.RECOVERY_PASSWORD,
            "SK_VMK_GUID": ProtectorKind.STARTUP_KEY,
            "CLEARKEY_VMK_GUID": ProtectorKind.CLEAR_KEY,
        }
        protectors = {s[k].upper(): kind for k, kind in kinds.items() if s.get(k)}
        recovery = {s[k]: s[f"{k}_VMK_GUID"].upper() for k in ("RP", "RP2") if s.get(k)}
        volumes[name] = Shipped(
            folder / f"{name}.img",
            s["GUID"].upper(),
            MODES[s["CIPHER"]],
            s.get("PW", ""),
            protectors,
            recovery,
            s["SHA256SUM"],
        )
    return volumes
