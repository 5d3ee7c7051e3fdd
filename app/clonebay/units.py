"""Sizes and rates as a technician reads them (binary units, one decimal)."""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int | float) -> str:
    """1536 -> '1.5 KiB'; sizes under 1 KiB in bytes."""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    """Throughput in decimal MB/s, the unit disk vendors and benchmarks use."""
    return f"{bytes_per_second / 1e6:.0f} MB/s"
