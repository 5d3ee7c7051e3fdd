"""The compare bench's scaling tables: clonebay's time against the data it copies (it should
grow linearly: seconds per GiB stay flat) and against the number of targets written from one
read (``clonebay clone SRC DST1 DST2 ...``, ``clonebay restore IMAGE DST1 DST2 ...``).

The data scaling disks have the compare disk's layout and mix at twice the largest used size
(8 GiB for 1, 2, 4 GiB used; ``--scaling-disk-gib``), built once in the work folder like the
main disk. The targets scaling runs on the main disk with up to four target loop devices; on
this VM they all live on the one virtual disk, so four targets share its bandwidth.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from pathlib import Path

from compare_catalog import CLONEBAY, Setup
from compare_disk import GIB, Loops, blank, source_disk, target_file
from compare_jobs import Run, check_copy, run_commands
from measure import Command, Pace, table
from volumes import remove_tree


def _show(result: Run | str) -> str:
    return f"{result.seconds:.1f} s" if isinstance(result, Run) else result


def _timed(commands: list[Command], targets: list[str], pace: Pace, log: Path) -> Run | str:
    """One run onto fresh ``targets``; the Run, or why it failed."""
    for t in targets:
        blank(t)
    pace.before_run()
    try:
        return run_commands(commands, log)
    except RuntimeError as err:
        return f"FAILED: {err}"


def _median(runs: list[Run | str]) -> str:
    ok = [r.seconds for r in runs if isinstance(r, Run)]
    return f"{statistics.median(ok):.1f}" if ok else next(str(r) for r in runs)


def _per_gib(runs: list[Run | str], used: int) -> str:
    ok = [r.seconds for r in runs if isinstance(r, Run)]
    return f"{statistics.median(ok) / (used / GIB):.2f}" if ok else "-"


def data_scaling(
    args: argparse.Namespace, work: Path, loops: Loops, pace: Pace, logs: Path
) -> list[str]:
    sizes = [float(x) for x in args.scaling_used.split(",")]
    disk_gib = args.scaling_disk_gib or max(args.size_gib, math.ceil(2 * max(sizes)))
    rows, checks, commands = [], [], []
    for used in sizes:
        disk = source_disk(work, disk_gib, used)
        src = loops.attach(disk.path, read_only=True)
        dst = loops.attach(target_file(work, 9, disk.size))
        image = work / "compare-images" / f"scaling-{used:g}"
        jobs = {
            "clone": [Command.of([CLONEBAY, "clone", "--yes", src, dst])],
            "save": [Command.of([CLONEBAY, "save", src, str(image)])],
            "restore": [Command.of([CLONEBAY, "restore", "--yes", str(image), dst])],
        }
        commands = [c.text() for cmds in jobs.values() for c in cmds]
        results: dict[str, list[Run | str]] = {k: [] for k in jobs}
        try:
            for i in range(args.runs):
                for name, cmds in jobs.items():
                    if name == "save":
                        remove_tree(image)
                    log = logs / f"scaling-{used:g}-{name}-run{i + 1}.log"
                    result = _timed(cmds, [dst] if name != "save" else [], pace, log)
                    results[name].append(result)
                    print(
                        f"  scaling {used:g} GiB {name}: {_show(result)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if name != "save" and isinstance(result, Run) and not args.no_check:
                        checks.append(
                            f"{used:g} GiB {name}: {check_copy(src, dst, tuple(disk.parts), True)}"
                        )
        finally:
            remove_tree(image)
            blank(dst)
            loops.detach(dst)
            loops.detach(src)
        row = [f"{disk.used / GIB:.2f}"]
        for name in jobs:
            row += [_median(results[name]), _per_gib(results[name], disk.used)]
        rows.append(row)
    headers = ["GiB used", "clone s", "clone s/GiB", "save s", "save s/GiB"]
    headers += ["restore s", "restore s/GiB"]
    return [
        f"### Scaling with the data: {disk_gib} GiB disks (median of {args.runs})",
        "",
        table(headers, rows),
        "",
        "Checks: " + ("; ".join(checks) or "none"),
        "",
        "Commands (SRC and DST loop devices of the scaling disk and its target):",
        "",
        *[f"- `{c}`" for c in commands],
        "",
    ]


def multi_target_supported(source: str, targets: list[str]) -> tuple[bool, str]:
    """Whether ``clonebay clone`` takes several targets (tried with --dry-run)."""
    proc = subprocess.run(
        [CLONEBAY, "clone", "--dry-run", "--yes", source, *targets[:2]],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0:
        return True, ""
    last = (proc.stderr or proc.stdout).strip().splitlines()
    return False, last[-1] if last else f"exit {proc.returncode}"


def target_scaling(
    args: argparse.Namespace, work: Path, setup: Setup, *, loops: Loops, pace: Pace, logs: Path
) -> list[str]:
    title = "### Scaling with the targets: one read, 1, 2 and 4 targets (main disk)"
    extra = [loops.attach(target_file(work, i, setup.disk.size)) for i in (2, 3, 4)]
    targets = [setup.target, *extra]
    try:
        ok, why = multi_target_supported(setup.source, targets)
        if not ok:
            return [title, "", f"not supported yet (`clonebay clone SRC DST1 DST2`: {why})", ""]
        image = setup.images / "clonebay"
        if not image.exists():
            run_commands([Command.of([CLONEBAY, "save", setup.source, str(image)])], logs / "mt")
        rows, checks = [], []
        base: dict[str, float] = {}
        for k in (1, 2, 4):
            row = [str(k)]
            for name, argv in (
                ("clone", [CLONEBAY, "clone", "--yes", setup.source, *targets[:k]]),
                ("restore", [CLONEBAY, "restore", "--yes", str(image), *targets[:k]]),
            ):
                runs = []
                for i in range(args.runs):
                    log = logs / f"targets-{k}-{name}-run{i + 1}.log"
                    result = _timed([Command.of(argv)], targets[:k], pace, log)
                    runs.append(result)
                    print(f"  {k} targets {name}: {_show(result)}", file=sys.stderr, flush=True)
                    if isinstance(result, Run) and not args.no_check:
                        for t in targets[:k]:
                            verdict = check_copy(setup.source, t, tuple(setup.disk.parts), True)
                            checks.append(f"{k} targets {name} {t}: {verdict}")
                seconds = [r.seconds for r in runs if isinstance(r, Run)]
                if not seconds:
                    row += [str(runs[0]), "-"]
                    continue
                s = statistics.median(seconds)
                base.setdefault(name, s)
                row += [f"{s:.1f}", f"{s / base[name]:.2f}"]
            rows.append(row)
        headers = ["targets", "clone s", "clone vs 1 target", "restore s", "restore vs 1 target"]
        return [
            title,
            "",
            table(headers, rows),
            "",
            "Checks: " + ("; ".join(sorted(set(checks))) or "none"),
            "",
            f"Commands: `{CLONEBAY} clone --yes SRC DST1 ... DSTk`,"
            f" `{CLONEBAY} restore --yes {image} DST1 ... DSTk`",
            "",
        ]
    finally:
        for dev in targets:
            blank(dev)  # their space back to the host
        for dev in extra:
            loops.detach(dev)


def scaling_section(
    args: argparse.Namespace, work: Path, setup: Setup, *, loops: Loops, pace: Pace, logs: Path
) -> list[str]:
    targets = target_scaling(args, work, setup, loops=loops, pace=pace, logs=logs)
    return targets + data_scaling(args, work, loops, pace, logs)
