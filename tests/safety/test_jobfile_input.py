"""Safety audit #13 and #18, the job file as input: a file that is not UTF-8 gave a
UnicodeDecodeError traceback, one over 1 MiB was silently cut (and the cut file could run), and a
job fetched over plain http could be changed on the way to choose which disk is wiped. Now each
is refused with a message naming the file, before anything runs; http needs the SHA-256 of the
content pinned in the URL (``#sha256=HEX``), which is checked. The files are served by a real
http.server on 127.0.0.1; the CLI runs as a subprocess, as the live system's job unit runs it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clonebay.errors import InputError, UsageError
from tests.edgedisks import MIB, clonebay, loop, mbr_disk, mkext

SAVE_JOB = 'job = "save"\nsource = "{source}"\ntarget = "{target}"\n'


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, base URL): the folder's files over http on 127.0.0.1, for the test's length."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_clean(proc: Any, code: int, *words: str) -> None:
    said = proc.stdout + proc.stderr
    assert proc.returncode == code, said
    assert "Traceback" not in said, said
    for word in words:
        assert word in said, (word, said)


def test_a_job_file_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('# Übernahme\njob = "save"\n'.encode("latin-1"))
    proc = clonebay("job", str(path))
    assert_clean(proc, InputError.exit_code, str(path), "not UTF-8")


@pytest.mark.parametrize("size", [100 << 10, 2 * MIB])
def test_an_oversized_job_file_is_refused_never_cut(tmp_path: Path, size: int) -> None:
    """A real job followed by a comment long enough to pass the limit: cut at the limit, the
    rest would still be valid TOML and run; it must be refused whole instead."""
    path = tmp_path / "big.toml"
    text = SAVE_JOB.format(source="/dev/null-disk", target=tmp_path / "img")
    path.write_text(text + "# " + "x" * size + "\n", encoding="utf-8")
    proc = clonebay("job", str(path), "--dry-run")
    assert_clean(proc, InputError.exit_code, str(path), "larger than 64 KiB")


def test_plain_http_needs_a_pin(served: tuple[Path, str], tmp_path: Path) -> None:
    folder, base = served
    (folder / "job.toml").write_text(SAVE_JOB.format(source="/dev/x", target="/y"), "utf-8")
    proc = clonebay("job", f"{base}/job.toml", "--dry-run")
    assert_clean(proc, UsageError.exit_code, f"{base}/job.toml", "https://", "#sha256=")
    proc = clonebay("job", f"{base}/job.toml#sha256=1234", "--dry-run")
    assert_clean(proc, UsageError.exit_code, "64 hex digits")


@pytest.mark.skipif(os.geteuid() != 0, reason="the accepted job saves a loop device")
def test_the_pin_must_match_the_content(served: tuple[Path, str], tmp_path: Path) -> None:
    folder, base = served
    disk = mbr_disk(tmp_path / "disk.img", 32 * MIB, "start=2048, type=83\n")
    mkext(disk, MIB, 31 * MIB)
    image = tmp_path / "saved"
    with loop(disk) as dev:
        body = SAVE_JOB.format(source=dev, target=image).encode()
        (folder / "job.toml").write_bytes(body)
        right = hashlib.sha256(body).hexdigest()
        wrong = hashlib.sha256(body + b"# changed on the way\n").hexdigest()

        proc = clonebay("job", f"{base}/job.toml#sha256={wrong}")
        assert_clean(proc, InputError.exit_code, "not the one pinned", right, wrong)
        assert not image.exists(), "the job ran although its pin did not match"

        proc = clonebay("job", f"{base}/job.toml#sha256={right.upper()}")
        assert_clean(proc, 0, f"running: clonebay save {dev} {image}")
    assert (image / "manifest.json").exists()


def test_an_oversized_job_behind_a_url_is_refused(served: tuple[Path, str]) -> None:
    folder, base = served
    (folder / "big.toml").write_bytes(b"# " + b"x" * (200 << 10) + b"\n")
    pin = hashlib.sha256((folder / "big.toml").read_bytes()).hexdigest()
    proc = clonebay("job", f"{base}/big.toml#sha256={pin}")
    assert_clean(proc, InputError.exit_code, "larger than 64 KiB")
