"""The TUI's Multicast screens with real sessions: the send screen (run headless inside a
namespace by tests/net/tui_driver.py) serving two ``clonebay receive`` processes, and the
receive screen fed by a ``clonebay send`` process. Targets must be identical to the source."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.diskcheck import sha256_range
from tests.net import session
from tests.net.conftest import SentImage
from tests.net.netns import lan

DRIVER = [sys.executable, "-m", "tests.net.tui_driver"]
ROOT = Path(__file__).resolve().parent.parent.parent


def driver(node: session.Node, argv: list[str], log: Path) -> session.Proc:
    return session.Proc(node, node.popen([*DRIVER, *argv], log, cwd=ROOT), log)


def test_send_screen_lists_every_receiver_and_its_outcome(
    sent_image: SentImage, tmp_path: Path
) -> None:
    with lan(3) as net:
        sender_node, *nodes = net.nodes
        targets, receivers = session.receive_all(nodes, tmp_path)
        tui = driver(
            sender_node, ["send", str(sent_image.image), session.KEY, "2"], tmp_path / "tui.log"
        )
        try:
            assert tui.wait() == 0, tui.log.read_text()[-3000:]
            for r in receivers:
                assert r.wait() == 0, r.log.read_text()[-3000:]
        finally:
            for proc in [tui, *receivers]:
                proc.stop()
        shown = tui.result()
    assert shown["errors"] == [] and shown["dismissed"]
    assert sorted((row[2], row[3], row[4][:4]) for row in shown["rows"]) == [
        (nodes[0].name, "done", "100%"),
        (nodes[1].name, "done", "100%"),
    ]
    assert shown["status"].startswith("Finished: 2 of 2 receivers")
    for target in targets:
        assert sha256_range(target, 0, sent_image.built.size) == sent_image.sha256


def test_receive_screen_shows_waiting_then_done(sent_image: SentImage, tmp_path: Path) -> None:
    target = tmp_path / "target.img"
    with lan(2) as net:
        sender_node, node = net.nodes
        tui = driver(node, ["receive", str(target), session.KEY], tmp_path / "tui.log")
        sender = session.send(sender_node, sent_image.image, tmp_path / "s.log")
        try:
            assert tui.wait() == 0, tui.log.read_text()[-3000:]
            assert sender.wait() == 0, sender.log.read_text()[-3000:]
        finally:
            for proc in [tui, sender]:
                proc.stop()
        shown = tui.result()
    assert shown["errors"] == [] and shown["dismissed"]
    assert shown["state"].startswith("Done")
    assert sender.result()["receivers"][0]["state"] == "ok"
    assert sha256_range(target, 0, sent_image.built.size) == sent_image.sha256
