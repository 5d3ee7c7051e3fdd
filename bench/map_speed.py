"""How fast clonebay maps the used blocks of a multi-GiB, half-full ext4 and NTFS volume,
against partclone's own mapping (``partclone.<fs> -D``, which reads the same bitmaps), on the same
images in the same run. Caches are dropped before every timed run (as root).

    .venv/bin/python bench/map_speed.py [--size-gib 4] [--work DIR] [--runs 3]

clonebay's probe runs in this process (no interpreter start-up, which a ``clonebay probe`` command
would add: see the "clonebay probe command" column); partclone is a process of its own. Prints a
markdown table and the ratios (partclone time / clonebay time: above 1 means clonebay is faster),
and checks that clonebay's map covers partclone's.

partclone 0.3.23 often spends a fixed ~2 s at exit joining a progress thread that sleeps 2 s
(seen with strace: clock_nanosleep 2.000 s, even with -q), so its median wall time measures
that sleep rather than its mapping; the "min" ratio compares the fastest runs (which miss it on
small volumes), and the CPU column compares the work done.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clonebay.fs import ext as ext_fs
from clonebay.fs import extents
from clonebay.fs import ntfs as ntfs_fs
from clonebay.model import Extent, Volume
from clonebay.system.blockdev import FileSource
from measure import drop_caches, git_revision, machine, table
from volumes import GIB, BenchVolume, volume

REPO = Path(__file__).resolve().parent.parent
CLONEBAY = str(REPO / ".venv" / "bin" / "clonebay")
PROBES: dict[str, Callable[[FileSource], Volume]] = {"ext4": ext_fs.probe, "ntfs": ntfs_fs.probe}


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` calls of ``fn``, caches dropped before each."""
    walls, cpus = [], []
    for _ in range(runs):
        drop_caches()
        cpu = cpu_seconds()
        started = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - started)
        cpus.append(cpu_seconds() - cpu)
    return walls, cpus


def partclone_domain(tool: str, image: Path, out: Path) -> None:
    out.unlink(missing_ok=True)  # partclone refuses to overwrite its output (EEXIST)
    subprocess.run(
        [tool, "-D", "-q", "-s", str(image), "-o", str(out)], check=True, capture_output=True
    )


def parse_domain(text: str) -> tuple[Extent, ...]:
    """The '+' runs of a ddrescue domain map (the first data line is the current position)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    runs = []
    for line in lines[1:]:
        pos, size, status = line.split()[:3]
        if status == "+":
            runs.append(Extent(int(pos, 16), int(size, 16)))
    return extents.normalize(runs)


def measure(vol: BenchVolume, runs: int) -> list[object]:
    image = Path(vol.path)
    probe = PROBES[vol.fstype]
    with FileSource(str(image)) as src:
        ours_vol = probe(src)
        ours, ours_cpu = timed(lambda: probe(src), runs)
    cli, _ = timed(
        lambda: subprocess.run([CLONEBAY, "probe", str(image)], check=True, capture_output=True),
        runs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        domain = Path(tmp) / "domain"
        theirs, theirs_cpu = timed(lambda: partclone_domain(vol.partclone, image, domain), runs)
        oracle = parse_domain(domain.read_text())
    missing = extents.subtract(oracle, ours_vol.used)
    extra = extents.total(ours_vol.used) - extents.total(oracle)
    check = "covers" if not missing else f"MISSES {extents.total(missing)} bytes"
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return [
        vol.fstype,
        f"{vol.size / GIB:.0f} GiB",
        f"{extents.total(ours_vol.used) / GIB:.2f} GiB in {len(ours_vol.used)} runs",
        f"{extents.total(oracle) / GIB:.2f} GiB in {len(oracle)} runs",
        f"{check}, {extra:+d} bytes",
        f"{mo * 1000:.0f} ({min(ours) * 1000:.0f}-{max(ours) * 1000:.0f})",
        f"{statistics.median(cli) * 1000:.0f}",
        f"{mt * 1000:.0f} ({min(theirs) * 1000:.0f}-{max(theirs) * 1000:.0f})",
        f"{statistics.median(ours_cpu) * 1000:.0f} / {statistics.median(theirs_cpu) * 1000:.0f}",
        f"{mt / mo:.1f}x",
        f"{min(theirs) / min(ours):.1f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    parser.add_argument(
        "--sparse-source", action="store_true", help="keep the volumes' free space as holes"
    )
    args = parser.parse_args()
    rows = []
    for fstype in ("ext4", "ntfs"):
        print(f"building or reusing the {fstype} volume", file=sys.stderr, flush=True)
        vol = volume(fstype, args.size_gib, args.work, sparse=args.sparse_source)
        rows.append(measure(vol, args.runs))
    print(f"## map speed, {args.size_gib} GiB volumes\n")
    print(f"{machine()}; clonebay {git_revision(REPO)}; median of {args.runs}, caches dropped\n")
    print(
        table(
            [
                "fs",
                "volume",
                "clonebay map",
                "partclone -D map",
                "clonebay vs partclone",
                "clonebay probe ms (min-max)",
                "clonebay probe command ms",
                "partclone -D ms (min-max)",
                "CPU ms clonebay / partclone",
                "partclone / clonebay (median)",
                "partclone / clonebay (min)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
