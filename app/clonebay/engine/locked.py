"""Locked volumes in a job: a job given keys refuses before it writes anything when none opens.

A technician who typed a recovery password expects the BitLocker volume to be copied by its used
clusters; a typo must not silently turn that into a copy of the whole volume (hours on a big
disk). So when keys were given and no locked volume of the source opened with any of them, the
job stops with each locked volume's refusal (which protector kinds it tried, never the secret).
"""

from __future__ import annotations

from clonebay.engine.inspect import DiskReport
from clonebay.errors import InputError, UsageError
from clonebay.fs.keyring import Keyring
from clonebay.model import Volume, VolumeState


class KeyRefusedError(InputError):
    """The keys given open none of the source's locked volumes."""

    title = "Key refused"


def volumes_of(report: DiskReport) -> list[Volume]:
    """Every volume of ``report``'s disk."""
    return [v for _, v in _volumes(report)]


def _volumes(report: DiskReport) -> list[tuple[str, Volume]]:
    if report.whole_disk is not None:
        return [("volume", report.whole_disk)]
    return [(f"p{pr.partition.number}", pr.volume) for pr in report.partitions if pr.volume]


def check_keys(report: DiskReport, keys: Keyring | None) -> None:
    """Raise when ``keys`` holds secrets and none of them opened a volume of ``report``."""
    if keys is None or not keys.unused():
        return
    locked = [(name, v) for name, v in _volumes(report) if v.state is VolumeState.ENCRYPTED]
    if not locked:
        raise UsageError(
            f"keys were given but {report.path} has no BitLocker or LUKS volume; nothing was"
            " written"
        )
    said = "; ".join(f"{name}: {v.reason}" for name, v in locked)
    raise KeyRefusedError(
        f"none of the keys given opens a locked volume of {report.path} ({said}); check the key"
        " (for BitLocker, against the recovery key ID `clonebay probe` shows); nothing was"
        " written"
    )
