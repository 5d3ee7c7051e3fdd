"""The manifest's ``source`` and ``table`` sections and a region's ``extra`` (docs/format.md §5):
JSON round trips, the keys older clonebays wrote (``asdict`` of the model) kept, unknown keys
ignored, and every refusal naming its key path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import xxhash

from clonebay.engine.inspect import inspect_disk
from clonebay.imaging.manifest import canonical, parse, to_json
from clonebay.imaging.source_disk import PartitionInfo, SourceInfo, TableInfo
from clonebay.imaging.spec import ImageError
from clonebay.imaging.writer import ImageWriter
from tests.edgedisks import MIB, gpt_disk, mbr_disk

FILE = "img/manifest.json"
SOURCE = SourceInfo("/dev/sdb", 256 * MIB, 4096, 4096, "WDC", "X1", "0x5000", "usb", None)
MBR = TableInfo(
    "msdos", 512, 256 * MIB,
    (
        PartitionInfo(1, MIB, 64 * MIB, type_id="0x83", flags=("boot",)),
        PartitionInfo(2, 65 * MIB, 100 * MIB, kind="extended", type_id="0x05"),
        PartitionInfo(5, 66 * MIB, 20 * MIB, kind="logical", type_id="0x83"),
        PartitionInfo(6, 87 * MIB, 70 * MIB, kind="logical", type_id="0x07"),
    ),
    "0x1234abcd",
)  # fmt: skip


def table(**changes: Any) -> dict[str, Any]:
    return {**MBR.to_json(), **changes}


def part(i: int, **changes: Any) -> dict[str, Any]:
    parts = MBR.to_json()["partitions"]
    parts[i] = {**parts[i], **changes}
    return table(partitions=parts)


def test_round_trips() -> None:
    for info in (SOURCE, SourceInfo(), dataclasses.replace(SOURCE, partition=3)):
        assert SourceInfo.from_json(info.to_json()) == info
    for tab in (MBR, TableInfo("none", 4096, 8 * MIB), TableInfo()):
        assert TableInfo.from_json(tab.to_json()) == tab
        assert TableInfo.from_json(json.loads(json.dumps(tab.to_json()))).to_json() == tab.to_json()
    assert TableInfo().to_json() == {} and not TableInfo.from_json({}).recorded
    assert TableInfo.from_model(MBR.to_model()) == MBR


@pytest.mark.parametrize("kind", ["gpt", "msdos"])
def test_the_json_is_what_older_clonebays_wrote(tmp_path: Path, kind: str) -> None:
    """Older saves wrote ``asdict(PartitionTable)``: the same keys, in the same order."""
    if kind == "gpt":
        disk = gpt_disk(tmp_path / "d.img", 64 * MIB, "1:2048:+16M", "2:0:0", typecodes=["1:ef00"])
    else:
        disk = mbr_disk(tmp_path / "d.img", 64 * MIB, "start=2048, size=16MiB, type=83\n")
    model = inspect_disk(str(disk)).table
    old = json.dumps(dataclasses.asdict(model))
    assert json.dumps(TableInfo.from_model(model).to_json()) == old
    assert TableInfo.from_json(json.loads(old)).to_model() == model


def test_unknown_keys_are_ignored_and_missing_ones_read_as_defaults() -> None:
    data = {**SOURCE.to_json(), "future": {"x": 1}}
    assert SourceInfo.from_json(data) == SOURCE
    tab = table(future=[1])
    tab["partitions"][0]["future"] = True
    assert TableInfo.from_json(tab) == MBR
    assert SourceInfo.from_json({"size": 5}) == SourceInfo(size=5)
    assert TableInfo.from_json({"kind": "msdos"}) == TableInfo("msdos")  # the frozen v1 image's


def test_a_section_read_from_an_image_keeps_its_keys() -> None:
    """Conversions and edits rewrite an older manifest's sections byte for byte (§10)."""
    for data in ({"size": 5}, {"model": "golden", "size": 2 << 20}, {}):
        assert SourceInfo.from_json(data).to_json() == data
    tab = {
        "kind": "gpt",
        "disk_size": 8 * MIB,
        "partitions": [{"number": 1, "start": MIB, "size": MIB}],
    }
    assert TableInfo.from_json(tab).to_json() == tab


REFUSED = [
    (SourceInfo, {"size": "big"}, "source.size: must be a non-negative integer, got 'big'"),
    (SourceInfo, {"size": -1}, "source.size: must be a non-negative integer, got -1"),
    (SourceInfo, {"logical_sector_size": 520}, "source.logical_sector_size: must be a power of"),
    (SourceInfo, {"logical_sector_size": 1 << 17}, "source.logical_sector_size: must be a power"),
    (SourceInfo, {"physical_sector_size": 256}, "source.physical_sector_size: must be a power"),
    (SourceInfo, {"partition": "2"}, "source.partition: must be an integer in"),
    (SourceInfo, {"model": 7}, "source.model: must be a string, got 7"),
    (SourceInfo, [1], "source: must be a JSON object"),
    (TableInfo, table(kind="apm"), "table.kind: must be one of '', 'gpt', 'msdos', 'none'"),
    (TableInfo, table(sector_size=1000), "table.sector_size: must be a power of two from 512"),
    (TableInfo, table(sector_size=True), "table.sector_size: must be a power of two"),
    (TableInfo, table(disk_size=-5), "table.disk_size: must be a non-negative integer, got -5"),
    (TableInfo, table(partitions={}), "table.partitions: must be a list, got dict"),
    (TableInfo, table(partitions=[3]), "table.partitions[0]: must be a JSON object"),
    (TableInfo, part(1, start=-2048), "table.partitions[1].start: must be a non-negative integer"),
    (TableInfo, part(0, size=0), "table.partitions[0].size: must be an integer in [1,"),
    (TableInfo, part(0, start=MIB + 1), "table.partitions[0].start: must be a multiple of"),
    (TableInfo, part(0, start=256 * MIB), "table.partitions[0].start: 268435456 lies outside"),
    (TableInfo, part(0, number=0), "table.partitions[0].number: must be an integer in [1,"),
    (TableInfo, part(3, number=5), "table.partitions[3].number: 5 is also the number of part"),
    (TableInfo, part(0, size=65 * MIB), "table.partitions[1].start: partition 2 [68157440, "),
    (TableInfo, part(3, start=70 * MIB), "table.partitions[3].start: partition 6 [73400320, "),
    (TableInfo, part(3, start=160 * MIB), "table.partitions[3].start: a logical partition must"),
    (TableInfo, part(0, kind="weird"), "table.partitions[0].kind: must be one of 'primary', 'ext"),
    (TableInfo, part(0, flags="boot"), "table.partitions[0].flags: must be a list, got str"),
    (TableInfo, table(kind="gpt"), "table.partitions[1].kind: must be one of 'primary', got 'ex"),
    (TableInfo, table(kind="none"), "table.partitions: a table of kind 'none' has no partitions"),
    (TableInfo, table(first_usable=9, last_usable=8), "table.first_usable: 9 lies after last"),
]  # fmt: skip


@pytest.mark.parametrize(("section", "data", "message"), REFUSED)
def test_a_bad_value_names_its_key(section: type[TableInfo], data: object, message: str) -> None:
    with pytest.raises(ImageError) as caught:
        section.from_json(data, FILE)
    assert str(caught.value).startswith(f"{FILE}: {message}")
    assert caught.value.exit_code == 5


def test_a_partition_may_run_past_the_end_of_a_truncated_disk() -> None:
    """What a save of a disk image cut short recorded; the plan fills or refuses the tail."""
    data = part(3, size=300 * MIB)
    data["partitions"][1]["size"] = 400 * MIB
    assert TableInfo.from_json(data).partitions[3].end > MBR.disk_size


def written(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    """The manifest of a one-region image written with ``kwargs`` given to finish()."""
    with ImageWriter(tmp_path / "img", chunk_size=4096) as w:
        w.begin_region("p1", "partition", MIB, 8192, partition=1)
        w.add_chunk(0, b"x" * 8192)
        w.end_region()
        w.finish(**kwargs)
    data: dict[str, Any] = json.loads((tmp_path / "img" / "manifest.json").read_text())
    return data


def reseal(data: dict[str, Any]) -> bytes:
    data = {k: v for k, v in data.items() if k != "checksum"}
    data["checksum"] = "xxh3-128:" + xxhash.xxh3_128_hexdigest(canonical(data))
    return json.dumps(data).encode()


def test_region_partition_is_extra_partition_and_agrees_with_the_table(tmp_path: Path) -> None:
    data = written(tmp_path, source=SOURCE, table=MBR)
    assert data["regions"][0]["extra"] == {"partition": 1}
    assert data["source"] == SOURCE.to_json() and data["table"] == MBR.to_json()
    manifest = parse(reseal(data), FILE)
    assert manifest.regions[0].partition == 1 and manifest.table == MBR
    data["regions"][0]["extra"] = {"partition": 3, "note": "ignored"}
    with pytest.raises(ImageError, match=r"regions\[0\]\.extra\.partition: 3 is not a partition"):
        parse(reseal(data), FILE)
    data["regions"][0]["extra"] = {"partition": 2}
    with pytest.raises(ImageError, match=r"regions\[0\]\.disk_offset: must be 68157440"):
        parse(reseal(data), FILE)
    data["regions"][0]["extra"] = {"partition": None}
    assert parse(reseal(data), FILE).regions[0].partition is None


def test_the_writer_refuses_what_its_reader_would(tmp_path: Path) -> None:
    bad = dataclasses.replace(MBR, partitions=(PartitionInfo(1, 0, MIB), PartitionInfo(2, 0, MIB)))
    with pytest.raises(ValueError, match=r"table\.partitions\[1\]\.start: partition 2 \[0, "):
        written(tmp_path, table=bad)
    (tmp_path / "ok").mkdir()
    manifest = parse(reseal(written(tmp_path / "ok", table=MBR)), FILE)
    assert parse(to_json(manifest), FILE) == manifest
