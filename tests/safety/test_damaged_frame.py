"""Safety audit #9: a damaged frame in an image directory was found only when the restore
reached it, after the target's old table was wiped and its partitions partly overwritten.
Now every frame is decoded and hash-checked before the first write: the restore stops with
exit code 5, says nothing was written, and the target is byte for byte what it was. The check
reports progress (region "check" with --json); ``--no-check`` skips it, and then the restore
stops at the damaged frame saying the target is incomplete."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clonebay.imaging import spec
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import ImageError
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, mkext, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="as the other safety tests: root")


@dataclass(frozen=True)
class Source:
    disk: Path
    image: Path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A GPT disk, p1 ext4 with 12 MiB of random files, saved into packs of 5 MiB."""
    work = tmp_path_factory.mktemp("damage")
    root = work / "files"
    root.mkdir()
    rng = random.Random(9)
    for i in range(6):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(2 * MIB))
    disk = gpt_disk(work / "src.img", 64 * MIB, "1:2048:+48M")
    start, sectors = layout(disk)[1]
    mkext(disk, start * 512, sectors * 512, root=root)
    image = work / "image"
    saved = clonebay("save", str(disk), str(image), "--pack-limit", "5")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    return Source(disk, image)


def damage_last_frame(image: Path, region: str = "p1") -> int:
    """Flip one payload byte near the end of ``region``'s last frame (the partition's data is
    written before the raw areas, so a late check finds it after the partition was written);
    the number of the pack that holds it."""
    with ImageReader(image) as reader:
        frames = [r for r in reader.records(region) if not r.flags]
    last = max(frames, key=lambda r: (r.pack, r.pack_offset))
    with open(image / spec.PACKS_DIR / spec.pack_name(last.pack), "r+b") as f:
        at = last.pack_offset + spec.FRAME_HEADER.size + last.stored_length - 2
        byte = os.pread(f.fileno(), 1, at)
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), at)
    return last.pack


@pytest.fixture
def damaged(source: Source, tmp_path: Path) -> Path:
    copy = tmp_path / "dmg"
    shutil.copytree(source.image, copy)
    assert damage_last_frame(copy) > 0  # not in the first pack
    return copy


@pytest.fixture
def victim(source: Source, tmp_path: Path) -> Path:
    copy = tmp_path / "victim.img"
    shutil.copyfile(source.disk, copy)
    return copy


def _progress(stderr: str, region: str) -> list[dict[str, Any]]:
    """The --json progress events of ``region`` ("": of every region)."""
    events = [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]
    progress = [e for e in events if e.get("event") == "progress"]
    return [e for e in progress if e.get("region") == region or not region]


def test_damaged_frame_is_found_before_anything_is_written(
    source: Source, damaged: Path, victim: Path
) -> None:
    before, src_before = sha256(victim), sha256(source.disk)
    proc = clonebay("restore", str(damaged), str(victim), "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == ImageError.exit_code, said
    assert "nothing was written" in said.lower(), said
    assert "incomplete" not in said.replace("leaving the target incomplete", ""), said
    assert sha256(victim) == before, "the target was written before the damage was found"
    assert sha256(source.disk) == src_before


def test_the_check_reports_progress(source: Source, damaged: Path, tmp_path: Path) -> None:
    good = clonebay("restore", str(source.image), str(tmp_path / "good.img"), "--yes", "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    checked = _progress(good.stderr, "check")
    assert checked, good.stderr[-3000:]
    assert checked[-1]["done"] == checked[-1]["total"] > 0
    bad = clonebay("restore", str(damaged), str(tmp_path / "bad.img"), "--yes", "--json")
    assert bad.returncode == ImageError.exit_code, bad.stdout + bad.stderr
    assert _progress(bad.stderr, "check"), bad.stderr[-3000:]
    regions = {e["region"] for e in _progress(bad.stderr, "")} | {"check"}
    assert regions == {"check"}, bad.stderr[-3000:]  # nothing was written: no write progress


def test_no_check_stops_at_the_damaged_frame(damaged: Path, victim: Path) -> None:
    proc = clonebay("restore", str(damaged), str(victim), "--no-check", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == ImageError.exit_code, said
    assert "incomplete" in said, said
