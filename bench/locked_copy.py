"""What a key saves on a LUKS volume: the half-full ext4 bench volume (bench/volumes.py) encrypted
in place by cryptsetup (LUKS2, aes-xts-plain64; ``reencrypt --encrypt --force-offline-reencrypt``,
no device-mapper needed), then copied onto a file by dd (every byte), ``clonebay clone`` without
the key (the whole volume: ciphertext has no zero chunks to skip) and ``clonebay clone
--key-file`` (the LUKS header and the ciphertext under the ext4's used blocks only). Same run,
caches dropped before each. The clone's verify is off for all: dd has none.

    .venv/bin/python bench/locked_copy.py [--size-gib 2] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from measure import Command, Result, drop_caches, machine, run_pipeline, table
from volumes import volume

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.luks_volumes import CASES, encrypt_in_place, secret_file  # noqa: E402

from clonebay.system.run import run  # noqa: E402

CLONEBAY = str(Path(sys.executable).with_name("clonebay"))
SHIFT = 16 << 20  # tests/luks_volumes: reencrypt --reduce-device-size 16M


def locked(work: Path, size_gib: int) -> tuple[Path, Path]:
    """The LUKS2 volume (built once per ``work``) and its key file."""
    out = work / "locked"
    out.mkdir(parents=True, exist_ok=True)
    image, key = out / f"luks2-ext4-{size_gib}g.img", out / "key"
    if not key.exists():
        secret_file(out, b"bench passphrase", "key")
    if not image.exists():
        plain = volume("ext4", size_gib, work)
        building = out / "building.img"
        shutil.copyfile(plain.path, building)
        # the LUKS2 header takes 16 MiB in front: the ext4 must end 16 MiB earlier
        run(["e2fsck", "-fy", str(building)], check=False)
        run(["resize2fs", str(building), f"{(plain.size - SHIFT) // 1024}K"])
        os.truncate(building, plain.size)  # resize2fs cut the file short too
        encrypt_in_place(building, CASES[0], key)
        building.rename(image)
    return image, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    args = parser.parse_args()
    source, key = locked(args.work, args.size_gib)
    plain = volume("ext4", args.size_gib, args.work).path
    target = args.work / "locked" / "target.img"
    clone = (CLONEBAY, "clone", "--yes", "--no-verify", "--no-fixup")
    methods = [
        ("dd (every byte)", (
            "dd", f"if={source}", f"of={target}", "bs=4M", "conv=fsync", "status=none")),
        ("clonebay clone, no key (whole)", (*clone, str(source), str(target))),
        ("clonebay clone --key-file", (*clone, "--key-file", str(key), str(source), str(target))),
        ("clonebay clone of the plain ext4 (reference)", (*clone, plain, str(target))),
    ]  # fmt: skip
    print(f"## LUKS2 volume, {args.size_gib} GiB, ext4 half full\n\n{machine()}; median of"
          f" {args.runs}\n")  # fmt: skip
    results = []
    for name, argv in methods:
        result = Result(name, Command.of(argv).text())
        for _ in range(args.runs):
            target.unlink(missing_ok=True)
            drop_caches()
            result.samples.append(run_pipeline(Command.of(argv), args.work / "locked" / "log"))
        results.append(result)
    target.unlink(missing_ok=True)
    keyed = results[2].seconds
    rows = [(r.name, f"{r.seconds:.1f}", r.spread(), f"{r.seconds / keyed:.1f}") for r in results]
    print(table(("method", "s", "min-max s", "time / clonebay with the key"), rows))


if __name__ == "__main__":
    main()
