"""Store URLs on the command line, and ``clonebay stores``.

Every command that takes an image path takes a store URL in its place (engine/stores/url.py):
``run_command`` mounts the stores a command's arguments name, hands the command local paths,
and unmounts them when it ends (``mount`` keeps its image's store mounted until ``umount``).
The options that say how to reach a store are the same on every such command:
``--credentials FILE``, ``--identity FILE`` (an SSH key), ``--host-key SHA256:...`` (pin an SSH
server's key) and ``--smb1``. Passwords come from the credentials file, ``CLONEBAY_PASSWORD`` or
a prompt on the terminal; an unknown SSH host key is shown and accepted on the terminal, or
pinned; with no terminal and no pin it is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import sys
from typing import Any

from clonebay.cli.common import emit_result
from clonebay.units import human_size

# command -> (argument, writes?); "image:p2" forms are split before resolving
IMAGE_ARGUMENTS: dict[str, list[tuple[str, bool]]] = {
    "save": [("image", True)],
    "restore": [("image", False)],
    "verify": [("image", False)],
    "info": [("image", False)],
    "convert": [("source", False), ("target", True)],
    "ls": [("image", False)],
    "extract": [("image", False)],
    "mount": [("image", False)],
    "edit": [("image", True)],
    "send": [("image", False)],
}
DEVICE_ARGUMENTS = ("source", "target", "targets", "device")
KEEP_MOUNTED = ("mount", "edit")


def add_store_options(p: argparse.ArgumentParser) -> None:
    """How to reach a store an image argument names (store URLs: see docs/cli.md)."""
    g = p.add_argument_group("image stores (smb://, nfs://, sftp://, disk: URLs)")
    g.add_argument("--credentials", metavar="FILE", help="username=, password=, domain= lines")
    g.add_argument("--identity", metavar="FILE", help="SSH private key for sftp:// stores")
    g.add_argument("--host-key", metavar="SHA256:...", default="", help="pin the SSH host key")
    g.add_argument("--smb1", action="store_true", help="allow SMB1 (old NAS; insecure)")


def access(args: argparse.Namespace, devices: list[str]) -> Any:
    """The engine's Access for this command line: credentials, the prompts, the job's disks."""
    from clonebay.engine import stores

    creds = stores.gather(getattr(args, "credentials", None))
    if getattr(args, "identity", None):
        creds = dataclasses.replace(creds, identity=args.identity)
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    return stores.Access(
        credentials=creds,
        ask_password=(lambda prompt: getpass.getpass(prompt + ": ")) if tty else None,
        accept_host_key=_ask_host_key if tty else None,
        host_key=getattr(args, "host_key", "") or "",
        smb1=bool(getattr(args, "smb1", False)),
        job_devices=tuple(devices),
    )


def _ask_host_key(name: str, fingerprints: list[str]) -> bool:
    print(f"The SSH server {name} is not known yet. Its host key fingerprints:", file=sys.stderr)
    for fp in fingerprints:
        print(f"  {fp}", file=sys.stderr)
    print(
        "Compare them with the server's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub).",
        file=sys.stderr,
    )
    answer = input("Trust this server for this session? Type yes: ")
    return answer.strip().lower() == "yes"


def _devices(args: argparse.Namespace) -> list[str]:
    found: list[str] = []
    for name in DEVICE_ARGUMENTS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("/dev/"):
                found.append(item)
    return found


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command with every store URL among its image arguments mounted."""
    from clonebay.engine import stores

    wanted = [
        (name, write)
        for name, write in IMAGE_ARGUMENTS.get(args.command or "", [])
        if isinstance(getattr(args, name, None), str) and stores.is_store_url(getattr(args, name))
    ]
    if not wanted:
        code: int = args.func(args)
        return code
    reach = access(args, _devices(args))
    with contextlib.ExitStack() as stack:
        for name, write in wanted:
            text: str = getattr(args, name)
            image, suffix = _split_part(text) if args.command in ("ls", "extract") else (text, "")
            local = stack.enter_context(stores.image_location(image, reach, write=write))
            setattr(args, name, local + suffix)
            args.store_urls = {**getattr(args, "store_urls", {}), local: image}
        code = args.func(args)
        if args.command in KEEP_MOUNTED and code == 0:
            for name, _ in wanted:  # the image stays readable until `clonebay umount`
                stores.keep(getattr(args, name))
        return code


def _split_part(text: str) -> tuple[str, str]:
    """``URL:p2`` -> (``URL``, ``:p2``): the region suffix of ls/extract."""
    head, sep, tail = text.rpartition(":")
    if sep and tail and "/" not in tail and head and not head.endswith(("disk", "smb", "nfs")):
        return head, ":" + tail
    return text, ""


def _cmd_stores(args: argparse.Namespace) -> int:
    from clonebay.engine import stores

    found = stores.list_local()
    rows = []
    for s in found:
        state = "ok" if s.usable else f"not usable: {s.reason}"
        free = human_size(s.free) if s.free is not None else "?"
        rows.append(
            f"{s.device:<16} {s.fstype:<6} {s.label or '-':<16} {human_size(s.size):>10}"
            f" {free:>10} free  {len(s.images)} image(s)  {state}"
        )
        rows += [f"    {img}" for img in s.images]
    text = "\n".join(rows) if rows else "no partition here can hold images"
    emit_result(args, {"stores": [dataclasses.asdict(s) for s in found]}, text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``stores`` to the ``clonebay`` parser."""
    p = sub.add_parser("stores", help="list the partitions that can hold images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stores)


def no_space_check(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-space-check",
        action="store_true",
        help="save even when the store's free space is below the data in use",
    )
