"""Commands that look inside images: mount, edit, umount, ls, extract."""

from __future__ import annotations

import argparse

from clonebay.cli.common import emit_result
from clonebay.cli.confirm import add_yes, confirm
from clonebay.cli.keys import add_key_options, keyring
from clonebay.cli.stores import add_store_options
from clonebay.errors import ClonebayError
from clonebay.units import human_size


class ExtractIncompleteError(ClonebayError):
    """Some files could not be read out of the image (damaged frames); the rest were copied."""

    title = "Done with errors"
    exit_code = 10


def _cmd_mount(args: argparse.Namespace) -> int:
    from clonebay.engine import browse_jobs

    state = browse_jobs.mount(args.image, args.mountpoint, edit=args.edit, keys=keyring(args))
    lines = [f"{'edit' if state.edit else 'mounted'} {state.image} at {state.mountpoint}:"]
    lines += [f"  {fs.directory}  ({fs.fstype}, {fs.driver})" for fs in state.mounts]
    lines += [f"  {region}: not mounted ({why})" for region, why in state.skipped.items()]
    lines.append(f"  partitions as files: {state.view}")
    done = "clonebay umount --commit" if state.edit else "clonebay umount"
    lines.append(f"undo with: {done} {state.mountpoint}")
    result = {
        "mountpoint": state.mountpoint,
        "edit": state.edit,
        "mounts": [
            {"region": fs.region, "path": fs.directory, "fstype": fs.fstype, "driver": fs.driver}
            for fs in state.mounts
        ],
        "skipped": state.skipped,
    }
    emit_result(args, result, "\n".join(lines))
    return 0


def _confirm_commit(args: argparse.Namespace) -> None:
    """``umount --commit`` changes the image the edit was made on: name it and ask."""
    from clonebay.browse.cow import changed_chunks
    from clonebay.browse.mounts import load_state

    try:
        state = load_state(args.mountpoint)
    except ClonebayError:
        return  # not an image clonebay mounted: umount says so, before any write
    if not state.edit:
        return  # nothing to commit: umount refuses it
    lines = [
        f"{state.image}: the image edited at {state.mountpoint}",
        f"  {changed_chunks(state.scratch)} changed chunks, appended to it as a new revision",
    ]
    confirm(args, state.image, lines, what="the edit's changes go into it for good")


def _cmd_umount(args: argparse.Namespace) -> int:
    from clonebay.engine import browse_jobs, stores

    if args.commit:
        _confirm_commit(args)
    result = browse_jobs.umount(args.mountpoint, commit=args.commit)
    text = f"unmounted {result['mountpoint']}"
    if result["edit"] and result["committed"]:
        text += f"; {result['changed_chunks']} changed chunks committed as revision"
        text += f" {result['revision']} of {result['image']}"
    elif result["edit"]:
        text += f"; {result['changed_chunks']} changed chunks discarded, the image is unchanged"
    store = stores.release(str(result.get("image", "")))
    if store is not None:  # the image lay in a store clonebay mounted for `mount`/`edit`
        text += f"; its store at {store} was unmounted"
        result["store_unmounted"] = str(store)
    emit_result(args, result, text)
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from clonebay.engine import browse_jobs

    image, part = browse_jobs.split_target(args.image)
    keys = keyring(args)
    listing = browse_jobs.ls(image, part, args.path, recursive=args.recursive, keys=keys)
    if listing is None:
        parts = browse_jobs.partitions(image)
        lines = [
            f"{p.folder:<24} {p.fstype or '-':<8} {human_size(p.size):>10}"
            + ("" if p.mountable else "  (no files)")
            for p in parts
        ]
        emit_result(args, {"partitions": [p.as_dict() for p in parts]}, "\n".join(lines))
        return 0
    result = {
        "partition": listing.partition.as_dict(),
        "entries": [e.as_dict() for e in listing.entries],
        "reader": listing.reader_stats["reader"],
    }
    emit_result(args, result, "\n".join(e.line() for e in listing.entries))
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from clonebay.engine import browse_jobs

    image, part = browse_jobs.split_target(args.image)
    done = browse_jobs.extract(image, part, args.paths, args.dest, keys=keyring(args))
    report = done.report
    text = (
        f"extracted {report.files} files, {report.folders} folders, {report.links} links"
        f" ({human_size(report.bytes)}) from {done.partition.region} into {args.dest}"
    )
    failed = [f"{path}: {why}" for path, why in report.failed]
    result = {
        "files": report.files,
        "folders": report.folders,
        "links": report.links,
        "bytes": report.bytes,
        "failed": failed,
        "image_errors": done.errors,
    }
    if failed:
        text += "\nnot extracted:\n  " + "\n  ".join(failed)
        text += "\nthe image says:\n  " + "\n  ".join(done.errors or ["(nothing)"])
    emit_result(args, result, text)
    if failed:
        raise ExtractIncompleteError(f"{len(failed)} file(s) could not be read from the image")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add mount, edit, umount, ls and extract to the ``clonebay`` parser."""
    for name, edit in (("mount", False), ("edit", True)):
        what = "read-write, changes kept aside until umount --commit" if edit else "read-only"
        p = sub.add_parser(name, help=f"mount every filesystem of an image ({what})")
        p.add_argument("image", help="image directory")
        p.add_argument("mountpoint", help="empty folder (created if missing)")
        p.add_argument("--json", action="store_true")
        add_store_options(p)
        add_key_options(p)
        p.set_defaults(func=_cmd_mount, edit=edit)

    p = sub.add_parser("umount", help="unmount what clonebay mount or edit mounted")
    p.add_argument("mountpoint")
    p.add_argument("--commit", action="store_true", help="after edit: write the changes")
    add_yes(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_umount)

    p = sub.add_parser("ls", help="list files in an image (IMAGE alone lists its partitions)")
    p.add_argument("image", metavar="IMAGE[:PART]")
    p.add_argument("path", nargs="?", default="", help="path inside the partition")
    p.add_argument("-R", "--recursive", action="store_true", help="list folders recursively")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    add_key_options(p)
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("extract", help="copy files out of an image, keeping times and modes")
    p.add_argument("image", metavar="IMAGE[:PART]")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders in the partition")
    p.add_argument("dest", help="folder to copy them into (created if missing)")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    add_key_options(p)
    p.set_defaults(func=_cmd_extract)
