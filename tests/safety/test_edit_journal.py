"""Safety audit #20 (cow.py): the edit's journal (``dirty.log``) after a crash. A last line cut
short ("p1 1" of "p1 12") is not read as another chunk; a damaged complete line refuses the
commit; a chunk's copy-up is whole and fsynced before the journal names it, and a copy-up cut
short by a full scratch area is never named at all."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clonebay.browse import cow
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096
PAGE = 4096  # tmpfs allocates whole pages
CHUNKS = 16


def make_image(path: Path, chunk: int = CHUNK) -> bytes:
    """Region p1: 16 chunks of random bytes."""
    data = random.Random(2).randbytes(CHUNKS * chunk)
    with ImageWriter(path, chunk_size=chunk, pack_limit=4 * chunk + 200) as w:
        w.begin_region("p1", "partition", 0, len(data))
        w.add_chunk(0, data)
        w.end_region()
        w.finish()
    return data


def edit(image: Path, scratch: Path, writes: dict[int, bytes]) -> None:
    """Write ``writes`` (chunk index -> bytes at the chunk's start) through an Overlay."""
    with ImageReader(image) as reader:
        overlay = cow.Overlay(reader, scratch)
        try:
            for index, data in writes.items():
                overlay.write("p1", index * CHUNK, data)
            overlay.flush()
        finally:
            overlay.close()


def dirty_after_reopen(image: Path, scratch: Path) -> set[int]:
    with ImageReader(image) as reader:
        overlay = cow.Overlay(reader, scratch)
        try:
            return set(overlay.dirty["p1"])
        finally:
            overlay.close()


def test_a_torn_last_line_names_no_chunk(tmp_path: Path) -> None:
    """A crash while "p1 12" was appended left "p1 1": chunk 1 was never written (its scratch
    copy is a hole) and must not be committed as zeros."""
    image, scratch = tmp_path / "img", tmp_path / "scratch"
    content = make_image(image)
    edit(image, scratch, {3: b"three"})
    with open(scratch / cow.JOURNAL, "ab") as f:
        f.write(b"p1 1")  # the first four bytes of chunk 12's line
    assert dirty_after_reopen(image, scratch) == {3}
    assert cow.changed_chunks(scratch) == 1
    # appending after the torn line (the view restarted) still gives readable lines
    edit(image, scratch, {5: b"five"})
    assert dirty_after_reopen(image, scratch) == {3, 5}
    cow.commit(image, scratch)
    with ImageReader(image) as reader:
        got = reader.read_at("p1", 0, CHUNKS * CHUNK)
        assert reader.verify().ok
    expected = bytearray(content)
    expected[3 * CHUNK : 3 * CHUNK + 5] = b"three"
    expected[5 * CHUNK : 5 * CHUNK + 4] = b"five"
    assert got == bytes(expected), "chunk 1 (or another) was committed from the scratch"


def test_a_damaged_line_refuses_the_commit(tmp_path: Path) -> None:
    """A complete line that says another chunk than was written ("p1 3" became "p1 2")."""
    image, scratch = tmp_path / "img", tmp_path / "scratch"
    make_image(image)
    edit(image, scratch, {3: b"three", 7: b"seven"})
    journal = scratch / cow.JOURNAL
    journal.write_bytes(journal.read_bytes().replace(b"p1 3", b"p1 2", 1))
    before = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    with pytest.raises(cow.EditFailedError, match="damaged at line 1"):
        cow.commit(image, scratch)
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file()} == before


def test_copy_up_is_whole_and_durable_before_the_journal_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes into the scratch folder, in order: at the moment the journal line is
    appended, the chunk's scratch copy holds all of the image's bytes and was fsynced."""
    image, scratch = tmp_path / "img", tmp_path / "scratch"
    content = make_image(image)
    events: list[tuple[str, str]] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            target = Path(os.readlink(f"/proc/self/fd/{fd}")).name
            if target == cow.JOURNAL and name == "write":
                copy = (scratch / "p1.chunks").read_bytes()[6 * CHUNK : 7 * CHUNK]
                whole = copy == content[6 * CHUNK : 7 * CHUNK]
                events.append(("journal names chunk 6", "whole" if whole else "incomplete"))
            events.append((name, target))
            return real(fd, *args)

        return call

    for name in ("pwrite", "write", "fsync"):
        monkeypatch.setattr(os, name, spy(name, getattr(os, name)))
    with ImageReader(image) as reader:
        overlay = cow.Overlay(reader, scratch)
        try:
            events.clear()  # the status file's first write is not part of a copy-up
            overlay.write("p1", 6 * CHUNK + 100, b"new bytes")
        finally:
            overlay.close()
    monkeypatch.undo()
    order = [e for e in events if e[1] in ("p1.chunks", cow.JOURNAL, "whole", "incomplete")]
    assert order == [
        ("pwrite", "p1.chunks"),  # the copy-up
        ("fsync", "p1.chunks"),  # durable ...
        ("journal names chunk 6", "whole"),  # ... and whole before the journal names it
        ("write", cow.JOURNAL),
        ("pwrite", "p1.chunks"),  # then the user's bytes
    ], order


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "tiny"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_a_copy_up_cut_short_is_never_named(tmp_path: Path, tiny_tmpfs: Path) -> None:
    """Chunks of 16 KiB (four pages); after a first chunk, the tmpfs is filled up to two free
    pages: the next copy-up is written short, and neither the overlay nor the journal may
    count that chunk as written (its second half would read back as zeros)."""
    chunk = 4 * PAGE
    image, scratch = tmp_path / "img", tiny_tmpfs / "scratch"
    make_image(image, chunk)
    filler = tiny_tmpfs / "filler"
    with ImageReader(image) as reader:
        overlay = cow.Overlay(reader, scratch)
        try:
            overlay.write("p1", 2 * chunk, b"fits")  # the journal has its first page now
            info = os.statvfs(tiny_tmpfs)
            filler.write_bytes(bytes((info.f_bavail - 2) * info.f_frsize))
            with pytest.raises(OSError):
                overlay.write("p1", 9 * chunk, b"does not fit")
            assert overlay.dirty["p1"] == {2}
        finally:
            overlay.close()
    filler.unlink()
    assert dirty_after_reopen(image, scratch) == {2}
    assert cow.changed_chunks(scratch) == 1
