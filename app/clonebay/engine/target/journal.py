"""A target's journal: what a clone has made durable on its target, so ``--resume`` goes on.

Every few seconds the clone checkpoints each target: the target path waits for its queued
writes, flushes the target (fsync: the drive's cache too), appends every run written since the
last checkpoint (region, place, length, xxh3-128 or "zeros") to ``NAME.written``, fsync'ed,
then replaces ``NAME.json`` atomically with the job's own state (which disks, the fingerprint of
what it copies, the stage and the position of the reading). A run written after the last
checkpoint is not in the journal: a resumed clone writes it again.

On resume the target path takes the journal's runs as written (they count in the count check)
and hands them to the verifier, which reads them back from the target and compares their
hashes, as it does for any run: a resumed clone is verified as a whole, as an uninterrupted one
is. The journal lives in STATE_FOLDER (``$CLONEBAY_STATE``) or beside ``--mapfile``; on the live
system STATE_FOLDER is in memory, so a clone survives a kill, a crash or an unplugged disk
there, and a power cut only with ``--mapfile`` on a store.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

from clonebay.engine.target.verifier import ZERO_DIGEST, Written
from clonebay.errors import InputError, UsageError

STATE_FOLDER = "/var/lib/clonebay/jobs"
RECORD = struct.Struct("<HBQQ16s")  # region index, 1 = zeros, offset, length, xxh3-128
VERSION = 1


def state_folder() -> Path:
    folder = Path(os.environ.get("CLONEBAY_STATE", STATE_FOLDER))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Journal:
    """The journal at ``path`` (``path``.json and ``path``.written) of one target."""

    def __init__(self, path: Path, regions: list[str]) -> None:
        self.path = path
        self.regions = regions
        self.index = {name: i for i, name in enumerate(regions)}
        self.state: dict[str, Any] = {}
        self.written: list[Written] = []  # runs the journal holds (a resumed job's)
        self.pending: list[Written] = []  # written since the last checkpoint
        self.length = 0  # bytes of the .written file that count
        self.lock = threading.Lock()

    @property
    def files(self) -> tuple[Path, Path]:
        return self.path.with_suffix(".json"), self.path.with_suffix(".written")

    @classmethod
    def create(cls, path: Path, regions: list[str]) -> Journal:
        """A new journal (an interrupted job's journal there is replaced: not resumed)."""
        journal = cls(path, regions)
        state, runs = journal.files
        state.unlink(missing_ok=True)
        with open(runs, "wb"):
            pass
        return journal

    @classmethod
    def load(cls, path: Path, regions: list[str]) -> Journal:
        """The interrupted job's journal; UsageError when there is none, InputError when it
        is damaged or its regions are not ``regions``."""
        journal = cls(path, regions)
        state_file, runs_file = journal.files
        if not state_file.is_file():
            raise UsageError(
                f"no interrupted clone to resume ({state_file} is not there): clone without"
                " --resume, or give the --mapfile the interrupted job had"
            )
        try:
            body = json.loads(state_file.read_bytes())
            length = int(body["written_bytes"])
            names = list(body["regions"])
            journal.state = dict(body["state"])
            data = runs_file.read_bytes()[:length]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"the journal {state_file} cannot be read: {exc}") from None
        if names != regions:
            raise UsageError(
                f"the journal {state_file} is of a clone with other regions ({', '.join(names)}):"
                " this clone cannot resume it; nothing was written"
            )
        if len(data) != length or length % RECORD.size:
            raise InputError(f"{runs_file} is shorter than its journal says ({length} bytes)")
        for region, zero, offset, size, digest in RECORD.iter_unpack(data):
            if region >= len(regions):
                raise InputError(f"{runs_file}: a run names region {region} of {len(regions)}")
            kind = ZERO_DIGEST if zero else digest
            journal.written.append(Written(regions[region], offset, size, kind))
        journal.length = length
        return journal

    def add(self, run: Written) -> None:
        """A run is written (any writer thread); it goes into the journal at the next commit."""
        if run.region not in self.index:
            return  # outside the regions (a zeroed tail): written again on resume
        with self.lock:
            self.pending.append(run)

    def commit(self, state: dict[str, Any]) -> None:
        """Every run added so far is on the medium (the caller flushed the target): append
        them, fsync, then replace the state atomically."""
        with self.lock:
            runs, self.pending = self.pending, []
        body = b"".join(
            RECORD.pack(self.index[r.region], r.digest == ZERO_DIGEST, r.offset, r.length,
                        r.digest.ljust(16, b"\0"))
            for r in runs
        )  # fmt: skip
        state_file, runs_file = self.files
        fd = os.open(runs_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, body, self.length)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.length += len(body)
        self.state = dict(state)
        text = json.dumps(
            {"version": VERSION, "regions": self.regions, "written_bytes": self.length,
             "state": self.state}, indent=1,
        )  # fmt: skip
        tmp = state_file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, state_file)
        folder = os.open(state_file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def discard(self) -> None:
        """The job ended well: nothing to resume."""
        for file in self.files:
            file.unlink(missing_ok=True)
