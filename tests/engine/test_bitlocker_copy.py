"""A BitLocker volume copied by the used clusters of its NTFS, still encrypted, from the CLI.

The source disk: GPT, p1 a BitLocker volume made by Windows (AES-XTS 128, with a password and a
recovery password protector) holding a valid NTFS with a Windows-like tree (tests/bitlocker_disks),
p2 ext4. With the key (password or recovery password, typed on standard input, never on the
command line) the clone and the save/restore carry only ciphertext: BitLocker's boot sector,
metadata areas and relocated boot sectors, and the NTFS's used clusters. The oracle reads the
target through dislocker and ntfs-3g with both secrets: every file as written, ntfsfix clean.
partclone.ntfs on dislocker's decrypted file says which clusters are used (the byte count is
checked against it). No secret is in the CLI's output, the image's files or the process list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clonebay.browse.mounts import load_state
from clonebay.fs import extents
from clonebay.fs.bitlocker_meta import read_metadata
from clonebay.model import Extent
from clonebay.system.blockdev import FileSource
from clonebay.system.run import output, run
from tests.bitlocker_data import BEK
from tests.bitlocker_disks import (
    NTFS_BYTES,
    TREE,
    Source,
    bitlocker_disk,
    method_of,
    mounted_ntfs,
    read_tree,
)
from tests.edgedisks import CLONEBAY, layout

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="dislocker-fuse and ntfs-3g (FUSE) need root"),
    pytest.mark.skipif(shutil.which("dislocker-fuse") is None, reason="dislocker is not installed"),
]
MIB = 1 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return bitlocker_disk(tmp_path_factory.mktemp("bitlocker-copy"))


def cli(*args: str, secrets: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI with ``secrets`` on its standard input (one per line), as a script runs it."""
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(
        [str(CLONEBAY), *args], input=secrets, capture_output=True, text=True, env=env, check=False
    )


def _result(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr + done.stdout
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    result: dict[str, object] = json.loads(last)
    return result


def _leaks(text: str | bytes, source: Source) -> list[str]:
    secrets = [source.volume.password, source.recovery]
    blob = text.encode() if isinstance(text, str) else text
    forms = [s.encode() for s in secrets] + [s.encode("utf-16-le") for s in secrets]
    return [f.decode(errors="replace") for f in forms if f in blob]


def _metadata_bytes(source: Source) -> int:
    with FileSource(str(source.volume.path)) as src:
        meta = read_metadata(src)
    return extents.total(extents.normalize((Extent(0, meta.header_size), *meta.kept_extents)))


def _check_target(target: Path, source: Source) -> None:
    """The target's p1 opens with both secrets, and holds every file as written."""
    start = layout(target)[1][0] * 512
    password, recovery = source.volume.password, source.recovery
    assert read_tree(target, password, NTFS_BYTES, offset=start) == source.sums
    assert read_tree(target, recovery, NTFS_BYTES, offset=start, recovery=True) == source.sums


def test_probe_shows_the_protectors_and_maps_with_the_key(source: Source) -> None:
    locked = cli("probe", "--json", str(source.disk))
    p1 = json.loads(locked.stdout)["partitions"][0]["volume"]
    assert p1["fstype"] == "bitlocker" and p1["copy"] == "raw"
    notes = " ".join(p1["notes"])
    assert "recovery key ID" in notes and next(iter(source.volume.recovery.values())) in notes
    opened = cli(
        "probe", "--json", "--recovery-password", str(source.disk), secrets=source.recovery
    )
    assert opened.returncode == 0, opened.stderr
    p1 = json.loads(opened.stdout)["partitions"][0]["volume"]
    assert p1["copy"] == "native" and p1["state"] == "encrypted"
    assert "recovery password" in p1["reason"] and "ntfs" in p1["reason"]
    assert not _leaks(opened.stdout + opened.stderr, source)


def test_clone_with_the_password_copies_only_the_used_clusters(
    source: Source, tmp_path: Path
) -> None:
    target = tmp_path / "target.img"
    done = cli("clone", "--json", "--yes", "--key", str(source.disk), str(target),
               secrets=source.volume.password + "\n")  # fmt: skip
    result = _result(done)
    assert not _leaks(done.stdout + done.stderr, source)
    _check_target(target, source)
    run(["e2fsck", "-fn", f"{target}?offset={layout(target)[2][0] * 512}"], check=False)
    # p1's share of the copy: the NTFS's used clusters plus BitLocker's own areas, within 1 %
    probe = json.loads(cli("probe", "--json", "--key", str(source.disk),
                           secrets=source.volume.password).stdout)  # fmt: skip
    p1_used = probe["partitions"][0]["volume"]["used_bytes"]
    expected = source.used + _metadata_bytes(source)
    assert abs(p1_used - expected) <= expected // 100, (p1_used, expected)
    assert p1_used < 100 * MIB // 4  # far below the volume's 100 MiB
    assert isinstance(result["copied_bytes"], int) and result["copied_bytes"] < 60 * MIB


@pytest.fixture(scope="module")
def saved(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source saved with its recovery password: p1 by its used clusters, as ciphertext."""
    image = tmp_path_factory.mktemp("bitlocker-saved") / "bl.image"
    done = cli("save", "--json", "--recovery-password", str(source.disk), str(image),
               secrets=source.recovery + "\n")  # fmt: skip
    _result(done)
    return image


def test_save_and_restore_keep_the_encryption(source: Source, saved: Path, tmp_path: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    (p1,) = [r for r in manifest["regions"] if r["name"] == "p1"]
    assert p1["copy"] == "native" and p1["fstype"] == "bitlocker"
    protector = next(iter(source.volume.recovery.values()))
    assert protector in p1["reason"]  # which protector opened it: its ID, never the secret
    for path in saved.rglob("*"):
        if path.is_file():
            assert not _leaks(path.read_bytes(), source), path
    target = tmp_path / "restored.img"
    restored = cli("restore", "--json", "--yes", str(saved), str(target))
    assert restored.returncode == 0, restored.stderr
    _check_target(target, source)


def test_ls_and_extract_inside_the_image_with_the_key(
    source: Source, saved: Path, tmp_path: Path
) -> None:
    listing = cli("ls", "--json", "--key", f"{saved}:p1", "Users/tech/Documents",
                  secrets=source.volume.password + "\n")  # fmt: skip
    entries = _result(listing)["entries"]
    assert isinstance(entries, list)
    assert [e["path"] for e in entries] == ["Users/tech/Documents/report.docx"]
    dest = tmp_path / "out"
    done = cli("extract", "--json", "--recovery-password", f"{saved}:p1", "Windows", "Users",
               str(dest), secrets=source.recovery + "\n")  # fmt: skip
    _result(done)
    got = {rel: hashlib.sha256((dest / rel).read_bytes()).hexdigest()
           for rel in source.sums if rel.startswith(("Windows/", "Users/"))}  # fmt: skip
    assert got == {k: v for k, v in source.sums.items() if k in got} and len(got) == 6
    assert not _leaks(listing.stdout + listing.stderr + done.stdout + done.stderr, source)


def test_browse_without_the_right_key_says_which_key(source: Source, saved: Path) -> None:
    ids = next(iter(source.volume.recovery.values()))
    bare = cli("ls", f"{saved}:p1", "Users")
    assert bare.returncode == 5 and ids in bare.stderr and "--recovery-password" in bare.stderr
    wrong = cli("ls", "--key", f"{saved}:p1", "Users", secrets="not-the-password\n")
    assert wrong.returncode == 5 and "does not unlock" in wrong.stderr, wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout


def test_mount_shows_the_files_read_only(source: Source, saved: Path, tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    done = cli("-v", "mount", "--json", "--key", str(saved), str(point),
               secrets=source.volume.password + "\n")  # fmt: skip
    result = _result(done)
    try:
        mounts = result["mounts"]
        assert isinstance(mounts, list)
        (p1,) = [m for m in mounts if m["region"] == "p1"]
        assert p1["fstype"] == "ntfs"
        root = Path(p1["path"])
        log = load_state(point).log  # the view daemons' log, --verbose: every command run
        assert log.exists() and not _leaks(log.read_bytes(), source)
        data = (root / "Users/tech/Pictures/site.jpg").read_bytes()
        assert hashlib.sha256(data).hexdigest() == source.sums["Users/tech/Pictures/site.jpg"]
        with pytest.raises(OSError):
            (root / "new.txt").write_text("no")
    finally:
        undone = cli("umount", str(point))
    assert undone.returncode == 0, undone.stderr
    assert not point.exists() or not any(point.iterdir())


def test_without_the_key_the_volume_is_copied_whole(source: Source, tmp_path: Path) -> None:
    target = tmp_path / "raw.img"
    done = cli("clone", "--json", "--yes", str(source.disk), str(target))
    result = _result(done)
    assert isinstance(result["copied_bytes"], int)
    assert result["copied_bytes"] > 90 * MIB  # the whole 100 MiB volume (its zeros skipped)
    _check_target(target, source)


def test_a_wrong_key_is_refused_before_anything_is_written(source: Source, tmp_path: Path) -> None:
    target = tmp_path / "never.img"
    wrong = "111111-222222-333333-444444-555555-666666-777777-888888"
    done = cli("clone", "--yes", "--recovery-password", str(source.disk), str(target),
               secrets=wrong + "\n")  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "none of the keys given opens" in done.stderr and "nothing was written" in done.stderr
    assert wrong not in done.stderr + done.stdout
    assert not target.exists()
    typo = cli("clone", "--yes", "--recovery-password", str(source.disk), str(target),
               secrets="12345\n")  # fmt: skip
    assert typo.returncode == 5 and not target.exists(), typo.stderr


def test_no_secret_in_the_process_list(source: Source, tmp_path: Path) -> None:
    """While the CLI waits for the key and while it copies, ``ps`` shows no secret."""
    target = tmp_path / "ps.img"
    argv = [str(CLONEBAY), "-v", "clone", "--yes", "--key", str(source.disk), str(target)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.0)  # it is reading standard input now
        listing = output(["ps", "-eo", "args"])
        assert str(source.disk) in listing and not _leaks(listing, source)
        assert proc.stdin is not None
        proc.stdin.write(source.volume.password + "\n")
        proc.stdin.close()
        while proc.poll() is None:
            listing = output(["ps", "-eo", "args"])
            assert not _leaks(listing, source)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert not _leaks(out + err, source)


def _plain_tree(target: Path, tmp_path: Path) -> dict[str, str]:
    """The target's p1 read as a plain NTFS (no key): ntfsfix -n clean, each file's SHA-256."""
    start, _ = layout(target)[1]
    alone = tmp_path / "p1.ntfs"
    with target.open("rb") as fin, alone.open("wb") as fout:
        fin.seek(start * 512)
        fout.write(fin.read(NTFS_BYTES))
    run(["ntfsfix", "-n", str(alone)])
    with mounted_ntfs(alone) as root:
        return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in TREE}


def test_decrypt_writes_a_plain_ntfs(source: Source, tmp_path: Path) -> None:
    target = tmp_path / "plain.img"
    plan = cli("clone", "--dry-run", "--key", "--decrypt", str(source.disk), str(target),
               secrets=source.volume.password + "\n")  # fmt: skip
    assert plan.returncode == 0 and "written DECRYPTED" in plan.stdout, plan.stderr
    done = cli("clone", "--json", "--yes", "--key", "--decrypt", str(source.disk), str(target),
               secrets=source.volume.password + "\n")  # fmt: skip
    result = _result(done)
    assert "UNENCRYPTED" in done.stderr
    assert isinstance(result["copied_bytes"], int) and result["copied_bytes"] < 60 * MIB
    probe = json.loads(cli("probe", "--json", str(target)).stdout)
    assert probe["partitions"][0]["volume"]["fstype"] == "ntfs"
    assert _plain_tree(target, tmp_path) == source.sums
    image = tmp_path / "plain.image"
    _result(cli("save", "--json", "--recovery-password", "--decrypt", str(source.disk),
                str(image), secrets=source.recovery + "\n"))  # fmt: skip
    restored = tmp_path / "restored.img"
    _result(cli("restore", "--json", "--yes", str(image), str(restored)))
    (tmp_path / "r").mkdir()
    assert _plain_tree(restored, tmp_path / "r") == source.sums


def test_decrypt_needs_a_key_and_no_rescue(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"  # where a clone's journal would go
    monkeypatch.setenv("CLONEBAY_STATE", str(state))
    target = tmp_path / "never.img"
    alone = cli("clone", "--yes", "--decrypt", str(source.disk), str(target))
    assert alone.returncode == 2 and "--decrypt needs the volume's key" in alone.stderr
    rescue = cli("clone", "--yes", "--key", "--decrypt", "--rescue", str(source.disk), str(target),
                 secrets=source.volume.password + "\n")  # fmt: skip
    assert rescue.returncode == 2 and "--rescue" in rescue.stderr, rescue.stderr
    assert not target.exists()
    assert not state.exists() or not any(state.rglob("*")), "a journal was left behind"
    assert not (tmp_path / "rescue").exists()


OTHERS = {  # shipped volume -> how the technician opens it (clonebay's options)
    "bitlk-aes-cbc-128": ["--key"],
    "bitlk-aes-cbc-elephant-128": ["--key"],
    "bitlk-aes-xts-256": ["--recovery-password"],
    "bitlk-aes-xts-128-startup-key": ["--startup-key", BEK],
    "bitlk-aes-xts-128-clearkey-only": [],  # suspended: opens with no key at all
}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_every_kind_of_volume_is_copied_by_its_used_clusters(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """AES-CBC, the Elephant diffuser, AES-XTS 256, a startup key, a clear key: each cloned by
    its used clusters, the target opened by dislocker with the same protector."""
    work = tmp_path_factory.mktemp(name)
    source = bitlocker_disk(work, name)
    volume = source.volume
    options = [work / o if o == BEK else o for o in OTHERS[name]]
    secret = volume.password if "--key" in options else next(iter(volume.recovery), "")
    target = work / "target.img"
    done = cli("clone", "--json", "--yes", *map(str, options), str(source.disk), str(target),
               secrets=secret + "\n")  # fmt: skip
    result = _result(done)
    assert isinstance(result["copied_bytes"], int) and result["copied_bytes"] < 70 * MIB
    start = layout(target)[1][0] * 512
    how = method_of(volume)
    assert read_tree(target, "", NTFS_BYTES, offset=start, method=how) == source.sums


def test_the_plan_shows_what_opens_a_locked_volume(source: Source, tmp_path: Path) -> None:
    plan = cli("clone", "--dry-run", str(source.disk), str(tmp_path / "t.img"))
    ident = next(iter(source.volume.recovery.values()))
    assert plan.returncode == 0, plan.stderr
    assert (
        f"BitLocker recovery key ID: {ident}" in plan.stdout
        and "--recovery-password" in plan.stdout
    )
