"""What the post-copy pass will do, said before the copy (the Plan, ``--dry-run``, the TUI).

Made from the options and the source's volumes only (their types and states, as probed or as
the image recorded them): nothing is mounted or read for a preview. The pass itself decides
again on the target after the copy, and its report says what it did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clonebay.engine.postcopy.linux import check_hostname as linux_check
from clonebay.engine.postcopy.options import PostcopyOptions
from clonebay.engine.postcopy.systems import ESP_TYPES, why_not_editable
from clonebay.engine.postcopy.windows import validate_computer_name
from clonebay.imaging.manifest import Manifest
from clonebay.model import CopyMethod, Volume, VolumeState

EDITED = ("ext2", "ext3", "ext4", "ntfs", "fat12", "fat16", "fat32")


@dataclass(frozen=True)
class SourceVolume:
    """One volume of the source, as the preview needs it."""

    name: str  # "p2"
    type_id: str
    fstype: str
    state: VolumeState


def from_volumes(parts: Sequence[tuple[str, str, Volume | None]]) -> list[SourceVolume]:
    """(name, type id, probed volume) of each partition -> SourceVolumes."""
    out = []
    for name, type_id, vol in parts:
        if vol is not None:
            state = vol.state
            if (
                vol.copy is CopyMethod.RAW
                and state is VolumeState.CLEAN
                and vol.fstype not in EDITED
            ):
                state = VolumeState.UNKNOWN
            out.append(SourceVolume(name, type_id, vol.fstype, state))
    return out


def from_manifest(manifest: Manifest) -> list[SourceVolume]:
    """The volumes an image recorded."""
    types = {p.number: p.type_id for p in manifest.table.partitions}
    out = []
    for region in manifest.regions:
        if region.kind == "raw-area" or not region.fstype:
            continue
        try:
            state = VolumeState(region.state or "clean")
        except ValueError:
            state = VolumeState.UNKNOWN
        type_id = types.get(region.partition or 0, "")
        out.append(SourceVolume(region.name, type_id, region.fstype, state))
    return out


def from_info(info: Mapping[str, Any]) -> list[SourceVolume]:
    """The volumes of an image, from its info (engine.jobs.image_info): regions matched to the
    recorded partitions by their offset."""
    parts = info.get("table", {}).get("partitions", [])
    types = {int(p.get("start", -1)): str(p.get("type_id", "")) for p in parts}
    out = []
    for region in info.get("regions", []):
        if region.get("kind") == "raw-area" or not region.get("fstype"):
            continue
        try:
            state = VolumeState(region.get("state") or "clean")
        except ValueError:
            state = VolumeState.UNKNOWN
        type_id = types.get(int(region.get("disk_offset", -1)), "")
        out.append(SourceVolume(str(region["name"]), type_id, str(region["fstype"]), state))
    return out


def preview(options: PostcopyOptions, volumes: Sequence[SourceVolume]) -> list[str]:
    """One line per step the pass will take, and per volume it will leave alone."""
    if not options.enabled:
        return ["no post-copy pass (the target stays exactly as the source)"]
    lines = []
    esp = any(v.type_id.upper() in ESP_TYPES or v.type_id.lower() in ESP_TYPES for v in volumes)
    if options.hostname:
        lines.append(
            f"the machine becomes {options.hostname}: host name in every Linux (with /etc/hosts,"
            " a new machine-id at first boot, new SSH host keys, net rules cleared) and"
            " computer name in every Windows"
        )
    elif options.mapping:
        lines.append(f"the host name comes from this machine's row of {options.mapping}")
    if options.new_ids:
        lines.append(
            "new disk, partition and filesystem ids; fstab, crypttab, grub.cfg, the initramfs"
            " and Windows' MountedDevices and BCD follow them; GRUB reinstalled"
        )
    elif options.reinstall_grub:
        lines.append("GRUB's boot code and grub.cfg reinstalled in a chroot of the target")
    if esp:
        lines.append("UEFI: \\EFI\\BOOT\\BOOTX64.EFI added when missing (an existing one is kept)")
        if options.efi_entry:
            lines.append("UEFI: an NVRAM boot entry added when this machine boots by UEFI")
        elif options.efi_entry is None:
            lines.append(
                "UEFI: an NVRAM boot entry only for this machine's own disk, in the live system"
            )
    for v in volumes:
        why = why_not_editable_state(v.state)
        if why and v.fstype in EDITED:
            lines.append(f"{v.name} ({v.fstype}) is not edited: {why}")
    return lines


def why_not_editable_state(state: VolumeState) -> str:
    return why_not_editable(Volume("", 0, (), CopyMethod.NATIVE, state))


def check_hostname(name: str, volumes: Sequence[SourceVolume]) -> None:
    """UsageError unless ``name`` (when given) suits every system the copy holds: a DNS label
    for Linux, and at most 15 characters (NetBIOS) when there is an NTFS volume."""
    if not name:
        return
    linux_check(name)
    if any(v.fstype == "ntfs" for v in volumes):
        validate_computer_name(name)
