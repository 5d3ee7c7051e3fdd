"""Safety audit #3: ``clonebay edit`` with a scratch area that fills up. The scratch lives on
/run, a small RAM tmpfs on the live system; here it is a tmpfs of a few MiB that the test
mounts. A write that does not fit is an error (ENOSPC) and never a chunk of zeros; the edit
cannot be committed any more: ``umount --commit`` refuses with exit code 8 and a message that
names the scratch area; the image is byte for byte what it was and verifies."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.browse.cow import EditFailedError, Overlay, commit, edit_failure
from clonebay.imaging.reader import ImageReader
from tests.edgedisks import CLONEBAY, MIB, clonebay, mbr_disk, mkext

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs, FUSE and loop devices")
CHUNK = 4 * MIB  # the image's chunk size: one copy-up


def image_hashes(image: Path) -> dict[str, str]:
    """sha256 of every file of an image directory (packs, index, manifest)."""
    return {
        p.relative_to(image).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(image.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An MBR disk with one ext4 partition holding 24 MiB of random files, saved."""
    files = tmp_path / "files"
    files.mkdir()
    rng = random.Random(3)
    for n in range(24):
        (files / f"f{n:02}.bin").write_bytes(rng.randbytes(MIB))
    disk = mbr_disk(tmp_path / "disk.img", 64 * MIB, "start=2048, size=60MiB, type=83\n")
    mkext(disk, MIB, 60 * MIB, root=files)
    saved = tmp_path / "image"
    done = clonebay("save", str(disk), str(saved))
    assert done.returncode == 0, done.stderr
    return saved


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, as in the audit: room for the bookkeeping and one chunk, not two."""
    point = tmp_path / "run"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_overlay_write_that_does_not_fit_fails_and_commit_refuses(
    image: Path, small_tmpfs: Path
) -> None:
    """The audit's reproduction (F), on a real tmpfs: the second chunk's copy-up is short."""
    before = image_hashes(image)
    scratch = small_tmpfs / "scratch"
    with ImageReader(image) as reader:
        overlay = Overlay(reader, scratch)
        try:
            assert overlay.write("p1", 5 * CHUNK + 10, b"x") == 1  # chunk 5 fits
            with pytest.raises(OSError) as raised:
                overlay.write("p1", 2 * CHUNK + 10, b"y")  # chunk 2 does not
            assert raised.value.errno == errno.ENOSPC
            assert overlay.dirty["p1"] == {5}, "a chunk whose copy-up failed is not dirty"
            # reads of chunk 2 still come from the image, never from the half-written copy
            assert overlay.read("p1", 2 * CHUNK, CHUNK) == reader.read_at("p1", 2 * CHUNK, CHUNK)
            with pytest.raises(OSError):  # the edit is over: chunk 5 has room, yet fails
                overlay.write("p1", 5 * CHUNK + 20, b"z")
        finally:
            overlay.close()
    assert "No space left" in edit_failure(scratch)
    with pytest.raises(EditFailedError, match=str(scratch)):
        commit(image, scratch)
    assert image_hashes(image) == before


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLONEBAY), *args], capture_output=True, text=True, env=env, check=False
    )


def test_edit_filling_its_scratch_is_not_committed(
    image: Path, small_tmpfs: Path, tmp_path: Path
) -> None:
    """The whole path as a technician meets it: clonebay edit with /run on the small tmpfs,
    a file larger than the scratch copied in, umount --commit."""
    before = image_hashes(image)
    env = {**os.environ, "CLONEBAY_RUN_DIR": str(small_tmpfs), "LC_ALL": "C"}
    point = tmp_path / "edit"
    done = cli(env, "edit", str(image), str(point))
    assert done.returncode == 0, done.stderr
    try:
        failed: OSError | None = None
        try:
            with open(point / "p1-ext4" / "big.bin", "wb") as f:
                f.write(random.Random(4).randbytes(16 * MIB))
                f.flush()
                os.fsync(f.fileno())  # the writeback reaches the view and does not fit
        except OSError as exc:
            failed = exc
        stats = json.loads((point / ".partitions" / ".clonebay-stats").read_text())
        umount = cli(env, "umount", "--commit", "--yes", str(point))
    finally:
        if (point / ".partitions").exists():  # the test failed: leave nothing mounted
            cli(env, "umount", str(point))
    assert failed is not None, "the program writing into the full edit was told nothing"
    assert stats["errors"] > 0 and "No space left" in " ".join(stats["last_errors"]), stats
    assert umount.returncode == EditFailedError.exit_code, umount.stderr
    message = " ".join(umount.stderr.split())
    assert "cannot be committed" in message and "Nothing was committed" in message, message
    assert str(small_tmpfs / "mounts") in message, "the scratch area is named"
    assert not point.exists() and not list((small_tmpfs / "mounts").iterdir())
    assert image_hashes(image) == before
    verify = clonebay("verify", str(image))
    assert verify.returncode == 0, verify.stdout + verify.stderr
