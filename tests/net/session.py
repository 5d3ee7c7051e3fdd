"""Running real ``clonebay send`` / ``clonebay receive`` processes inside a test LAN and reading
what they reported (their ``--json`` lines)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.net.netns import Node

__all__ = ["Node", "Proc", "receive", "receive_all", "send", "wait_for"]

CLONEBAY = [sys.executable, "-m", "clonebay"]
KEY = "test-session-key"
TIMEOUT = 240  # seconds a whole session may take before the test gives up (never asserted)


@dataclass
class Proc:
    node: Node
    process: subprocess.Popen[bytes]
    log: Path

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def result(self) -> dict[str, Any]:
        for event in reversed(self.events()):
            if event.get("event") == "result" or "error" in event:
                return event
        raise AssertionError(f"no result in {self.log}:\n{self.log.read_text()[-3000:]}")

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"{self.log} still running:\n{tail}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def receive(node: Node, target: Path, log: Path, *extra: str, key: str = KEY) -> Proc:
    argv = [*CLONEBAY, "receive", "--yes", "--json", "--key", key, "--name", node.name, *extra]
    return Proc(node, node.popen([*argv, str(target)], log), log)


def receive_all(nodes: list[Node], work: Path, *extra: str) -> tuple[list[Path], list[Proc]]:
    """One receiver per node, writing ``work``/target<i>.img and logging to ``work``/r<i>.log:
    (the targets, the receivers)."""
    targets = [work / f"target{i}.img" for i in range(len(nodes))]
    procs = [
        receive(n, t, work / f"r{i}.log", *extra)
        for i, (n, t) in enumerate(zip(nodes, targets, strict=True))
    ]
    return targets, procs


def send(node: Node, image: Path, log: Path, *extra: str, key: str = KEY) -> Proc:
    argv = [*CLONEBAY, "send", "--json", "--key", key, *extra, str(image)]
    return Proc(node, node.popen(argv, log), log)


def wait_for(proc: Proc, what: Callable[[dict[str, Any]], bool], timeout: float = 60) -> None:
    """Until one of ``proc``'s events satisfies ``what`` (polling its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(what(e) for e in proc.events()):
            return
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.log} ended early:\n{proc.log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{proc.log}: condition not reached in {timeout} s")


def first_pass_at(fraction: float) -> Callable[[dict[str, Any]], bool]:
    """An event test: the sender's first pass has passed ``fraction`` of the datagrams."""

    def test(e: dict[str, Any]) -> bool:
        return e.get("event") == "session" and e["position"] >= fraction * e["datagrams"] > 0

    return test
