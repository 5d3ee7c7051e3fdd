"""The rescue map: what of a failing source has been read, in GNU ddrescue's mapfile format.

A mapfile (ddrescue's manual, "Mapfile structure") is text: comment lines start with ``#``; the
first other line is the status line ``current_pos current_status current_pass``; then one line
per block, ``pos size status``, in hexadecimal with ``0x``, in order, with no gaps, from 0 to the
end of the input. A block's status is one of

    ?  non-tried      not read yet (free space, which a rescue never reads, stays so)
    *  non-trimmed    a read of this block failed as a whole: its edges are not tried yet
    /  non-scraped    the edges are trimmed; the inside still to be read sector by sector
    -  bad sector     read sector by sector and failed (again, on each retry)
    +  finished       read, and handed to the image or the target

so ``ddrescuelog`` and ddrescueview read clonebay's maps, and a map tells at any moment what a
resumed job still has to do. Positions are byte offsets of the *source device* as it was opened
(a whole disk, or the partition given), whatever the image or the target's layout.

The map lives in a file beside the image (``IMAGE.map``) or where ``--mapfile`` says; every save is
written to a new file, fsync'ed, and renamed over the old one, so a crash or a power cut leaves
either the previous map or the new one, never half of one.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import clonebay
from clonebay.errors import InputError

NON_TRIED = "?"
NON_TRIMMED = "*"
NON_SCRAPED = "/"
BAD = "-"
FINISHED = "+"
STATUSES = NON_TRIED + NON_TRIMMED + NON_SCRAPED + BAD + FINISHED
# the status line's current_status: ddrescue's phases ("?" copying, "*" trimming, "/"
# scraping, "-" retrying, "F" filling, "G" generating, "+" finished)
PHASES = STATUSES + "FG"


@dataclass(frozen=True)
class Block:
    """``size`` bytes at ``pos`` of the source, all in one status."""

    pos: int
    size: int
    status: str

    @property
    def end(self) -> int:
        return self.pos + self.size


class RescueMap:
    """The status of every byte of a source of ``size`` bytes (all non-tried at first), kept as
    sorted, gap-free blocks with neighbours of one status merged."""

    def __init__(self, size: int, path: Path | None = None) -> None:
        self.size = size
        self.path = path
        self._starts: list[int] = [0]
        self._status: list[str] = [NON_TRIED]
        self.current_pos = 0
        self.current_status = NON_TRIED
        self.current_pass = 1
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.command = ""

    # -- reading the map -----------------------------------------------------------------------

    def blocks(self) -> Iterator[Block]:
        """Every block, in order."""
        for i, start in enumerate(self._starts):
            end = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
            yield Block(start, end - start, self._status[i])

    def ranges(self, statuses: str, within: tuple[int, int] | None = None) -> list[Block]:
        """The blocks in any of ``statuses``, clipped to ``within`` (start, end) if given."""
        low, high = within or (0, self.size)
        out = []
        for block in self.blocks():
            if block.status not in statuses or block.end <= low or block.pos >= high:
                continue
            start, end = max(block.pos, low), min(block.end, high)
            out.append(Block(start, end - start, block.status))
        return out

    def status_at(self, pos: int) -> str:
        return self._status[bisect.bisect_right(self._starts, pos) - 1]

    # -- changing it ---------------------------------------------------------------------------

    def mark(self, pos: int, size: int, status: str) -> None:
        """Set ``[pos, pos + size)`` to ``status``."""
        if status not in STATUSES:
            raise ValueError(f"not a mapfile status: {status!r}")
        end = min(pos + size, self.size)
        if size <= 0 or pos >= end:
            return
        after = self.status_at(end) if end < self.size else None
        lo = bisect.bisect_left(self._starts, pos)
        hi = bisect.bisect_left(self._starts, end)
        del self._starts[lo:hi], self._status[lo:hi]
        self._starts.insert(lo, pos)
        self._status.insert(lo, status)
        if after is not None and (lo + 1 >= len(self._starts) or self._starts[lo + 1] != end):
            self._starts.insert(lo + 1, end)
            self._status.insert(lo + 1, after)
        self._merge(max(lo - 1, 0), lo + 2)

    def _merge(self, first: int, last: int) -> None:
        """Join neighbours of one status between indexes ``first`` and ``last``."""
        i = max(first, 1)
        while i < min(last + 1, len(self._starts)):
            if self._status[i] == self._status[i - 1]:
                del self._starts[i], self._status[i]
                last -= 1
            else:
                i += 1
        if self._starts[0] != 0:  # never happens: block 0 always starts the map
            raise AssertionError("the rescue map lost its first block")

    # -- the file ------------------------------------------------------------------------------

    def text(self) -> str:
        lines = [
            f"# Mapfile. Created by clonebay {clonebay.__version__}",
            f"# Command line: {self.command}",
            f"# Start time:   {self.started}",
            f"# Current time: {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "# Free space of the source's filesystems is never read: it stays non-tried (?).",
            "# current_pos  current_status  current_pass",
            f"0x{self.current_pos:08X}     {self.current_status}               {self.current_pass}",
            "#      pos        size  status",
        ]
        lines += [f"0x{b.pos:08X}  0x{b.size:08X}  {b.status}" for b in self.blocks()]
        return "\n".join(lines) + "\n"

    def save(self) -> None:
        """Write the map to ``path`` (a new file, fsync'ed, renamed over the old one)."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, self.text().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    @classmethod
    def load(cls, path: Path, size: int) -> RescueMap:
        """Read a mapfile (clonebay's or ddrescue's) for a source of ``size`` bytes."""
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"the rescue map {path} cannot be read: {exc}") from exc
        lines = [
            (n, line.split())
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            raise InputError(f"the rescue map {path} is empty")
        found = cls(size, path)
        (n, status), blocks = lines[0], lines[1:]
        try:
            found.current_pos = int(status[0], 0)
            found.current_status = status[1]
            found.current_pass = int(status[2]) if len(status) > 2 else 1
        except (IndexError, ValueError):
            raise InputError(f"{path}, line {n}: not a mapfile status line") from None
        if found.current_status not in PHASES:
            raise InputError(f"{path}, line {n}: unknown status {found.current_status!r}")
        pos = 0
        for n, words in blocks:
            try:
                start, length, state = int(words[0], 0), int(words[1], 0), words[2]
            except (IndexError, ValueError):
                raise InputError(f"{path}, line {n}: not a block line") from None
            if start != pos or length <= 0 or state not in STATUSES:
                raise InputError(
                    f"{path}, line {n}: block at {start:#x} does not continue the map at"
                    f" {pos:#x}, or has a bad size or status"
                )
            found.mark(start, length, state)
            pos = start + length
        if pos != size:
            raise InputError(
                f"the rescue map {path} covers {pos} bytes, but the source has {size}: it is"
                " the map of another disk"
            )
        return found
