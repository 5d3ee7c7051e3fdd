"""``--rescue`` on a failing source: every readable used byte copied, the unreadable ones mapped.

The source is a real GPT disk with an ext4 partition (mkfs.ext4 -d), seen through
tests/faultfile.py: a FUSE file that fails with EIO every read touching one of the chosen
ranges, as a disk's bad sectors do. The ranges sit where debugfs (the oracle) says big.bin's
blocks are, one of them a single 512-byte sector; one more is in the partition's free space,
which a rescue never reads. Checked: the image's UNREADABLE ranges and the map's bad sectors
are exactly the bad ranges that lie in used blocks, GNU ddrescuelog reads the map, the free
space is non-tried in it, every file restores with its original bytes except the bad sectors
(zeros), e2fsck finds the restored filesystem clean, verify accepts the image, exit code 10.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from clonebay.testdisks import ext
from tests.diskcheck import extract
from tests.edgedisks import CLONEBAY, MIB, clonebay, gpt_disk, layout, mkext
from tests.faultfile import failing

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="FUSE mounts need root"
)
BLOCK = 4096
SECTOR = 512
GAP = 51200  # a sector of the post-GPT gap: after the GPT's entries, before p1 at 1 MiB
DONE_WITH_ERRORS = 10


class Source:
    """The healthy disk, where its partition starts, and the bytes of its files."""

    def __init__(self, disk: Path, p1: int, files: dict[str, bytes], big_blocks: list[int]):
        self.disk = disk
        self.p1 = p1
        self.files = files
        self.big_blocks = big_blocks

    def big_byte(self, fraction: float) -> int:
        """A disk position inside big.bin's data, ``fraction`` of the way through its blocks."""
        return self.p1 + self.big_blocks[int(len(self.big_blocks) * fraction)] * BLOCK


def build_source(work: Path, files: dict[str, bytes]) -> Source:
    """A 96 MiB GPT disk in ``work``, p1 a 64 MiB ext4 holding ``files`` (big.bin among them),
    and where debugfs says big.bin's blocks are."""
    root = work / "files"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    disk = gpt_disk(work / "src.img", 96 * MIB, "1:2048:+64M")
    start, sectors = layout(disk)[1]
    mkext(disk, start * SECTOR, sectors * SECTOR, root=root)
    p1 = extract(disk, start * SECTOR, sectors * SECTOR, work / "p1.img")
    blocks = ext.blocks_of(p1, "/big.bin")
    p1.unlink()
    return Source(disk, start * SECTOR, files, blocks)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    rng = random.Random(18)
    files = {"big.bin": rng.randbytes(12 * MIB), "docs/a.txt": b"kept\n" * 3000}
    files |= {f"docs/n{i}.bin": rng.randbytes(rng.randrange(1, 200_000)) for i in range(20)}
    return build_source(tmp_path_factory.mktemp("rescue"), files)


def free_byte(src: Source, work: Path) -> int:
    """A disk position 64 KiB long in the partition's free space (dumpe2fs's free blocks)."""
    start, sectors = layout(src.disk)[1]
    p1 = extract(src.disk, start * SECTOR, sectors * SECTOR, work / "p1.img")
    text = subprocess.run(["dumpe2fs", str(p1)], capture_output=True, text=True, check=True).stdout
    p1.unlink()
    for line in text.splitlines():
        if line.strip().startswith("Free blocks:") and "-" in line:
            first, last = (int(n) for n in line.split(":")[1].split(",")[-1].split("-"))
            if last - first > 64:
                return src.p1 + (first + 16) * BLOCK
    raise AssertionError("no free run of 64 blocks")


def read_map(path: Path) -> list[tuple[int, int, str]]:
    lines = [ln.split() for ln in path.read_text().splitlines() if ln and ln[0] != "#"]
    return [(int(a, 16), int(b, 16), s) for a, b, s in lines[1:]]


def restored_files(image: Path, work: Path) -> tuple[dict[str, bytes], str]:
    """Restore ``image`` into a file; its p1's files (debugfs rdump) and e2fsck's verdict."""
    target = work / "restored.img"
    done = clonebay("restore", str(image), str(target), "--yes")
    assert done.returncode == 0, done.stderr
    assert "unreadable" in done.stdout + done.stderr  # restore reports the zeroed ranges
    return disk_files(target, work)


def disk_files(target: Path, work: Path) -> tuple[dict[str, bytes], str]:
    """The files of ``target``'s p1 (debugfs rdump) and e2fsck's verdict on it."""
    start, sectors = layout(target)[1]
    p1 = extract(target, start * SECTOR, sectors * SECTOR, work / "rp1.img")
    out = work / "out"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", str(p1)], capture_output=True, check=True)
    fsck = subprocess.run(["e2fsck", "-fn", str(p1)], capture_output=True, text=True, check=False)
    found = {str(f.relative_to(out)): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    return found, f"{fsck.returncode}: {fsck.stdout[-400:]}"


def test_save_rescue_maps_exactly_the_bad_used_sectors(source: Source, tmp_path: Path) -> None:
    bad = [
        (source.big_byte(0.25), BLOCK),  # a whole block of big.bin
        (source.big_byte(0.6) + 3 * SECTOR, SECTOR),  # one sector inside another block
        (source.big_byte(0.9), 3 * BLOCK),  # three blocks
    ]
    free = (free_byte(source, tmp_path), 16 * BLOCK)
    image = tmp_path / "pc.image"
    with failing(source.disk, tmp_path / "mnt", *bad[0], more=[*bad[1:], free]) as disk:
        done = clonebay("save", "--rescue", "--json", str(disk), str(image))
    assert done.returncode == DONE_WITH_ERRORS, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lost = sorted((u["offset"] + source.p1, u["length"]) for u in result["unreadable"])
    assert lost == sorted(bad)  # exactly the bad sectors in used blocks; the free ones unread
    assert all(u["region"] == "p1" for u in result["unreadable"])
    assert result["files_hit"] == [big_bin_hit(source, bad)]  # what they hit: big.bin only
    saved = json.loads(clonebay("info", "--json", str(image)).stdout)["warnings"]
    assert f"unreadable sectors hit {big_bin_hit(source, bad)}" in saved  # kept in the image

    blocks = read_map(Path(f"{image}.map"))
    assert blocks[0][0] == 0 and sum(b[1] for b in blocks) == source.disk.stat().st_size
    assert sorted((a, n) for a, n, s in blocks if s == "-") == sorted(bad)
    assert all(s in "+?" for a, n, s in blocks if s != "-")
    (status,) = [s for a, n, s in blocks if a <= free[0] < a + n]
    assert status == "?"  # free space is never read
    checked = subprocess.run(
        ["ddrescuelog", "--list-blocks=-", f"--block-size={SECTOR}", f"{image}.map"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    listed = [int(n) for n in checked.stdout.split()]
    assert listed == [s for a, n in sorted(bad) for s in range(a // SECTOR, (a + n) // SECTOR)]

    assert clonebay("verify", str(image)).returncode == 0
    out = tmp_path / "extracted"
    out.mkdir()
    got = clonebay("extract", f"{image}:1", "/big.bin", "/docs/a.txt", str(out))
    assert got.returncode == DONE_WITH_ERRORS, got.stderr  # browsing: EIO, never zeros
    assert "big.bin" in got.stdout + got.stderr
    assert (out / "a.txt").read_bytes() == source.files["docs/a.txt"]
    files, fsck = restored_files(image, tmp_path)
    assert fsck.startswith("0:"), fsck
    assert_files_but_bad(source, files, bad)


def in_big_bin(source: Source, pos: int) -> int:
    """Where disk position ``pos`` (inside big.bin's data) is in big.bin."""
    block = (pos - source.p1) // BLOCK
    return source.big_blocks.index(block) * BLOCK + (pos - source.p1) % BLOCK


def big_bin_hit(source: Source, bad: list[tuple[int, int]]) -> str:
    """The hit line fs/hits.py gives for ``bad`` ranges that all lie in big.bin's data."""
    spans = sorted((in_big_bin(source, pos), length) for pos, length in bad if pos >= source.p1)
    text = ", ".join(f"{at}-{at + n - 1}" for at, n in spans)
    return f"p1: file: /big.bin: {sum(n for _, n in spans)} bytes lost of the file (bytes {text})"


def assert_files_but_bad(
    source: Source, files: dict[str, bytes], bad: list[tuple[int, int]]
) -> None:
    """Every file as on the source, but zeros where ``bad`` (all inside big.bin) lies."""
    want = dict(source.files)
    big = bytearray(want["big.bin"])
    for pos, length in bad:
        if pos >= source.p1:  # (not outside the partition)
            at = in_big_bin(source, pos)
            big[at : at + length] = bytes(length)
    want["big.bin"] = bytes(big)
    assert files.keys() >= want.keys()
    assert {k: v for k, v in files.items() if k in want} == want


def test_clone_rescue_writes_every_readable_byte_and_zeros_for_the_rest(
    source: Source, tmp_path: Path
) -> None:
    """The same for a clone, with one bad sector in the GPT's gap too (outside the
    partitions: read sector by sector, the bad one held as zeros)."""
    bad = [
        (GAP, SECTOR),
        (source.big_byte(0.1) + SECTOR, 2 * SECTOR),
        (source.big_byte(0.5), 2 * BLOCK),
    ]
    target, mapfile = tmp_path / "clone.img", tmp_path / "clone.map"
    with failing(source.disk, tmp_path / "mnt", *bad[0], more=bad[1:]) as disk:
        done = clonebay(
            "clone", "--rescue", "--mapfile", str(mapfile), "--json", "--yes", "--no-fixup",
            str(disk), str(target),
        )  # fmt: skip
    assert done.returncode == DONE_WITH_ERRORS, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted((u["start"], u["length"]) for u in result["unreadable"]) == sorted(bad)
    assert result["rescue_map"] == str(mapfile)
    assert f"unreadable sectors hit {big_bin_hit(source, bad)}" in result["warnings"]
    gap = f"unreadable sectors hit the area outside the partitions at byte {GAP}: {SECTOR} bytes"
    assert gap in "\n".join(result["warnings"])
    assert sorted((a, n) for a, n, s in read_map(mapfile) if s == "-") == sorted(bad)
    files, fsck = disk_files(target, tmp_path)
    assert fsck.startswith("0:"), fsck
    assert_files_but_bad(source, files, bad)
    with open(source.disk, "rb") as a, open(target, "rb") as b:  # the GPT head as on the source
        head, copy = a.read(1 << 20), b.read(1 << 20)
    assert copy[GAP : GAP + SECTOR] == bytes(SECTOR)
    assert copy[:GAP] == head[:GAP] and copy[GAP + SECTOR :] == head[GAP + SECTOR :]


def test_save_rescue_of_a_healthy_source_is_a_plain_save(source: Source, tmp_path: Path) -> None:
    """Nothing fails: exit 0, the same image as without --rescue, every used byte finished."""
    image = tmp_path / "ok.image"
    done = clonebay("save", "--rescue", str(source.disk), str(image))
    assert done.returncode == 0, done.stderr
    plain = tmp_path / "plain.image"
    assert clonebay("save", str(source.disk), str(plain)).returncode == 0
    info = [json.loads(clonebay("info", "--json", str(i)).stdout) for i in (image, plain)]
    assert info[0]["totals"] == info[1]["totals"]
    blocks = read_map(Path(f"{image}.map"))
    assert {s for _, _, s in blocks} <= {"+", "?"}
    totals = info[0]["totals"]
    copied = totals["raw_bytes"] + totals["zero_bytes"] + totals["unreadable_bytes"]
    assert sum(n for _, n, s in blocks if s == "+") == copied


def test_a_map_already_there_is_never_overwritten(source: Source, tmp_path: Path) -> None:
    image = tmp_path / "again.image"
    old = tmp_path / "again.image.map"
    old.write_text("# an earlier rescue\n")
    done = clonebay("save", "--rescue", str(source.disk), str(image))
    assert done.returncode == 2, done.stderr
    assert "already exists" in done.stderr
    assert old.read_text() == "# an earlier rescue\n"
    assert not image.exists()


def test_a_source_that_goes_away_mid_rescue_stops_at_once(source: Source, tmp_path: Path) -> None:
    """The FUSE server behind the source is killed while the rescue reads (as a USB disk is
    unplugged): the save stops with a device error naming the source and the map, which keeps
    what was read; no endless run of "bad sectors", each read failing as the device is gone."""
    image, mnt = tmp_path / "gone.image", tmp_path / "mnt"
    size = source.disk.stat().st_size
    with failing(source.disk, mnt, *(source.big_byte(0.9), SECTOR), slow=[(0, size)]) as disk:
        server = subprocess.run(
            ["pgrep", "-f", f"tests.faultfile {source.disk} {mnt} "],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        job = subprocess.Popen(
            [str(CLONEBAY), "save", "--rescue", str(disk), str(image)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        mapfile = Path(f"{image}.map")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            mapfile.exists() and any(s == "+" for _, _, s in read_map(mapfile))
        ):
            time.sleep(0.1)
        subprocess.run(["kill", "-9", *server], check=True)
        _out, err = job.communicate(timeout=120)  # a job that kept on reading would hang here
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
    assert job.returncode == 8, err
    assert "stopped answering" in err and str(mapfile) in err, err
    kept = read_map(mapfile)
    assert any(s == "+" for _, _, s in kept)  # what was read before is recorded
    assert not any(s == "-" for _, _, s in kept)  # and nothing was called a bad sector


@pytest.mark.parametrize("other", [["--shrink"], ["-"]])
def test_rescue_refuses_a_stream_or_a_shrink_before_reading(
    tmp_path: Path, other: list[str]
) -> None:
    """Both are refused (exit 2) before the source is even opened: the source named here does
    not exist, and the refusal is still the usage error, not a failed read of it."""
    image = "-" if other == ["-"] else str(tmp_path / "s.image")
    missing = str(tmp_path / "no-such-disk.img")
    done = clonebay("save", "--rescue", *(o for o in other if o != "-"), missing, image)
    assert done.returncode == 2, done.stderr
    assert ("stream" if image == "-" else "cannot shrink") in done.stderr
