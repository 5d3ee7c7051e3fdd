"""``send`` and ``extract`` take store URLs too: an image saved into a disk store is multicast
from there (by label) to a receiver in another network namespace, and files are extracted from
it; the receiver's copy holds every file, the extracted file its recorded hash, and the store is
unmounted after each command."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches
from tests.net import session
from tests.net.netns import lan
from tests.stores.cli import clonebay
from tests.stores.conftest import StoreVolume, store_mounts


def test_multicast_send_and_extract_from_a_disk_store(
    volumes: dict[str, StoreVolume], quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    url = volumes["exfat"].url("send/q.image")
    saved = clonebay("save", str(quick_disk.path), url)
    assert saved.returncode == 0, saved.stderr

    ext = next(p for p in quick_disk.partitions if p.fstype == "ext4")
    assert ext.tree is not None
    name, digest = next(iter(sorted(ext.tree.files.items())))
    out = tmp_path / "extracted"
    extracted = clonebay("extract", f"{url}:p{ext.number}", name, str(out))
    assert extracted.returncode == 0, extracted.stderr
    got = out / Path(name).name
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
    assert store_mounts() == []

    target = tmp_path / "target.img"
    with lan(2) as net:
        sender_node, node = net.nodes
        receiver = session.receive(node, target, tmp_path / "r.log", "--verify")
        sender = session.send(sender_node, url, tmp_path / "s.log", "--min-receivers", "1")  # type: ignore[arg-type]
        try:
            assert sender.wait() == 0, sender.log.read_text()[-3000:]
            assert receiver.wait() == 0, receiver.log.read_text()[-3000:]
        finally:
            receiver.stop()
            sender.stop()
    assert receiver.result()["verified"] is True
    assert_disk_matches(target, quick_disk, tmp_path)
    assert store_mounts() == []
