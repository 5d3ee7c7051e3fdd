"""Save and restore speed and image size: clonebay against partclone, ntfsclone, e2image and dd,
on the same half-full ext4 and NTFS volumes in the same run.

    .venv/bin/python bench/save_restore.py [--size-gib 4] [--runs 3] [--work DIR]

Every tool reads the same bare filesystem image (bench/volumes.py). Before each run the previous
output is deleted, caches are dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``) and the
machine is left idle for ``--settle`` seconds, so that every run starts from the same memory state
(on a VM with free page reporting, like the bench machine, that state changes timings by 2-3x:
bench/measure.py says why). Each time includes a final ``sync``. The methods take turns (run 1 of
every method, then run 2, ...) so that drift in the host's disk speed hits them alike; the median
is reported. MB/s is of USED data: the bytes ``partclone.<fs> -D`` marks as used, the same
denominator for every tool (dd is also given per volume size, since it copies everything).
"clonebay speed / this" is this method's time over clonebay's (above 1: clonebay is faster);
"clonebay size / this" is clonebay's image size over this output's (below 1: clonebay's is smaller).

Restore targets are new sparse files each run. clonebay creates its target itself and writes
only the chunks its image holds (no zeros, no free space); partclone -r, ntfsclone -r and e2image
write used blocks only and seek over the rest; dd writes every byte. The "target on disk" column
shows what each one wrote, and the last target of each method is compared with the source.
Prints markdown; needs root (drop_caches), partclone, lz4, ntfs-3g (ntfsclone), e2fsprogs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from measure import (
    MB,
    QUIET,
    Command,
    Pace,
    Result,
    git_revision,
    machine,
    run_pipeline,
    table,
    tool_versions,
)
from volumes import GIB, BenchVolume, on_disk_bytes, remove_tree, volume

REPO = Path(__file__).resolve().parent.parent
CLONEBAY = str(REPO / ".venv" / "bin" / "clonebay")
DIRECT = ("iflag=direct", "oflag=direct")  # dd without the page cache, as DESIGN §8's peer


@dataclass
class Method:
    """One way to save or restore: its command, what it creates, and how to prepare a run."""

    name: str
    command: Command
    outputs: list[Path]  # deleted before each run; what the run leaves behind
    prepare: Callable[[], None] = lambda: None
    result: Result = field(init=False)
    notes: list[str] = field(default_factory=list)  # clonebay's own progress reports, per run

    def __post_init__(self) -> None:
        self.result = Result(self.name, self.command.text())


def save_methods(vol: BenchVolume, out: Path) -> list[Method]:
    src, pc = vol.path, vol.partclone
    methods = [
        Method(
            "clonebay save",
            Command.of([CLONEBAY, "save", src, str(out / "clonebay"), "--json"]),
            [out / "clonebay"],
        ),
        Method(
            f"{pc} -c \\| lz4 -1",
            Command.of(
                [pc, "-c", "-q", "-s", src, "-o", "-"],
                ["lz4", "-1", "-q", "-c"],
                stdout_file=out / "partclone.lz4",
            ),
            [out / "partclone.lz4"],
        ),
        Method(
            f"{pc} -c (uncompressed)",
            Command.of([pc, "-c", "-q", "-s", src, "-o", str(out / "partclone.img")]),
            [out / "partclone.img"],
        ),
    ]
    if vol.fstype == "ntfs":
        nc = out / "ntfsclone.img"
        methods.append(
            Method(
                "ntfsclone --save-image",
                Command.of(["ntfsclone", "--save-image", "-q", "-o", str(nc), src]),
                [nc],
            )
        )
    else:
        e2 = out / "e2image.img"
        methods.append(
            Method(
                "e2image -ra (sparse raw)", Command.of(["e2image", "-ra", "-p", src, str(e2)]), [e2]
            )
        )
    dd = out / "dd.img"
    methods.append(
        Method(
            "dd bs=4M (whole volume)",
            Command.of(["dd", f"if={src}", f"of={dd}", "bs=4M", "status=none"]),
            [dd],
        )
    )
    direct = out / "dd-direct.img"
    methods.append(
        Method(
            "dd bs=4M O_DIRECT (whole volume)",
            Command.of(["dd", f"if={src}", f"of={direct}", "bs=4M", *DIRECT, "status=none"]),
            [direct],
        )
    )
    return methods


def _fresh_target(path: Path, size: int) -> Callable[[], None]:
    def prepare() -> None:
        path.unlink(missing_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)

    return prepare


def restore_methods(vol: BenchVolume, out: Path) -> list[Method]:
    pc, target = vol.partclone, out / "target.img"
    fresh = _fresh_target(target, vol.size)
    methods = [
        Method(
            "clonebay restore",
            Command.of(
                [CLONEBAY, "restore", "--yes", str(out / "clonebay"), str(target), "--json"]
            ),
            [target],
        ),
        Method(
            f"lz4 -d \\| {pc} -r",
            Command.of(
                ["lz4", "-d", "-q", "-c", str(out / "partclone.lz4")],
                [pc, "-r", "-q", "-s", "-", "-O", str(target)],
            ),
            [target],
            fresh,
        ),
        Method(
            f"{pc} -r (uncompressed)",
            Command.of([pc, "-r", "-q", "-s", str(out / "partclone.img"), "-O", str(target)]),
            [target],
            fresh,
        ),
    ]
    if vol.fstype == "ntfs":
        methods.append(
            Method(
                "ntfsclone --restore-image",
                Command.of(
                    [
                        "ntfsclone",
                        "--restore-image",
                        "-q",
                        "-O",
                        str(target),
                        str(out / "ntfsclone.img"),
                    ]
                ),
                [target],
                fresh,
            )
        )
    else:
        methods.append(
            Method(
                "e2image -ra (from its raw image)",
                Command.of(["e2image", "-ra", "-p", str(out / "e2image.img"), str(target)]),
                [target],
                fresh,
            )
        )
    methods.append(
        Method(
            "dd bs=4M back",
            Command.of(["dd", f"if={out / 'dd.img'}", f"of={target}", "bs=4M", "status=none"]),
            [target],
            fresh,
        )
    )
    methods.append(
        Method(
            "dd bs=4M O_DIRECT back",
            Command.of(
                ["dd", f"if={out / 'dd.img'}", f"of={target}", "bs=4M", *DIRECT, "status=none"]
            ),
            [target],
            fresh,
        )
    )
    return methods


def pipeline_report(log: Path) -> str:
    """What clonebay's --json progress lines said: the stage it named last, its own final MB/s
    (inside the pipeline: no interpreter start, probe or final fsync), and how often each stage
    was named."""
    counts: dict[str, int] = {}
    last, rate = "", 0.0
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "progress":
            last = str(event.get("bottleneck", ""))
            rate = float(event.get("bytes_per_second", 0)) / MB
            counts[last] = counts.get(last, 0) + 1
    if not last:
        return "no progress lines"
    seen = ", ".join(f"{k} {v}x" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{last}, {rate:.0f} MB/s in the pipeline (lines: {seen})"


def run_rounds(
    methods: list[Method],
    runs: int,
    logs: Path,
    tag: str,
    *,
    after_last: Callable[[Method], None] | None = None,
    pace: Pace,
) -> None:
    """Run every method ``runs`` times, taking turns; ``after_last`` sees each final output."""
    for i in range(runs):
        for m in methods:
            for path in m.outputs:
                remove_tree(path)
            m.prepare()
            busy = pace.before_run()
            slug = re.sub(r"[^a-z0-9]+", "-", m.name.lower()).strip("-")
            log = logs / f"{tag}-{slug}-run{i + 1}.log"
            log.unlink(missing_ok=True)
            sample = run_pipeline(m.command, log)
            sample.busy_before = busy
            m.result.samples.append(sample)
            print(
                f"  {tag} run {i + 1}/{runs}: {m.name}: {sample.synced_seconds:.1f} s"
                f" (CPU busy before: {busy:.0%}; others' CPU during: "
                f"{sample.other_cpu_seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            if m.name.startswith("clonebay"):
                m.notes.append(f"run {i + 1}: {pipeline_report(log)}")
            if i == runs - 1 and after_last:
                after_last(m)


def size_of(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk) of a file or every file under a folder."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files), on_disk_bytes(files)


def check_target(vol: BenchVolume, target: Path) -> str:
    """Whether ``target`` equals the source byte for byte; if not, where and what fsck says."""
    same = subprocess.run(["cmp", "-s", vol.path, str(target)], check=False).returncode == 0
    if same:
        return "identical to source"
    listed = subprocess.run(
        ["cmp", "-l", vol.path, str(target)], check=False, capture_output=True, text=True
    ).stdout.split("\n")
    offsets = [int(ln.split()[0]) - 1 for ln in listed if ln.strip()]
    argv = (
        ["e2fsck", "-fn", str(target)] if vol.fstype == "ext4" else ["ntfsfix", "-n", str(target)]
    )
    fsck = subprocess.run(argv, check=False, capture_output=True, text=True)
    return (
        f"{len(offsets)} bytes differ in {offsets[0]:#x}-{offsets[-1]:#x};"
        f" `{shlex.join(argv[:-1])}` exit {fsck.returncode}"
    )


def rate(vol: BenchVolume, name: str, seconds: float) -> str:
    """MB/s of used data (and of the whole volume for dd, which copies all of it)."""
    text = f"{vol.used / seconds / MB:.0f}"
    if name.startswith("dd"):
        text += f" ({vol.size / seconds / MB:.0f} of volume)"
    return text


TIMING = ["method", "s", "min-max s", "s to exit", "CPU s", "others' CPU s", "MB/s used"]


def timing_row(vol: BenchVolume, m: Method, base: Result) -> list[str]:
    r = m.result
    return [
        m.name,
        f"{r.seconds:.1f}",
        r.spread(),
        f"{r.exit_seconds:.1f}",
        f"{r.cpu:.1f}",
        f"{r.other_cpu:.1f}",
        rate(vol, m.name, r.seconds),
        f"{r.seconds / base.seconds:.2f}",
    ]


def save_section(vol: BenchVolume, saves: list[Method], out: Path, runs: int) -> list[str]:
    base, base_size = saves[0].result, size_of(saves[0].outputs[0])[0]
    rows = []
    for m in saves:
        apparent, disk = size_of(m.outputs[0])
        sizes = [
            f"{apparent / MB:.0f}",
            f"{disk / MB:.0f}",
            f"{base_size / min(apparent, disk):.2f}",
        ]
        rows.append(timing_row(vol, m, base) + sizes)
    headers = [*TIMING, "clonebay speed / this", "output MB", "on disk MB", "clonebay size / this"]
    info = json.loads(
        subprocess.run(
            [CLONEBAY, "info", str(out / "clonebay"), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    region = info["regions"][0]
    return [
        f"Save (median of {runs}; s include the final sync):",
        "",
        table(headers, rows),
        "",
        f"clonebay: copy method `{region['copy']}`, map {region['used_bytes']} bytes"
        f" (partclone -D: {vol.used}), stored {region['stored_bytes'] / MB:.0f} MB in packs."
        f" Bottleneck it reported last: {'; '.join(saves[0].notes)}",
        "",
    ]


def busy_note(methods: list[Method]) -> list[str]:
    """A line naming the runs that started while other processes kept the CPUs busy."""
    busy = [
        f"{m.name} run {i + 1} ({s.busy_before:.0%})"
        for m in methods
        for i, s in enumerate(m.result.samples)
        if s.busy_before >= QUIET
    ]
    if not busy:
        return []
    return [f"Runs that started while other processes kept the CPUs busy: {', '.join(busy)}.", ""]


def report_volume(vol: BenchVolume, out: Path, runs: int, logs: Path, pace: Pace) -> list[str]:
    """Measure save and restore on one volume; markdown lines."""
    lines = [
        f"### {vol.fstype}: {vol.size / GIB:.0f} GiB volume, "
        f"{vol.used / GIB:.2f} GiB used ({vol.used / vol.size:.0%}), "
        f"{vol.files} files incl. a {vol.big_file / GIB:.2f} GiB random file",
        "",
    ]
    saves = save_methods(vol, out)
    run_rounds(saves, runs, logs, f"{vol.fstype}-save", pace=pace)
    lines += save_section(vol, saves, out, runs) + busy_note(saves)

    checks: dict[str, str] = {}
    written: dict[str, int] = {}

    def after_last(m: Method) -> None:
        written[m.name] = size_of(m.outputs[0])[1]
        checks[m.name] = check_target(vol, m.outputs[0])

    restores = restore_methods(vol, out)
    run_rounds(restores, runs, logs, f"{vol.fstype}-restore", after_last=after_last, pace=pace)
    base = restores[0].result
    rows = [
        [*timing_row(vol, m, base), f"{written[m.name] / MB:.0f}", checks[m.name]] for m in restores
    ]
    headers = [*TIMING, "clonebay speed / this", "target MB on disk", "last target"]
    lines += [
        f"Restore to a new sparse file (median of {runs}; s include the final sync):",
        "",
        table(headers, rows),
        "",
        f"clonebay restore reported (its bottleneck field is always 'write'):"
        f" {'; '.join(restores[0].notes)}",
        "",
        *busy_note(restores),
        "Commands:",
        "",
    ]
    lines += [f"- `{m.command.text()}`" for m in saves + restores]
    lines.append("")
    for m in restores:
        remove_tree(m.outputs[0])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    parser.add_argument(
        "--fs",
        choices=["ext4", "ntfs"],
        action="append",
        help="only this filesystem (repeatable; default both)",
    )
    parser.add_argument(
        "--sparse-source",
        action="store_true",
        help="keep the volumes' free space as holes (reads of it cost no I/O)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the saved images")
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="seconds of quiet after dropping caches before each run (see bench/measure.py)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=90.0,
        help="seconds to wait before each run for other processes to leave the CPUs idle",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    lines = [
        f"## save / restore, {args.size_gib} GiB volumes",
        "",
        f"{machine()}; clonebay {git_revision(REPO)}",
        "",
    ]
    versions = tool_versions(
        [
            ["partclone.extfs", "-v"],
            ["lz4", "--version"],
            ["ntfsclone", "--version"],
            ["e2image"],
            ["dd", "--version"],
        ]
    )
    lines += ["Tools: " + "; ".join(v.strip("* ") for v in versions), ""]
    for fstype in args.fs or ["ext4", "ntfs"]:
        print(f"building or reusing the {fstype} volume in {work}", file=sys.stderr, flush=True)
        vol = volume(fstype, args.size_gib, work, sparse=args.sparse_source)
        out = work / f"save-restore-{fstype}"
        logs = work / "logs"
        out.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        try:
            lines += report_volume(vol, out, args.runs, logs, Pace(args.settle, args.max_wait))
        finally:
            if not args.keep:
                remove_tree(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
