"""The store choices of the "Where are the images?" screen, without mounts: the network form's
fields become the same store URLs the CLI takes (and are refused in its words), a remembered
store goes back into the form unchanged, and the session keeps one store mounted at a time
(a fake ``mounted_store`` records each mount and unmount)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.engine import stores
from clonebay.errors import CancelledError, StoreError, UsageError
from clonebay.tui.store_choice import (
    Kind,
    NetworkFields,
    StoreChoice,
    fields_of,
    folder_choice,
    network_choice,
)
from clonebay.tui.store_session import StoreSession


def test_smb_fields_make_the_cli_url() -> None:
    f = NetworkFields(Kind.SMB, "nas", "images", "pcs/2026", "ana", "s3cret", "OFFICE")
    choice = network_choice(f)
    assert choice.url is not None
    assert (choice.url.host, choice.url.root, choice.folder) == ("nas", "images", "pcs/2026")
    assert (choice.url.user, choice.url.domain, choice.url.port) == ("ana", "OFFICE", 445)
    assert choice.title == "smb://ana@nas/images/pcs/2026"
    assert choice.credentials.password == "s3cret" and not choice.smb1
    assert "s3cret" not in repr(choice) + repr(f)


def test_nfs_mounts_the_folder_and_sftp_the_home() -> None:
    nfs = network_choice(NetworkFields(Kind.NFS, "10.0.0.5", "/srv/images/pcs"))
    assert nfs.url is not None and nfs.url.root == "/srv/images/pcs" and nfs.folder == ""
    sftp = network_choice(
        NetworkFields(Kind.SFTP, "backup", folder="~/img", user="tech", port="2222")
    )
    assert sftp.url is not None
    assert (sftp.url.root, sftp.folder, sftp.url.port) == ("~", "img", 2222)
    assert sftp.credentials.password is None  # empty: the key or the agent is tried


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (NetworkFields(Kind.SMB, "", "images"), "server's name"),
        (NetworkFields(Kind.SMB, "nas", ""), "share"),
        (NetworkFields(Kind.SMB, "nas/x", "images"), "not a server name"),
        (NetworkFields(Kind.NFS, "nas", ""), "export"),
        (NetworkFields(Kind.SFTP, "nas", user=""), "user name"),
        (NetworkFields(Kind.SFTP, "nas", user="u", port="ssh"), "port must be a number"),
        (NetworkFields(Kind.SFTP, "nas", user="u", port="70000"), "out of range"),
        (NetworkFields(Kind.SFTP, "nas", folder="a/../b", user="u"), "'..'"),
    ],
)
def test_bad_fields_are_refused_in_words(fields: NetworkFields, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        network_choice(fields)
    assert words in caught.value.message


@pytest.mark.parametrize(
    "fields",
    [
        NetworkFields(Kind.SMB, "nas", "images", "pcs", "ana", "pw", "OFFICE", smb1=True),
        NetworkFields(Kind.NFS, "nas", "/srv/img"),
        NetworkFields(Kind.SFTP, "nas", folder="~/img", user="u", password="pw", port="2222"),
        NetworkFields(Kind.SFTP, "nas", folder="srv/img", user="u", identity="/root/.ssh/k"),
    ],
)
def test_a_remembered_store_goes_back_into_the_form(fields: NetworkFields) -> None:
    choice = network_choice(fields)
    again = network_choice(fields_of(choice))
    assert again == choice


class FakeMounts:
    """``stores.mounted_store`` that records what is mounted, in which mode."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[tuple[str, bool]] = []
        self.log: list[str] = []

    @contextlib.contextmanager
    def __call__(
        self, url: stores.StoreURL, access: stores.Access, *, write: bool
    ) -> Iterator[Path]:
        entry = (url.where, write)
        self.mounted.append(entry)
        self.log.append(f"mount {url.where} {'rw' if write else 'ro'}")
        try:
            yield self.root
        finally:
            self.mounted.remove(entry)
            self.log.append(f"umount {url.where}")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMounts:
    mounts = FakeMounts(tmp_path)
    monkeypatch.setattr(stores, "mounted_store", mounts)
    return mounts


def smb(share: str) -> StoreChoice:
    return network_choice(NetworkFields(Kind.SMB, "nas", share, "pcs", "ana", "pw"))


def test_one_store_stays_mounted_until_another_is_chosen(fake: FakeMounts) -> None:
    session = StoreSession()
    a, b = smb("a"), smb("b")
    (fake.root / "pcs").mkdir()
    folder = session.open(a)
    assert folder == str(fake.root / "pcs")
    session.open(a)  # the same store, read again: still the one mount
    assert fake.log == ["mount smb://ana@nas/a ro"]
    session.open(a, write=True)  # a save wants it read-write: mounted again
    assert fake.log[1:] == ["umount smb://ana@nas/a", "mount smb://ana@nas/a rw"]
    session.open(b)
    assert fake.mounted == [("smb://ana@nas/b", False)]
    assert [c.title for c in session.remembered()] == [b.title, a.title]
    assert session.remembered()[0].credentials.password == "pw"
    session.open(folder_choice(str(fake.root)))  # a folder of this machine: nothing mounted
    assert fake.mounted == [] and len(session.remembered()) == 2
    session.open(a)
    session.close()
    assert fake.mounted == []
    with pytest.raises(CancelledError):  # the app has left: nothing stays mounted
        session.open(b)
    assert fake.mounted == []


def test_a_folder_that_is_not_there_is_refused(fake: FakeMounts, tmp_path: Path) -> None:
    session = StoreSession()
    with pytest.raises(StoreError, match="is not a folder"):
        session.open(folder_choice(str(tmp_path / "nowhere")))
    with pytest.raises(StoreError, match="no folder pcs"):
        session.test(smb("a"), None)
    assert fake.mounted == []
