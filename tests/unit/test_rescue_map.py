"""The rescue map (engine/rescue/mapfile.py): blocks stay sorted, gap-free and merged whatever
order they are marked in; the text is GNU ddrescue's mapfile format (checked against
ddrescuelog itself when it is installed); a damaged or foreign mapfile is refused with the line
that is wrong, never half-read."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from clonebay.engine.rescue.mapfile import RescueMap
from clonebay.errors import InputError

SIZE = 1 << 20


def blocks(m: RescueMap) -> list[tuple[int, int, str]]:
    return [(b.pos, b.size, b.status) for b in m.blocks()]


def test_marks_in_any_order_give_the_same_merged_blocks() -> None:
    """A byte array as the oracle: every byte's last status, against the map's blocks."""
    rng = random.Random(5)
    for _ in range(50):
        m, truth = RescueMap(SIZE), bytearray(b"?" * SIZE)
        for _ in range(40):
            pos, size = rng.randrange(SIZE), rng.randrange(1, 70_000)
            status = rng.choice("?*/-+")
            m.mark(pos, size, status)
            end = min(pos + size, SIZE)
            truth[pos:end] = status.encode() * (end - pos)
        got = blocks(m)
        assert got[0][0] == 0 and sum(n for _, n, _ in got) == SIZE
        assert all(a[2] != b[2] for a, b in itertools.pairwise(got))  # merged
        assert b"".join(s.encode() * n for _, n, s in got) == bytes(truth)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    m = RescueMap(SIZE, tmp_path / "disk.map")
    m.mark(4096, 512, "-")
    m.mark(0, 4096, "+")
    m.mark(65536, 8192, "*")
    m.current_status, m.current_pass = "/", 3
    m.save()
    back = RescueMap.load(tmp_path / "disk.map", SIZE)
    assert blocks(back) == blocks(m)
    assert (back.current_status, back.current_pass) == ("/", 3)
    assert not (tmp_path / "disk.map.tmp").exists()  # written aside, then renamed


@pytest.mark.skipif(shutil.which("ddrescuelog") is None, reason="gddrescue not installed")
def test_ddrescuelog_reads_it(tmp_path: Path) -> None:
    m = RescueMap(SIZE, tmp_path / "disk.map")
    m.mark(0, SIZE, "+")
    m.mark(2048, 1024, "-")
    m.save()
    listed = subprocess.run(
        ["ddrescuelog", "--list-blocks=-", "--block-size=512", str(tmp_path / "disk.map")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == ["4", "5"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is empty"),
        ("# only comments\n", "is empty"),
        ("0x0 ? 1\n0x0 0x100 +\n", "covers 256 bytes, but the source has"),
        ("0x0 ? 1\n0x0 0x80000 +\n0x90000 0x70000 +\n", "line 3: block at 0x90000"),
        ("0x0 ? 1\n0x0 0x100000 Z\n", "line 2"),
        ("0x0 ? 1\n0x0 -5 +\n", "line 2"),
        ("0x0 ? 1\nnot a block\n", "line 2: not a block line"),
        ("zz ? 1\n", "line 1: not a mapfile status line"),
        ("0x0 Q 1\n0x0 0x100000 +\n", "unknown status 'Q'"),
        ("0x0 ? 1\n0x0 0x200000 +\n", "covers 2097152 bytes"),
        ("\udcff", "cannot be read"),
    ],
)
def test_a_damaged_or_foreign_map_is_refused_with_the_line(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "bad.map"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(InputError) as caught:
        RescueMap.load(path, SIZE)
    assert said in caught.value.message, caught.value.message
