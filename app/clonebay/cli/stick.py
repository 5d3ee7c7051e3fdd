"""make-stick: the live ISO and an images partition on one USB stick (system/stick.py explains the
layout, system/makestick.py the order of the writes)."""

from __future__ import annotations

import argparse

from clonebay.cli.common import emit_result
from clonebay.cli.confirm import add_yes, confirm
from clonebay.progress_view import ProgressView
from clonebay.system.stick import IMAGES_LABEL, ImagesFs
from clonebay.units import human_size


def _cmd_make_stick(args: argparse.Namespace) -> int:
    from clonebay.system.makestick import check_stick, write_stick

    plan = check_stick(args.iso, args.device, ImagesFs(args.fs), args.label)
    confirm(args, args.device)
    view = ProgressView(args.json)
    try:
        result = write_stick(plan, args.iso, args.device, progress=view)
    finally:
        view.close()
    tables = "MBR and GPT" if result.gpt else "MBR"
    text = (
        f"made {result.device} a clonebay stick in {view.elapsed():.1f} s:"
        f" ISO {human_size(result.iso_size)} ({result.iso_size} bytes, verified,"
        f" sha256 {result.iso_sha256});"
        f' images partition {result.partition} ({result.fs} "{result.label}",'
        f" {human_size(result.size)} from byte {result.start}, in the {tables})"
    )
    data = {
        "device": result.device,
        "iso": result.iso,
        "iso_size": result.iso_size,
        "iso_sha256": result.iso_sha256,
        "partition": result.partition,
        "partition_number": result.number,
        "partition_start": result.start,
        "partition_size": result.size,
        "fs": result.fs,
        "label": result.label,
        "gpt": result.gpt,
    }
    emit_result(args, data, text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add make-stick to the ``clonebay`` parser."""
    p = sub.add_parser(
        "make-stick",
        help="write the live ISO to a USB stick and make the rest of it an images partition",
    )
    p.add_argument("iso", help="the clonebay live ISO (make iso builds it)")
    p.add_argument("device", help="the whole stick to overwrite, e.g. /dev/sdb")
    p.add_argument(
        "--fs",
        choices=[f.value for f in ImagesFs],
        default=ImagesFs.EXFAT.value,
        help="the images partition's filesystem (default: exfat, readable on Windows and macOS)",
    )
    p.add_argument(
        "--label",
        default=IMAGES_LABEL,
        help=f"its label (default {IMAGES_LABEL}, the one the live system looks for;"
        " exFAT takes at most 11 characters)",
    )
    add_yes(p)
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_make_stick)
