"""What every subcommand shares: the JSON/text result line and image streams on stdin/stdout."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, Any

from clonebay.errors import UsageError


def as_given(args: argparse.Namespace, text: str, *, json_text: bool = False) -> str:
    """``text`` with image paths inside a mounted store shown as the store URLs the technician
    gave (cli/stores.py records them in ``args.store_urls``); ``json_text``: ``text`` is JSON."""
    for local, url in getattr(args, "store_urls", {}).items():
        if json_text:
            text = text.replace(json.dumps(local)[1:-1], json.dumps(url)[1:-1])
        else:
            text = text.replace(local, url)
    return text


def emit_result(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    """Print the command's result (store paths as their URLs: ``as_given``)."""
    if args.json:
        line = json.dumps({"event": "result", **result})
        print(as_given(args, line, json_text=True), flush=True)
    else:
        print(as_given(args, text))


@contextlib.contextmanager
def stdout_stream() -> Iterator[IO[bytes]]:
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


def stdin_stream() -> IO[bytes]:
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


def add_restore_grow(p: argparse.ArgumentParser) -> None:
    """``--grow`` of the commands that write an image onto a disk (restore, receive): like
    clone's, but keeping the image's layout unless asked."""
    p.add_argument(
        "--grow",
        choices=["none", "proportional", "last"],
        default="none",
        help="on a larger target, grow partitions like clone does (default: keep the layout)",
    )


def add_shrink_options(p: argparse.ArgumentParser) -> None:
    """``--fit`` and ``--scratch``: onto a disk smaller than the source's partitions."""
    p.add_argument(
        "--fit",
        choices=["proportional", "last"],
        default="proportional",
        help="onto a smaller target: share the room beyond each shrunk filesystem's minimum in"
        " proportion to the source sizes, or give it to the last shrinkable partition first",
    )
    p.add_argument(
        "--scratch",
        default="",
        metavar="DIR",
        help="where a shrink keeps its copy-on-write overlays (default: $CLONEBAY_SCRATCH or"
        " the temporary folder; on the live system that is RAM)",
    )
