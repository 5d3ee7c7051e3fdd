"""The TCP fallback end to end: ``clonebay receive --listen`` and ``clonebay send --to`` as real
processes in two network namespaces, from an image directory and live from a disk; a sender
with another key is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.diskcheck import assert_disk_matches, sha256_range
from tests.net import session
from tests.net.conftest import SentImage
from tests.net.netns import lan


def listening(e: dict[str, object]) -> bool:
    return e.get("event") == "listening"


@pytest.mark.parametrize("source", ["image", "disk"])
def test_send_to_a_listening_receiver(sent_image: SentImage, tmp_path: Path, source: str) -> None:
    what = sent_image.image if source == "image" else sent_image.built.path
    target = tmp_path / "target.img"
    with lan(2) as net:
        sender_node, node = net.nodes
        receiver = session.receive(node, target, tmp_path / "r.log", "--listen", "--verify")
        sender = None
        try:
            session.wait_for(receiver, listening)
            sender = session.send(sender_node, what, tmp_path / "s.log", "--to", node.address)
            assert sender.wait() == 0, sender.log.read_text()[-3000:]
            assert receiver.wait() == 0, receiver.log.read_text()[-3000:]
        finally:
            for proc in [receiver, *([sender] if sender else [])]:
                proc.stop()
        result = sender.result()
        assert [r["ok"] for r in result["receivers"]] == [True]
        assert receiver.result()["verified"] is True
    assert sha256_range(target, 0, sent_image.built.size) == sent_image.sha256
    assert_disk_matches(target, sent_image.built, tmp_path)


def test_sender_with_another_key_is_refused(sent_image: SentImage, tmp_path: Path) -> None:
    target = tmp_path / "target.img"
    with lan(2) as net:
        sender_node, node = net.nodes
        receiver = session.receive(node, target, tmp_path / "r.log", "--listen")
        sender = None
        try:
            session.wait_for(receiver, listening)
            sender = session.send(
                sender_node, sent_image.image, tmp_path / "s.log", "--to", node.address, key="no"
            )
            assert receiver.wait() == 5, receiver.log.read_text()[-3000:]  # bad input
            assert sender.wait() == 10, sender.log.read_text()[-3000:]  # done with errors
        finally:
            for proc in [receiver, *([sender] if sender else [])]:
                proc.stop()
        assert "authentication" in receiver.result()["message"]
    assert not target.exists()  # nothing was written, not even an empty target
