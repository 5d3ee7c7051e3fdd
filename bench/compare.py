"""clonebay against partclone, dd, e2image, ntfsclone and Clonezilla on one disk, in one run.

    .venv/bin/python bench/compare.py [--size-gib 4] [--used-gib 2] [--runs 1] [--scaling]
        [--work /work/bench-work] [--out bench/COMPARE.md] [--settle 20] [--skip REGEX]

Issue 14's comparison: a GPT disk image (ext4, NTFS, FAT32 filled with /usr files, logs and
random media: bench/compare_disk.py), attached read-only as a loop device; targets are loop
devices of the same size, discarded before every run. Three tasks, each against its peers:

- clone (disk -> disk): clonebay clone (verify on, and --no-verify) vs partclone.<fs> -b per
  partition, dd bs=4M buffered and O_DIRECT, Clonezilla's ocs-onthefly; on one partition,
  clonebay vs e2image -ra (ext4) and ntfsclone --overwrite (NTFS);
- save (disk -> image): clonebay save vs partclone -c | lz4 -1 and | zstd -1, ocs-sr savedisk;
  on one partition, e2image -ra (sparse raw file) and ntfsclone --save-image;
- restore (image -> disk): clonebay restore vs the reverses (lz4/zstd -d | partclone -r,
  ocs-sr restoredisk, e2image -ra, ntfsclone --restore-image) and dd (buffered and O_DIRECT)
  writing as many bytes as clonebay restore wrote.

Before each run: ``sync; echo 3 > /proc/sys/vm/drop_caches``, then ``--settle`` seconds and idle
CPUs (bench/measure.py's Pace: on this VM memory freed by drop_caches goes back to the host
within ~20 s and buffered I/O then costs 2-4x more; bench/RESULTS.md). Times include a final
sync. MB/s is of used data (partclone -D's used bytes, the same denominator for every tool);
"vs clonebay" is the peer's time over clonebay's matching job (above 1: clonebay is faster).
Every copy is checked after its run (untimed, bench/compare_jobs.py). ``--scaling`` adds clonebay
clone and restore on disks with 1, 2 and 4 GiB used, and onto 1, 2 and 4 targets at once.
Needs root; Debian packages: ``make bench-setup``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import traceback
from pathlib import Path

from compare_catalog import CLONEBAY, REPO, Setup, clone_jobs, restore_jobs, save_jobs
from compare_disk import Loops, source_disk, target_file
from compare_jobs import Job, check_copy, image_bytes, prepare_target, run_commands
from compare_scaling import scaling_section
from measure import QUIET, Pace, git_revision, machine, table, tool_versions
from volumes import remove_tree

VERSIONS = [
    [CLONEBAY, "--version"],
    ["partclone.extfs", "-v"],
    ["lz4", "--version"],
    ["zstd", "--version"],
    ["e2image"],
    ["ntfsclone", "--version"],
    ["dd", "--version"],
    ["dpkg-query", "-W", "-f", "clonezilla ${Version}", "clonezilla"],
]


def median(job: Job, what: str) -> float:
    return statistics.median(getattr(r, what) for r in job.runs)


def run_job(job: Job, setup: Setup, pace: Pace, logs: Path, *, tag: str, check: bool) -> None:
    """One run of ``job``: untimed preparation, caches dropped and memory settled, the timed
    commands, then the untimed check."""
    for path in job.outputs:
        remove_tree(path)
    prepare_target(job, setup.source)
    commands = job.commands()
    job.texts = [c.text() for c in commands]
    slug = re.sub(r"[^a-z0-9]+", "-", job.name.lower()).strip("-")
    log = logs / f"{tag}-{slug}.log"
    log.unlink(missing_ok=True)
    busy = pace.before_run()
    try:
        run = run_commands(commands, log)
    except RuntimeError as err:
        job.checks.append(f"FAILED: {err}")
        print(f"  {job.name}: FAILED ({err})", file=sys.stderr, flush=True)
        return
    run.busy_before = busy
    job.runs.append(run)
    if job.after:
        job.after()
    if job.outputs:
        job.size = image_bytes(job.outputs)
        job.note = f"{job.size / 1e6:.0f} MB"
    verdict = ""
    if check and job.check:
        verdict = check_copy(setup.source, job.target, job.check, job.check_table)
        job.checks.append(verdict)
    print(
        f"  {tag}: {job.name}: {run.seconds:.1f} s (user {run.user:.1f}, sys {run.system:.1f};"
        f" busy before {busy:.0%}) {verdict}",
        file=sys.stderr,
        flush=True,
    )


def rows(jobs: list[Job]) -> list[list[str]]:
    by_name = {j.name: j for j in jobs}
    out = []
    for j in jobs:
        if not j.runs:
            out.append([j.group, j.name, *["-"] * 7, j.note, "; ".join(j.checks) or "-"])
            continue
        s = median(j, "seconds")
        times = sorted(r.seconds for r in j.runs)
        sys_s = median(j, "system")
        base = by_name.get(j.versus) if j.versus else j
        ratio = f"{s / median(base, 'seconds'):.2f}x" if base and base.runs else "-"
        if not j.versus:
            ratio = "(clonebay)"
        checks = sorted(set(j.checks)) or ["not checked"]
        out.append(
            [
                j.group,
                j.name,
                f"{s:.1f}",
                f"{times[0]:.1f}-{times[-1]:.1f}" if len(times) > 1 else f"{s:.1f}",
                f"{median(j, 'user'):.1f}",
                f"{sys_s:.1f}",
                f"{j.used / s / 1e6:.0f}",
                f"{sys_s / (j.used / 1e9):.2f}",
                ratio,
                j.note if j.group == "save" else "",
                "; ".join(checks) if j.check else (j.note if j.group != "save" else "-"),
            ]
        )
    return out


HEADERS = [
    "task",
    "job",
    "s",
    "min-max s",
    "user s",
    "sys s",
    "MB/s used",
    "sys s/GB",
    "time vs clonebay",
    "image",
    "check",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size-gib", type=int, default=4, help="source disk size (issue 14: 16)")
    p.add_argument("--used-gib", type=float, help="data on it (default: half the disk)")
    p.add_argument("--runs", type=int, default=1, help="median of N runs (3 for the README)")
    p.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    p.add_argument("--out", type=Path, help="write the report here too (Markdown)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds after drop_caches")
    p.add_argument("--max-wait", type=float, default=90.0, help="wait at most this for idle CPUs")
    p.add_argument("--skip", help="skip jobs whose name matches this regex (case-insensitive)")
    p.add_argument("--tasks", default="clone,save,restore", help="which tasks to run")
    p.add_argument("--scaling", action="store_true", help="add the scaling tables")
    p.add_argument("--scaling-used", default="1,2,4", help="GiB used on the scaling disks")
    p.add_argument("--scaling-disk-gib", type=int, help="their size (default: twice the most)")
    p.add_argument("--no-check", action="store_true", help="do not check the copies")
    p.add_argument("--loop-dio", choices=["on", "off"], default="on", help="losetup --direct-io")
    p.add_argument("--keep", action="store_true", help="keep the images afterwards")
    return p.parse_args()


def run_order(jobs: list[Job]) -> list[Job]:
    """Each save job followed by the restore jobs that read its image (so that an image can go
    once they have run: the host disk need not hold every image at once), then the rest."""
    saves = [j for j in jobs if j.group == "save"]
    out = [j for j in jobs if j.group == "clone"]
    for save in saves:
        out += [save, *(j for j in jobs if j.group == "restore" and j.reads == save.name)]
    return out + [j for j in jobs if j not in out]


def drop_images(order: list[Job], done: int, keep: set[str]) -> None:
    """Remove the images of save jobs that no job after ``order[done]`` reads."""
    later = {j.reads for j in order[done + 1 :]}
    for job in order[: done + 1]:
        if job.group == "save" and job.name not in later and job.name not in keep:
            for path in job.outputs:
                remove_tree(path)


def free_targets(work: Path) -> None:
    """Give the target files' space back to the host (they stay, as holes)."""
    for path in (work / "targets").glob("*.img"):
        size = path.stat().st_size
        os.truncate(path, 0)
        os.truncate(path, size)


def main() -> None:
    args = parse_args()
    work = args.work.resolve()
    used = args.used_gib if args.used_gib is not None else args.size_gib / 2
    pace = Pace(args.settle, args.max_wait)
    print(f"building or reusing the {args.size_gib} GiB disk in {work}", file=sys.stderr)
    disk = source_disk(work, args.size_gib, used)
    images, logs = work / "compare-images", work / "compare-logs"
    images.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    versions = tool_versions(VERSIONS)
    lines = [
        f"## clonebay vs its peers, {args.size_gib} GiB disk",
        "",
        f"{machine()}; clonebay {git_revision(REPO)}; median of {args.runs}; caches dropped and"
        f" {args.settle:.0f} s settle before each run; loop devices with direct-io={args.loop_dio}",
        "",
        f"Disk: {disk.describe()}. Built in {disk.build_seconds:.0f} s, `{disk.path}`.",
        "",
        "Tools: " + "; ".join(v.strip("* ") for v in versions),
        "",
    ]
    loops = Loops(direct_io=args.loop_dio == "on")
    jobs: list[Job] = []
    try:
        source = loops.attach(disk.path, read_only=True)
        tfile = target_file(work, 1, disk.size)
        setup = Setup(disk, source, loops.attach(tfile), tfile, images)
        wanted = args.tasks.split(",")
        tasks = {"clone": clone_jobs, "save": save_jobs, "restore": restore_jobs}
        groups = [build(setup) for name, build in tasks.items() if name in wanted]
        skip = re.compile(args.skip, re.I) if args.skip else None
        groups = [[j for j in g if not (skip and skip.search(j.name))] for g in groups]
        jobs = [j for g in groups for j in g]
        order = run_order(jobs)
        for i in range(args.runs):
            for n, job in enumerate(order):
                run_job(job, setup, pace, logs, tag=f"run{i + 1}", check=not args.no_check)
                if not args.keep:  # every run saves its images again
                    drop_images(order, n, keep={"clonebay save"} if args.scaling else set())
        lines += report(jobs, setup) if jobs else []
        if args.scaling:
            for path in images.iterdir():  # room on the host for four targets
                if path.name != "clonebay" and not args.keep:
                    remove_tree(path)
            lines += scaling_section(args, work, setup, loops=loops, pace=pace, logs=logs)
    except Exception:
        traceback.print_exc()
        lines += ["", "Stopped by an error:", "", "```", traceback.format_exc(), "```"]
        lines += report(jobs, None) if jobs else []
    finally:
        loops.close()
        free_targets(work)
        if not args.keep:
            remove_tree(images)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def _ratio(jobs: dict[str, Job], peer: str, base: str) -> float | None:
    a, b = jobs.get(peer), jobs.get(base)
    if not (a and b and a.runs and b.runs):
        return None
    return median(a, "seconds") / median(b, "seconds")


def targets_section(jobs: list[Job]) -> list[str]:
    """Issue 14's targets, measured in this run (ratios: peer time / clonebay time)."""
    by = {j.name: j for j in jobs}
    items: list[tuple[str, float | None, str, float]] = [
        ("clone (verify on) vs partclone -b", _ratio(by, "partclone -b, each partition",
         "clonebay clone"), "x", 2.0),
        ("save vs ocs-sr savedisk", _ratio(by, "ocs-sr savedisk (Clonezilla, zstd)",
         "clonebay save"), "x", 6.0),
        ("restore vs ocs-sr restoredisk", _ratio(by, "ocs-sr restoredisk (Clonezilla)",
         "clonebay restore"), "x", 12.0),
        ("restore vs dd O_DIRECT writing the same bytes", _ratio(by,
         "dd bs=4M O_DIRECT, the bytes clonebay restore wrote", "clonebay restore"), "x", 1.0),
    ]  # fmt: skip
    for name in ("clonebay save", "clonebay restore"):
        j = by.get(name)
        rate = j.used / median(j, "seconds") / 1e6 if j and j.runs else None
        items.append((f"{name.split()[1]} MB/s of used data", rate, " MB/s", 500.0 if
                      "save" in name else 750.0))  # fmt: skip
    for name in ("clonebay clone", "clonebay save", "clonebay restore"):
        j = by.get(name)
        cpu = median(j, "system") / (j.used / 1e9) if j and j.runs else None
        items.append((f"{name} system CPU s per GB (at most)", cpu, " s/GB", 0.3))
    save, lz4 = by.get("clonebay save"), by.get("partclone -c \\| lz4 -1")
    size = save.size / lz4.size if save and lz4 and save.size and lz4.size else None
    items.append(("image size vs partclone \\| lz4 (at most)", size, "", 1.0))
    rows = []
    for what, value, unit, goal in items:
        if value is None:
            rows.append([what, "-", f"{goal:g}{unit}", "not measured"])
            continue
        at_most = "(at most)" in what
        met = value <= goal if at_most else value >= goal
        digits = {" MB/s": 0, "": 3}.get(unit, 2)
        rows.append(
            [what, f"{value:.{digits}f}{unit}", f"{goal:g}{unit}", "met" if met else "not met"]
        )
    return [
        "### Issue 14's targets in this run",
        "",
        table(["what", "measured", "target", ""], rows),
        "",
    ]


def report(jobs: list[Job], setup: Setup | None) -> list[str]:
    lines = [
        "### Times (median; s include the final sync)",
        "",
        table(HEADERS, rows(jobs)),
        "",
        *targets_section(jobs),
        "\"time vs clonebay\": this job's time over clonebay's matching job (whole disk, or the"
        " same partition for e2image and ntfsclone); above 1: clonebay is faster. The"
        " per-partition clonebay rows are the base for e2image and ntfsclone.",
        "",
    ]
    busy = [
        f"{j.name} run {i + 1} ({r.busy_before:.0%})"
        for j in jobs
        for i, r in enumerate(j.runs)
        if r.busy_before >= QUIET
    ]
    if busy:
        lines += [f"Runs started while others kept the CPUs busy: {', '.join(busy)}.", ""]
    if setup and setup.clonebay_wrote:
        lines += [
            f"clonebay restore wrote {setup.clonebay_wrote[-1] / 1e6:.0f} MB to the target"
            " (what the dd same-bytes rows write).",
            "",
        ]
    lines += ["Commands (last run; $ of each step, run in this order):", ""]
    for j in jobs:
        lines.append(f"- {j.name}:")
        lines += [f"  - `{t}`" for t in j.texts]
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
