"""``clonebay fixup DISK`` and the post-copy options of clone, restore and receive.

The options (the same on all four): ``--hostname NAME``, ``--new-ids``, ``--map FILE``,
``--efi-entry``/``--no-efi-entry``, ``--reinstall-grub``, and ``--no-fixup`` on the copying
commands. ``after_copy`` runs the pass after a copy and turns its report into result lines and
a JSON object.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clonebay.cli.common import emit_result
from clonebay.cli.confirm import add_yes, confirm
from clonebay.errors import ClonebayError, UsageError

if TYPE_CHECKING:
    from clonebay.engine import Plan
    from clonebay.engine.postcopy import PostcopyOptions, PostcopyReport, SourceFacts


def add_postcopy_options(p: argparse.ArgumentParser, *, copying: bool = True) -> None:
    g = p.add_argument_group("after the copy (the post-copy pass)")
    g.add_argument(
        "--hostname",
        default="",
        metavar="NAME",
        help="the target becomes the machine NAME: host name, new machine-id, SSH host keys,"
        " net rules (Linux); computer name (Windows)",
    )
    g.add_argument(
        "--new-ids",
        action="store_true",
        help="new disk, partition and filesystem ids, and the files that name them (a clone"
        " that stays beside its source)",
    )
    g.add_argument(
        "--map",
        default="",
        metavar="FILE",
        help="a CSV or TOML file: MAC, DMI serial or disk serial -> hostname; this machine's"
        " row names it",
    )
    entry = g.add_mutually_exclusive_group()
    entry.add_argument(
        "--efi-entry",
        dest="efi_entry",
        action="store_const",
        const=True,
        default=None,
        help="add a UEFI NVRAM boot entry for the target (default: on in the live system when"
        " the target is this machine's own disk)",
    )
    entry.add_argument(
        "--no-efi-entry",
        dest="efi_entry",
        action="store_const",
        const=False,
        help="never add a UEFI NVRAM entry",
    )
    g.add_argument(
        "--reinstall-grub",
        action="store_true",
        help="reinstall GRUB's boot code and grub.cfg even when they are not stale",
    )
    if copying:
        g.add_argument(
            "--no-fixup",
            action="store_true",
            help="no post-copy pass at all (the copy is left exactly as the source)",
        )


def one_machine(args: argparse.Namespace, targets: list[str]) -> None:
    """A host name names one machine: refused for a job with several targets."""
    if len(targets) > 1 and args.hostname:
        raise UsageError(
            "--hostname names one machine, and this job writes several disks: give each its"
            " name afterwards (clonebay fixup DISK --hostname NAME), or use --map where each"
            " machine restores its own disk; nothing was written"
        )


def postcopy_options(args: argparse.Namespace, target: str) -> tuple[PostcopyOptions, list[str]]:
    """The pass's options from the command line; with ``--map``, this machine's row gives the
    host name (warnings when no row names it)."""
    from clonebay.engine.postcopy import PostcopyOptions
    from clonebay.engine.postcopy.linux import check_hostname
    from clonebay.engine.postcopy.mapping import find_row, read_mapping, this_machine
    from clonebay.system.udev import find_disk

    hostname: str = args.hostname
    notes: list[str] = []
    if hostname:
        check_hostname(hostname)
    if args.map:
        if hostname:
            raise UsageError("--hostname and --map both name the machine: give one of them")
        rows = read_mapping(args.map)
        disk = find_disk(target)
        machine = this_machine(disk.serial if disk else "")
        row = find_row(rows, machine)
        if row is None:
            notes.append(
                f"no row of {args.map} names this machine ({machine.describe()}): its name is kept"
            )
        else:
            hostname = row.hostname
            notes.append(
                f"row {row.line} of {args.map} ({row.describe()}) names this machine {hostname}"
            )
    options = PostcopyOptions(
        hostname=hostname,
        new_ids=args.new_ids,
        efi_entry=args.efi_entry,
        reinstall_grub=args.reinstall_grub,
        enabled=not getattr(args, "no_fixup", False),
    )
    return options, notes


def mapped_names(
    path: str, receivers: list[tuple[int, str, str, str]]
) -> tuple[list[str], dict[str, Any]]:
    """The sender's view of a mass deployment: each receiver (number, address, the name it
    took, its state) against the mapping file's rows."""
    from clonebay.engine.postcopy.mapping import read_mapping

    rows = read_mapping(path)
    by_name = {r.hostname.lower(): r for r in rows}
    lines = ["names (from " + path + "):"]
    machines = []
    taken = set()
    for number, address, name, state in receivers:
        row = by_name.get(name.lower())
        if row is not None:
            taken.add(row.hostname.lower())
        lines.append(
            f"  #{number} {address} -> {name if row else '(no row: name kept)'} -> {state}"
        )
        machines.append(
            {"number": number, "address": address, "hostname": name if row else "", "state": state}
        )
    unused = [r for r in rows if r.hostname.lower() not in taken]
    lines += [
        f"  warning: row {r.line} ({r.hostname}, {r.describe()}): no machine took it"
        for r in unused
    ]
    no_row = [m for m in machines if not m["hostname"]]
    lines += [f"  warning: receiver #{m['number']} {m['address']} found no row" for m in no_row]
    return lines, {
        "names": machines,
        "unused_rows": [{"line": r.line, "hostname": r.hostname} for r in unused],
    }


def check_name(args: argparse.Namespace, source: str | Plan) -> None:
    """A host name the source's systems can take (Windows: 15 characters) and a mapping file
    that reads, both refused before the copy. ``source``: a clone's Plan (its volumes are
    already probed) or an image's path."""
    from clonebay.engine.jobs import image_manifest
    from clonebay.engine.postcopy.preview import check_hostname, from_manifest, from_volumes

    if getattr(args, "no_fixup", False):
        return
    postcopy_options(args, "")  # a bad mapping file, or --hostname with --map: refused now
    if not args.hostname:
        return
    if isinstance(source, str):
        volumes = from_manifest(image_manifest(source))
    else:
        volumes = from_volumes([(f"p{m.number}", m.source.type_id, m.volume) for m in source.moves])
    check_hostname(args.hostname, volumes)


def preview_text(args: argparse.Namespace, source: str, target: str, *, image: bool) -> list[str]:
    """What the pass will do after a copy from ``source`` (a disk, or an image directory or
    stream file), for ``--dry-run``."""
    from clonebay.engine import inspect_disk
    from clonebay.engine.jobs import image_manifest
    from clonebay.engine.postcopy.preview import from_manifest, from_volumes, preview
    from clonebay.engine.postcopy.windows_probe import facts_lines

    options, notes = postcopy_options(args, target)
    facts: list[str] = []
    if image:
        volumes = from_manifest(image_manifest(source))
    else:
        report = inspect_disk(source)
        parts = [
            (f"p{p.partition.number}", p.partition.type_id, p.volume) for p in report.partitions
        ]
        volumes = from_volumes(parts)
        facts = facts_lines(report)
    lines = [*notes, *preview(options, volumes), *facts]
    return [f"after the copy: {line}" for line in lines]


def clone_source(plan: Plan) -> SourceFacts:
    from clonebay.engine.postcopy.facts import from_plan

    return from_plan(plan)


def image_source(image: object) -> SourceFacts | None:
    """What an image recorded of its source (None for a stream on stdin: read once)."""
    from clonebay.engine.postcopy.facts import from_image

    return from_image(image) if isinstance(image, str) else None


def report_text(report: PostcopyReport, notes: list[str]) -> list[str]:
    lines = [f"after the copy: {line}" for line in notes]
    lines += [f"after the copy: {line}" for line in report.lines()]
    lines += [f"warning: {w}" for w in report.warnings]
    return lines


def after_copy(
    args: argparse.Namespace, target: str, source: SourceFacts | None
) -> tuple[list[str], dict[str, Any]]:
    """Run the pass after a copy (unless ``--no-fixup``); its lines and JSON. ``source``: the
    source partitions' starts by number (None when not known: a stream read from stdin)."""
    from clonebay.engine.postcopy import copy_facts, run_pass

    options, notes = postcopy_options(args, target)
    if not options.enabled:
        return ["after the copy: no post-copy pass (--no-fixup)"], {"postcopy": None}
    report = run_pass(target, options, copy_facts(source, target))
    return report_text(report, notes), {"postcopy": report.as_dict() | {"notes": notes}}


@dataclass
class AfterMany:
    """The pass on each complete target of a job with several."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, ClonebayError] = field(default_factory=dict)


def after_many(
    args: argparse.Namespace, targets: list[str], source: SourceFacts | None
) -> AfterMany:
    """Run the pass on each of ``targets`` (the complete ones) in turn; a pass that fails is
    that target's error, the others still run."""
    out = AfterMany()
    for target in targets:
        try:
            out.lines[target], out.data[target] = after_copy(args, target, source)
        except ClonebayError as exc:
            out.errors[target] = exc
            out.lines[target] = [f"after the copy: FAILED: {exc.message}"]
    return out


def _cmd_fixup(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs
    from clonebay.engine.postcopy import copy_facts, run_pass

    if os.path.isdir(args.disk):
        raise UsageError(f"{args.disk} is a folder: give a disk or a disk image file")
    jobs.check_target(args.disk)
    options, notes = postcopy_options(args, args.disk)
    confirm(args, args.disk)
    report = run_pass(args.disk, options, copy_facts(None, args.disk), standalone=True)
    lines = report_text(report, notes) or ["nothing to do"]
    text = f"fixup of {args.disk}:\n  " + "\n  ".join(
        line.removeprefix("after the copy: ") for line in lines
    )
    emit_result(args, report.as_dict() | {"notes": notes}, text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fixup", help="make a copied disk boot and give it its own identity (runs after every copy)"
    )
    p.add_argument("disk", metavar="DISK", help="the target disk or disk image file")
    add_postcopy_options(p, copying=False)
    add_yes(p)
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.set_defaults(func=_cmd_fixup)
