"""ls and extract on every filesystem of both standard test disks, saved as images: every file
listed and pulled out hashes as the disk factory recorded, and names, modes, owners, times and
symlink targets are what the source filesystem holds (read from the source partition with the
reference tool, tests/browse/truth.py). Nothing stays mounted afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.errors import UsageError
from clonebay.testdisks import disks
from tests.browse.conftest import Saved, needs_root
from tests.browse.truth import comparable, truth, walk

pytestmark = [needs_root, pytest.mark.root]

FS_PARTITIONS = [("gpt", 2), ("gpt", 4), ("gpt", 5), ("mbr", 1), ("mbr", 2), ("mbr", 5), ("mbr", 6)]


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert cli.main([*argv, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return result


def no_mounts_left() -> None:
    with open("/proc/self/mountinfo") as f:
        assert "clonebay/tmp/view-" not in f.read(), "a temporary mount was left behind"


def expected_files(part: disks.BuiltPartition) -> dict[str, str]:
    assert part.tree is not None
    return dict(part.tree.files)


@pytest.mark.parametrize(("kind", "number"), FS_PARTITIONS)
def test_ls_and_extract_match_the_source(  # noqa: PLR0917 (pytest fixtures)
    saved_images: dict[str, Saved],
    source_partitions: dict[tuple[str, int], Path],
    kind: str,
    number: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, image = saved_images[kind]
    part = next(p for p in built.partitions if p.number == number)
    reference = truth(part.fstype, source_partitions[(kind, number)])
    files = {p: m.content for p, m in reference.items() if m.kind == "file"}
    assert files == expected_files(part), "the reference tool disagrees with the factory"

    listed = run_json(["ls", "-R", f"{image}:p{number}", "/"], capsys)
    entries = {e["path"]: e for e in listed["entries"]}  # type: ignore[attr-defined]
    assert set(entries) == set(reference)
    for path, meta in reference.items():
        entry = entries[path]
        assert entry["kind"] == meta.kind, path
        if not part.fstype.startswith("fat"):
            assert (entry["mode"], entry["uid"], entry["gid"]) == meta[2:3] + meta[4:], path
            assert entry["mtime_ns"] == meta.mtime_ns, path
        elif meta.kind == "file":
            assert entry["mtime_ns"] == meta.mtime_ns, path
        if meta.kind == "symlink":
            assert entry["target"] == meta.content, path
    no_mounts_left()

    dest = tmp_path / "out"
    result = run_json(["extract", f"{image}:p{number}", "/", str(dest)], capsys)
    assert result["failed"] == []
    pulled = walk(dest)
    assert {p: m.content for p, m in pulled.items() if m.kind == "file"} == expected_files(part)
    assert {p: comparable(part.fstype, m) for p, m in pulled.items()} == {
        p: comparable(part.fstype, m) for p, m in reference.items()
    }
    if part.fstype.startswith("fat"):  # FAT has no modes: the driver's documented mapping
        assert {m.mode for m in pulled.values() if m.kind == "file"} <= {0o644, 0o444}
        assert {m.mode for m in pulled.values() if m.kind == "dir"} == {0o755}
    no_mounts_left()


def test_extract_single_paths_keeps_names_exactly(
    saved_images: dict[str, Saved], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NTFS names with umlauts, CJK and a 240-character name; a path given through the
    partition folder instead of IMAGE:PART; a single file lands under its own name."""
    built, image = saved_images["gpt"]
    part = next(p for p in built.partitions if p.fstype == "ntfs")
    assert part.tree is not None
    wanted = [p for p in part.tree.files if p.startswith(("Users/Jörg Müller/", "Users/技术员/"))]
    long_name = next(p for p in part.tree.files if len(p.rsplit("/", 1)[-1]) > 200)
    dest = tmp_path / "out"
    argv = ["extract", str(image), "p4-Windows/Users/Jörg Müller", "p4-Windows/Users/技术员"]
    result = run_json([*argv, f"p4-Windows/{long_name}", str(dest)], capsys)
    assert result["failed"] == []
    pulled = walk(dest)
    for path in wanted:
        rel = path.removeprefix("Users/")
        assert pulled[rel].content == part.tree.files[path]
    base = long_name.rsplit("/", 1)[-1]
    assert pulled[base].content == part.tree.files[long_name]
    assert os.path.exists(dest / "Jörg Müller" / "Documents" / "Ångström – Straße ☃.txt")


def test_ls_of_an_image_lists_its_partitions(
    saved_images: dict[str, Saved], capsys: pytest.CaptureFixture[str]
) -> None:
    _, image = saved_images["gpt"]
    result = run_json(["ls", str(image)], capsys)
    folders = {p["folder"]: p["mountable"] for p in result["partitions"]}  # type: ignore[attr-defined]
    assert folders["p2-EFI"] and folders["p4-Windows"] and folders["p5-clonebay"]
    assert not folders["p6-swap"]


def test_ls_refuses_paths_that_climb_out(
    saved_images: dict[str, Saved], capsys: pytest.CaptureFixture[str]
) -> None:
    _, image = saved_images["gpt"]
    assert cli.main(["ls", f"{image}:p5", "../etc"]) == 2
    assert "'..' is not allowed" in capsys.readouterr().err


@needs_root
def test_a_stream_is_refused_with_the_way_out(
    saved_images: dict[str, Saved], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream has no index to seek by: ls, extract and mount say so and name `convert`."""
    stream = tmp_path / "disk.cbs"
    assert cli.main(["convert", str(saved_images["gpt"][1]), str(stream)]) == 0
    capsys.readouterr()
    for argv in (
        ["ls", str(stream)],
        ["extract", f"{stream}:p5", "etc", str(tmp_path / "out")],
        ["mount", str(stream), str(tmp_path / "mnt")],
    ):
        assert cli.main(argv) == UsageError.exit_code, argv
        err = capsys.readouterr().err
        assert "image stream" in err and "clonebay convert" in err, err
    assert not (tmp_path / "out").exists()
