"""Receivers on larger disks: ``clonebay receive --grow`` grows the partitions as ``restore
--grow`` does, over multicast (beside a receiver that keeps the layout, in the same session)
and over the TCP fallback."""

from __future__ import annotations

import contextlib
from pathlib import Path

from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_grown_disk, sha256_range
from tests.net import session
from tests.net.conftest import SentImage
from tests.net.netns import lan


def test_multicast_receivers_grow_or_keep_the_layout(sent_image: SentImage, tmp_path: Path) -> None:
    built = sent_image.built
    larger = sparse_file(tmp_path / "larger.img", built.size * 2)
    same = tmp_path / "same.img"
    with contextlib.ExitStack() as stack:
        sender_node, grow_node, keep_node = stack.enter_context(lan(3)).nodes
        grow_args = ("--grow", "proportional", "--verify")
        receivers = [
            session.receive(grow_node, larger, tmp_path / "grow.log", *grow_args),
            session.receive(keep_node, same, tmp_path / "keep.log", "--grow", "proportional"),
        ]
        for r in receivers:
            stack.callback(r.stop)
        sender = session.send(
            sender_node, sent_image.image, tmp_path / "s.log", "--min-receivers", "2"
        )
        stack.callback(sender.stop)
        assert sender.wait() == 0, sender.log.read_text()[-3000:]
        for r in receivers:
            assert r.wait() == 0, r.log.read_text()[-3000:]
        grown = receivers[0].result()
        assert grown["verified"] is True
        assert "partition table written for the larger disk" in grown["warnings"]
    # the same-size target has nothing to grow into: the source disk, byte for byte
    assert sha256_range(same, 0, built.size) == sent_image.sha256
    assert_grown_disk(larger, built, tmp_path)


def test_tcp_receiver_grows(sent_image: SentImage, tmp_path: Path) -> None:
    larger = sparse_file(tmp_path / "larger.img", sent_image.built.size * 3 // 2)
    with lan(2) as net:
        sender_node, node = net.nodes
        receiver = session.receive(node, larger, tmp_path / "r.log", "--listen", "--grow", "last")
        sender = None
        try:
            session.wait_for(receiver, lambda e: e.get("event") == "listening")
            sender = session.send(
                sender_node, sent_image.image, tmp_path / "s.log", "--to", node.address
            )
            assert sender.wait() == 0, sender.log.read_text()[-3000:]
            assert receiver.wait() == 0, receiver.log.read_text()[-3000:]
        finally:
            for proc in [receiver, *([sender] if sender else [])]:
                proc.stop()
    assert_grown_disk(larger, sent_image.built, tmp_path)


def test_receiver_onto_a_smaller_disk_is_refused_before_writing(
    sent_image: SentImage, tmp_path: Path
) -> None:
    """A session arrives as a stream, and shrinking a filesystem needs random access to it:
    a receiver on a disk smaller than the image's partitions refuses when the manifest
    arrives, saying why and what to do, and writes nothing (issue 16, item 4)."""
    size = sent_image.built.size * 60 // 100 // 512 * 512
    smaller = sparse_file(tmp_path / "smaller.img", size)
    with open(smaller, "r+b") as f:
        f.write(b"old data" * 4096)
    before = sha256_range(smaller, 0, size)
    with lan(2) as net:
        sender_node, node = net.nodes
        receiver = session.receive(node, smaller, tmp_path / "r.log", "--listen")
        sender = None
        try:
            session.wait_for(receiver, lambda e: e.get("event") == "listening")
            sender = session.send(
                sender_node, sent_image.image, tmp_path / "s.log", "--to", node.address
            )
            assert receiver.wait() == 7, receiver.log.read_text()[-3000:]
        finally:
            for proc in [receiver, *([sender] if sender else [])]:
                proc.stop()
    said = receiver.log.read_text()
    assert "target holds" in said and "directory image" in said, said[-3000:]
    assert sha256_range(smaller, 0, size) == before
