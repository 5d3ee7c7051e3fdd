"""Mount points of image stores: made under /run/clonebay/stores, always taken down again.

A store is mounted for one job and unmounted when the job ends, whatever way it ends; only
``clonebay mount`` keeps its image's store mounted until ``clonebay umount``. Mount helpers run
with a deadline (a server that never answers must not hang the job) and their failures are put
in plain words by the caller, which knows the kind of store.

A mount that stays busy at unmount time (a FUSE daemon still flushing) is retried for a few
seconds, then detached lazily (``umount -l``) so that the job can end; the kernel finishes it
when the last file is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clonebay.errors import CommandError, StoreError
from clonebay.system import run as runner
from clonebay.system.mounts import MOUNTINFO, parse_mountinfo

log = logging.getLogger(__name__)

STORES_DIR = Path(os.environ.get("CLONEBAY_STORES_DIR", "/run/clonebay/stores"))
MOUNT_DEADLINE = 60.0


@dataclass(frozen=True)
class Failure:
    """A mount helper that failed: its exit status and what it said (stderr, then stdout)."""

    code: int
    text: str


def mount_dir(name: str, base: Path | None = None) -> Path:
    """A fresh, empty folder for one mount: /run/clonebay/stores/NAME (NAME-2, ... when taken),
    or under ``base``."""
    base = STORES_DIR if base is None else base
    base.mkdir(parents=True, exist_ok=True, mode=0o755)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "store"
    for n in range(1, 1000):
        path = base / (safe if n == 1 else f"{safe}-{n}")
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            continue
        return path
    raise StoreError(f"cannot make a mount point under {base}: 999 are taken")


def attempt(
    argv: Sequence[str],
    *,
    what: str,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    deadline: float = MOUNT_DEADLINE,
) -> Failure | None:
    """Run a mount helper; None when it worked, else its Failure. A helper that does not end
    within ``deadline`` is killed and reported as a StoreError naming ``what``."""
    try:
        runner.run(list(argv), input_bytes=input_bytes, env=env, timeout=deadline)
    except subprocess.TimeoutExpired as exc:
        raise StoreError(
            f"{what}: no answer within {deadline:.0f} s (host down, a firewall dropping the"
            " connection, or a server that does not speak this protocol)"
        ) from exc
    except CommandError as exc:
        return Failure(exc.returncode, exc.stderr.strip())
    return None


def is_mountpoint(path: Path) -> bool:
    """Whether ``path`` is a mount point now (by /proc/self/mountinfo, not by st_dev)."""
    try:
        text = Path(MOUNTINFO).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return False
    return any(entry.mountpoint == str(path) for entry in parse_mountinfo(text))


_KEPT: set[Path] = set()  # stores that stay mounted after this process (``keep``)


def _store_root(image: str) -> Path | None:
    """The store mount point (STORES_DIR/NAME) an image path lies in, or None."""
    try:
        inside = Path(image).resolve().relative_to(STORES_DIR.resolve())
    except ValueError:
        return None
    return STORES_DIR / inside.parts[0] if inside.parts else None


def keep(image: str) -> None:
    """Leave the store ``image`` lies in mounted when its job ends (``clonebay mount``/``edit``:
    the browsing view reads it until ``clonebay umount``, which calls ``release``)."""
    root = _store_root(image)
    if root is not None:
        _KEPT.add(root)


def unmount(path: Path) -> None:
    """Unmount ``path`` and remove the folder; busy for 5 s -> lazy unmount. Never raises.
    A store marked with ``keep`` is left as it is."""
    if path in _KEPT:
        return
    for _ in range(10):
        if not is_mountpoint(path):
            break
        try:
            runner.run(["umount", str(path)], timeout=60)
        except (CommandError, subprocess.TimeoutExpired) as exc:
            log.debug("umount %s: %s", path, exc)
            time.sleep(0.5)
    else:
        log.warning("%s stayed busy: detached lazily", path)
        with contextlib.suppress(CommandError, subprocess.TimeoutExpired):
            runner.run(["umount", "-l", str(path)], timeout=60)
    if not is_mountpoint(path):
        with contextlib.suppress(OSError):
            path.rmdir()


def release(image: str) -> Path | None:
    """After ``clonebay umount``: unmount the store a browsed image lay in, when clonebay
    mounted it (it is under STORES_DIR) and nothing uses it any more. A store still in use (a
    second image of it mounted) stays; never a lazy unmount here. The store's mount point, or
    None when there was nothing to take down."""
    root = _store_root(image)
    if root is None or not is_mountpoint(root):
        return None
    try:
        runner.run(["umount", str(root)], timeout=60)
    except (CommandError, subprocess.TimeoutExpired):
        return None  # busy: another clonebay mount still reads it
    with contextlib.suppress(OSError):
        root.rmdir()
    return root
