"""Every job the compare bench times, as commands: clonebay and its peers on one source disk.

Whole-disk jobs compare with clonebay's whole-disk job; e2image and ntfsclone work on one
partition, so clonebay is also timed on that partition alone and they compare with that.
Clonezilla runs in batch mode (``-b``), text progress (``-nogui``), images in ``WORK/partimag``
(``-or``, instead of /home/partimag), and after restoring skips what would change the target
beyond the copy (no udev rules removed, syslinux, initramfs or EFI NVRAM updated, NTFS dirty flag
left as it is), so its copy can be checked like the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from compare_disk import SourceDisk, part_dev
from compare_jobs import Job, allocated
from measure import Command

REPO = Path(__file__).resolve().parent.parent
CLONEBAY = str(REPO / ".venv" / "bin" / "clonebay")
DIRECT = ("iflag=direct", "oflag=direct")
OCS_RESTORE_FLAGS = ("-j2", "-k0", "-scr", "-icds", "-iefi", "-irhr", "-ius", "-iui", "-irvd")


@dataclass
class Setup:
    """What the jobs run on: the source disk and its loop device, a target, a folder for images."""

    disk: SourceDisk
    source: str  # loop device of the source disk (read-only)
    target: str  # loop device of the target
    target_file: Path  # its backing file (what a run wrote is what it holds)
    images: Path
    clonebay_wrote: list[int] = field(default_factory=list)  # bytes, per clonebay restore run

    def sp(self, n: int) -> str:
        return part_dev(self.source, n)

    def tp(self, n: int) -> str:
        return part_dev(self.target, n)

    def name(self, dev: str) -> str:
        return dev.removeprefix("/dev/")


def _in_folder(folder: Path, commands: list[Command]) -> list[Command]:
    """``commands`` once ``folder`` exists (ocs-sr refuses an ocsroot that does not)."""
    folder.mkdir(parents=True, exist_ok=True)
    return commands


def clone_jobs(s: Setup) -> list[Job]:
    d, src, dst = s.disk, s.source, s.target
    ext4, ntfs = d.part("ext4"), d.part("ntfs")
    whole = {"used": d.used, "target": dst, "check": tuple(d.parts), "check_table": True}
    cb = "clonebay clone"
    partclone = [
        Command.of(["sgdisk", f"--replicate={dst}", src]),
        Command.of(["partx", "-a", dst]),
        *(
            Command.of([p.partclone, "-b", "-q", "-s", s.sp(p.number), "-O", s.tp(p.number)])
            for p in d.parts
        ),
    ]
    ocs = ["ocs-onthefly", "-b", "-nogui", "-f", s.name(src), "-d", s.name(dst)]
    ocs += ["-j2", "-icds", "-iefi", "-irhr", "-ius", "-iui", "-pa", "true"]
    e2, nt = f"{cb} p{ext4.number} (ext4)", f"{cb} p{ntfs.number} (NTFS)"
    sp1, tp1, sp2, tp2 = s.sp(ext4.number), s.tp(ext4.number), s.sp(ntfs.number), s.tp(ntfs.number)
    one = {"target": dst, "table_first": True}
    return [
        Job(cb, "clone", lambda: [Command.of([CLONEBAY, "clone", "--yes", src, dst])], **whole),
        Job(
            f"{cb} --no-verify",
            "clone",
            lambda: [Command.of([CLONEBAY, "clone", "--yes", "--no-verify", src, dst])],
            **whole,
        ),
        Job("partclone -b, each partition", "clone", lambda: partclone, versus=cb, **whole),
        Job(
            "dd bs=4M (whole disk)",
            "clone",
            lambda: [Command.of(["dd", f"if={src}", f"of={dst}", "bs=4M", "status=none"])],
            versus=cb,
            **whole,
        ),
        Job(
            "dd bs=4M O_DIRECT (whole disk)",
            "clone",
            lambda: [Command.of(["dd", f"if={src}", f"of={dst}", "bs=4M", *DIRECT, "status=none"])],
            versus=cb,
            **whole,
        ),
        Job("ocs-onthefly (Clonezilla)", "clone", lambda: [Command.of(ocs)], versus=cb, **whole),
        Job(
            e2,
            "clone",
            lambda: [Command.of([CLONEBAY, "clone", "--yes", sp1, tp1])],
            ext4.used,
            check=(ext4,),
            **one,
        ),
        Job(
            f"e2image -ra p{ext4.number}",
            "clone",
            lambda: [Command.of(["e2image", "-ra", sp1, tp1])],
            ext4.used,
            versus=e2,
            check=(ext4,),
            **one,
        ),
        Job(
            nt,
            "clone",
            lambda: [Command.of([CLONEBAY, "clone", "--yes", sp2, tp2])],
            ntfs.used,
            check=(ntfs,),
            **one,
        ),
        Job(
            f"ntfsclone --overwrite p{ntfs.number}",
            "clone",
            lambda: [Command.of(["ntfsclone", "-q", "--overwrite", tp2, sp2])],
            ntfs.used,
            versus=nt,
            check=(ntfs,),
            **one,
        ),
    ]


def _partclone_save(s: Setup, codec: str) -> Job:
    folder = s.images / f"partclone-{codec}"

    def commands() -> list[Command]:
        folder.mkdir(parents=True, exist_ok=True)
        out = [Command.of(["sgdisk", f"--backup={folder / 'table.sgdisk'}", s.source])]
        for p in s.disk.parts:
            out.append(
                Command.of(
                    [p.partclone, "-c", "-q", "-s", s.sp(p.number), "-o", "-"],
                    [codec, "-1", "-q", "-c"],
                    stdout_file=folder / f"p{p.number}.partclone.{codec}",
                )
            )
        return out

    return Job(
        f"partclone -c \\| {codec} -1", "save", commands, s.disk.used, "clonebay save",
        outputs=[folder],
    )  # fmt: skip


def save_jobs(s: Setup) -> list[Job]:
    d, src, out = s.disk, s.source, s.images
    ext4, ntfs = d.part("ext4"), d.part("ntfs")
    e2, nt = f"clonebay save p{ext4.number} (ext4)", f"clonebay save p{ntfs.number} (NTFS)"
    sp1, sp2 = s.sp(ext4.number), s.sp(ntfs.number)
    ocs = ["ocs-sr", "-b", "-nogui", "-q2", "-j2", "-z9p", "-i", "4096", "-sfsck", "-scs"]
    ocs += ["-senc", "-p", "true", "-or", str(out / "partimag"), "savedisk", "bench", s.name(src)]
    return [
        Job(
            "clonebay save",
            "save",
            lambda: [Command.of([CLONEBAY, "save", src, str(out / "clonebay")])],
            d.used,
            outputs=[out / "clonebay"],
        ),
        _partclone_save(s, "lz4"),
        _partclone_save(s, "zstd"),
        Job(
            "ocs-sr savedisk (Clonezilla, zstd)",
            "save",
            lambda: _in_folder(out / "partimag", [Command.of(ocs)]),
            d.used,
            "clonebay save",
            outputs=[out / "partimag" / "bench"],
        ),
        Job(
            e2,
            "save",
            lambda: [Command.of([CLONEBAY, "save", sp1, str(out / "clonebay-p1")])],
            ext4.used,
            outputs=[out / "clonebay-p1"],
        ),
        Job(
            f"e2image -ra p{ext4.number} (sparse raw file)",
            "save",
            lambda: [Command.of(["e2image", "-ra", sp1, str(out / "e2image.raw")])],
            ext4.used,
            e2,
            outputs=[out / "e2image.raw"],
        ),
        Job(
            nt,
            "save",
            lambda: [Command.of([CLONEBAY, "save", sp2, str(out / "clonebay-p2")])],
            ntfs.used,
            outputs=[out / "clonebay-p2"],
        ),
        Job(
            f"ntfsclone --save-image p{ntfs.number}",
            "save",
            lambda: [
                Command.of(
                    ["ntfsclone", "--save-image", "-q", "-o", str(out / "ntfsclone.img"), sp2]
                )
            ],
            ntfs.used,
            nt,
            outputs=[out / "ntfsclone.img"],
        ),
    ]


def _partclone_restore(s: Setup, codec: str) -> Job:
    folder = s.images / f"partclone-{codec}"

    def commands() -> list[Command]:
        out = [
            Command.of(["sgdisk", f"--load-backup={folder / 'table.sgdisk'}", s.target]),
            Command.of(["partx", "-a", s.target]),
        ]
        for p in s.disk.parts:
            out.append(
                Command.of(
                    [codec, "-d", "-q", "-c", str(folder / f"p{p.number}.partclone.{codec}")],
                    [p.partclone, "-r", "-q", "-s", "-", "-O", s.tp(p.number)],
                )
            )
        return out

    return Job(
        f"{codec} -d \\| partclone -r", "restore", commands, s.disk.used, "clonebay restore",
        target=s.target, check=tuple(s.disk.parts), check_table=True,
        reads=f"partclone -c \\| {codec} -1",
    )  # fmt: skip


def _dd_same_bytes(s: Setup, direct: bool) -> Job:
    """dd writing as many bytes as clonebay restore wrote (from a raw disk image file)."""
    block = 4 << 20

    def commands() -> list[Command]:
        wrote = s.clonebay_wrote[-1] if s.clonebay_wrote else s.disk.used
        count = math.ceil(wrote / block)
        argv = ["dd", f"if={s.disk.path}", f"of={s.target}", "bs=4M", f"count={count}"]
        return [Command.of([*argv, *(DIRECT if direct else ()), "status=none"])]

    name = "dd bs=4M O_DIRECT" if direct else "dd bs=4M"
    return Job(
        f"{name}, the bytes clonebay restore wrote", "restore", commands, s.disk.used,
        "clonebay restore", target=s.target, note="raw bytes only, not a restore: not checked",
        reads="clonebay save",
    )  # fmt: skip


def restore_jobs(s: Setup) -> list[Job]:
    d, dst, out = s.disk, s.target, s.images
    ext4, ntfs = d.part("ext4"), d.part("ntfs")
    e2, nt = f"clonebay restore p{ext4.number} (ext4)", f"clonebay restore p{ntfs.number} (NTFS)"
    tp1, tp2 = s.tp(ext4.number), s.tp(ntfs.number)
    ocs = ["ocs-sr", "-b", "-nogui", *OCS_RESTORE_FLAGS, "-p", "true", "-or", str(out / "partimag")]
    ocs += ["restoredisk", "bench", s.name(dst)]
    whole = {"target": dst, "check": tuple(d.parts), "check_table": True}

    def record_written() -> None:
        s.clonebay_wrote.append(allocated(s.target_file))

    return [
        Job(
            "clonebay restore",
            "restore",
            lambda: [Command.of([CLONEBAY, "restore", "--yes", str(out / "clonebay"), dst])],
            d.used,
            after=record_written,
            reads="clonebay save",
            **whole,
        ),
        _partclone_restore(s, "lz4"),
        _partclone_restore(s, "zstd"),
        _dd_same_bytes(s, direct=True),
        _dd_same_bytes(s, direct=False),
        Job(
            "ocs-sr restoredisk (Clonezilla)",
            "restore",
            lambda: [Command.of(ocs)],
            d.used,
            "clonebay restore",
            reads="ocs-sr savedisk (Clonezilla, zstd)",
            **whole,
        ),
        Job(
            e2,
            "restore",
            lambda: [Command.of([CLONEBAY, "restore", "--yes", str(out / "clonebay-p1"), tp1])],
            ext4.used,
            target=dst,
            table_first=True,
            check=(ext4,),
            reads=f"clonebay save p{ext4.number} (ext4)",
        ),
        Job(
            f"e2image -ra p{ext4.number} back",
            "restore",
            lambda: [Command.of(["e2image", "-ra", str(out / "e2image.raw"), tp1])],
            ext4.used,
            e2,
            target=dst,
            table_first=True,
            check=(ext4,),
            reads=f"e2image -ra p{ext4.number} (sparse raw file)",
        ),
        Job(
            nt,
            "restore",
            lambda: [Command.of([CLONEBAY, "restore", "--yes", str(out / "clonebay-p2"), tp2])],
            ntfs.used,
            target=dst,
            table_first=True,
            check=(ntfs,),
            reads=f"clonebay save p{ntfs.number} (NTFS)",
        ),
        Job(
            f"ntfsclone --restore-image p{ntfs.number}",
            "restore",
            lambda: [
                Command.of(
                    [
                        "ntfsclone",
                        "--restore-image",
                        "-q",
                        "--overwrite",
                        tp2,
                        str(out / "ntfsclone.img"),
                    ]
                )
            ],
            ntfs.used,
            nt,
            target=dst,
            table_first=True,
            check=(ntfs,),
            reads=f"ntfsclone --save-image p{ntfs.number}",
        ),
    ]
