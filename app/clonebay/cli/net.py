"""Commands for many machines at once: send (multicast an image) and receive (restore one).

The session key: ``--key``, else the CLONEBAY_KEY environment variable, else the sender makes a
passphrase and shows it, and a receiver at a terminal asks for it. The session starts when
``--min-receivers`` are ready, after ``--wait`` seconds, or on the operator's word (Enter at the
sender's terminal, or SIGUSR1).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from clonebay.cli.common import add_restore_grow, emit_result
from clonebay.cli.confirm import add_yes, confirm
from clonebay.cli.fixup import add_postcopy_options, after_copy, mapped_names, postcopy_options
from clonebay.cli.stores import add_store_options
from clonebay.errors import ClonebayError, UsageError
from clonebay.progress_view import ProgressView
from clonebay.units import human_rate, human_size

if TYPE_CHECKING:
    from clonebay.engine import RestoreOptions
    from clonebay.imaging.manifest import Manifest

KEY_ENV = "CLONEBAY_KEY"
DEFAULT_TCP_PORT = 7767  # as net/tcp.py (the parser is built without importing net/)
SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


class ReceiversFailedError(ClonebayError):
    """The session ended, but not every receiver has a good copy."""

    title = "Done with errors"
    exit_code = 10


def parse_rate(text: str) -> float:
    """'40M' -> 40e6 bytes per second (K, M, G are powers of 1000; a trailing B/s is allowed)."""
    t = text.strip().lower().removesuffix("/s").removesuffix("b")
    unit = t[-1:] if t[-1:] in SUFFIXES else ""
    try:
        value = float(t[: len(t) - len(unit)]) * SUFFIXES[unit]
    except ValueError:
        raise UsageError(f"--rate {text!r}: give bytes per second, e.g. 40M or 500K") from None
    if value < 100_000:
        raise UsageError(f"--rate {text!r} is below 100 KB/s")
    return value


def _key(args: argparse.Namespace, sender: bool) -> tuple[bytes, str]:
    from clonebay.net.protocol import derive_key, new_passphrase

    phrase = args.key or os.environ.get(KEY_ENV, "")
    shown = ""
    if not phrase:
        if sender:
            phrase = shown = new_passphrase()
        elif sys.stdin.isatty():
            phrase = getpass.getpass("session key (shown on the sender): ")
        else:
            raise UsageError(f"give the session key: --key, or {KEY_ENV} in the environment")
    return derive_key(phrase), shown


def _print_event(args: argparse.Namespace, event: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(event), file=sys.stderr, flush=True)
    elif sys.stderr.isatty():
        print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)


def _show_key(args: argparse.Namespace, shown: str) -> None:
    if shown and args.json:
        print(json.dumps({"event": "key", "key": shown}), file=sys.stderr, flush=True)
    elif shown:
        print(f"session key: {shown}  (type it on every receiver)", file=sys.stderr)


def _cmd_send(args: argparse.Namespace) -> int:
    from clonebay.engine import multicast
    from clonebay.net.sender import SendConfig, SessionStatus

    key, shown = _key(args, sender=True)
    _show_key(args, shown)
    if args.to:
        return _send_tcp(args, key)
    config = SendConfig(
        key=key,
        group=args.group,
        port=args.port,
        control_port=args.control_port,
        interface=args.interface,
        rate=parse_rate(args.rate),
        min_receivers=args.min_receivers,
        wait=args.wait,
    )
    start = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: start.set())
    if sys.stdin.isatty():
        print("press Enter to start without waiting for more receivers", file=sys.stderr)

        def operator() -> None:
            sys.stdin.readline()
            start.set()

        threading.Thread(target=operator, daemon=True).start()

    def show(s: SessionStatus) -> None:
        joined = len(s.receivers)
        done = sum(1 for r in s.receivers if r.finished)
        frac = s.position / s.datagrams if s.datagrams else 1.0
        text = (
            f"{s.state}: {joined} receivers ({done} finished), first pass {frac * 100:5.1f}%,"
            f" {s.repairs} repairs, {human_rate(s.rate)}"
        )
        _print_event(args, {"event": "session", **s.as_dict()}, text)

    view = ProgressView(args.json)  # a disk is mapped (read once) before the session starts
    try:
        final = multicast.send(args.image, config, status=show, start=start, progress=view)
    finally:
        view.close()
    if sys.stderr.isatty() and not args.json:
        print(file=sys.stderr)
    rows = [
        f"  #{r.number} {r.address:<15} {r.name[:20]:<20} {r.state:<6}"
        f" {human_size(r.done):>10} {r.message}"
        for r in final.receivers
    ]
    ratio = final.wire_bytes / final.image_bytes if final.image_bytes else 0.0
    text = (
        f"sent {args.image} ({human_size(final.image_bytes)}) to {len(final.receivers)}"
        f" receivers in {final.seconds:.1f} s: {human_size(final.wire_bytes)} on the wire"
        f" ({ratio:.3f}x the image), {final.repairs} datagrams repeated\n" + "\n".join(rows)
    )
    names: dict[str, Any] = {}
    if args.map:
        lines, names = mapped_names(
            args.map, [(r.number, r.address, r.name, r.state) for r in final.receivers]
        )
        text += "\n" + "\n".join(lines)
    emit_result(args, final.as_dict() | {"wire_ratio": round(ratio, 4)} | names, text)
    bad = [r for r in final.receivers if r.state != "ok"]
    if bad:
        raise ReceiversFailedError(
            f"{len(bad)} of {len(final.receivers)} receivers did not finish: "
            + "; ".join(f"#{r.number} {r.address} {r.state}: {r.message}" for r in bad)
        )
    return 0


def _send_tcp(args: argparse.Namespace, key: bytes) -> int:
    """The unicast fallback: the source to each --to receiver in turn."""
    from clonebay.engine import unicast

    outcomes = []
    for host in args.to:
        view = ProgressView(args.json)
        try:
            result = unicast.send_to(args.image, host, key, progress=view)
        except ClonebayError as exc:
            result = {"ok": False, "message": exc.message, "exit_code": exc.exit_code}
        finally:
            view.close()
        outcomes.append({"host": host, "seconds": round(view.elapsed(), 1), **result})
    rows = [
        f"  {o['host']:<21} {'ok' if o['ok'] else 'failed'} {o.get('message', '')}"
        for o in outcomes
    ]
    text = f"sent {args.image} over TCP to {len(outcomes)} receiver(s)\n" + "\n".join(rows)
    emit_result(args, {"receivers": outcomes}, text)
    bad = [o for o in outcomes if not o["ok"]]
    if bad:
        raise ReceiversFailedError(
            f"{len(bad)} of {len(outcomes)} receivers did not finish: "
            + "; ".join(f"{o['host']}: {o.get('message', '')}" for o in bad)
        )
    return 0


def _restore_options(args: argparse.Namespace) -> RestoreOptions:
    from clonebay.engine import Grow, RestoreOptions

    return RestoreOptions(verify=args.verify, grow=Grow(args.grow), whole_disk=args.whole_disk)


def _receive_tcp(args: argparse.Namespace, key: bytes) -> int:
    from clonebay.engine import unicast

    def listening(port: int) -> None:
        text = f"waiting for a sender on TCP port {port}"
        _print_event(args, {"event": "listening", "port": port}, text)

    view = ProgressView(args.json)
    try:
        warnings = unicast.receive_from_sender(
            args.target,
            key,
            args.tcp_port,
            _restore_options(args),
            progress=view,
            listening=listening,
        )
    finally:
        view.close()
    verified = " and verified" if args.verify else ""
    text = f"received over TCP onto {args.target}{verified} in {view.elapsed():.1f} s"
    text += "".join(f"\nwarning: {w}" for w in warnings)
    lines, post = after_copy(args, args.target, None)
    text += "".join(f"\n{line}" for line in lines)
    result = {"target": args.target, "verified": args.verify, "warnings": warnings}
    emit_result(args, result | {"state": "ok"} | post, text)
    return 0


def _cmd_receive(args: argparse.Namespace) -> int:
    from clonebay.engine import jobs, multicast
    from clonebay.engine.postcopy.facts import from_manifest
    from clonebay.net.receiver import ReceiveConfig

    # Before listening: the session's plan comes with its first records, and a receiver that
    # stopped at a question then would hold up every other receiver of the session. The
    # guard's refusals come first, so nobody answers "yes" for a target that cannot be written.
    if os.path.exists(args.target):
        jobs.check_target(args.target)
    options, _ = postcopy_options(args, args.target)  # a bad mapping file: before joining
    if options.hostname and not args.name:
        args.name = options.hostname  # the sender's summary lists the name each machine took
    confirm(args, args.target)
    key, _ = _key(args, sender=False)
    if args.listen:
        return _receive_tcp(args, key)
    config = ReceiveConfig(
        key=key,
        group=args.group,
        port=args.port,
        interface=args.interface,
        name=args.name,
        join_timeout=args.timeout,
    )
    view = ProgressView(args.json)
    seen: list[Manifest] = []
    try:
        warnings, status = multicast.receive(
            args.target, config, _restore_options(args), progress=view, on_manifest=seen.append
        )
    finally:
        view.close()
    verified = " and verified" if args.verify else ""
    c = status.counters
    text = (
        f"received {human_size(status.total)} from {status.sender} onto {args.target}{verified}"
        f" in {status.seconds:.1f} s ({c.get('repairs', 0)} datagrams repaired,"
        f" {c.get('rejected', 0)} refused)"
    )
    text += "".join(f"\nwarning: {w}" for w in warnings)
    lines, post = after_copy(args, args.target, from_manifest(seen[0]) if seen else None)
    text += "".join(f"\n{line}" for line in lines)
    result = {"target": args.target, "verified": args.verify, "warnings": warnings}
    emit_result(args, result | status.as_dict() | post, text)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from clonebay.net.protocol import DEFAULT_GROUP, DEFAULT_PORT

    p.add_argument("--key", help=f"session key or passphrase (default: ${KEY_ENV}, or ask)")
    p.add_argument("--group", default=DEFAULT_GROUP, help="multicast group address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="UDP port of the group")
    p.add_argument("--interface", default="", help="local IPv4 address of the interface to use")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add send and receive to the ``clonebay`` parser."""
    p = sub.add_parser("send", help="multicast an image to many receivers at once")
    p.add_argument(
        "image", metavar="IMAGE|DISK", help="image directory or disk (with --to also a stream file)"
    )
    p.add_argument(
        "--to",
        action="append",
        metavar="HOST[:PORT]",
        help="send over TCP to a receiver started with --listen (repeatable; no multicast)",
    )
    p.add_argument("--min-receivers", type=int, default=1, metavar="N", help="start at N ready")
    p.add_argument("--wait", type=float, metavar="S", help="start after S seconds anyway")
    p.add_argument("--rate", default="40M", help="bytes per second at most (default 40M)")
    p.add_argument("--control-port", type=int, default=0, help="TCP port of the back channel")
    p.add_argument(
        "--map",
        default="",
        metavar="FILE",
        help="the mapping file the receivers use: the summary lists machine -> name -> outcome"
        " and the rows no machine took",
    )
    _common(p)
    add_store_options(p)
    p.set_defaults(func=_cmd_send)

    p = sub.add_parser("receive", help="join a multicast session and restore it onto DST")
    p.add_argument("target", metavar="DST", help="disk or disk image file to write")
    p.add_argument("--name", default="", help="how the sender lists this receiver")
    p.add_argument("--timeout", type=float, metavar="S", help="give up if no session in S s")
    p.add_argument("--verify", action="store_true", help="re-read the target and compare")
    add_restore_grow(p)
    p.add_argument(
        "--whole-disk",
        action="store_true",
        help="a single-volume image onto a whole disk that holds a partition table (it is lost)",
    )
    add_postcopy_options(p)
    add_yes(p)
    p.add_argument(
        "--listen", action="store_true", help="wait for a sender on TCP instead of multicast"
    )
    p.add_argument(
        "--tcp-port",
        type=int,
        default=DEFAULT_TCP_PORT,
        metavar="PORT",
        help=f"TCP port for --listen (default {DEFAULT_TCP_PORT})",
    )
    _common(p)
    p.set_defaults(func=_cmd_receive)
