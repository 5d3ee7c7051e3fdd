"""Partition tables read through pyparted (+ native GPT/MBR fields) against sfdisk's own reading.

The images are made with sgdisk and sfdisk in sparse files; no root needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clonebay.errors import PartitionTableError
from clonebay.system.parttable import read_table
from clonebay.system.run import output, run
from clonebay.testdisks.files import sparse_file


def sfdisk_json(path: Path) -> dict[str, object]:
    table: dict[str, object] = json.loads(output(["sfdisk", "--json", str(path)]))["partitiontable"]
    return table


def make_gpt(path: Path) -> None:
    sparse_file(path, 300 << 20)
    run(
        [
            "sgdisk",
            "-n1:1M:+33M", "-t1:ef00", "-c1:EFI system partition",
            "-n2:0:+1M", "-t2:ef02", "-c2:bios",
            "-n3:0:+16M", "-t3:0c01", "-c3:Microsoft reserved",
            "-n4:0:+100M", "-t4:0700", "-c4:Basic data", "-A4:set:63", "-A4:set:0",
            "-n6:0:+50M", "-t6:8200", "-c6:swap",
            "-n7:0:0", "-t7:8300", "-c7:Linux фс",
            str(path),
        ]
    )  # fmt: skip


def make_mbr(path: Path) -> None:
    sparse_file(path, 200 << 20)
    script = "label: dos\nlabel-id: 0x1234abcd\n,30M,6,*\n,40M,7\n,,5\n,20M,83\n,10M,1\n,,82\n"
    run(["sfdisk", "-q", str(path)], input_bytes=script.encode())


@pytest.mark.parametrize("maker", [make_gpt, make_mbr])
def test_table_matches_sfdisk(tmp_path: Path, maker: object) -> None:
    path = tmp_path / "disk.img"
    maker(path)  # type: ignore[operator]
    table = read_table(str(path))
    oracle = sfdisk_json(path)
    sector = int(oracle["sectorsize"])  # type: ignore[call-overload]
    assert table.kind == {"gpt": "gpt", "dos": "msdos"}[str(oracle["label"])]
    assert table.disk_id.lower() == str(oracle["id"]).lower()
    assert table.disk_size == path.stat().st_size
    expected = oracle["partitions"]
    assert isinstance(expected, list)
    assert len(table.partitions) == len(expected)
    for ours, theirs in zip(table.partitions, expected, strict=True):
        assert str(ours.number) == theirs["node"].removeprefix(str(path))
        assert ours.start == theirs["start"] * sector
        if ours.kind != "extended":  # sfdisk reports the extended entry's size as 1 KiB-ish
            assert ours.size == theirs["size"] * sector
        if table.kind == "gpt":
            assert ours.type_id == theirs["type"]
            assert ours.guid == theirs["uuid"]
            assert ours.name == theirs.get("name", "")
            bits = [int(b) for b in theirs.get("attrs", "GUID:").split(":")[1].split(",") if b]
            wanted = sum(1 << b for b in bits)
            if "RequiredPartition" in theirs.get("attrs", ""):
                wanted |= 1
            assert ours.attributes == wanted
        else:
            assert int(ours.type_id, 16) == int(theirs["type"], 16)
    if table.kind == "msdos":
        kinds = [p.kind for p in table.partitions]
        assert kinds == ["primary", "primary", "extended", "logical", "logical", "logical"]
        assert [p.number for p in table.partitions] == [1, 2, 3, 5, 6, 7]
        assert "boot" in table.partitions[0].flags


def test_no_table_is_none(tmp_path: Path) -> None:
    path = tmp_path / "blank.img"
    sparse_file(path, 8 << 20)
    assert read_table(str(path)).kind == "none"


def test_corrupt_gpt_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    make_gpt(path)
    with open(path, "r+b") as f:  # flip a bit in the first entry's name (LBA 2)
        f.seek(2 * 512 + 60)
        byte = f.read(1)[0]
        f.seek(2 * 512 + 60)
        f.write(bytes([byte ^ 1]))
    with pytest.raises(PartitionTableError, match=r"corrupt|checksum"):
        read_table(str(path))


def test_ebr_loop_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    make_mbr(path)
    table = read_table(str(path))
    ext = next(p for p in table.partitions if p.kind == "extended")
    first_ebr = ext.start
    with open(path, "r+b") as f:  # make the first EBR's link point at itself
        f.seek(first_ebr + 446 + 16)
        entry = bytearray(f.read(16))
        entry[4] = 0x05
        entry[8:12] = (0).to_bytes(4, "little")
        entry[12:16] = (1).to_bytes(4, "little")
        f.seek(first_ebr + 446 + 16)
        f.write(entry)
    with pytest.raises(PartitionTableError):
        read_table(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PartitionTableError, match="no such"):
        read_table(str(tmp_path / "nope.img"))
