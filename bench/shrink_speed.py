"""What a shrink costs: `clonebay clone` of a GPT disk (ESP, MSR, NTFS, ext4, swap) onto a disk
of the same size, against the same clone onto a disk of 55 % of the source (the NTFS and the
ext4 shrunk in copy-on-write views), against FOG's way of getting onto a smaller disk: shrink
the source's filesystems in place with ntfsresize and resize2fs (here on a copy of the source,
made before the timing: FOG writes the source itself), then `partclone.<fs> -b` each partition
onto the target at its new place, then write the new table with sfdisk. Caches are dropped
before each run; every target is a fresh sparse file.

The NTFS (a Windows-like tree and a page file) and the ext4 (a /usr-like tree and a big file)
are about 30 % used, as on a laptop moving from a 1 TB HDD to a 500 GB SSD.

    .venv/bin/python bench/shrink_speed.py [--size-gib 4] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from clone_speed import fresh_target
from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.table_write import sfdisk_script
from clonebay.testdisks import disks
from measure import Command, Result, drop_caches, machine, run_pipeline, table

CLONEBAY = str(Path(sys.executable).with_name("clonebay"))
GIB = 1 << 30
MIB = 1 << 20


def build(work: Path, size_gib: int) -> disks.BuiltDisk:
    """The factory's GPT disk with NTFS and ext4 of ``size_gib`` each, about 30 % used."""
    scale = disks.Scale(
        esp=260 * MIB,
        ntfs=size_gib * GIB,
        ext=size_gib * GIB,
        swap=256 * MIB,
        unknown=8 * MIB,
        ntfs_files=20_000,
        pagefile=size_gib * GIB // 5,
        usr_files=30_000,
        big_file=size_gib * GIB // 5,
    )
    path = work / "source.img"
    if not path.exists():
        disks.gpt_disk(path, scale, work=work)
    return disks.BuiltDisk(path, "gpt", path.stat().st_size)


def fog_script(
    original: Path, source: Path, target: Path, work: Path, plan_text_target: Path
) -> Path:
    """FOG's way as a shell script: resize the (copied) source's filesystems in place, then
    partclone each used partition onto the target at the place clonebay's plan gives it."""
    report = inspect_disk(str(original))
    planned = inspect_disk(str(plan_text_target))  # a clonebay shrink clone made beforehand
    new = {p.number: p for p in planned.table.partitions}
    lines = ["set -e", "trap 'losetup -d $S $D 2>/dev/null || true' EXIT"]
    for pr in report.partitions:
        part, vol = pr.partition, pr.volume
        dst = new[part.number]
        src_loop = f"$(losetup -f --show -o {part.start} --sizelimit {part.size} {source})"
        dst_loop = f"$(losetup -f --show -o {dst.start} --sizelimit {dst.size} {target})"
        lines.append(f"S={src_loop}; D={dst_loop}")
        fs = vol.fstype if vol else ""
        if fs == "ntfs" and dst.size < part.size:
            lines.append(f"ntfsresize --force --no-progress-bar --size {dst.size} $S > /dev/null")
        elif fs.startswith("ext") and dst.size < part.size:
            lines.append("e2fsck -f -y $S > /dev/null || true")
            lines.append(f"resize2fs $S {dst.size // 1024}K > /dev/null 2>&1")
        if fs == "ntfs":
            lines.append("partclone.ntfs -b -q -F -s $S -O $D")  # ntfsresize left it dirty
        elif fs.startswith("ext"):
            lines.append("partclone.extfs -b -q -s $S -O $D")
        elif fs == "fat32":
            lines.append("partclone.fat32 -b -q -s $S -O $D")
        else:
            count = min(part.size, dst.size) // MIB
            lines.append(f"dd if=$S of=$D bs=1M status=none count={count}")
        lines.append("losetup -d $S $D")
    script = sfdisk_script(planned.table, "/dev/xdisk")
    lines.append(f"sfdisk --quiet --wipe never --no-reread --no-tell-kernel {target} <<'EOF'")
    lines.append(script.rstrip("\n"))
    lines.append("EOF")
    path = work / "fog.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work/shrink"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    built = build(args.work, args.size_gib)
    small_size = built.size * 55 // 100 // 512 * 512
    same, small = args.work / "same.img", args.work / "small.img"
    shrunk_copy = args.work / "fog-source.img"
    fresh_target(small, small_size)  # the layout FOG's way copies onto: clonebay's own plan
    run_pipeline(
        Command.of((CLONEBAY, "clone", "--yes", str(built.path), str(small))), args.work / "log"
    )
    layout = args.work / "layout.img"
    shutil.copyfile(small, layout)
    used = sum(pr.volume.used_bytes for pr in inspect_disk(str(built.path)).partitions if pr.volume)
    fog = fog_script(built.path, shrunk_copy, small, args.work, layout)
    rows_in = [
        (
            "clonebay clone, same size",
            same,
            built.size,
            (CLONEBAY, "clone", "--yes", str(built.path), str(same)),
        ),
        (
            "clonebay clone, 55 % (shrink)",
            small,
            small_size,
            (CLONEBAY, "clone", "--yes", str(built.path), str(small)),
        ),
        ("FOG's way: resize the source, partclone -b", small, small_size, ("bash", str(fog))),
    ]
    print(
        f"## shrink clone, GPT disk of {built.size / GIB:.1f} GiB onto {small_size / GIB:.1f} GiB\n"
    )
    print(f"{machine()}; median of {args.runs}; {used / GIB:.2f} GiB in use\n")
    results = []
    for name, target, size, argv in rows_in:
        result = Result(name, " ".join(argv))
        for _ in range(args.runs):
            fresh_target(target, size)
            if argv[0] == "bash":
                shutil.copyfile(built.path, shrunk_copy)  # FOG writes its source: a copy here
            drop_caches()
            result.samples.append(run_pipeline(Command.of(argv), args.work / "log"))
        results.append(result)
    base = results[0].seconds
    rows = [
        (
            r.name,
            f"{r.seconds:.1f}",
            r.spread(),
            f"{used / r.seconds / 1e6:.0f}",
            f"{r.seconds / base:.2f}",
        )
        for r in results
    ]
    print(table(("method", "s", "min-max s", "MB/s used", "time / plain clone"), rows))
    for path in (same, small, shrunk_copy, layout):
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
