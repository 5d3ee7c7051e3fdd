"""Write a PartitionTable onto a target with sfdisk, keeping every identity it carries.

The table is given to sfdisk as a script: label type, disk identifier (MBR signature or GPT disk
GUID), the first usable LBA, and per partition its number, start, size, type, GPT unique GUID,
name and attribute bits, or the MBR bootable flag. sfdisk keeps the boot code in the first 440
bytes, lays the EBR chain of logical partitions out itself, and writes the GPT backup at the end
of the target. ``--wipe never`` and ``--wipe-partitions never`` keep it from erasing signatures:
the filesystems were copied there on purpose.
"""

from __future__ import annotations

from clonebay.model import Partition, PartitionTable
from clonebay.system.run import run

ATTRIBUTE_NAMES = {0: "RequiredPartition", 1: "NoBlockIOProtocol", 2: "LegacyBIOSBootable"}


def _attrs(bits: int) -> str:
    words = [name for bit, name in ATTRIBUTE_NAMES.items() if bits >> bit & 1]
    words += [f"GUID:{bit}" for bit in range(48, 64) if bits >> bit & 1]
    return " ".join(words)


def _line(node: str, part: Partition, table: PartitionTable) -> str:
    sector = table.sector_size
    fields = [f"start={part.start // sector}", f"size={part.size // sector}"]
    if table.kind == "gpt":
        fields.append(f"type={part.type_id}")
        if part.guid:
            fields.append(f"uuid={part.guid}")
        if part.name:
            escaped = part.name.replace("\\", "\\\\").replace('"', '\\"')
            fields.append(f'name="{escaped}"')
        if part.attributes:
            fields.append(f'attrs="{_attrs(part.attributes)}"')
    else:
        fields.append(f"type={int(part.type_id, 16):x}")
        if "boot" in part.flags:
            fields.append("bootable")
    return f"{node}{part.number} : " + ", ".join(fields)


def sfdisk_script(table: PartitionTable, node: str) -> str:
    """The sfdisk input that recreates ``table``; ``node`` is the partition name prefix."""
    lines = [f"label: {'gpt' if table.kind == 'gpt' else 'dos'}"]
    if table.disk_id:
        lines.append(f"label-id: {table.disk_id}")
    lines.append("unit: sectors")
    lines.append(f"sector-size: {table.sector_size}")
    if table.kind == "gpt" and table.first_usable:
        lines.append(f"first-lba: {table.first_usable // table.sector_size}")
    lines.extend(_line(node, p, table) for p in sorted(table.partitions, key=lambda p: p.number))
    return "\n".join(lines) + "\n"


def write_table(target: str, table: PartitionTable) -> None:
    """Write ``table`` onto ``target`` (a disk or a disk image file)."""
    script = sfdisk_script(table, "/dev/xdisk")  # sfdisk reads only the trailing number
    run(
        [
            "sfdisk",
            "--quiet",
            "--wipe",
            "never",
            "--wipe-partitions",
            "never",
            "--no-reread",
            "--no-tell-kernel",
            target,
        ],
        input_bytes=script.encode(),
    )
