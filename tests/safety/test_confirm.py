"""Safety audit #13: the CLI wrote without asking. Now clone, restore, receive and job show what
will be overwritten and want "yes" typed on a terminal; --yes skips the question for scripts; with
no terminal and no --yes they refuse (exit 2) and the target keeps every byte.

The disks are real: an MBR made by sfdisk with an ext4 (mkfs.ext4, label SRCDATA, a random file)
as the source, and a loop device over a GPT made by sgdisk holding another ext4 (OLDDATA) as the
target. The CLI runs as a technician runs it, as a subprocess; the terminal is a real
pseudo-terminal (os.openpty) on its stdin and stderr.
"""

from __future__ import annotations

import os
import random
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from clonebay.system.run import output, run
from tests.diskcheck import extract
from tests.edgedisks import CLONEBAY, MIB, clonebay, gpt_disk, layout, loop, mbr_disk, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
SIZE = 64 * MIB
PART = (MIB, 40 * MIB)  # the source's p1: start, size
QUESTION = b'Type "yes"'


def mkfs(image: Path, start: int, size: int, label: str, root: Path | None = None) -> None:
    argv = ["mkfs.ext4", "-F", "-q", "-L", label, "-E", f"offset={start}"]
    argv += ["-d", str(root)] if root else []
    run([*argv, str(image), f"{size // 1024}k"])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """64 MiB, MBR, p1 ext4 "SRCDATA" holding payload.bin (1 MiB of random bytes)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "payload.bin").write_bytes(random.Random(13).randbytes(MIB))
    image = mbr_disk(tmp_path / "src.img", SIZE, "start=2048, size=40MiB, type=83\n")
    mkfs(image, *PART, "SRCDATA", root)
    return image


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    """A loop device over 64 MiB that holds something to lose: GPT, p1 ext4 "OLDDATA"."""
    image = gpt_disk(tmp_path / "old.img", SIZE, "1:2048:+48M")
    mkfs(image, MIB, 48 * MIB, "OLDDATA")
    with loop(image) as dev:
        yield dev


def device_sha(dev: str) -> str:
    return sha256(dev)


def assert_cloned(dev: str, source: Path, work: Path) -> None:
    """The target is the source: same table (sfdisk's reading), a clean ext4 with the file."""
    assert layout(dev) == layout(source)
    part = extract(Path(dev), *PART, work / "p1.img")
    run(["e2fsck", "-fn", str(part)])
    assert output(["blkid", "-o", "value", "-s", "LABEL", str(part)]).strip() == "SRCDATA"
    run(["debugfs", "-R", f"dump /payload.bin {work / 'payload.out'}", str(part)])
    assert (work / "payload.out").read_bytes() == random.Random(13).randbytes(MIB)


def on_terminal(argv: list[str], answer: str | None) -> tuple[int, str, str]:
    """Run ``clonebay argv`` with a pseudo-terminal as stdin and stderr; type ``answer`` once
    the question shows (None: never answer). Returns (exit code, terminal text, stdout)."""
    master, slave = os.openpty()
    with ExitStack() as stack:
        stack.callback(os.close, master)
        proc = subprocess.Popen(
            [str(CLONEBAY), *argv],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "LC_ALL": "C"},
            start_new_session=True,
        )
        os.close(slave)
        screen = b""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal's other end has exited
                    chunk = b""
                screen += chunk
                if answer is not None and QUESTION in screen:
                    os.write(master, answer.encode() + b"\n")
                    answer = None
                if chunk:
                    continue
            if proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"clonebay {' '.join(argv)} did not finish: {screen.decode()}")
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        proc.stdout.close()
        return proc.wait(), screen.decode(errors="replace"), out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def saved_image(source: Path, tmp_path: Path) -> Path:
    image = tmp_path / "saved"
    proc = clonebay("save", str(source), str(image))
    assert proc.returncode == 0, proc.stderr
    return image


def job_file(tmp_path: Path, source: str, target: str, extra: str = "") -> Path:
    path = tmp_path / "job.toml"
    text = f'job = "clone"\nsource = "{source}"\ntarget = "{target}"\n{extra}'
    path.write_text(text + '[options]\ngrow = "none"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["clone", "restore", "receive", "job"])
def test_no_terminal_and_no_yes_is_refused_and_writes_nothing(
    command: str, source: Path, target: str, tmp_path: Path
) -> None:
    before = device_sha(target)
    with ExitStack() as stack:
        if command == "clone":
            argv = ["clone", str(source), target]
        elif command == "restore":
            argv = ["restore", str(saved_image(source, tmp_path)), target]
        elif command == "receive":
            port = str(free_port())
            argv = ["receive", "--listen", "--tcp-port", port, "--key", "k", target]
        else:
            src = stack.enter_context(loop(source))
            argv = ["job", str(job_file(tmp_path, src, target))]
        try:
            proc = subprocess.run(
                [str(CLONEBAY), *argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"clonebay {command} waited instead of refusing")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = proc.stderr
    assert "--yes" in said and "Traceback" not in said
    if command == "job":
        assert "yes = true" in said
    assert device_sha(target) == before, "the target was written before the refusal"


def test_on_a_terminal_no_cancels_and_yes_clones(source: Path, target: str, tmp_path: Path) -> None:
    before = device_sha(target)
    argv = ["clone", "--grow", "none", str(source), target]

    # --dry-run shows the plan and asks nothing, terminal or not
    code, screen, out = on_terminal([*argv, "--dry-run"], answer=None)
    assert code == 0 and QUESTION.decode() not in screen, screen
    assert "p1" in out

    code, screen, _ = on_terminal(argv, answer="no")
    assert code == 9, screen
    # what the technician is shown: the device, model, size and what is on it now
    backing = tmp_path / "old.img"
    for shown in (
        target,
        f"Model   loop: {backing}",
        "64.0 MiB (67108864 bytes)",
        "gpt partition table",
        'p1: ext4 "OLDDATA", 48.0 MiB',
    ):
        assert shown in screen, (shown, screen)
    assert "nothing was written" in screen
    assert device_sha(target) == before, "answering no changed the target"

    code, screen, out = on_terminal(argv, answer="yes")
    assert code == 0, screen + out
    assert f"cloned {source} to {target}" in out
    assert_cloned(target, source, tmp_path)


def test_a_question_not_answered_yes_stops_restore_too(
    source: Path, target: str, tmp_path: Path
) -> None:
    image = saved_image(source, tmp_path)
    before = device_sha(target)
    code, screen, _ = on_terminal(["restore", str(image), target], answer="YES please")
    assert code == 9 and 'ext4 "OLDDATA"' in screen, screen
    assert device_sha(target) == before


def test_yes_works_without_a_terminal(source: Path, target: str, tmp_path: Path) -> None:
    proc = clonebay("clone", "--grow", "none", "-y", str(source), target)
    assert proc.returncode == 0, proc.stderr
    assert_cloned(target, source, tmp_path)
    # restore over it from a stream on stdin: never a terminal, so --yes is the only way
    stream = tmp_path / "src.cbs"
    with stream.open("wb") as f:
        subprocess.run([str(CLONEBAY), "save", str(source), "-"], stdout=f, check=True)
    with stream.open("rb") as f:
        refused = subprocess.run(
            [str(CLONEBAY), "restore", "-", target], stdin=f, capture_output=True, check=False
        )
    assert refused.returncode == 2 and b"--yes" in refused.stderr
    with stream.open("rb") as f:
        done = subprocess.run(
            [str(CLONEBAY), "restore", "--yes", "--verify", "-", target],
            stdin=f,
            capture_output=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert_cloned(target, source, tmp_path)


def test_a_new_image_file_needs_no_confirmation(source: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.img"
    proc = clonebay("clone", "--grow", "none", str(source), str(new))
    assert proc.returncode == 0, proc.stderr
    assert_cloned(str(new), source, tmp_path)
    proc = clonebay("clone", "--grow", "none", str(source), str(new))  # now it holds something
    assert proc.returncode == 2 and "--yes" in proc.stderr


def test_the_job_file_confirms_with_yes_true(source: Path, target: str, tmp_path: Path) -> None:
    before = device_sha(target)
    with loop(source) as src:
        dry = clonebay("job", str(job_file(tmp_path, src, target)), "--dry-run")
        assert dry.returncode == 0, dry.stderr  # a dry run needs nobody's yes
        assert device_sha(target) == before
        proc = clonebay("job", str(job_file(tmp_path, src, target, "yes = true\n")))
        assert proc.returncode == 0, proc.stderr
        assert "running: clonebay clone" in proc.stderr and "--yes" in proc.stderr
        assert 'p1: ext4 "OLDDATA"' in proc.stderr  # the log names what was overwritten
    assert_cloned(target, source, tmp_path)


def image_files(image: Path) -> dict[str, str]:
    return {p.relative_to(image).as_posix(): sha256(p) for p in image.rglob("*") if p.is_file()}


def test_umount_commit_names_the_image_and_asks(source: Path, tmp_path: Path) -> None:
    image = saved_image(source, tmp_path)
    before = image_files(image)
    point = tmp_path / "edit"
    assert clonebay("edit", str(image), str(point)).returncode == 0
    try:
        (point / "p1-SRCDATA" / "added.txt").write_text("added in the edit\n")
        refused = clonebay("umount", "--commit", str(point))
        assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
        code, screen, _ = on_terminal(["umount", "--commit", str(point)], answer="no")
        assert code == 9, screen
        assert str(image) in screen and "changed chunks" in screen, screen
        assert image_files(image) == before, "the image changed without a yes"
        assert (point / "p1-SRCDATA" / "added.txt").exists()  # still mounted: nothing undone
    finally:
        done = clonebay("umount", "--commit", "--yes", str(point))
    assert done.returncode == 0, done.stderr
    assert "committed as revision 1" in done.stdout
