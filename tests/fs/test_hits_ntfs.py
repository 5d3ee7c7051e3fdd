"""What unreadable ranges hit on NTFS, against the truth.

Oracles. File placement comes from tagged content (tests/fs/tagged.py). The owner of a single
cluster comes from ``ntfscluster -c`` (libntfs walks every MFT record), stream and index
runlists from ``ntfsinfo -v``, and MFT record numbers of files from ``ntfsls -i``. The volume
is made by mkntfs and filled through an ntfs-3g mount (root), fragmented by writing a file
into the one-cluster holes that deleted files leave once a filler has taken the free space.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from clonebay.fs.hits import Hit, HitKind, files_hit
from clonebay.system.run import output, run
from tests.fs import tagged
from tests.fs.hitdisks import STREAM, Tagged, build_ntfs
from tests.fs.test_hits import assert_files_only, kinds, named, zeroed_copy

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="ntfs-3g FUSE mounts need root"),
]
CLUSTER = 4096


@pytest.fixture(scope="module")
def ntfs(tmp_path_factory: pytest.TempPathFactory) -> Tagged:
    return build_ntfs(tmp_path_factory.mktemp("ntfs"))


def hits(vol: Tagged, bad: list[tuple[int, int]]) -> list[Hit]:
    return files_hit(str(vol.image), "ntfs", bad)


def runlists(vol: Tagged, *args: str) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """(attribute type, name) -> [(vcn, lcn, clusters)] from ntfsinfo -v."""
    text = output(["ntfsinfo", "-v", *args, str(vol.image)])
    out: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for section in re.split(r"^Dumping attribute ", text, flags=re.M)[1:]:
        atype = section.split()[0]
        name = re.search(r"Attribute name:\s+'([^']*)'", section)
        runs = re.findall(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)$", section, re.M)
        if runs:
            key = (atype, name[1] if name else "")
            out[key] = [(int(v, 16), int(lcn, 16), int(n, 16)) for v, lcn, n in runs]
    return out


def record_numbers(vol: Tagged, folder: str) -> dict[str, int]:
    text = output(["ntfsls", "-i", "-p", folder, str(vol.image)])
    pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
    return {f"{folder.rstrip('/')}/{name}": int(number) for number, name in pairs}


def owner(vol: Tagged, cluster: int) -> str | None:
    """ntfscluster's "/path/$ATTRIBUTE" owning ``cluster``, or None when free."""
    text = output(["ntfscluster", "-f", "-c", f"{cluster}-{cluster}", str(vol.image)])
    found = re.search(r"^Inode \d+ (.*)$", text, re.M)
    return found[1] if found else None


def ranges(vol: Tagged) -> list[tuple[int, int]]:
    return vol.interesting_ranges(tail=f"/docs/report.pdf:{STREAM}")


def test_lost_file_ranges_match_the_tags(ntfs: Tagged) -> None:
    bad = ranges(ntfs)
    found = hits(ntfs, bad)
    assert_files_only(found, ntfs, bad)
    assert f"/docs/report.pdf:{STREAM}" in kinds(found, HitKind.FILE)


def sample_clusters(vol: Tagged) -> list[int]:
    """Clusters of every kind: file data (tags), each system file's and /many's index runs
    (first and last cluster of each), and a few anywhere."""
    rng = random.Random(3)
    where = tagged.locate(vol.image)
    out = rng.sample(sorted({v // CLUSTER for v in where}), 12)
    runs = [r for n in range(12) for r in runlists(vol, "-i", str(n)).values()]
    runs += runlists(vol, "-F", "/many").values()
    for run_list in runs:
        for _, lcn, count in run_list[:3]:
            out += [lcn, lcn + count - 1]
    return sorted({*out, *rng.sample(range(vol.image.stat().st_size // CLUSTER - 1), 6)})


def test_each_owner_matches_ntfscluster(ntfs: Tagged) -> None:
    seen = set()
    for cluster in sample_clusters(ntfs):
        truth = owner(ntfs, cluster)
        found = [h for h in hits(ntfs, [(cluster * CLUSTER, CLUSTER)]) if h.ranges]
        seen.update(h.kind for h in found)
        if truth is None:
            assert {h.kind for h in found} <= {HitKind.FREE, HitKind.METADATA}, (cluster, found)
            continue
        path, _, attribute = truth.rpartition("/")
        path = "/" if path in ("", "/.") else path  # ntfscluster names the root "/."
        if path.startswith("/$"):  # a system file: $MFT, $LogFile, /$Extend/...
            assert all(h.kind is HitKind.METADATA for h in found), (cluster, found)
            assert any(path.rsplit("/", 1)[1] in h.name for h in found), (cluster, found)
            continue
        (hit,) = found
        if attribute.startswith("$INDEX_ALLOCATION"):
            assert (hit.kind, hit.name) == (HitKind.DIRECTORY, path), (cluster, hit)
            continue
        stream = re.fullmatch(r"\$DATA(?:\((.*)\))?", attribute)
        if stream is None:  # another attribute: the file's metadata
            assert hit.kind is HitKind.METADATA and hit.name.endswith(f" of {path}"), (truth, hit)
            continue
        name = path + (f":{stream[1]}" if stream[1] else "")
        assert (hit.kind, hit.name) == (HitKind.FILE, name), (cluster, hit)
        runs = runlists(ntfs, "-F", path)[("$DATA", stream[1] or "")]
        vcn = next(v + cluster - lcn for v, lcn, n in runs if lcn <= cluster < lcn + n)
        assert hit.ranges[0][0] == vcn * CLUSTER, (cluster, hit, runs)
    assert seen >= {HitKind.FILE, HitKind.DIRECTORY, HitKind.METADATA}


def test_index_blocks_of_a_directory(ntfs: Tagged) -> None:
    runs = runlists(ntfs, "-F", "/many")[("$INDEX_ALLOCATION", "$I30")]
    vcn, lcn, _ = runs[2]
    found = hits(ntfs, [(lcn * CLUSTER + 100, 50)])
    assert kinds(found, HitKind.DIRECTORY) == {"/many": ((vcn * CLUSTER + 100, 50),)}


def test_lost_mft_records_name_their_files(ntfs: Tagged) -> None:
    numbers = record_numbers(ntfs, "/many")
    (_, lcn, _), *_ = runlists(ntfs, "-i", "0")[("$DATA", "")]
    first = numbers["/many/entry-0100.txt"]
    count = 4
    bad = [(lcn * CLUSTER + first * 1024, count * 1024)]  # $MFT's first run holds them
    found = hits(ntfs, bad)
    meta = named(found, f"NTFS $MFT records {first}-{first + count - 1}")
    assert meta.ranges == tuple(bad)
    truth = {path for path, n in numbers.items() if first <= n < first + count}
    lost = {h.name: h for h in found if h.kind is HitKind.FILE}
    assert set(lost) == truth
    assert all(h.ranges == () and "MFT record" in h.note for h in lost.values())


def test_lost_mft_record_of_a_directory(ntfs: Tagged) -> None:
    number = record_numbers(ntfs, "/")["/many"]
    (_, lcn, _), *_ = runlists(ntfs, "-i", "0")[("$DATA", "")]
    found = hits(ntfs, [(lcn * CLUSTER + number * 1024 + 100, 10)])
    assert kinds(found, HitKind.DIRECTORY) == {"/many": ()}
    assert f"MFT record ({number}) is unreadable" in named(found, "/many").note


def test_system_files(ntfs: Tagged) -> None:
    logfile = runlists(ntfs, "-i", "2")[("$DATA", "")][0][1]
    bitmap = runlists(ntfs, "-i", "6")[("$DATA", "")][0][1]
    mirror = runlists(ntfs, "-i", "1")[("$DATA", "")][0][1]
    bad = [
        (0, 512),
        (logfile * CLUSTER + 4096 * 3, 100),
        (bitmap * CLUSTER, 10),
        (mirror * CLUSTER, 10),
    ]
    first = ranges(ntfs)[:1]
    found = hits(ntfs, [*bad, *first])
    assert "backup boot sector" in named(found, "NTFS boot sector").note
    assert named(found, "NTFS $LogFile").ranges == (bad[1],)
    assert named(found, "NTFS $Bitmap").ranges == (bad[2],)
    assert named(found, "NTFS $MFTMirr").ranges == (bad[3],)
    assert kinds(found, HitKind.FILE) == ntfs.expected(first)


def test_mft_records_0_to_3_come_from_the_mirror(ntfs: Tagged, tmp_path: Path) -> None:
    (_, lcn, _), *_ = runlists(ntfs, "-i", "0")[("$DATA", "")]
    bad = [(lcn * CLUSTER, 4 * 1024), *ranges(ntfs)]
    copy = zeroed_copy(ntfs.image, bad, tmp_path / "copy.img")
    found = files_hit(str(copy), "ntfs", bad)
    assert named(found, "NTFS $MFT records 0-3").ranges == (bad[0],)
    assert kinds(found, HitKind.FILE) == ntfs.expected(bad[1:])
    assert found == hits(ntfs, bad)


def test_free_space(ntfs: Tagged) -> None:
    bitmap = run(["ntfscat", "-i", "6", str(ntfs.image)]).stdout  # $Bitmap, read by libntfs
    free = next(c for c in range(len(bitmap) * 8) if not bitmap[c // 8] >> (c % 8) & 1)
    assert owner(ntfs, free) is None
    assert [(h.kind, h.name) for h in hits(ntfs, [(free * CLUSTER, 8)])] == [
        (HitKind.FREE, "free space")
    ]
