"""Sets of sequence numbers kept as sorted, disjoint, half-open ranges.

The sender's repair queues and a receiver's list of what it lacks are both mostly long runs (a
late joiner lacks everything before it joined; a lost burst is a run), so ranges stay small
where a set of integers would hold millions of entries.
"""

from __future__ import annotations

import bisect


class RangeSet:
    """Sequence numbers in sorted, merged [start, end) ranges."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, start: int, count: int) -> None:
        """Add [start, start + count), merging with neighbours and overlaps."""
        if count <= 0:
            return
        end = start + count
        i = bisect.bisect_left(self.ends, start)  # first range that ends at or after start
        j = bisect.bisect_right(self.starts, end)  # ranges before j start at or before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
            self.count -= sum(self.ends[k] - self.starts[k] for k in range(i, j))
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]
        self.count += end - start

    def pop_first(self) -> int:
        """Remove and return the smallest number (IndexError when empty)."""
        first = self.starts[0]
        if self.ends[0] - first == 1:
            del self.starts[0], self.ends[0]
        else:
            self.starts[0] = first + 1
        self.count -= 1
        return first

    def ranges(self) -> list[tuple[int, int]]:
        """(start, count) pairs in order."""
        return [(s, e - s) for s, e in zip(self.starts, self.ends, strict=True)]

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.count = 0
