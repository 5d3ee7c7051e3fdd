"""Pack files written through a stage with direct I/O (imaging/packfiles.py) hold exactly the
bytes a plain buffered append gives: frames of every size (a few bytes, unaligned, larger than the
stage), across pack boundaries; and every frame can be read back while it is still staged, as the
writer's dedup check does."""

from __future__ import annotations

import random
from pathlib import Path

from clonebay.imaging import spec
from clonebay.imaging.packfiles import STAGE, PackAppender

IMAGE_ID = bytes(range(16))


def _write(image: Path, direct: bool, seed: int) -> list[tuple[int, int, bytes]]:
    (image / spec.PACKS_DIR).mkdir(parents=True)
    rng = random.Random(seed)
    packs = PackAppender(image, 0, 40 << 20, IMAGE_ID, direct=direct)
    frames: list[tuple[int, int, bytes]] = []
    for _ in range(60):
        sizes = [1, 17, 4095, 4096, 4097, 1 << 20, 3 * STAGE // 2, rng.randrange(1 << 22)]
        size = rng.choice(sizes)
        payload = rng.randbytes(size)
        number, at = packs.append(0, size, payload, bytes(16))
        frames.append((number, at + spec.FRAME_HEADER.size, payload))
        for number_, offset, data in rng.sample(frames, min(3, len(frames))):
            found = packs.read(number_, len(data), offset)
            if found is None:  # a closed pack: on disk
                with open(packs.path(number_), "rb") as f:
                    f.seek(offset)
                    found = f.read(len(data))
            assert found == data
    packs.close()
    assert packs.direct is direct
    return frames


def test_direct_packs_equal_buffered(tmp_path: Path) -> None:
    direct = _write(tmp_path / "direct", True, 7)
    buffered = _write(tmp_path / "buffered", False, 7)
    assert direct == buffered
    names = sorted(p.name for p in (tmp_path / "direct" / spec.PACKS_DIR).iterdir())
    assert len(names) > 1, "the frames span several packs"
    for name in names:
        a = (tmp_path / "direct" / spec.PACKS_DIR / name).read_bytes()
        b = (tmp_path / "buffered" / spec.PACKS_DIR / name).read_bytes()
        assert a == b
    for number, offset, payload in direct:
        data = (tmp_path / "direct" / spec.PACKS_DIR / spec.pack_name(number)).read_bytes()
        assert data[offset : offset + len(payload)] == payload
