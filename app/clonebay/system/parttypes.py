"""Names of common partition types (GPT type GUIDs and MBR type bytes), for people to read."""

from __future__ import annotations

GPT_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI system",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Windows LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Windows LDM data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Storage Spaces",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
}

MBR_TYPES = {
    "0x01": "FAT12",
    "0x04": "FAT16 <32M",
    "0x05": "Extended",
    "0x06": "FAT16",
    "0x07": "NTFS/exFAT",
    "0x0b": "W95 FAT32",
    "0x0c": "W95 FAT32 (LBA)",
    "0x0e": "W95 FAT16 (LBA)",
    "0x0f": "W95 Extended (LBA)",
    "0x17": "Hidden NTFS",
    "0x27": "Windows recovery",
    "0x42": "Windows LDM",
    "0x82": "Linux swap",
    "0x83": "Linux",
    "0x85": "Linux extended",
    "0x8e": "Linux LVM",
    "0xa5": "FreeBSD",
    "0xee": "GPT protective",
    "0xef": "EFI system",
    "0xfd": "Linux RAID",
}


def type_name(type_id: str) -> str:
    """'EFI system' for its GUID or 0xef; the id itself when unknown."""
    return GPT_TYPES.get(type_id.upper()) or MBR_TYPES.get(type_id.lower()) or type_id
