"""Mass deployment: one image multicast to three receivers in network namespaces, each with
the same mapping file; each receiver finds its own row by its network card's MAC address,
takes that host name (read back from its target with debugfs), and the sender's summary lists
machine -> name -> outcome and the row no machine took."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from clonebay.engine import jobs
from clonebay.engine.postcopy.mapping import Machine, find_row, read_mapping
from clonebay.errors import InputError
from tests.net import session
from tests.net.netns import lan, sh
from tests.postcopy import minidisk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mounts need root")


def test_three_receivers_take_three_names(tmp_path: Path) -> None:
    disk = minidisk.build(tmp_path / "disk.img", tmp_path / "work")
    image = tmp_path / "image"
    jobs.save(str(disk.path), str(image))
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(lan(4))
        sender_node, *nodes = net.nodes
        macs = [sh(*n.argv(["cat", "/sys/class/net/eth0/address"])).strip().upper() for n in nodes]
        mapping = tmp_path / "machines.csv"
        rows = [f"{mac.replace(':', '-')},,,lab-{i + 1:02d},room-b" for i, mac in enumerate(macs)]
        rows.append("52:54:00:de:ad:00,,,lab-99,room-c")  # a machine that is not there today
        mapping.write_text("mac,dmi_serial,disk_serial,hostname,room\n" + "\n".join(rows) + "\n")
        receivers = []
        for i, node in enumerate(nodes):
            target = tmp_path / f"target{i}.img"
            argv = [*session.CLONEBAY, "receive", "--yes", "--json", "--key", session.KEY]
            argv += ["--map", str(mapping), str(target)]
            log = tmp_path / f"r{i}.log"
            receivers.append(session.Proc(node, node.popen(argv, log), log))
            stack.callback(receivers[-1].stop)
        sender = session.send(
            sender_node, image, tmp_path / "s.log", "--min-receivers", "3", "--map", str(mapping)
        )
        stack.callback(sender.stop)
        assert sender.wait() == 0, sender.log.read_text()[-3000:]
        for i, r in enumerate(receivers):
            assert r.wait() == 0, r.log.read_text()[-3000:]
            result = r.result()
            assert result["postcopy"]["hostname"] == f"lab-{i + 1:02d}"
            assert any(f"row {i + 2} of" in note for note in result["postcopy"]["notes"])
        summary = sender.result()
    names = {m["address"]: (m["hostname"], m["state"]) for m in summary["names"]}
    assert sorted(names.values()) == [("lab-01", "ok"), ("lab-02", "ok"), ("lab-03", "ok")]
    assert summary["unused_rows"] == [{"line": 5, "hostname": "lab-99"}]
    for i in range(3):
        target = tmp_path / f"target{i}.img"
        assert minidisk.read_root_file(target, "etc/hostname") == f"lab-{i + 1:02d}\n"
        assert minidisk.read_root_file(target, "etc/machine-id") == ""
    assert minidisk.read_root_file(disk.path, "etc/hostname") == "source-host\n"


def test_mapping_file_refusals(tmp_path: Path) -> None:
    cases = {
        "dup.csv": ("mac,hostname\n52:54:00:00:00:01,a\n52-54-00-00-00-01,b\n", "both have mac"),
        "name.csv": (
            "mac,hostname\n52:54:00:00:00:01,a\n52:54:00:00:00:02,A\n",
            "both have hostname",
        ),
        "nokey.csv": ("mac,hostname\n,a\n", "no mac, dmi_serial or disk_serial"),
        "bad.csv": ("mac,hostname\n52:54:00:00:00:01,not_a_name\n", "is not a host name"),
        "head.csv": ("52:54:00:00:00:01,a\n", "must name the columns"),
        "bad.toml": ("[[machine]\nmac=1", "not TOML"),
    }
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=words):
            read_mapping(str(path))


def test_rows_match_by_any_key_and_never_twice(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[[machine]]\nmac = "52:54:00:00:00:01"\nhostname = "one"\n'
        '[[machine]]\ndmi_serial = "SN-2"\nhostname = "two"\nasset = "A-2"\n'
        '[[machine]]\ndisk_serial = "DISK-3"\nhostname = "three"\n'
    )
    rows = read_mapping(str(path))
    by = lambda m: row.hostname if (row := find_row(rows, m)) else None  # noqa: E731
    assert by(Machine(("52:54:00:00:00:01",))) == "one"
    assert by(Machine(("aa:bb:cc:dd:ee:ff",), dmi_serial="SN-2")) == "two"
    assert by(Machine((), disk_serial="DISK-3")) == "three"
    assert by(Machine(("aa:bb:cc:dd:ee:ff",))) is None
    assert find_row(rows, Machine((), dmi_serial="SN-2")).values == {"asset": "A-2"}  # type: ignore[union-attr]
    with pytest.raises(InputError, match="rows 1, 2"):
        find_row(rows, Machine(("52:54:00:00:00:01",), dmi_serial="SN-2"))
    assert json.dumps([r.hostname for r in rows]) == '["one", "two", "three"]'
