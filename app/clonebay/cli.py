"""The ``clonebay`` command: argv -> one job. ``clonebay`` alone will start the TUI.

Every subcommand returns an exit code; every ClonebayError becomes its message on stderr (or a
JSON object with ``--json``) and its exit code, so scripts can tell a refusal from a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from clonebay import __version__
from clonebay.errors import ClonebayError, UsageError, VerifyError
from clonebay.progress_view import ProgressView
from clonebay.report import disk_json, disks_json, format_disk_report, format_disk_table
from clonebay.units import human_size


def _cmd_list(args: argparse.Namespace) -> int:
    from clonebay.system.udev import list_disks

    disks = list_disks()
    if args.json:
        print(json.dumps(disks_json(disks), indent=2))
    else:
        print(format_disk_table(disks))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from clonebay.engine.inspect import inspect_disk

    report = inspect_disk(args.disk)
    if args.json:
        print(json.dumps(disk_json(report), indent=2))
    else:
        print(format_disk_report(report))
    return 0


def _emit_result(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps({"event": "result", **result}), flush=True)
    else:
        print(text)


@contextlib.contextmanager
def _stdout_stream() -> Iterator[IO[bytes]]:
    """stdout as the binary stream of an image (``-``). Meanwhile print() goes to stderr, so that
    nothing else (the result, a stray message) can mix into the stream."""
    if sys.stdout.isatty():
        raise UsageError(
            "refusing to write an image stream to a terminal: redirect stdout to a file or pipe"
            " it (e.g. clonebay save /dev/sda - | ssh host clonebay restore - /dev/sdb)"
        )
    saved = sys.stdout
    saved.flush()
    out = saved.buffer
    _grow_pipe(out)
    sys.stdout = sys.stderr
    try:
        yield out
    finally:
        sys.stdout = saved


def _stdin_stream() -> IO[bytes]:
    """stdin as the binary stream of an image (``-``); refused when it is a terminal."""
    if sys.stdin.isatty():
        raise UsageError("stdin is a terminal: pipe or redirect an image stream into it")
    _grow_pipe(sys.stdin.buffer)
    return sys.stdin.buffer


def _grow_pipe(f: IO[bytes]) -> None:
    """Ask for a 1 MiB pipe buffer (F_SETPIPE_SZ): 16x fewer wake-ups than the default 64 KiB
    per 4 MiB chunk. Best effort: not a pipe, or a smaller pipe-max-size, is fine."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        fd = f.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)


def _cmd_save(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    if args.dry_run:
        plan = jobs.save_plan(args.source, args.partition)
        _emit_result(args, plan.as_dict(), plan.text())
        return 0
    options = jobs.SaveOptions(
        partition=args.partition,
        pack_limit=args.pack_limit << 20,
        codec=args.codec,
        overwrite=args.overwrite,
    )
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(_stdout_stream()) if args.image == "-" else args.image
        view = ProgressView(args.json)
        try:
            manifest = jobs.save(args.source, image, options, progress=view)
        finally:
            view.close()
        summary = jobs.manifest_summary(manifest)
        name = "stdout" if args.image == "-" else args.image
        _emit_result(args, summary, jobs.summary_text(name, summary, view.elapsed()))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs
    from clonebay.engine.plan import Grow

    options = jobs.RestoreOptions(region=args.region, verify=args.verify, grow=Grow(args.grow))
    image = _stdin_stream() if args.image == "-" else args.image
    if args.dry_run:
        plan = jobs.restore_plan(image, args.target, args.region)
        _emit_result(args, plan.as_dict(), plan.text())
        return 0
    view = ProgressView(args.json)
    try:
        warnings = jobs.restore(image, args.target, options, progress=view)
    finally:
        view.close()
    verified = " and verified" if args.verify else ""
    text = f"restored {args.image} to {args.target}{verified} in {view.elapsed():.1f} s"
    text += "".join(f"\nwarning: {w}" for w in warnings)
    _emit_result(args, {"target": args.target, "verified": args.verify, "warnings": warnings}, text)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    image = _stdin_stream() if args.image == "-" else args.image
    view = ProgressView(args.json)
    try:
        report = jobs.verify_image(image, progress=view)
    finally:
        view.close()
    problems = [str(p) for p in report.problems]
    text = f"{args.image}: {report.frames} frames, {human_size(report.raw_bytes)} checked:" + (
        " OK" if report.ok else f" {len(problems)} problem(s)\n  " + "\n  ".join(problems)
    )
    result = {"ok": report.ok, "frames": report.frames, "raw_bytes": report.raw_bytes}
    _emit_result(args, result | {"problems": problems}, text)
    return 0 if report.ok else VerifyError.exit_code


def _cmd_clone(args: argparse.Namespace) -> int:
    from clonebay.engine.clone import CloneOptions, clone, clone_plan
    from clonebay.engine.plan import Grow

    options = CloneOptions(grow=Grow(args.grow), verify=not args.no_verify)
    plan = clone_plan(args.source, args.target, options)
    if args.dry_run:
        _emit_result(args, {"plan": plan.text()}, plan.text())
        return 0
    view = ProgressView(args.json)
    try:
        result = clone(args.source, args.target, options, progress=view)
    finally:
        view.close()
    verified = f", {result.verified_chunks} chunks verified" if options.verify else ""
    text = (
        f"cloned {args.source} to {args.target}: {human_size(result.copied_bytes)} copied"
        f"{verified} in {view.elapsed():.1f} s"
    )
    text += "".join(f"\n  {line}" for line in result.done)
    data = {
        "copied_bytes": result.copied_bytes,
        "verified_chunks": result.verified_chunks,
        "fixups": result.done,
    }
    _emit_result(args, data, text)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    with contextlib.ExitStack() as stack:
        source = _stdin_stream() if args.source == "-" else args.source
        target = stack.enter_context(_stdout_stream()) if args.target == "-" else args.target
        view = ProgressView(args.json)
        try:
            manifest = jobs.convert(source, target, overwrite=args.overwrite, progress=view)
        finally:
            view.close()
        summary = jobs.manifest_summary(manifest)
        text = (
            f"converted {args.source} into {args.target}: {summary['regions']} regions,"
            f" {human_size(summary['copied_bytes'])} of data,"
            f" {human_size(summary['stored_bytes'])} of frames, in {view.elapsed():.1f} s"
        )
        _emit_result(args, summary, text)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    info = jobs.image_info(args.image)
    _emit_result(args, info, jobs.info_text(args.image, info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clonebay",
        description="Clone disks, save and restore images, copying only the blocks in use.",
    )
    parser.add_argument("--version", action="version", version=f"clonebay {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the disks of this machine")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("probe", help="show a disk's partitions, filesystems and copy methods")
    p.add_argument("disk", help="a disk device, a /dev/disk/by-id name, or a disk image file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("save", help="save a disk or partition into an image")
    p.add_argument("source", help="disk, partition device or disk image file to read")
    p.add_argument("image", help="image directory to create, or - for a stream on stdout")
    p.add_argument("--partition", type=int, help="save only this partition number of SOURCE")
    p.add_argument("--codec", choices=["lz4", "stored"], default="lz4")
    p.add_argument("--pack-limit", type=int, default=1024, metavar="MIB", help="pack size limit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing image")
    p.add_argument("--dry-run", action="store_true", help="show what would be saved")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_save)

    p = sub.add_parser("restore", help="write an image to a disk, partition or image file")
    p.add_argument("image", help="image directory, image stream file, or - for a stream on stdin")
    p.add_argument("target", help="disk, partition or image file to write (created if absent)")
    p.add_argument("--region", help="restore only this region (e.g. p2) at the target's start")
    p.add_argument("--verify", action="store_true", help="re-read the target and compare")
    p.add_argument(
        "--grow",
        choices=["none", "proportional", "last"],
        default="none",
        help="on a larger target, grow partitions like clone does (default: keep the layout)",
    )
    p.add_argument("--dry-run", action="store_true", help="show where everything would go")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("clone", help="copy a disk (or a volume) onto another disk or file")
    p.add_argument("source", help="disk, partition device or disk image file to read")
    p.add_argument("target", help="disk, partition device or image file to overwrite")
    p.add_argument(
        "--grow",
        choices=["proportional", "last", "none"],
        default="proportional",
        help="how partitions use a larger target (default: proportional)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reading the target back")
    p.add_argument("--dry-run", action="store_true", help="show the plan and write nothing")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_clone)

    p = sub.add_parser("verify", help="re-read every frame of an image and check its hash")
    p.add_argument("image", help="image directory, image stream file, or - (stdin)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("convert", help="image stream <-> image directory, frames kept as they are")
    p.add_argument("source", help="image stream file or - (stdin), or an image directory")
    p.add_argument("target", help="image directory for a stream; stream file or - for a directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="what an image holds")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    as_json = bool(getattr(args, "json", False))
    try:
        if args.command is None:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise UsageError("the TUI needs a terminal: give a command (see clonebay --help)")
            from clonebay.tui.app import run_tui

            return run_tui()
        code: int = args.func(args)
        return code
    except ClonebayError as exc:
        if as_json:
            error = {"error": exc.title, "message": exc.message, "exit_code": exc.exit_code}
            print(json.dumps(error), file=sys.stderr)
        else:
            print(f"clonebay: {exc.title.lower()}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clonebay: cancelled", file=sys.stderr)
        return 9
