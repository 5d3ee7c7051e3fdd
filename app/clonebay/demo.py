"""``make demo``: build the demo disks, take the command line tour, then start the TUI on them.

The disks are real: filesystems made by mkfs.fat, mkntfs + ntfs-3g, mkfs.ext4 and mkswap, laid
out by sgdisk and sfdisk, in sparse files under ./out/demo (kept between runs; delete the folder
to rebuild). The tour: list this machine's disks, probe both disks, save the GPT disk into a
compressed image, show and verify the image, restore it onto a new, larger disk image with
verification, and probe the result (``--no-tour`` skips it).

Then, on a terminal, the TUI starts on the GPT disk, the MBR disk and an empty disk twice the
GPT disk's size (``--no-tui`` skips it). As root the three files are attached as loop devices
first, so the TUI shows them as the block devices a technician would see (with partitions,
guards and hotplug); they are detached when the TUI exits, also when it leaves because its
terminal went away (tmux killed: tui/app.py), and by the kernel should the demo be killed
(system/loopdev.py). Without root the TUI is given the image files themselves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clonebay import cli
from clonebay.testdisks import disks

HANGUP_CODE = 129  # 128 + SIGHUP, as the TUI exits when its terminal goes


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


def _fresh(path: Path, size: int) -> None:
    """An empty (sparse, all-zero) disk file of ``size`` bytes in place of whatever was there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


def tour(out: Path, gpt: Path, mbr: Path) -> int:
    """The command line tour on the demo disks; returns the first failing exit code, or 0."""
    image, restored = out / "gpt-disk.image", out / "restored-disk.img"
    if image.is_dir():
        shutil.rmtree(image)
    _fresh(restored, gpt.stat().st_size + (256 << 20))  # a bigger blank target disk
    steps = [
        ["list"],
        ["probe", str(gpt)],
        ["probe", str(mbr)],
        ["save", "--dry-run", str(gpt), str(image)],
        ["save", str(gpt), str(image)],
        ["info", str(image)],
        ["verify", str(image)],
        ["restore", "--yes", "--verify", str(image), str(restored)],
        ["probe", str(restored)],
    ]
    for argv in steps:
        print(f"\n$ clonebay {' '.join(argv)}", flush=True)
        code = cli.main(argv)
        if code:
            return code
    return 0


def tui(out: Path, disk_files: list[Path]) -> int:
    """The TUI on ``disk_files``: as loop devices when root, as files otherwise."""
    from clonebay.tui.app import run_tui

    paths = [str(p) for p in disk_files]
    if os.geteuid() != 0:
        print("not root: the TUI gets the disk image files themselves")
        return run_tui(paths, image_dir=str(out))
    from clonebay.system.loopdev import attached

    with attached(paths) as devices:
        for path, dev in zip(paths, devices, strict=True):
            print(f"{path} is attached as {dev}")
        return run_tui(devices, image_dir=str(out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clonebay.demo", description=__doc__)
    parser.add_argument("--out", default="out/demo", help="folder for the demo disks and images")
    parser.add_argument("--no-tour", action="store_true", help="skip the command line tour")
    parser.add_argument("--no-tui", action="store_true", help="do not start the TUI")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpt, mbr = out / "gpt-disk.img", out / "mbr-disk.img"
    _build(gpt, "gpt")
    if not args.no_tour:
        _build(mbr, "mbr")
        code = tour(out, gpt, mbr)
        if code:
            return code
    if args.no_tui or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return 0
    blank = out / "blank-target.img"
    _fresh(blank, gpt.stat().st_size * 2)  # an empty disk to clone or restore onto
    if not args.no_tour:
        try:
            input("\nPress Enter to try the same disks in the TUI (q quits)... ")
        except EOFError:  # the terminal went away during the tour: nothing is attached yet
            return HANGUP_CODE
    return tui(out, [p for p in (gpt, mbr, blank) if p.exists()])


if __name__ == "__main__":
    sys.exit(main())
