"""``--resume`` after ``kill -9``: the job goes on from its last checkpoint and ends with what an
uninterrupted run gives.

The source is a real GPT disk with an ext4 partition (tests/engine/test_rescue.py builds it),
read through tests/faultfile.py's FUSE file, slowed down so that a save takes several seconds
and can be killed at chosen points: right after the first checkpoint, half way, near the end,
and (for a rescue) in the later passes. A checkpoint is taken after every chunk here
(CLONEBAY_CHECKPOINT_EVERY=0). After each kill the same command runs again with ``--resume``;
the image it ends with restores to the very bytes the uninterrupted save's image restores to,
with the same counters, the same unreadable ranges and the same map.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.edgedisks import MIB, clonebay, sha256
from tests.engine.test_rescue import BLOCK, SECTOR, Source, build_source, read_map
from tests.faultfile import failing
from tests.killed import clone_reached, kill_when, run_job

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="FUSE mounts need root"
)
DONE_WITH_ERRORS = 10


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    rng = random.Random(1818)
    files = {"big.bin": rng.randbytes(14 * MIB), "same.bin": b"\x5a" * (3 * MIB)}
    files |= {f"docs/n{i}.bin": rng.randbytes(rng.randrange(1, 300_000)) for i in range(30)}
    return build_source(tmp_path_factory.mktemp("resume"), files)


def _bad(src: Source) -> list[tuple[int, int]]:
    return [(src.big_byte(0.3), BLOCK), (src.big_byte(0.7) + 5 * SECTOR, SECTOR)]


def _slow(src: Source) -> list[tuple[int, int]]:
    """The partition is slow to read (faultfile.SLOW per MiB, as the kernel asks: a few seconds
    a pass here) and its bad sectors slow to fail."""
    return [(src.p1, 64 * MIB)]


def _reached(image: Path, records: int) -> bool:
    """Whether the checkpoint holds ``records`` index records of p1 (its chunks and runs)."""
    point = _checkpoint(image)
    opened = point.get("open") if point else None
    if not isinstance(opened, dict) or opened["entry"]["name"] != "p1":
        return False
    return int(opened["records"]["length"]) >= records * 48  # spec.RECORD.size


def _checkpoint(image: Path) -> dict[str, object] | None:
    try:
        return json.loads((image / "resume" / "checkpoint.json").read_bytes())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _phase(mapfile: Path) -> str:
    """The map's current phase (its status line's second field)."""
    try:
        lines = [ln for ln in mapfile.read_text().splitlines() if ln and ln[0] != "#"]
    except OSError:
        return ""
    return lines[0].split()[1] if lines else ""


def _progress(image: Path) -> int:
    """Bytes the checkpoint counts as saved (closed regions and the open one)."""
    point = _checkpoint(image)
    if point is None:
        return -1
    done = sum(r["stats"]["raw_bytes"] + r["stats"]["zero_bytes"] + r["stats"]["unreadable_bytes"]
               for r in point["regions"])  # type: ignore[attr-defined]  # fmt: skip
    opened = point.get("open")
    if isinstance(opened, dict):
        stats = opened["stats"]
        done += stats["raw_bytes"] + stats["zero_bytes"] + stats["unreadable_bytes"]
    return done


def _restored(image: Path, work: Path) -> str:
    target = work / f"{image.name}.restored"
    done = clonebay("restore", str(image), str(target), "--yes")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    target.unlink()
    return digest


def _summary(image: Path) -> dict[str, object]:
    info = json.loads(clonebay("info", "--json", str(image)).stdout)
    return {
        "regions": [(r["name"], r["used_bytes"], r["stored_bytes"]) for r in info["regions"]],
        "totals": info["totals"],
        "unreadable": info["unreadable"],
    }


@pytest.fixture(scope="module")
def whole(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The uninterrupted saves (plain and rescue) of the slowed source, as restored bytes."""
    work = tmp_path_factory.mktemp("whole")
    bad = _bad(source)
    slow = _slow(source)
    with failing(source.disk, work / "mnt", *bad[0], more=bad[1:], slow=slow) as disk:
        assert clonebay("save", str(source.disk), str(work / "plain")).returncode == 0
        done = clonebay("save", "--rescue", str(disk), str(work / "rescued"))
        assert done.returncode == DONE_WITH_ERRORS, done.stderr
    return {
        "plain": _restored(work / "plain", work),
        "plain_summary": _summary(work / "plain"),
        "rescued": _restored(work / "rescued", work),
        "rescued_summary": _summary(work / "rescued"),
        "rescued_map": [b for b in read_map(work / "rescued.map") if b[2] != "?"],
    }


@pytest.mark.parametrize("at", [1, 3])
def test_a_save_killed_at_any_point_resumes_to_the_same_image(
    source: Source, whole: dict[str, object], tmp_path: Path, at: float
) -> None:
    image = tmp_path / "img"
    with failing(source.disk, tmp_path / "mnt", source.disk.stat().st_size, 1,
                 slow=_slow(source)) as disk:  # fmt: skip
        proc = run_job("save", str(disk), str(image))
        kill_when(proc, lambda: _reached(image, at), f"a checkpoint of {at} records")
        assert not (image / "manifest.json").exists()
        again = clonebay("save", "--resume", str(disk), str(image))
    assert again.returncode == 0, again.stderr
    assert not (image / "resume").exists()
    assert _restored(image, tmp_path) == whole["plain"]
    assert _summary(image) == whole["plain_summary"]
    assert clonebay("verify", str(image)).returncode == 0


@pytest.mark.parametrize("at", ["pass 1", "later passes"])
def test_a_rescue_killed_in_any_pass_resumes_to_the_same_image(
    source: Source, whole: dict[str, object], tmp_path: Path, at: str
) -> None:
    bad = _bad(source)
    image = tmp_path / "img"
    mapfile = Path(f"{image}.map")
    with failing(source.disk, tmp_path / "mnt", *bad[0], more=bad[1:],
                 slow=_slow(source)) as disk:  # fmt: skip
        # many retries: the later passes take seconds (a bad sector read is slow here too)
        proc = run_job("save", "--rescue", "--retries", "30", str(disk), str(image))
        kill_when(
            proc,
            (lambda: _reached(image, 3)) if at == "pass 1" else (lambda: _phase(mapfile) == "-"),
            at,
        )  # in pass 1 (past the first bad sector), or retrying (map phase "-")
        again = clonebay("save", "--resume", "--retries", "3", str(disk), str(image))
    assert again.returncode == DONE_WITH_ERRORS, again.stderr
    assert _restored(image, tmp_path) == whole["rescued"]
    assert _summary(image)["unreadable"] == whole["rescued_summary"]["unreadable"]  # type: ignore[index]
    assert [b for b in read_map(mapfile) if b[2] != "?"] == whole["rescued_map"]


def test_resume_refuses_another_disk_a_changed_source_and_a_complete_image(
    source: Source, tmp_path: Path
) -> None:
    image = tmp_path / "img"
    with failing(source.disk, tmp_path / "mnt", source.disk.stat().st_size, 1,
                 slow=_slow(source)) as disk:  # fmt: skip
        proc = run_job("save", str(disk), str(image))
        kill_when(proc, lambda: _progress(image) > 0, "a checkpoint")
    other = tmp_path / "other.img"
    other.write_bytes(source.disk.read_bytes()[: 64 * MIB])
    refused = clonebay("save", "--resume", str(other), str(image))
    assert refused.returncode == 2 and "is not the source the interrupted job" in refused.stderr
    changed = tmp_path / "changed.img"  # the same size, another filesystem: other used blocks
    changed.write_bytes(source.disk.read_bytes())
    subprocess.run(["debugfs", "-w", "-R", "rm /big.bin", f"{changed}?offset={source.p1}"],
                   capture_output=True, check=False)  # fmt: skip
    # debugfs has no offset syntax: cut p1 out, change it, put it back
    from tests.diskcheck import extract

    size = source.disk.stat().st_size
    p1 = extract(changed, source.p1, 64 * MIB, tmp_path / "p1.img")
    subprocess.run(["debugfs", "-w", "-R", "rm /big.bin", str(p1)], capture_output=True, check=True)
    with changed.open("r+b") as f:
        f.seek(source.p1)
        f.write(p1.read_bytes())
    assert changed.stat().st_size == size
    refused = clonebay("save", "--resume", str(changed), str(image))
    assert refused.returncode == 2 and "used blocks of" in refused.stderr, refused.stderr
    assert clonebay("save", "--resume", str(source.disk), str(image)).returncode == 0
    done = clonebay("save", "--resume", str(source.disk), str(image))
    assert done.returncode == 2 and "nothing to resume" in done.stderr
    fresh = clonebay("save", "--resume", str(source.disk), str(tmp_path / "none"))
    assert fresh.returncode == 2 and "no checkpoint" in fresh.stderr


@pytest.mark.parametrize(("rescue", "at"), [(False, 1), (False, 3), (True, 2), (True, "rescue")])
def test_a_clone_killed_at_any_point_resumes_to_the_same_target(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rescue: bool, at: int | str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("CLONEBAY_STATE", str(state))
    monkeypatch.setenv("CLONEBAY_RESCUE_MAPS", str(tmp_path / "maps"))
    (tmp_path / "maps").mkdir()
    bad = _bad(source) if rescue else [(source.disk.stat().st_size, 1)]
    flags = ["--rescue", "--retries", "30"] if rescue else []
    whole, cut = tmp_path / "whole.img", tmp_path / "cut.img"
    with failing(source.disk, tmp_path / "mnt", *bad[0], more=bad[1:],
                 slow=_slow(source)) as disk:  # fmt: skip
        first = (
            clonebay("clone", *flags, "--retries", "1", str(disk), str(whole), "--yes")
            if rescue
            else clonebay("clone", str(disk), str(whole), "--yes")
        )
        assert first.returncode == (DONE_WITH_ERRORS if rescue else 0), first.stderr
        for old in (tmp_path / "maps").iterdir():
            old.rename(tmp_path / f"whole-{old.name}")
        proc = run_job("clone", *flags, str(disk), str(cut), "--yes")
        kill_when(proc, lambda: clone_reached(state, at), f"a checkpoint at {at}")
        again = clonebay("clone", "--resume", *flags[:1], str(disk), str(cut), "--yes")
    assert again.returncode == (DONE_WITH_ERRORS if rescue else 0), again.stderr
    assert sha256(cut) == sha256(whole)
    assert not list(state.glob("clone-*"))  # done: nothing left to resume
