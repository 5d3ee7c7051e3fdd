"""``make demo``: build the two standard test disks, then do what a technician does with them.

The disks are real: filesystems made by mkfs.fat, mkntfs + ntfs-3g, mkfs.ext4 and mkswap, laid
out by sgdisk and sfdisk, in sparse files under ./out/demo (kept between runs; delete the folder
to rebuild). Then: list this machine's disks, probe both images, save the GPT disk into a
compressed image, show and verify the image, restore it onto a new, larger disk image with
verification, and probe the result. On a terminal it then starts the TUI on the same disks
and a blank target (``--no-tui`` skips that).
"""

from __future__ import annotations

import shutil
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
    image, restored = out / "gpt-disk.image", out / "restored-disk.img"
    for old in (image, restored):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    with open(restored, "wb") as f:  # a bigger blank target disk
        f.truncate(gpt.stat().st_size + (256 << 20))
    steps = [
        ["list"],
        ["probe", str(gpt)],
        ["probe", str(mbr)],
        ["save", "--dry-run", str(gpt), str(image)],
        ["save", str(gpt), str(image)],
        ["info", str(image)],
        ["verify", str(image)],
        ["restore", "--verify", str(image), str(restored)],
        ["probe", str(restored)],
    ]
    for argv in steps:
        print(f"\n$ clonebay {' '.join(argv)}", flush=True)
        code = cli.main(argv)
        if code:
            return code
    if sys.stdin.isatty() and sys.stdout.isatty() and "--no-tui" not in sys.argv:
        blank = out / "blank-target.img"
        with open(blank, "wb") as f:  # an empty disk to clone or restore onto
            f.truncate(gpt.stat().st_size * 2)
        input("\nPress Enter to try the same disks in the TUI (q quits)... ")
        from clonebay.tui.app import run_tui

        return run_tui([str(gpt), str(mbr), str(blank)], image_dir=str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
