"""What ``--rescue`` costs on a healthy disk (issue: at most 1.1x the normal time): `clonebay save`
and `clonebay clone` of the same half-full ext4 bench volume (bench/volumes.py) with and without
`--rescue`, and GNU ddrescue (which reads every byte, free space included) as the anchor, in the
same run, caches dropped before every run. Each rescue run starts with no map (a map already
there is refused) and the image or target is removed first.

    .venv/bin/python bench/rescue_speed.py [--size-gib 4] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from measure import Command, Result, drop_caches, machine, run_pipeline, table
from volumes import volume

CLONEBAY = str(Path(sys.executable).with_name("clonebay"))


def methods(src: str, out: Path) -> list[tuple[str, Command]]:
    image, target, mapfile = out / "bench.image", out / "target.img", out / "clone.map"
    save = (CLONEBAY, "save", src, str(image))
    clone = (CLONEBAY, "clone", "--yes", "--no-verify", "--no-fixup", src, str(target))
    return [
        ("clonebay save", Command.of(save)),
        ("clonebay save --rescue", Command.of((*save[:2], "--rescue", *save[2:]))),
        ("clonebay clone --no-verify", Command.of(clone)),
        (
            "clonebay clone --no-verify --rescue",
            Command.of((*clone[:2], "--rescue", "--mapfile", str(mapfile), *clone[2:])),
        ),
        (
            "ddrescue (every byte)",
            Command.of(("ddrescue", "-q", "-f", src, str(target), str(out / "ddrescue.map"))),
        ),
    ]


def clean(out: Path) -> None:
    """No image, target or map from the run before."""
    shutil.rmtree(out / "bench.image", ignore_errors=True)
    for name in ("bench.image.map", "target.img", "clone.map", "ddrescue.map"):
        (out / name).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    args = parser.parse_args()
    head = f"## --rescue on a healthy disk, {args.size_gib} GiB"
    print(f"{head}\n\n{machine()}; median of {args.runs}\n")
    vol = volume("ext4", args.size_gib, args.work)
    out = args.work / "rescue"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, cmd in methods(vol.path, out):
        result = Result(name, cmd.text())
        for _ in range(args.runs):
            clean(out)
            drop_caches()
            result.samples.append(run_pipeline(cmd, out / "log"))
        results.append(result)
    clean(out)
    plain = {r.name: r.seconds for r in results if "--rescue" not in r.name}
    rows = []
    for r in results:
        base = plain.get(r.name.replace(" --rescue", ""), r.seconds)
        rows.append((r.name, f"{r.seconds:.1f}", r.spread(), f"{r.seconds / base:.2f}"))
    print(f"ext4: {vol.used / (1 << 30):.2f} GiB used of {vol.size / (1 << 30):.0f}\n")
    print(table(("method", "s", "min-max s", "time / same job without --rescue"), rows))


if __name__ == "__main__":
    main()
