"""The shrinking layout (engine/layout/shrink.py) on made-up tables: floors, sharing, caps,
gaps and alignment, and the numbers in a refusal."""

from __future__ import annotations

import pytest

from clonebay.engine.layout import shrink
from clonebay.engine.layout.plan import Grow, NeedsShrinkError, plan_layout
from clonebay.errors import TargetTooSmallError
from clonebay.model import CopyMethod, Extent, Partition, PartitionTable, Volume, VolumeState
from clonebay.units import human_size

MIB = 1 << 20
GIB = 1 << 30
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def _vol(fstype: str, size: int, state: VolumeState = VolumeState.CLEAN) -> Volume:
    return Volume(fstype, size, (Extent(0, MIB),), CopyMethod.NATIVE, state)


def _table() -> tuple[PartitionTable, dict[int, Volume | None]]:
    parts = (
        Partition(1, MIB, 100 * MIB, type_id=ESP, flags=("esp",)),
        Partition(2, 101 * MIB, 40 * GIB, type_id=DATA),
        Partition(3, 101 * MIB + 40 * GIB, 20 * GIB, type_id=LINUX),
        Partition(4, 101 * MIB + 60 * GIB, 4 * GIB, type_id=LINUX),
    )
    table = PartitionTable(
        "gpt", 512, 80 * GIB, parts, disk_id="X", first_usable=34 * 512, last_usable=80 * GIB
    )
    volumes: dict[int, Volume | None] = {
        1: _vol("fat32", 100 * MIB),
        2: _vol("ntfs", 40 * GIB),
        3: _vol("ext4", 20 * GIB),
        4: _vol("swap", 4 * GIB),
    }
    return table, volumes


def test_needs_shrink_names_the_candidates() -> None:
    table, volumes = _table()
    with pytest.raises(NeedsShrinkError) as err:
        plan_layout(table, volumes, 40 * GIB, Grow.PROPORTIONAL, "src")
    assert err.value.candidates == (2, 3, 4)  # the swap is made anew, smaller


@pytest.mark.parametrize("fit", [Grow.PROPORTIONAL, Grow.LAST])
def test_floors_kept_room_shared_alignment_and_order(fit: Grow) -> None:
    table, volumes = _table()
    minimums = {2: 10 * GIB, 3: 5 * GIB}
    plan = plan_layout(table, volumes, 40 * GIB, fit, "src", minimums=minimums)
    moves = {m.number: m for m in plan.moves}
    assert moves[1].target_size == 100 * MIB and not moves[1].shrunk
    assert moves[4].target_size == 4 * GIB and not moves[4].shrunk  # no minimum given
    for n in (2, 3):
        floor = shrink.floor(minimums[n], moves[n].source.size)
        assert floor >= minimums[n] * 11 // 10
        assert floor <= moves[n].target_size <= moves[n].source.size
        assert moves[n].shrunk == (moves[n].target_size < moves[n].source.size)
        assert moves[n].minimum == (floor if moves[n].shrunk else 0)
    ends = [m.target_start + m.target_size for m in plan.moves]
    starts = [m.target_start for m in plan.moves]
    assert all(s % MIB == 0 for s in starts) and starts == sorted(starts)
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))
    assert ends[-1] <= plan.target_table.last_usable
    assert plan.target_table.last_usable - ends[-1] < 2 * MIB  # the room is all given out
    if fit is Grow.LAST:  # the last shrinkable is served first, up to its own size
        assert moves[3].target_size == 20 * GIB and moves[2].shrunk
    else:  # in proportion to the source sizes (40:20), within a MiB each
        extra2 = moves[2].target_size - shrink.floor(minimums[2], 40 * GIB)
        extra3 = moves[3].target_size - shrink.floor(minimums[3], 20 * GIB)
        assert abs(extra2 - 2 * extra3) <= 3 * MIB


def test_a_partition_is_never_given_more_than_it_had() -> None:
    table, volumes = _table()
    # p3 may shrink a lot; p2 hardly: the room p2 cannot take goes to p3, up to its source size
    plan = plan_layout(
        table, volumes, 64 * GIB, Grow.PROPORTIONAL, "src", minimums={2: 36 * GIB, 3: GIB}
    )
    moves = {m.number: m for m in plan.moves}
    assert moves[2].target_size == 40 * GIB and not moves[2].shrunk
    assert moves[3].target_size < 20 * GIB and moves[3].shrunk


def test_refusal_names_each_need_and_the_shortfall() -> None:
    table, volumes = _table()
    volumes[2] = _vol("ntfs", 40 * GIB, VolumeState.HIBERNATED)
    volumes[4] = _vol("swap", 4 * GIB, VolumeState.HIBERNATED)
    with pytest.raises(TargetTooSmallError) as err:
        plan_layout(table, volumes, 30 * GIB, Grow.PROPORTIONAL, "src", minimums={3: 5 * GIB})
    said = err.value.message
    assert "the target holds 30.0 GiB" in said
    assert "p2 keeps 40.0 GiB (NTFS is hibernated" in said
    assert f"p3 needs {shrink.floor(5 * GIB, 20 * GIB) / GIB:.1f} GiB" in said
    assert "p1 keeps 100.0 MiB (a system partition" in said
    assert "p4 keeps 4.0 GiB (swap holds a hibernated Linux system" in said
    short = int(said.split(" bytes) more:")[0].rsplit("(", 1)[1])
    need = MIB + 100 * MIB + 40 * GIB + shrink.floor(5 * GIB, 20 * GIB) + 4 * GIB
    assert short == need - (30 * GIB - 33 * 512)
    assert f"needs {human_size(30 * GIB + short)} ({30 * GIB + short} bytes)" in said
