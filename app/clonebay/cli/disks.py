"""Commands about disks: list, probe, clone."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from clonebay.cli.common import add_shrink_options, emit_result
from clonebay.cli.confirm import add_yes, confirm, confirm_many
from clonebay.cli.fixup import (
    add_postcopy_options,
    after_copy,
    after_many,
    check_name,
    clone_source,
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
from clonebay.progress_view import ProgressView
from clonebay.report import (
    disk_json,
    disks_json,
    format_disk_report,
    format_disk_table,
    format_tape_table,
    tapes_json,
)
from clonebay.units import human_size

if TYPE_CHECKING:
    from clonebay.engine import CloneOptions


def _cmd_list(args: argparse.Namespace) -> int:
    from clonebay.system.smart import read_all
    from clonebay.system.tape import list_tapes
    from clonebay.system.udev import list_disks

    disks = list_disks()
    tapes = list_tapes()  # stream targets only: listed after the disks, marked "kind": "tape"
    health = read_all([d.path for d in disks])
    if args.json:
        print(json.dumps(disks_json(disks, health) + tapes_json(tapes), indent=2))
    else:
        print(format_disk_table(disks, health))
        if tapes:
            print("\n" + format_tape_table(tapes))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from clonebay.engine import check_keys, inspect_disk
    from clonebay.engine.postcopy.windows_probe import windows_json, windows_on
    from clonebay.system.smart import read_health

    keys = keyring(args)
    report = inspect_disk(args.disk, keys)
    check_keys(report, keys)
    found = windows_on(report)
    health = read_health(args.disk)
    if args.json:
        data = disk_json(report, health)
        for part in data["partitions"]:
            ident = found.get(part["number"])
            part["windows"] = windows_json(ident) if ident else None
        print(json.dumps(data, indent=2))
    else:
        print(format_disk_report(report, health))
        for ident in found.values():
            print("  " + ident.facts()[0])
    return 0


def _cmd_clone(args: argparse.Namespace) -> int:
    from clonebay.engine import CloneOptions, Grow, clone, clone_plan

    options = CloneOptions(
        grow=Grow(args.grow),
        verify=not args.no_verify,
        allow_mounted_source=args.allow_mounted_source,
        allow_truncated=args.allow_truncated,
        whole_disk=args.whole_disk,
        fit=Grow(args.fit),
        scratch=args.scratch,
        rescue=rescue_options(args),
        resume=args.resume,
        keys=keyring(args),
    )
    if len(args.target) > 1:
        return _clone_many(args, options)
    (target,) = args.target
    plan = clone_plan(args.source, target, options)
    warned = source_warning(args, args.source)
    if args.dry_run:
        after = preview_text(args, args.source, target, image=False)
        text = "\n".join([plan.text(), *after])
        emit_result(args, {"plan": plan.text(), "postcopy": after, "warnings": warned}, text)
        return 0
    check_name(args, plan)
    confirm(args, target)
    view = ProgressView(args.json)
    try:
        result = clone(args.source, target, options, progress=view)
    finally:
        view.close()
    verified = f", {result.verified_chunks} chunks verified" if options.verify else ""
    text = (
        f"cloned {args.source} to {target}: {human_size(result.copied_bytes)} copied"
        f"{verified} in {view.elapsed():.1f} s"
    )
    text += "".join(f"\n  {line}" for line in result.done)
    text += "".join(f"\n  warning: {line}" for line in result.warnings)
    text += "".join(
        f"\n  unreadable: {e.length} bytes at byte {e.start} of {args.source} (zeros on the target)"
        for e in result.unreadable
    )
    lines, post = after_copy(args, target, clone_source(plan))
    text += "".join(f"\n  {line}" for line in lines)
    data = {
        "copied_bytes": result.copied_bytes,
        "verified_chunks": result.verified_chunks,
        "fixups": result.done,
        "warnings": warned + result.warnings,
        "unreadable": [vars(e) for e in result.unreadable],
        "rescue_map": result.rescue_map,
    } | post
    emit_result(args, data, text)
    return DONE_WITH_ERRORS if result.unreadable else 0


def _clone_many(args: argparse.Namespace, options: CloneOptions) -> int:
    """One read of the source onto every target (engine/target/fanout.py)."""
    from clonebay.cli import many
    from clonebay.engine import clone_many, clone_plans

    targets: list[str] = args.target
    one_machine(args, targets)
    _, plans = clone_plans(args.source, targets, options)  # every refusal before the question
    check_name(args, next(iter(plans.values())))
    warned = source_warning(args, args.source)
    if args.dry_run:
        texts = {t: plan.text() for t, plan in plans.items()}
        text = "\n\n".join(f"onto {t}:\n{plan}" for t, plan in texts.items())
        emit_result(args, {"plans": texts, "warnings": warned}, text)
        return 0
    confirm_many(args, targets)
    view = ProgressView(args.json)
    try:
        outcomes = clone_many(args.source, targets, options, progress=view)
    finally:
        view.close()
    done = [o.target for o in outcomes if o.ok]
    after = after_many(args, done, clone_source(next(iter(plans.values()))))
    return many.report(
        args,
        "cloned",
        args.source,
        outcomes,
        view.elapsed(),
        verify=options.verify,
        after=after,
        warnings=warned,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add list, probe and clone to the ``clonebay`` parser."""
    p = sub.add_parser("list", help="list the disks of this machine")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("probe", help="show a disk's partitions, filesystems and copy methods")
    p.add_argument("disk", help="a disk device, a /dev/disk/by-id name, or a disk image file")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_key_options(p)
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("clone", help="copy a disk (or a volume) onto another disk or file")
    p.add_argument("source", help="disk, partition device or disk image file to read")
    p.add_argument(
        "target",
        nargs="+",
        help="disk, partition device or image file to overwrite; several: all written from"
        " one read, each checked, verified and reported on its own",
    )
    p.add_argument(
        "--grow",
        choices=["proportional", "last", "none"],
        default="proportional",
        help="how partitions use a larger target (default: proportional)",
    )
    add_shrink_options(p)
    p.add_argument("--no-verify", action="store_true", help="skip reading the target back")
    p.add_argument(
        "--allow-mounted-source",
        action="store_true",
        help="clone a source with read-write mounts anyway (the copy may be inconsistent)",
    )
    p.add_argument(
        "--allow-truncated",
        action="store_true",
        help="a source partition that runs past the source's end: copy it, zeroing the rest",
    )
    p.add_argument(
        "--whole-disk",
        action="store_true",
        help="a single volume onto a whole disk that holds a partition table (it is lost)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan and write nothing")
    add_postcopy_options(p)
    add_rescue_options(p, "/var/lib/clonebay/rescue/SOURCE-SERIAL.map")
    add_resume_option(p, "clone")
    add_key_options(p, decrypt=True)
    add_yes(p)
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_clone)
