"""Multicast: bytes on the wire and time, clonebay send/receive against udpcast, same image, same
private LAN, same run.

The LAN is the tests' (tests/net/netns.py): network namespaces on a bridge in a namespace of its
own. One sender and 1, 4 or 8 receivers; with loss, every receiver drops that fraction of its
incoming UDP datagrams at random (iptables statistic; this kernel has no netem). clonebay sends
an image directory and each receiver restores it onto a disk image file (plan, writes, fsync);
udpcast (udp-sender / udp-receiver, what Clonezilla SE and FOG use) carries the same image as one
stream file (`clonebay convert`) and each receiver writes that file. Both are capped at the same
rate. Every result is checked (the restored disk against the source disk, udpcast's copy against
the stream file) before it is counted.

- wire ratio = bytes the sender's interface sent (kernel counter: data, announcements, control,
  IP/UDP headers, everything) / bytes of the image stream file;
- time = from starting the sender (receivers already waiting) until every receiver has exited.
  "xN/1" is that time against the same tool's time for one receiver at the same loss.

All receivers share this VM's 2 cores, so time with 8 receivers measures this machine's CPU as
much as the protocol: on a real LAN each receiver has its own.

    .venv/bin/python bench/multicast.py [--rate 30M] [--runs 1] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.net.netns import Lan, Node, lan  # noqa: E402

from clonebay.engine import jobs  # noqa: E402
from clonebay.testdisks import disks  # noqa: E402

CLONEBAY = [sys.executable, "-m", "clonebay"]
KEY = "bench-key"
RECEIVERS = (1, 4, 8)
LOSSES = (0.0, 0.01)
UDPCAST_PORTBASE = "9000"
UDPCAST_ATTEMPTS = 3


@dataclass(frozen=True)
class Row:
    tool: str
    receivers: int
    loss: float
    seconds: float
    wire: int
    image: int

    @property
    def ratio(self) -> float:
        return self.wire / self.image


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 << 20):
            h.update(piece)
    return h.hexdigest()


def udp_drop(node: Node, loss: float) -> None:
    """Drop ``loss`` of every incoming UDP datagram (both tools' data and UDP control)."""
    rule = ["iptables", "-A", "INPUT", "-p", "udp", "-m", "statistic", "--mode", "random"]
    rule += ["--probability", str(loss), "-j", "DROP"]
    subprocess.run(node.argv(rule), check=True)


def session(
    net: Lan, receive: list[list[str]], send: list[str], work: Path, timeout: float = 600
) -> float:
    """Start the receivers, then the sender; seconds until every receiver has exited."""
    sender, *nodes = net.nodes
    procs = [
        n.popen(argv, work / f"r{i}.log")
        for i, (n, argv) in enumerate(zip(nodes, receive, strict=True))
    ]
    time.sleep(1.5)  # every receiver is listening before the sender starts
    started = time.monotonic()
    sp = sender.popen(send, work / "s.log")
    try:
        for p in procs:
            try:
                code = p.wait(timeout=max(1.0, started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"a receiver hung for {timeout:.0f} s: see {work}") from None
            if code != 0:
                raise RuntimeError(f"a receiver failed: see {work}")
        seconds = time.monotonic() - started
        if sp.wait(timeout=120) not in (0,):
            raise RuntimeError(f"the sender failed: see {work / 's.log'}")
    finally:
        for p in [sp, *procs]:
            if p.poll() is None:
                p.kill()
                p.wait()
    return seconds


def run_clonebay(  # noqa: PLR0917
    image: Path, disk: Path, n: int, loss: float, rate: str, work: Path, out: Path
) -> Row:
    want = sha256(disk)
    targets = [out / f"t{i}.img" for i in range(n)]
    for t in targets:
        t.unlink(missing_ok=True)
    with lan(n + 1) as net:
        for node in net.nodes[1:]:
            if loss:
                udp_drop(node, loss)
        receive = [[*CLONEBAY, "receive", "--yes", "--key", KEY, str(t)] for t in targets]
        send = [*CLONEBAY, "send", "--key", KEY, "--min-receivers", str(n), "--rate", rate]
        tx0 = net.nodes[0].tx_bytes()
        seconds = session(net, receive, [*send, str(image)], work)
        wire = net.nodes[0].tx_bytes() - tx0
    for t in targets:
        if sha256(t) != want:
            raise RuntimeError(f"{t} differs from the source disk")
        t.unlink()
    return Row("clonebay", n, loss, seconds, wire, 0)


def run_udpcast(  # noqa: PLR0917
    stream: Path, n: int, loss: float, rate: str, work: Path, out: Path
) -> Row:
    want = sha256(stream)
    outs = [out / f"u{i}.cbs" for i in range(n)]
    for o in outs:
        o.unlink(missing_ok=True)
    common = ["--nokbd", "--interface", "eth0", "--portbase", UDPCAST_PORTBASE]
    bits = f"{int(parse_rate(rate) * 8 / 1e6)}m"
    receive = [["udp-receiver", "--file", str(o), *common] for o in outs]
    send = ["udp-sender", "--file", str(stream), *common, "--min-receivers", str(n)]
    for attempt in range(1, UDPCAST_ATTEMPTS + 1):
        with lan(n + 1) as net:
            for node in net.nodes[1:]:
                if loss:
                    udp_drop(node, loss)
            tx0 = net.nodes[0].tx_bytes()
            try:
                seconds = session(net, receive, [*send, "--max-bitrate", bits], work, 120)
            except RuntimeError as exc:
                # udpcast's own control datagrams cross the same lossy LAN; a lost one can
                # make a receiver give up ("Bad server reply ... Other transfer in progress?")
                # or never join (it then waits for ever)
                print(f"  udpcast attempt {attempt} failed ({exc}); running it again")
                if attempt == UDPCAST_ATTEMPTS:
                    raise
                continue
            wire = net.nodes[0].tx_bytes() - tx0
            break
    for o in outs:
        if sha256(o) != want:
            raise RuntimeError(f"{o} differs from the stream file")
        o.unlink()
    return Row("udpcast", n, loss, seconds, wire, 0)


def parse_rate(text: str) -> float:
    from clonebay.cli.net import parse_rate as parse

    return parse(text)


def table(rows: list[Row]) -> str:
    one = {(r.tool, r.loss): r.seconds for r in rows if r.receivers == 1}
    lines = [
        "| tool | receivers | loss | wire / image | time s | time vs 1 receiver |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = one.get((r.tool, r.loss))
        rel = f"{r.seconds / base:.2f}x" if base else "-"
        lines.append(
            f"| {r.tool} | {r.receivers} | {r.loss * 100:.0f} % | {r.ratio:.3f} |"
            f" {r.seconds:.1f} | {rel} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="30M", help="both tools' cap in bytes/s (default 30M)")
    parser.add_argument("--runs", type=int, default=1, help="runs per cell; the median is kept")
    parser.add_argument("--scale", choices=["quick", "test"], default="quick")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--targets",
        type=Path,
        help="where the receivers write (default: the work directory). All receivers share"
        " this machine's disk, which a LAN's receivers do not: /dev/shm takes it out",
    )
    parser.add_argument("--receivers", type=int, nargs="+", default=list(RECEIVERS))
    parser.add_argument("--losses", type=float, nargs="+", default=list(LOSSES))
    args = parser.parse_args()
    # SIGTERM (timeout, CI) -> SystemExit, so that every LAN's namespaces are deleted on the way
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work or Path(tempfile.mkdtemp(prefix="cb-mcast-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.targets or work
    out.mkdir(parents=True, exist_ok=True)
    scale = disks.QUICK if args.scale == "quick" else disks.TEST
    built = disks.gpt_disk(work / "disk.img", scale, work=work)
    image, stream = work / "image", work / "image.cbs"
    jobs.save(str(built.path), str(image), jobs.SaveOptions(overwrite=True))
    stream.unlink(missing_ok=True)
    jobs.convert(str(image), str(stream))
    size = stream.stat().st_size
    print(f"image: {size} bytes as a stream ({built.size} byte disk); rate cap {args.rate}/s")
    rows: list[Row] = []
    for loss in args.losses:
        for n in args.receivers:
            for tool in ("clonebay", "udpcast"):
                runs = []
                for _ in range(args.runs):
                    if tool == "clonebay":
                        row = run_clonebay(image, built.path, n, loss, args.rate, work, out)
                    else:
                        row = run_udpcast(stream, n, loss, args.rate, work, out)
                    runs.append(row)
                mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
                wire = int(statistics.median(r.wire for r in runs))
                rows.append(Row(tool, n, loss, mid.seconds, wire, size))
                print(table(rows).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
