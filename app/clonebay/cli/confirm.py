"""The CLI's last stop before a target is overwritten (DESIGN §5: destructive commands confirm).

``clone``, ``restore``, ``receive``, ``job`` and ``umount --commit`` call ``confirm`` after their
plan is made (so a refusal such as "target too small" comes first and nobody is asked in vain)
and before their first write. It shows what will be lost, the way the TUI's Confirm dialog does:
the target's model, serial and size, and what it holds now, read fresh; then it asks for "yes".

- ``--yes`` (``-y``) skips the question, for scripts; ``--dry-run`` never asks.
- A target that does not exist yet (a new image file) has nothing to lose: no question.
- No terminal (stdin or stderr is not a tty) and no ``--yes``: refused with exit code 2, because
  a script that never expected a question must not hang on one or guess the answer.
- Any answer but "yes" cancels with exit code 9, and nothing has been written.

The question goes to stderr so that stdout stays the result (or JSON) alone.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence

from clonebay.errors import CancelledError, ClonebayError, UsageError
from clonebay.units import human_size

ANSWER = "yes"


def add_yes(p: argparse.ArgumentParser) -> None:
    """``-y/--yes`` of the commands that overwrite something."""
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask before overwriting the target (for scripts; required without a terminal)",
    )


def describe_target(path: str) -> list[str]:
    """What ``path`` is and what it holds now, one line each, for the question (never writes)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return [f"{path}: new file (nothing there yet)"]
    except OSError as exc:
        return [f"{path}: cannot be looked at: {exc.strerror}"]
    if stat.S_ISBLK(info.st_mode):
        lines = _device_lines(path)
    elif stat.S_ISREG(info.st_mode):
        lines = [f"{path}: an image file of {info.st_size} bytes ({human_size(info.st_size)})"]
        if info.st_size == 0:
            return lines
    elif stat.S_ISDIR(info.st_mode):
        return [f"{path}: a folder"]
    else:
        return [f"{path}: not a disk, partition or file"]
    return lines + ["On it now:"] + [f"  {line}" for line in _holds(path)]


def _device_lines(path: str) -> list[str]:
    from clonebay.system.blockdev import device_size
    from clonebay.system.udev import find_disk

    real = os.path.realpath(path)
    try:
        fd = os.open(real, os.O_RDONLY)
        try:
            size = device_size(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return [f"{path}: cannot be opened: {exc.strerror}"]
    named = path if real == path else f"{path} ({real})"
    disk = find_disk(real)
    if disk is not None and disk.path != real:
        head = f"{named}: partition of {disk.path}, {human_size(size)} ({size} bytes)"
    else:
        head = f"{named}: {human_size(size)} ({size} bytes)"
    if disk is None:
        return [head]
    return [
        head,
        f"  Model   {disk.model or 'unknown'}",
        f"  Serial  {disk.serial or 'none'}",
        f"  Disk    {human_size(disk.size)} ({disk.size} bytes), bus {disk.transport or '-'}",
    ]


def _holds(path: str) -> list[str]:
    """The partition table and each partition's filesystem, label and size (or why not)."""
    from clonebay.engine import inspect_disk

    try:
        report = inspect_disk(path)
    except ClonebayError as exc:
        return [f"nothing clonebay can read ({exc.message})"]
    except OSError as exc:
        return [f"nothing clonebay can read ({exc.strerror or exc})"]
    whole = report.whole_disk
    if whole is not None:
        if whole.fstype in ("", "unknown"):
            return ["nothing recognisable: no partition table, no filesystem clonebay knows"]
        label = f' "{whole.label}"' if whole.label else ""
        return [f"no partition table: {whole.fstype}{label}, {human_size(whole.size)}"]
    lines = [f"{report.table.kind} partition table, {len(report.partitions)} partition(s)"]
    for pr in report.partitions:
        vol, part = pr.volume, pr.partition
        what = "extended" if vol is None else vol.fstype or "unknown"
        label = f' "{vol.label}"' if vol is not None and vol.label else ""
        used = f", {human_size(vol.used_bytes)} used" if vol is not None else ""
        lines.append(f"p{part.number}: {what}{label}, {human_size(part.size)}{used}")
    return lines


def confirm(
    args: argparse.Namespace,
    target: str,
    lines: Sequence[str] | None = None,
    *,
    what: str = "everything on it will be lost",
) -> None:
    """Ask on the terminal before ``target`` is written; return to go on, raise to stop.

    ``lines`` describe the target (default: ``describe_target``, read only when asking)."""
    if getattr(args, "dry_run", False) or getattr(args, "yes", False):
        return
    if not os.path.lexists(target):
        return  # a new file: nothing to lose
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(
            f"{target} would be overwritten and there is no terminal to confirm it on:"
            " pass --yes (-y) to go on without asking"
        )
    shown = describe_target(target) if lines is None else list(lines)
    print(f"\n{target} will be written: {what}.", file=sys.stderr)
    print("\n".join(shown), file=sys.stderr)
    print(f'Type "{ANSWER}" to go on, anything else to stop: ', end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() != ANSWER:
        raise CancelledError(f"not confirmed: nothing was written to {target}")


def confirm_many(
    args: argparse.Namespace, targets: Sequence[str], *, what: str = "everything on it will be lost"
) -> None:
    """Ask once before several targets are written: every target that exists is described
    (a new file has nothing to lose); one "yes" goes on for all of them. One target asks as
    ``confirm`` does."""
    if len(targets) == 1:
        confirm(args, targets[0], what=what)
        return
    if getattr(args, "dry_run", False) or getattr(args, "yes", False):
        return
    existing = [t for t in targets if os.path.lexists(t)]
    if not existing:
        return
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(
            f"{', '.join(existing)} would be overwritten and there is no terminal to confirm"
            " it on: pass --yes (-y) to go on without asking"
        )
    print(f"\n{len(targets)} targets will be written: {what}.", file=sys.stderr)
    for n, target in enumerate(targets, 1):
        print(f"\n[{n}] " + "\n".join(describe_target(target)), file=sys.stderr)
    print(
        f'\nType "{ANSWER}" to overwrite all {len(targets)}, anything else to stop: ',
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline()
    if answer.strip().lower() != ANSWER:
        raise CancelledError(f"not confirmed: nothing was written to {', '.join(targets)}")
