"""The image store the TUI works in, kept mounted while it is used, and the stores of the session.

The CLI mounts a store for one command. The TUI goes from the store to the image picker or the
save screen, then to a job, and back to Home for the next job: the store the technician chose
stays mounted meanwhile (one ExitStack holds its mount) and is taken down when another store is
chosen and when the app exits. A store mounted read-only (for a restore) is mounted again
read-write when a save wants it, and a disk store is checked again when the job's disks change
(the guard in engine/stores/local.py runs at every mount).

Every store opened is remembered for the session, credentials included, in memory only (never
written to disk), so the next job offers it at the top of the list.

Mounting runs in worker threads and may wait for the technician (an SSH host key to accept), so
no lock is held while mounting: the lock only guards the swap of the open store.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from clonebay.engine import stores
from clonebay.errors import CancelledError, StoreError
from clonebay.tui.store_choice import AcceptKey, Kind, StoreChoice

REMEMBERED = 8  # a bench session uses one or two stores; eight is plenty to pick from


class StoreSession:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stack: contextlib.ExitStack | None = None
        self._state: tuple[str, bool, tuple[str, ...]] | None = None  # key, write, job disks
        self._folder = ""
        self._closed = False
        self._remembered: dict[str, StoreChoice] = {}  # oldest first

    def remembered(self) -> list[StoreChoice]:
        """The stores opened in this session, the last one first."""
        with self._lock:
            return list(reversed(self._remembered.values()))

    def test(self, choice: StoreChoice, accept: AcceptKey | None) -> int:
        """Mount the store read-only, look at its folder, unmount: its free bytes."""
        if choice.url is None:
            return stores.free_bytes(_existing(choice, Path(choice.path), write=False))
        with stores.mounted_store(choice.url, choice.access((), accept), write=False) as root:
            return stores.free_bytes(_existing(choice, root / choice.folder, write=False))

    def open(
        self,
        choice: StoreChoice,
        *,
        job_devices: tuple[str, ...] = (),
        write: bool = False,
        accept: AcceptKey | None = None,
    ) -> str:
        """Make ``choice`` the open store (the previous one is unmounted): its folder's path.
        With ``write`` the folder is made when missing and must be writable."""
        if choice.url is None:
            self.close(reopen=True)
            return _existing(choice, Path(choice.path), write=write)
        devices = job_devices if choice.kind is Kind.DISK else ()
        with self._lock:
            if self._stack is not None and self._state is not None:
                key, was_write, was_devices = self._state
                if key == choice.key and (was_write or not write) and was_devices == devices:
                    self._remember(choice)
                    return self._folder
        self.close(reopen=True)  # one store mounted at a time, also while the next one mounts
        stack = contextlib.ExitStack()
        try:
            root = stack.enter_context(
                stores.mounted_store(choice.url, choice.access(devices, accept), write=write)
            )
            folder = _existing(choice, root / choice.folder, write=write)
        except BaseException:
            stack.close()
            raise
        with self._lock:
            if not self._closed:
                self._stack, self._state, self._folder = stack, (choice.key, write, devices), folder
                self._remember(choice)
                return folder
        stack.close()
        raise CancelledError("the app is leaving: the store was unmounted again")

    def _remember(self, choice: StoreChoice) -> None:
        if choice.kind is Kind.FOLDER:
            return
        self._remembered.pop(choice.key, None)
        self._remembered[choice.key] = choice
        while len(self._remembered) > REMEMBERED:
            self._remembered.pop(next(iter(self._remembered)))

    def mounted(self) -> str:
        """The open store's folder, "" when none is mounted."""
        with self._lock:
            return self._folder if self._stack is not None else ""

    def close(self, reopen: bool = False) -> None:
        """Unmount the open store; without ``reopen`` no store is mounted after this (the app
        is leaving)."""
        with self._lock:
            stack, self._stack, self._state, self._folder = self._stack, None, None, ""
            self._closed = self._closed or not reopen
        if stack is not None:
            stack.close()


def _existing(choice: StoreChoice, folder: Path, *, write: bool) -> str:
    """``folder`` of the store, made when writing; StoreError when it cannot be used."""
    where = choice.title
    if choice.url is None and not folder.is_dir():
        raise StoreError(f"{folder} is not a folder of this machine")
    try:
        if write:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".clonebay-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        elif not folder.is_dir():
            raise StoreError(f"{where}: there is no folder {choice.folder or folder} in it")
    except OSError as exc:
        reason = "read-only" if exc.errno in (30, 13, 1) else (exc.strerror or str(exc))
        raise StoreError(f"{where}: cannot write into it ({reason})") from exc
    return str(folder)
