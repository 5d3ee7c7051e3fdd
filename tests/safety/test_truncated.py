"""Safety audit #7: a source partition that runs past the end of its disk (p1 is 120 MiB at
1 MiB, the image cut to 100 MiB). Refused before the first write unless --allow-truncated;
then the missing 21 MiB are zeros on the target, not the target's old bytes, and the result
says so."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import Grow, make_plan
from clonebay.errors import SafetyError
from tests.diskcheck import sha256_range
from tests.edgedisks import MIB, clonebay, mbr_disk, mkext, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the clone guard needs root")
MISSING = 21 * MIB  # p1 ends at 121 MiB, the image at 100 MiB


@pytest.fixture
def mtrunc(tmp_path: Path) -> Path:
    image = mbr_disk(tmp_path / "mtrunc.img", 128 * MIB, "start=2048, size=120MiB, type=83\n")
    mkext(image, MIB, 120 * MIB)
    os.truncate(image, 100 * MIB)
    return image


@pytest.fixture
def old_target(tmp_path: Path) -> Path:
    """256 MiB of random bytes: what a used disk holds where the tail will go."""
    path = tmp_path / "tgt.img"
    rng = random.Random(7)
    with open(path, "wb") as f:
        for _ in range(256):
            f.write(rng.randbytes(MIB))
    return path


def test_plan_refuses_and_then_zeroes_the_tail(mtrunc: Path) -> None:
    report = inspect_disk(str(mtrunc))
    with pytest.raises(SafetyError, match="--allow-truncated"):
        make_plan(report, 256 * MIB, Grow.NONE)
    plan = make_plan(report, 256 * MIB, Grow.NONE, allow_truncated=True)
    assert [(t.start, t.length) for t in plan.zero_tails] == [(100 * MIB, MISSING)]


def test_clone_of_a_truncated_source_is_refused(mtrunc: Path, old_target: Path) -> None:
    before = sha256(old_target)
    proc = clonebay("clone", str(mtrunc), str(old_target), "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    assert f"p1 runs {MISSING} bytes" in said and "--allow-truncated" in said
    assert sha256(old_target) == before, "the target was written before the refusal"


def test_allowed_truncated_clone_zeroes_the_missing_tail(mtrunc: Path, old_target: Path) -> None:
    proc = clonebay(
        "clone", str(mtrunc), str(old_target), "--grow", "none", "--allow-truncated", "--yes"
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert "p1:" in said and f"{MISSING} bytes" in said  # the note reaches the result
    zeros = hashlib.sha256(bytes(MISSING)).hexdigest()
    assert sha256_range(old_target, 100 * MIB, MISSING) == zeros
    present = 99 * MIB  # p1's bytes the source has: copied raw, zero chunks zeroed
    assert sha256_range(old_target, MIB, present) == sha256_range(mtrunc, MIB, present)
