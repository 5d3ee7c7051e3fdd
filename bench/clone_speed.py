"""Volume-to-volume copy speed: `clonebay clone` against `partclone.<fs> -b` and `dd`, on the same
half-full ext4 and NTFS bench volumes (bench/volumes.py), in the same run, caches dropped before
every run. Targets are fresh sparse files of the volume's size; every tool writes only what it
copies (partclone -b and clonebay the used blocks, dd everything). clonebay also reads every chunk
back to verify it (its default); the `--no-verify` row shows the copy alone.

    .venv/bin/python bench/clone_speed.py [--size-gib 4] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from measure import Command, Result, drop_caches, machine, run_pipeline, table
from volumes import volume

CLONEBAY = str(Path(sys.executable).with_name("clonebay"))


def methods(src: str, dst: Path, partclone: str) -> list[tuple[str, Command]]:
    return [
        ("clonebay clone (verify on)", Command.of((CLONEBAY, "clone", "--yes", src, str(dst)))),
        (
            "clonebay clone --no-verify",
            Command.of((CLONEBAY, "clone", "--yes", "--no-verify", src, str(dst))),
        ),
        (f"{partclone} -b", Command.of((partclone, "-b", "-q", "-s", src, "-O", str(dst)))),
        ("dd bs=4M", Command.of(("dd", f"if={src}", f"of={dst}", "bs=4M", "status=none"))),
    ]


def fresh_target(path: Path, size: int) -> None:
    """An empty sparse target of the volume's size (partclone -b refuses a smaller one)."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    args = parser.parse_args()
    print(f"## clone, {args.size_gib} GiB volumes\n\n{machine()}; median of {args.runs}\n")
    for fstype in ("ext4", "ntfs"):
        vol = volume(fstype, args.size_gib, args.work)
        out = args.work / f"clone-{fstype}"
        out.mkdir(parents=True, exist_ok=True)
        dst = out / "target.img"
        results = []
        for name, cmd in methods(vol.path, dst, vol.partclone):
            result = Result(name, cmd.text())
            for _ in range(args.runs):
                fresh_target(dst, vol.size)
                drop_caches()
                result.samples.append(run_pipeline(cmd, out / "log"))
            results.append(result)
        dst.unlink(missing_ok=True)
        base = results[0].seconds
        rows = [
            (
                r.name,
                f"{r.seconds:.1f}",
                r.spread(),
                f"{vol.used / r.seconds / 1e6:.0f}",
                f"{r.seconds / base:.2f}",
            )
            for r in results
        ]
        print(f"### {fstype}: {vol.used / (1 << 30):.2f} GiB used of {vol.size / (1 << 30):.0f}\n")
        headers = ("method", "s", "min-max s", "MB/s used", "time / clonebay clone")
        print(table(headers, rows))
        print()


if __name__ == "__main__":
    main()
