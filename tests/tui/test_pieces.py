"""The TUI's pure parts, without a screen: the proportional bar, the meters that turn the
engine's two kinds of progress into one, the words for refusals, and what Confirm asks for."""

from __future__ import annotations

from clonebay.model import Disk, Progress
from clonebay.tui.jobs import OverallMeter, PerRegionMeter, Tick
from clonebay.tui.layouts import Layout, LayoutRow
from clonebay.tui.screens.confirm import expected_answer
from clonebay.tui.screens.save_target import proposed_name
from clonebay.tui.text import created_text, short_reason
from clonebay.tui.widgets.layout_bar import spans

MIB = 1 << 20


def layout(*rows: tuple[int, int], size: int = 100 * MIB) -> Layout:
    return Layout("", size, tuple(LayoutRow(f"p{i}", s, n) for i, (s, n) in enumerate(rows, 1)))


def test_bar_is_proportional_and_fills_the_width() -> None:
    bar = spans(layout((0, 50 * MIB), (50 * MIB, 25 * MIB)), 40)
    assert [(s.name, s.cells) for s in bar] == [("p1", 20), ("p2", 10), ("", 10)]


def test_bar_keeps_tiny_partitions_visible() -> None:
    bar = spans(layout((0, MIB // 2), (MIB, 99 * MIB)), 20)
    assert sum(s.cells for s in bar) == 20
    assert [s.name for s in bar if s.name] == ["p1", "p2"]
    assert all(s.cells >= 1 for s in bar)


def test_bar_with_more_partitions_than_cells_does_not_loop() -> None:
    rows = [(i * MIB, MIB) for i in range(50)]
    bar = spans(layout(*rows, size=50 * MIB), 10)
    assert len([s for s in bar if s.name]) == 50  # one cell each: wider than asked, not stuck


def test_per_region_meter_adds_regions_up() -> None:
    ticks: list[Tick] = []
    meter = PerRegionMeter("Copying", {"1": 100, "2": 300}, ticks.append)
    meter(Progress("1", 100, 100, 10.0, 30.0, "read"))
    meter(Progress("2", 150, 300, 10.0, 15.0, "write"))
    assert (ticks[-1].done, ticks[-1].total) == (250, 400)
    assert (ticks[-1].region_done, ticks[-1].region_total) == (150, 300)


def test_overall_meter_names_the_phase_by_stage() -> None:
    ticks: list[Tick] = []
    meter = OverallMeter({"write": "Writing", "read": "Verifying"}, ticks.append)
    meter(Progress("p2", 50, 200, 1.0, None, "write"))
    meter(Progress("p2", 10, 200, 1.0, None, "read"))
    assert [(t.phase, t.done, t.total, t.region_total) for t in ticks] == [
        ("Writing", 50, 200, 0),
        ("Verifying", 10, 200, 0),
    ]


def test_short_reason_keeps_the_first_clause() -> None:
    assert short_reason("/dev/sdc is mounted (/a: b): unmount it first; x", "/dev/sdc") == (
        "is mounted (/a: b)"
    )
    assert short_reason("the target /x is the source /y; nothing was written", "/x") == (
        "is the source /y"
    )
    assert created_text("2025-03-14T09:30:00Z") == "2025-03-14 09:30 UTC"


def test_confirm_asks_for_the_serial_tail_of_real_disks_only() -> None:
    assert expected_answer(Disk("/dev/sda", 1, serial="WD-WCC4E1234567", transport="sata")) == (
        "4567"
    )
    assert expected_answer(Disk("/dev/loop0", 1, serial="x1234", transport="loop")) == "YES"
    assert expected_answer(Disk("/srv/a.img", 1, transport="file")) == "YES"
    assert expected_answer(Disk("/dev/sdb", 1, transport="usb")) == "YES"


def test_proposed_name_never_points_at_an_existing_image(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    disk = Disk("/dev/nvme0n1", 1, model="Samsung SSD 970 EVO Plus 1TB")
    assert proposed_name(disk, str(folder)) == "Samsung-SSD-970-EVO-Plus-1TB.image"
    (folder / "Samsung-SSD-970-EVO-Plus-1TB.image").mkdir()
    assert proposed_name(disk, str(folder)) == "Samsung-SSD-970-EVO-Plus-1TB-2.image"
    assert proposed_name(Disk("/x/demo-disk.img", 1, "image file demo-disk.img"), "/") == (
        "demo-disk.image"
    )
