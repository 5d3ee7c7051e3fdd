"""``save --shrink`` (issue 16): the image holds the smallest disk that takes the data, an
ordinary image of a smaller disk, so it restores as it is onto a disk of that size (also as a
stream), and onto a larger one with growth; the source is never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine import jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, assert_grown_disk, sha256_range
from tests.shrink.checks import assert_shrunk_disk


@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_save_shrink_then_restore_at_its_size_and_larger(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], kind: str, tmp_path: Path
) -> None:
    built, digest = roomy[kind]
    image = tmp_path / "shrunk.image"
    assert cli.main(["save", "--shrink", str(built.path), str(image)]) == 0
    assert sha256_range(built.path, 0, built.size) == digest, "the source was written"
    manifest = json.loads((image / "manifest.json").read_text())
    size = manifest["source"]["size"]
    assert size < built.size * 45 // 100, (size, built.size)
    said = " ".join(manifest["warnings"])
    assert "saved shrunk" in said and "shrunk from" in said, said
    assert jobs.verify_image(str(image)).ok
    # onto a disk of exactly its size: as it is
    exact = tmp_path / "exact.img"
    assert cli.main(["restore", "--yes", "--verify", str(image), str(exact)]) == 0
    assert exact.stat().st_size == size
    assert_shrunk_disk(exact, built, tmp_path)
    # the same as a stream (a stream cannot shrink; it does not need to)
    stream = tmp_path / "shrunk.cbs"
    jobs.convert(str(image), str(stream))
    streamed = sparse_file(tmp_path / "streamed.img", size)
    assert cli.main(["restore", "--yes", str(stream), str(streamed)]) == 0
    assert sha256_range(streamed, 0, size) == sha256_range(exact, 0, size)
    # onto the source's size, grown (the MBR disk's shrunk volumes are under 64 MiB, which
    # the growth rule leaves as they are: layout/plan.py)
    larger = sparse_file(tmp_path / "larger.img", built.size)
    assert cli.main(["restore", "--yes", "--grow", "last", str(image), str(larger)]) == 0
    if kind == "gpt":
        assert_grown_disk(larger, built, tmp_path)
    else:
        layout = {p.number: (p.start, p.size) for p in inspect_disk(str(larger)).table.partitions}
        assert_disk_matches(larger, built, tmp_path, layout)


def test_save_shrink_refuses_a_single_partition(
    roomy: dict[str, tuple[disks.BuiltDisk, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, _ = roomy["gpt"]
    image = tmp_path / "p5.image"
    argv = ["save", "--shrink", "--partition", "5", str(built.path), str(image)]
    assert cli.main(argv) == 2
    assert "whole disk" in capsys.readouterr().err
    assert not image.exists()
