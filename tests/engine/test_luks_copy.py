"""A LUKS2 volume copied by the used blocks of its ext4, still encrypted, from the CLI.

The source disk: GPT, p1 a LUKS2 volume (aes-xts-plain64, PBKDF2 key slot) that cryptsetup made
by encrypting an ext4 in place (tests/luks_volumes.py). With a key file holding the passphrase
(``--key-file``; ``--key`` reads the same secret from the terminal and is tested with the
BitLocker volumes), clone and save/restore carry only the LUKS header and keyslot areas and the
ciphertext under the ext4's used blocks. The oracles: cryptsetup
accepts the passphrase on the target's p1, and the target's p1, decrypted, is an ext4 that
e2fsck passes holding every file as built (debugfs rdump). A wrong passphrase is refused before
anything is written; no secret is in the CLI's output or the image's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.engine.clone_state import interrupted_clone
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import read_header
from clonebay.fs.luks_keys import unlock
from clonebay.fs.luks_view import UnlockedLuks
from clonebay.fs.probe import probe_volume
from clonebay.system.blockdev import FileSource
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks.tree import Tree, small_tree
from tests.edgedisks import clonebay, gpt_disk, layout, put, sha256
from tests.faultfile import failing
from tests.killed import clone_reached, kill_when, run_job
from tests.luks_volumes import CASES, PASSPHRASE, encrypt_in_place, opens_with, secret_file

MiB = 1 << 20
VOLUME = 48 * MiB
EXT = 32 * MiB  # the ext4 inside: what reencrypt --reduce-device-size 16M leaves encrypted
DATA_OFFSET = 8 * MiB


@dataclass(frozen=True)
class Source:
    disk: Path
    key_file: Path
    tree: Tree
    used: int  # the bytes p1's copy must carry: header area + the ext4's used blocks


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    work = tmp_path_factory.mktemp("luks-copy")
    tree = small_tree(work / "tree", files=40, big_file=2 * MiB)
    volume = extdisk.build_ext(work / "p1.img", EXT, tree, "ext4", label="secret-home")
    with FileSource(str(volume)) as src:
        ext_used = probe_volume(src).used_bytes
    with open(volume, "r+b") as f:
        f.truncate(VOLUME)
    key_file = secret_file(work, PASSPHRASE.encode())
    encrypt_in_place(volume, CASES[0], key_file)
    disk = gpt_disk(work / "disk.img", 64 * MiB, "1:2048:+48M", typecodes=["1:8309"])
    put(disk, volume, MiB)
    return Source(disk, key_file, tree, DATA_OFFSET + ext_used)


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr + done.stdout
    assert PASSPHRASE not in done.stdout + done.stderr
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    result: dict[str, object] = json.loads(last)
    return result


def check_target(target: Path, source: Source, work: Path) -> None:
    """The target's p1 opens with the passphrase and holds the ext4 with every file as built."""
    start, _ = layout(target)[1]
    p1 = work / "p1-of-target.img"
    with open(target, "rb") as fin, open(p1, "wb") as fout:
        os.copy_file_range(fin.fileno(), fout.fileno(), VOLUME, start * 512, 0)
    assert opens_with(p1, source.key_file), "cryptsetup does not open the target's p1"
    decrypted = work / "p1-decrypted.img"
    with FileSource(str(p1)) as src, open(decrypted, "wb") as out:
        header = read_header(src)
        view = UnlockedLuks(src, header, unlock(src, header, PASSPHRASE.encode(), "passphrase"))
        out.write(view.pread(EXT, 0))
    extdisk.fsck(decrypted)
    extdisk.check_tree(decrypted, source.tree)


def test_probe_maps_with_the_key_file(source: Source) -> None:
    done = clonebay("probe", "--json", "--key-file", str(source.key_file), str(source.disk))
    assert done.returncode == 0 and PASSPHRASE not in done.stdout + done.stderr, done.stderr
    (p1,) = json.loads(done.stdout)["partitions"]
    volume = p1["volume"]
    assert (volume["fstype"], volume["copy"], volume["state"]) == ("luks", "native", "encrypted")
    assert volume["used_bytes"] == source.used
    assert volume["label"] == "secret-home"


def test_clone_with_the_key_file_copies_only_the_used_blocks(
    source: Source, tmp_path: Path
) -> None:
    keyed = result_of(
        clonebay("clone", "--json", "--yes", "--key-file", str(source.key_file),
                 str(source.disk), str(tmp_path / "t.img"))
    )  # fmt: skip
    check_target(tmp_path / "t.img", source, tmp_path)
    whole = result_of(
        clonebay("clone", "--json", "--yes", str(source.disk), str(tmp_path / "w.img"))
    )
    check_target(tmp_path / "w.img", source, tmp_path)
    assert isinstance(keyed["copied_bytes"], int) and isinstance(whole["copied_bytes"], int)
    # the whole copy reads p1's 48 MiB; the keyed one its ~15 MiB map, in 4 MiB chunks
    assert whole["copied_bytes"] - keyed["copied_bytes"] >= VOLUME - source.used - 8 * MiB


def test_save_and_restore_keep_the_encryption(source: Source, tmp_path: Path) -> None:
    image = tmp_path / "luks.image"
    result_of(
        clonebay("save", "--json", "--key-file", str(source.key_file), str(source.disk), str(image))
    )
    manifest = json.loads((image / "manifest.json").read_text())
    (p1,) = [r for r in manifest["regions"] if r["name"] == "p1"]
    assert (p1["fstype"], p1["copy"]) == ("luks", "native")
    for path in image.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path
    target = tmp_path / "restored.img"
    result_of(clonebay("restore", "--json", "--yes", str(image), str(target)))
    check_target(target, source, tmp_path)


def test_a_wrong_key_file_is_refused_before_anything_is_written(
    source: Source, tmp_path: Path
) -> None:
    target = tmp_path / "never.img"
    wrong = "Tr0ub4dor&3"
    key_file = secret_file(tmp_path, wrong.encode())
    done = clonebay("clone", "--yes", "--key-file", str(key_file), str(source.disk), str(target))
    assert done.returncode == 5, done.stderr
    assert "none of the keys given opens" in done.stderr and "nothing was written" in done.stderr
    assert "key file 1 does not open key slot 0" in done.stderr
    assert wrong not in done.stderr + done.stdout
    assert not target.exists()


def test_extract_from_the_image_with_the_key_file(source: Source, tmp_path: Path) -> None:
    """The files of the LUKS volume in an image, read with its key file (browse: an unlocked
    view of the image's ciphertext, mounted read-only by the kernel's ext4)."""
    image = tmp_path / "browse.image"
    key = ["--key-file", str(source.key_file)]
    result_of(clonebay("save", "--json", *key, str(source.disk), str(image)))
    bare = clonebay("ls", f"{image}:p1")
    assert bare.returncode == 5 and "--key-file" in bare.stderr, bare.stderr
    listing = result_of(clonebay("ls", "--json", "-R", *key, f"{image}:p1"))
    entries = listing["entries"]
    assert isinstance(entries, list)
    files = {e["path"] for e in entries if e["kind"] == "file"}
    assert set(source.tree.files) <= files | {"lost+found"}
    dest = tmp_path / "out"
    result_of(clonebay("extract", "--json", *key, f"{image}:p1", ".", str(dest)))
    got = {rel: hashlib.sha256((dest / rel).read_bytes()).hexdigest() for rel in source.tree.files}
    assert got == source.tree.files


def test_a_keyed_clone_killed_resumes_only_with_the_same_key(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone with the key file, read through a slow FUSE file and killed (-9) once the
    target's journal holds written runs: resumed without the key (or asked about as the TUI
    asks, without the session's keys), it is refused with the key named as the cause (the
    target untouched); resumed with it, the target is byte for byte what an uninterrupted
    clone gives, and opens with every file."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("CLONEBAY_STATE", str(state))
    key = ["--key-file", str(source.key_file)]
    whole, cut = tmp_path / "whole.img", tmp_path / "cut.img"
    end = source.disk.stat().st_size
    with failing(source.disk, tmp_path / "mnt", end, 1, slow=[(MiB, VOLUME)]) as disk:
        first = clonebay("clone", *key, str(disk), str(whole), "--yes")
        assert first.returncode == 0, first.stderr
        proc = run_job("clone", *key, str(disk), str(cut), "--yes")
        kill_when(proc, lambda: clone_reached(state, 2), "two runs written on the target")
        before = sha256(cut)
        # what the TUI asks before it offers Resume: with its session's keys, and without
        keyless_state = interrupted_clone(str(disk), str(cut))
        assert keyless_state is not None and "opened p1" in keyless_state.problem
        keyed = interrupted_clone(str(disk), str(cut), Keyring(key_files=[PASSPHRASE.encode()]))
        assert keyed is not None and keyed.problem == "" and keyed.written_bytes > 0, keyed
        keyless = clonebay("clone", "--resume", str(disk), str(cut), "--yes")
        assert keyless.returncode == 2, keyless.stderr
        assert "opened p1" in keyless.stderr and "--key-file" in keyless.stderr, keyless.stderr
        assert sha256(cut) == before
        again = clonebay("clone", "--resume", *key, str(disk), str(cut), "--yes")
    assert again.returncode == 0, again.stderr
    assert PASSPHRASE not in again.stdout + again.stderr + keyless.stderr
    assert sha256(cut) == sha256(whole)
    assert not list(state.glob("clone-*"))  # done: nothing left to resume
    check_target(cut, source, tmp_path)


def test_a_keyed_save_killed_resumes_only_with_the_same_key(source: Source, tmp_path: Path) -> None:
    """The same for a save: killed after its first checkpoint, refused without the key (the
    checkpoint unchanged), and resumed with it into an image that restores to the very bytes an
    uninterrupted save's image restores to."""
    key = ["--key-file", str(source.key_file)]
    whole, cut = tmp_path / "whole.image", tmp_path / "cut.image"
    checkpoint = cut / "resume" / "checkpoint.json"
    end = source.disk.stat().st_size
    with failing(source.disk, tmp_path / "mnt", end, 1, slow=[(MiB, VOLUME)]) as disk:
        first = clonebay("save", *key, str(disk), str(whole))
        assert first.returncode == 0, first.stderr
        proc = run_job("save", *key, str(disk), str(cut))
        kill_when(proc, checkpoint.exists, "a checkpoint")
        before = checkpoint.read_bytes()
        keyless = clonebay("save", "--resume", str(disk), str(cut))
        assert keyless.returncode == 2, keyless.stderr
        assert "opened p1" in keyless.stderr and "--key-file" in keyless.stderr, keyless.stderr
        assert checkpoint.read_bytes() == before
        again = clonebay("save", "--resume", *key, str(disk), str(cut))
    assert again.returncode == 0, again.stderr
    assert PASSPHRASE not in again.stdout + again.stderr + keyless.stderr
    restored = []
    for image in (whole, cut):
        target = tmp_path / f"{image.stem}.disk"
        result_of(clonebay("restore", "--json", "--yes", str(image), str(target)))
        restored.append(sha256(target))
    assert restored[0] == restored[1]
    check_target(target, source, tmp_path)
