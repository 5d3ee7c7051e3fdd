"""Is this the job that was interrupted? The source (and a clone's target) must be the same disk,
found again by its serial, and the used blocks it reads must be the very ones it was reading.

A resumed job writes only what its checkpoint says is missing, so going on with another disk,
or with the same disk after its filesystem changed, would mix two states into one copy that
looks whole. The record kept with the checkpoint holds each disk's size, model and serial (when
it has one: loop devices and files have none, and are then known by size alone) and a
fingerprint of the plan: every region's name, place and size, and every used run it reads.

An encrypted volume's used runs depend on the keys the job was given (with a key, the ciphertext
under the used blocks; without, the whole volume): the record also names the volumes a key
opened (``opened_by_key``), so that a resume given other keys is told so, not that the disk
changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import xxhash

from clonebay.errors import UsageError
from clonebay.model import CopyMethod, Volume, VolumeState

KEY_OPTIONS = "--key, --recovery-password, --startup-key, --key-file"


def disk_record(path: str, size: int) -> dict[str, Any]:
    """What identifies the disk at ``path`` later (its node may have another name by then)."""
    from clonebay.system.udev import find_disk

    disk = find_disk(path)
    return {
        "path": path,
        "size": size,
        "model": disk.model if disk else "",
        "serial": disk.serial if disk else "",
    }


def check_disk(recorded: Mapping[str, Any], path: str, size: int, role: str) -> None:
    """UsageError unless the disk at ``path`` is the one ``recorded`` (``role``: "source",
    "target"), naming where the recorded disk is now when it is plugged in elsewhere."""
    now = disk_record(path, size)
    serial = str(recorded.get("serial", ""))
    if (serial and now["serial"] and serial != now["serial"]) or recorded.get("size") != size:
        was = f"{recorded.get('model') or 'a disk'}" + (f" serial {serial}" if serial else "")
        where = find_serial(serial) if serial else None
        hint = f"; that disk is {where} now" if where else ""
        raise UsageError(
            f"{path} is not the {role} the interrupted job was using ({was},"
            f" {recorded.get('size')} bytes, then {recorded.get('path')}){hint}: nothing was"
            " written"
        )


def find_serial(serial: str) -> str | None:
    """The node of the disk with ``serial`` now, if one is plugged in."""
    from clonebay.system.udev import list_disks

    for disk in list_disks():
        if disk.serial == serial:
            return disk.path
    return None


def opened_by_key(named: Iterable[tuple[str, Volume | None]]) -> list[str]:
    """The names of the encrypted volumes a key opened, whose used blocks the job copies
    ("p2 decrypted" when it copies the plaintext, ``--decrypt``)."""
    return [
        f"{name} decrypted" if volume.decrypted else name
        for name, volume in named
        if volume is not None
        and (
            volume.decrypted
            or (volume.state is VolumeState.ENCRYPTED and volume.copy is CopyMethod.NATIVE)
        )
    ]


def fingerprint(regions: Iterable[tuple[str, int, int, Iterable[tuple[int, int]]]]) -> str:
    """xxh3-128 of every region's (name, offset, size) and its used runs (start, length)."""
    body = [[name, at, size, [list(run) for run in runs]] for name, at, size, runs in regions]
    return xxhash.xxh3_128_hexdigest(json.dumps(body, separators=(",", ":")).encode())


def check_fingerprint(
    recorded: str, now: str, source: str, opened: tuple[object, list[str]]
) -> None:
    """UsageError unless the plan's fingerprint is the recorded one. ``opened``: the volumes
    the interrupted job opened with a key (as recorded: None in a record made before it was
    kept) and those this job opens; when they differ, the keys are named as the cause."""
    if recorded == now:
        return
    was, now_opened = opened
    if isinstance(was, list) and was != now_opened:
        said = ", ".join(str(name) for name in was) or "no encrypted volume"
        raise UsageError(
            f"the interrupted job opened {said} of {source} with a key, and this one opens"
            f" {', '.join(now_opened) or 'none'}: the used blocks differ, so resume it with the"
            f" key options it had ({KEY_OPTIONS}; --decrypt if it had it); nothing was written"
        )
    raise UsageError(
        f"the used blocks of {source} are not those the interrupted job was copying (was"
        " it mounted and written to, or repaired, since?): it cannot be resumed; start"
        " the job again; nothing was written"
    )
