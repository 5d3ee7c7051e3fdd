"""A damaged frame met while browsing: the file on it gives EIO with a message naming the
image file, region and offset; every other file still reads; the view stays up and unmounts."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.browse import mounts
from clonebay.imaging import spec
from clonebay.imaging.reader import ImageReader
from clonebay.testdisks import ext
from tests.browse.conftest import Saved, needs_root

pytestmark = [needs_root, pytest.mark.root]

BIG = "var/big/random.bin"


def damage_frame_under(image: Path, region: str, offset: int) -> int:
    """Flip one payload byte of the frame holding ``offset`` of ``region``; its region offset."""
    with ImageReader(image) as reader:
        rec = next(r for r in reader.records(region) if r.offset <= offset < r.end)
        assert not rec.flags
        pack = image / spec.PACKS_DIR / spec.pack_name(rec.pack)
    with open(pack, "r+b") as f:
        at = rec.pack_offset + spec.FRAME_HEADER.size + rec.stored_length // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    return rec.offset


def test_damaged_frame_gives_eio_for_that_file_only(
    saved_images: dict[str, Saved],
    source_partitions: dict[tuple[str, int], Path],
    image_copy: Callable[[Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, original = saved_images["gpt"]
    image = image_copy(original)
    blocks = ext.debugfs(source_partitions[("gpt", 5)], [f"blocks /{BIG}"]).split()
    middle = int(blocks[len(blocks) // 2]) * 4096
    damaged_at = damage_frame_under(image, "p5", middle)

    point = tmp_path / "mnt"
    state = mounts.mount_image(str(image), str(point))
    try:
        root = point / "p5-clonebay"
        with pytest.raises(OSError) as caught, open(root / BIG, "rb") as f:
            while f.read(1 << 20):
                pass
        assert caught.value.errno == errno.EIO
        assert (root / "etc" / "hostname").read_bytes() == b"clonebay-test\n"
        assert len(os.listdir(root / "usr")) > 0  # the view is still up
        stats = mounts.view_stats(state)
        assert stats["errors"] >= 1
        message = stats["last_errors"][-1]
        assert "region p5" in message and f"offset {damaged_at}" in message
        assert "xxh3-128" in message and ".pack" in message
    finally:
        mounts.umount_image(str(point))

    capsys.readouterr()
    dest = tmp_path / "out"
    assert cli.main(["extract", f"{image}:p5", BIG, "etc/hostname", str(dest)]) == 10
    out, err = capsys.readouterr()
    assert f"{BIG}: Input/output error" in out and "region p5" in out
    assert "could not be read from the image" in err
    assert (dest / "hostname").read_bytes() == b"clonebay-test\n"
    assert not (dest / "random.bin").exists()
