"""How fast clonebay maps the used blocks of a multi-GiB, half-full ext4 and NTFS volume,
against partclone's own mapping (`partclone.<fs> -D`, which reads the same bitmaps), on the same
images in the same run. Caches are dropped before every timed run when running as root.

    .venv/bin/python bench/map_speed.py [--size-gib 4] [--work DIR] [--runs 3]

Prints a table and the ratios (partclone time / clonebay time: above 1 means clonebay is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clonebay.fs import ext as ext_fs
from clonebay.fs import extents
from clonebay.fs import ntfs as ntfs_fs
from clonebay.system.blockdev import FileSource
from clonebay.testdisks import ext, ntfs, tree

GIB = 1 << 30


def drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        drop_caches()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def partclone_map(tool: str, image: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [tool, "-D", "-s", str(image), "-o", f"{tmp}/domain", "-q"],
            check=True,
            capture_output=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    size = args.size_gib * GIB
    half = size // 2
    images = {}
    ext_img = args.work / f"ext4-{args.size_gib}g.img"
    if not ext_img.exists():
        files = tree.usr_tree(args.work / "usr", 40_000, half - 300 * (1 << 20))
        ext.build_ext(ext_img, size, files, variant="ext4")
    images["ext4"] = (ext_img, "partclone.extfs", ext_fs.probe)
    ntfs_img = args.work / f"ntfs-{args.size_gib}g.img"
    if not ntfs_img.exists():
        files = tree.windows_tree(args.work / "win", 20_000, half - 200 * (1 << 20))
        ntfs.build_ntfs(ntfs_img, size, files, label="Windows", start_sector=2048)
    images["ntfs"] = (ntfs_img, "partclone.ntfs", ntfs_fs.probe)

    print("| fs | volume | used | clonebay map | partclone -D | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (image, tool, probe) in images.items():
        with FileSource(str(image)) as src:
            volume = probe(src)
            ours = timed(lambda src=src, probe=probe: probe(src), args.runs)  # type: ignore[misc]
        theirs = timed(lambda tool=tool, image=image: partclone_map(tool, image), args.runs)  # type: ignore[misc]
        print(
            f"| {name} | {image.stat().st_size / GIB:.0f} GiB"
            f" | {extents.total(volume.used) / GIB:.2f} GiB"
            f" | {ours * 1000:.0f} ms | {theirs * 1000:.0f} ms | {theirs / ours:.1f}x |"
        )


if __name__ == "__main__":
    main()
