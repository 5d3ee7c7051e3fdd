"""A private LAN for multicast tests: network namespaces joined by veth pairs on a bridge.

The bridge lives in a namespace of its own (the hub), so nothing is added to, or changes on,
the host's own interfaces; every node is a namespace with one interface ``eth0`` plugged into
the bridge, an address in 10.201.N.0/24 (N differs per LAN, so parallel runs do not meet),
and a route for 224.0.0.0/4 so that multicast leaves through ``eth0``. Deleting the namespaces
deletes everything. Loss is injected per node with iptables' statistic match (this kernel has
no netem).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MCAST_PORT = 7766


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Node:
    name: str  # the namespace
    address: str
    hub_port: str  # the veth end on the bridge

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(
        self, argv: Sequence[str], log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process inside this node; stdout and stderr go to ``log``."""
        out = open(log, "wb")  # noqa: SIM115 - the process owns it; closed with the test's tmp
        return subprocess.Popen(
            self.argv(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )

    def drop(self, probability: float, port: int = MCAST_PORT) -> None:
        """Drop this fraction of incoming UDP datagrams to ``port``, at random."""
        sh(
            *self.argv(["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(port)]),
            "-m", "statistic", "--mode", "random", "--probability", str(probability),
            "-j", "DROP",
        )  # fmt: skip

    def dropped(self, port: int = MCAST_PORT) -> int:
        """Packets the loss rule dropped so far."""
        out = sh(*self.argv(["iptables", "-L", "INPUT", "-v", "-x", "-n"]))
        return sum(int(line.split()[0]) for line in out.splitlines() if "statistic" in line)

    def tx_bytes(self) -> int:
        """Bytes this node has sent on its interface (the kernel's counter)."""
        out = sh(*self.argv(["cat", "/sys/class/net/eth0/statistics/tx_bytes"]))
        return int(out)


@dataclass
class Lan:
    token: str
    subnet: int
    hub: str
    nodes: list[Node] = field(default_factory=list)

    def add(self) -> Node:
        i = len(self.nodes) + 1
        name = f"cbnet-{self.token}-{i}"
        port = f"cb{self.token}p{i}"[:15]
        address = f"10.201.{self.subnet}.{i}"
        sh("ip", "netns", "add", name)
        node = Node(name, address, port)
        self.nodes.append(node)
        sh("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "eth0", "netns", name)
        sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
        # A sender's UDP GSO buffer would cross the veth and the bridge whole and reach the
        # receivers' loss rules as one packet, so 16 datagrams would be dropped together. A
        # real card cuts it into datagrams on the wire: make eth0 do it in software, here.
        # (Without ethtool or the feature the sessions still work; only losses come in bursts.)
        with contextlib.suppress(RuntimeError, FileNotFoundError):
            sh(*node.argv(["ethtool", "-K", "eth0", "tx-udp-segmentation", "off"]))
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
        return node

    def delete(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                sh("ip", "netns", "del", node.name)
        with contextlib.suppress(RuntimeError):
            sh("ip", "netns", "del", self.hub)


@contextlib.contextmanager
def lan(nodes: int = 0) -> Iterator[Lan]:
    """A new LAN with ``nodes`` nodes; everything is deleted on exit, also after a failure."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    token = secrets.token_hex(3)
    net = Lan(token, secrets.randbelow(200) + 20, f"cbnet-{token}-hub")
    try:
        sh("ip", "netns", "add", net.hub)
        sh("ip", "-n", net.hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", net.hub, "link", "set", "br0", "up")
        for _ in range(nodes):
            net.add()
        yield net
    finally:
        net.delete()
