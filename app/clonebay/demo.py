"""``make demo``: build the two standard test disks and show what clonebay sees in them.

The disks are real: filesystems made by mkfs.fat, mkntfs + ntfs-3g, mkfs.ext4 and mkswap, laid
out by sgdisk and sfdisk, in sparse files under ./out/demo (kept between runs; delete the folder
to rebuild). Then it lists this machine's disks and probes both images, as a technician would
with ``clonebay list`` and ``clonebay probe``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from clonebay import cli
from clonebay.testdisks import disks


def _build(path: Path, maker: str) -> None:
    if path.exists():
        print(f"using {path} (delete it to rebuild)")
        return
    started = time.monotonic()
    partial = path.with_suffix(".partial")
    builder = disks.gpt_disk if maker == "gpt" else disks.mbr_disk
    built = builder(partial, disks.QUICK, work=path.parent)
    partial.rename(path)
    files = sum(len(p.tree.files) for p in built.partitions if p.tree)
    print(
        f"built {path}: {built.table}, {len(built.partitions)} partitions, {files} files"
        f" in {time.monotonic() - started:.0f} s"
    )


def main() -> int:
    out = Path("out/demo")
    out.mkdir(parents=True, exist_ok=True)
    gpt, mbr = out / "gpt-disk.img", out / "mbr-disk.img"
    _build(gpt, "gpt")
    _build(mbr, "mbr")
    steps = [["list"], ["probe", str(gpt)], ["probe", str(mbr)]]
    for argv in steps:
        print(f"\n$ clonebay {' '.join(argv)}", flush=True)
        code = cli.main(argv)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
