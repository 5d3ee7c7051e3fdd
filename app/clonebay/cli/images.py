"""Commands about images: save, restore, verify, convert, info."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from typing import IO, TYPE_CHECKING, Any, cast

from clonebay.cli import many
from clonebay.cli.common import (
    add_restore_grow,
    add_shrink_options,
    emit_result,
    stdin_stream,
    stdout_stream,
)
from clonebay.cli.confirm import add_yes, confirm, confirm_many
from clonebay.cli.fixup import (
    add_postcopy_options,
    after_copy,
    after_many,
    check_name,
    image_source,
    one_machine,
    preview_text,
)
from clonebay.cli.health import source_warning
from clonebay.cli.keys import add_key_options, keyring
from clonebay.cli.rescue import (
    DONE_WITH_ERRORS,
    add_rescue_options,
    add_resume_option,
    rescue_options,
)
from clonebay.cli.stores import add_store_options, no_space_check
from clonebay.errors import ClonebayError, UsageError, VerifyError
from clonebay.progress_view import ProgressView
from clonebay.system.tape import TapeStream, is_stream_device
from clonebay.units import human_size

if TYPE_CHECKING:
    from clonebay.engine import RestoreOptions


def open_stream_device(path: str) -> IO[bytes]:
    """A character device (tape) as a binary stream written in whole records."""
    return cast(IO[bytes], io.BufferedWriter(TapeStream(path), buffer_size=1 << 20))


def _cmd_save(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    warned = source_warning(args, args.source)
    keys = keyring(args)
    if args.dry_run:
        plan = jobs.save_plan(args.source, args.partition, keys)
        emit_result(args, plan.as_dict() | {"warnings": warned}, plan.text())
        return 0
    options = jobs.SaveOptions(
        partition=args.partition,
        pack_limit=args.pack_limit << 20,
        codec=args.codec,
        overwrite=args.overwrite,
        space_check=args.image in getattr(args, "store_urls", {}) and not args.no_space_check,
        shrink=args.shrink,
        scratch=args.scratch,
        rescue=rescue_options(args),
        resume=args.resume,
        keys=keys,
    )
    with contextlib.ExitStack() as stack:
        image: str | IO[bytes] = args.image
        if args.image == "-":
            image = stack.enter_context(stdout_stream())
        elif is_stream_device(args.image):  # a tape (/dev/nst0): the stream form, in records
            image = stack.enter_context(open_stream_device(args.image))
        view = ProgressView(args.json)
        try:
            manifest = jobs.save(args.source, image, options, progress=view)
            checked = _check_saved(args, image, view)
        finally:
            view.close()
        summary = jobs.manifest_summary(manifest) | {"verified": checked}
        summary["warnings"] = warned + summary["warnings"]
        name = "stdout" if args.image == "-" else args.image
        text = jobs.summary_text(name, summary, view.elapsed())
        if options.rescue is not None and isinstance(image, str):
            summary["rescue_map"] = str(jobs.rescue_map_path(image, options.rescue))
            text += f"\n  rescue map: {summary['rescue_map']}"
        emit_result(args, summary, text + ("\nread back from the store: OK" if checked else ""))
    return DONE_WITH_ERRORS if manifest.unreadable else 0


def _check_saved(args: argparse.Namespace, image: str | IO[bytes], view: ProgressView) -> bool:
    """``--verify`` (on by default for an image in a store): read the image back from the
    medium; VerifyError (exit 11) when it does not hold what was saved."""
    from clonebay.engine import jobs

    in_store = args.image in getattr(args, "store_urls", {})
    if not isinstance(image, str) or not (args.verify if args.verify is not None else in_store):
        return False
    try:
        report = jobs.verify_saved(image, progress=view)
        problems = [str(p) for p in report.problems]
    except ClonebayError as exc:  # not even the manifest reads back
        problems = [exc.message]
    if problems:
        listed = "\n  ".join(problems[:10])
        raise VerifyError(
            f"{image} was saved but does not read back as written ({len(problems)}"
            f" problem(s)); the store lost or changed data: do not trust this image, delete it"
            f" and save again (another store, or another filesystem driver)\n  {listed}"
        )
    return True


def _cmd_restore(args: argparse.Namespace) -> int:
    from clonebay.engine import Grow, jobs

    options = jobs.RestoreOptions(
        region=args.region,
        verify=args.verify,
        grow=Grow(args.grow),
        check=not args.no_check,
        whole_disk=args.whole_disk,
        fit=Grow(args.fit),
        scratch=args.scratch,
    )
    if len(args.target) > 1:
        return _restore_many(args, options)
    (target,) = args.target
    image = stdin_stream() if args.image == "-" else args.image
    if args.dry_run:
        plan = jobs.restore_plan(image, target, args.region, Grow(args.grow), **_layout_args(args))
        after = preview_text(args, image, target, image=True) if isinstance(image, str) else []
        emit_result(args, plan.as_dict() | {"postcopy": after}, "\n".join([plan.text(), *after]))
        return 0
    if isinstance(image, str) and not args.yes and os.path.exists(target):
        # The plan's refusals (too small, a region that is not there) before the question;
        # a stream on stdin cannot be read twice (and is no terminal: only --yes goes on).
        jobs.restore_plan(image, target, args.region, Grow(args.grow), **_layout_args(args))
    if isinstance(image, str):
        check_name(args, image)
    confirm(args, target)
    view = ProgressView(args.json)
    try:
        warnings = jobs.restore(image, target, options, progress=view)
    finally:
        view.close()
    verified = " and verified" if args.verify else ""
    text = f"restored {args.image} to {target}{verified} in {view.elapsed():.1f} s"
    text += "".join(f"\nwarning: {w}" for w in warnings)
    lines, post = after_copy(args, target, image_source(image))
    text += "".join(f"\n{line}" for line in lines)
    result = {"target": target, "verified": args.verify, "warnings": warnings} | post
    emit_result(args, result, text)
    return 0


def _layout_args(args: argparse.Namespace) -> dict[str, Any]:
    """restore_plan's keyword arguments from the restore command's options."""
    from clonebay.engine import Grow

    return {"whole_disk": args.whole_disk, "fit": Grow(args.fit), "scratch": args.scratch}


def _restore_many(args: argparse.Namespace, options: RestoreOptions) -> int:
    """One read of an image directory onto every target (engine/target/fanout.py); a stream
    is restored onto one target at a time."""
    from clonebay.engine import Grow, jobs

    targets: list[str] = args.target
    one_machine(args, targets)
    if args.image == "-":
        raise UsageError(
            "a stream on stdin is restored onto one target at a time: save it as an image"
            " directory (clonebay convert - DIR) to restore it onto several; nothing was written"
        )
    jobs.check_distinct(targets)
    check_name(args, args.image)
    plans = [  # every refusal of every target before the question
        jobs.restore_plan(args.image, t, args.region, Grow(args.grow), **_layout_args(args))
        for t in targets
    ]
    if args.dry_run:
        text = "\n\n".join(plan.text() for plan in plans)
        emit_result(args, {"plans": [plan.as_dict() for plan in plans]}, text)
        return 0
    confirm_many(args, targets)
    view = ProgressView(args.json)
    try:
        outcomes = jobs.restore_many(args.image, targets, options, progress=view)
    finally:
        view.close()
    done = [o.target for o in outcomes if o.ok]
    after = after_many(args, done, image_source(args.image))
    return many.report(
        args, "restored", args.image, outcomes, view.elapsed(), verify=args.verify, after=after
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    image = stdin_stream() if args.image == "-" else args.image
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
    emit_result(args, result | {"problems": problems}, text)
    return 0 if report.ok else VerifyError.exit_code


def _cmd_convert(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    with contextlib.ExitStack() as stack:
        source = stdin_stream() if args.source == "-" else args.source
        target = stack.enter_context(stdout_stream()) if args.target == "-" else args.target
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
        emit_result(args, summary, text)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs

    info = jobs.image_info(args.image)
    emit_result(args, info, jobs.info_text(args.image, info))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add save, restore, verify, convert and info to the ``clonebay`` parser."""
    p = sub.add_parser("save", help="save a disk or partition into an image")
    p.add_argument("source", help="disk, partition device or disk image file to read")
    p.add_argument(
        "image",
        help="image directory to create, - for a stream on stdout, or a tape (/dev/nst0)",
    )
    p.add_argument("--partition", type=int, help="save only this partition number of SOURCE")
    p.add_argument("--codec", choices=["lz4", "stored"], default="lz4")
    p.add_argument("--pack-limit", type=int, default=1024, metavar="MIB", help="pack size limit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing image")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="save the smallest disk that holds the data: ext and NTFS shrunk to their minimum"
        " and headroom in copy-on-write views (the source is not written), partitions closed up;"
        " the image restores onto any disk at least that large",
    )
    p.add_argument(
        "--scratch",
        default="",
        metavar="DIR",
        help="with --shrink: where the copy-on-write overlays live (default: $CLONEBAY_SCRATCH"
        " or the temporary folder)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be saved")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the image back from where it was written and check every frame (default:"
        " on for an image in a store URL, off for a plain path)",
    )
    add_rescue_options(p, "IMAGE.map, beside the image")
    add_resume_option(p, "save")
    add_key_options(p, decrypt=True)
    no_space_check(p)
    add_store_options(p)
    p.set_defaults(func=_cmd_save)

    p = sub.add_parser("restore", help="write an image to a disk, partition or image file")
    p.add_argument("image", help="image directory, image stream file, or - for a stream on stdin")
    p.add_argument(
        "target",
        nargs="+",
        help="disk, partition or image file to write (created if absent); several: all written"
        " from one read of an image directory, each on its own",
    )
    p.add_argument("--region", help="restore only this region (e.g. p2) at the target's start")
    p.add_argument("--verify", action="store_true", help="re-read the target and compare")
    add_restore_grow(p)
    add_shrink_options(p)
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not check every frame of a directory image before the first write",
    )
    p.add_argument(
        "--whole-disk",
        action="store_true",
        help="a single-volume image onto a whole disk that holds a partition table (it is lost)",
    )
    p.add_argument("--dry-run", action="store_true", help="show where everything would go")
    add_postcopy_options(p)
    add_yes(p)
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    add_store_options(p)
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("verify", help="re-read every frame of an image and check its hash")
    p.add_argument("image", help="image directory, image stream file, or - (stdin)")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("convert", help="image stream <-> image directory, frames kept as they are")
    p.add_argument("source", help="image stream file or - (stdin), or an image directory")
    p.add_argument("target", help="image directory for a stream; stream file or - for a directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    add_store_options(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="what an image holds")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=_cmd_info)
