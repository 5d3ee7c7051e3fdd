"""ext2/3/4 test images built without root: ``mke2fs -d`` from a Tree, debugfs for the rest.

``mke2fs -d DIR`` copies a folder (files, symlinks, hard links, extended attributes) into a new
filesystem inside a sparse file. ``VARIANTS`` names the layouts the prober must handle, each as
the mkfs program and its arguments. Three tricks need ``debugfs -w``, which edits an image
directly:

* deleted files (``build_ext(..., deleted=...)``): written in with debugfs, then ``rm``-ed, so
  their blocks are free in the bitmaps but still hold their bytes; a correct map leaves them out.
* a journal that needs recovery (``add_pending_journal``): the state a crash leaves between a
  transaction's commit and its checkpoint. The new file's data blocks are written home, the
  metadata blocks that changed (bitmaps, inode, directory, descriptors) only into the journal.
* reading back: ``rdump`` for file contents and symlinks, ``ls -p`` for inode numbers (hard
  links), ``ea_get -x`` for extended attributes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clonebay.system.run import output, run
from clonebay.testdisks.tree import Tree

MiB = 1 << 20


@dataclass(frozen=True)
class Variant:
    """How to make one kind of ext filesystem: the mkfs program and its arguments."""

    program: str
    args: tuple[str, ...]
    about: str


VARIANTS: dict[str, Variant] = {
    "ext4": Variant("mkfs.ext4", ("-b", "4096"), "defaults: 64bit, flex_bg, metadata_csum"),
    "ext4-1k": Variant("mkfs.ext4", ("-b", "1024"), "1 KiB blocks, first data block 1"),
    "ext4-uninit": Variant(
        "mkfs.ext4",
        ("-b", "4096", "-g", "8192", "-G", "4", "-O", "^metadata_csum,^64bit,uninit_bg"),
        "many flex groups, BLOCK_UNINIT groups, crc16 descriptor checksums, 32-byte descriptors",
    ),
    "ext4-64bit": Variant(
        "mkfs.ext4",
        ("-b", "4096", "-g", "8192", "-O", "64bit,^metadata_csum,uninit_bg", "-E", "desc_size=128"),
        "64bit with 128-byte descriptors and crc16 checksums over all of them",
    ),
    "ext4-bigalloc": Variant(
        "mkfs.ext4", ("-b", "4096", "-O", "bigalloc", "-C", "16384"), "16 KiB clusters"
    ),
    "ext4-csum-seed": Variant(
        "mkfs.ext4",
        ("-b", "1024", "-O", "metadata_csum,metadata_csum_seed"),
        "metadata_csum with a stored checksum seed",
    ),
    "ext4-meta-bg": Variant(
        "mkfs.ext4",
        ("-b", "1024", "-O", "meta_bg,^resize_inode"),
        "descriptor blocks spread over meta groups",
    ),
    "ext4-sparse-super2": Variant(
        "mkfs.ext4",
        ("-b", "4096", "-g", "8192", "-O", "sparse_super2"),
        "only two backup superblocks",
    ),
    "ext4-64k": Variant("mkfs.ext4", ("-b", "65536"), "64 KiB blocks"),
    "ext3": Variant("mkfs.ext3", ("-b", "4096"), "ext3: journal, block-mapped files"),
    "ext3-1k": Variant("mkfs.ext3", ("-b", "1024"), "ext3 with 1 KiB blocks"),
    "ext2": Variant("mkfs.ext2", ("-b", "1024"), "ext2: no journal"),
}


def debugfs(image: Path, commands: Iterable[str], *, write: bool = False) -> str:
    """Run debugfs commands (one per line) on ``image``; its stdout."""
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        argv = ["debugfs", *(["-w"] if write else []), "-f", script.name, str(image)]
        return output(argv)


def quote(path: str) -> str:
    """A path as one debugfs argument (debugfs splits its command lines like a shell)."""
    return '"' + path + '"'


def build_ext(
    path: Path,
    size: int,
    tree: Tree,
    variant: str = "ext4",
    *,
    label: str = "clonebay",
    uuid: str | None = None,
    deleted: Mapping[str, bytes] | None = None,
) -> Path:
    """A new sparse file of ``size`` bytes holding ``tree`` in an ext filesystem of ``variant``.

    ``deleted`` files (path -> content) are written in with debugfs and removed again, so their
    data stays in free blocks; they never become part of ``tree``'s record.
    """
    spec = VARIANTS[variant]
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    argv = [spec.program, "-q", "-F", *spec.args, "-L", label, *(["-U", uuid] if uuid else [])]
    # mke2fs warns that 64 KiB blocks exceed the page size, and carries on.
    run([*argv, "-d", str(tree.root), str(path)])
    if deleted:
        delete_files(path, deleted)
    return path


def delete_files(image: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (path -> content) into ``image`` and remove them: stale data, free blocks."""
    folders = sorted(
        {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    )
    with tempfile.TemporaryDirectory(prefix="clonebay-deleted-") as tmp:
        commands = [f"mkdir {quote('/' + folder)}" for folder in folders]
        for i, (rel, data) in enumerate(sorted(files.items())):
            host = Path(tmp) / str(i)
            host.write_bytes(data)
            commands.append(f"write {quote(str(host))} {quote('/' + rel)}")
        commands += [f"rm {quote('/' + rel)}" for rel in sorted(files)]
        debugfs(image, commands, write=True)


def fsck(image: Path) -> None:
    """``e2fsck -fn``: raises CommandError unless the filesystem is clean."""
    run(["e2fsck", "-fn", str(image)])


def read_tree(image: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(path -> sha256 of every regular file, path -> target of every symlink), via rdump."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="clonebay-rdump-") as tmp:
        out = Path(tmp)
        debugfs(image, [f"rdump / {quote(str(out))}"])
        for folder, dirnames, filenames in os.walk(out):
            for name in [*filenames, *dirnames]:
                full = Path(folder) / name
                rel = full.relative_to(out).as_posix()
                if full.is_symlink():
                    links[rel] = os.readlink(full)
                elif full.is_file():
                    files[rel] = _sha256(full)
    return files, links


def file_hashes(image: Path) -> dict[str, str]:
    """Every regular file in ``image`` (path relative to the root) -> sha256 of its content."""
    return read_tree(image)[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 * MiB):
            digest.update(piece)
    return digest.hexdigest()


def inode_numbers(image: Path, paths: Iterable[str]) -> dict[str, int]:
    """Inode number of each path, from ``ls -p`` of the folders that hold them."""
    wanted = sorted(set(paths))
    folders = sorted({p.rpartition("/")[0] for p in wanted})
    text = debugfs(image, [f"ls -p {quote('/' + folder)}" for folder in folders])
    numbers: dict[str, int] = {}
    folder = ""
    for line in text.splitlines():
        if line.startswith("debugfs: ls -p "):
            folder = line[len("debugfs: ls -p ") :].strip('"').strip("/")
            continue
        fields = line.split("/")
        if len(fields) >= 7 and fields[1].isdigit():
            rel = f"{folder}/{fields[5]}" if folder else fields[5]
            numbers[rel] = int(fields[1])
    return {p: numbers[p] for p in wanted if p in numbers}


def xattrs(image: Path, names: Mapping[str, Iterable[str]]) -> dict[str, dict[str, bytes]]:
    """Values of the named extended attributes (path -> attribute names), via ``ea_get -x``."""
    pairs = [(p, n) for p, attrs in sorted(names.items()) for n in sorted(attrs)]
    text = debugfs(image, [f"ea_get -x {quote('/' + p)} {n}" for p, n in pairs])
    values: dict[str, dict[str, bytes]] = {}
    current: tuple[str, str] | None = None
    for line in text.splitlines():
        command = re.match(r'debugfs: ea_get -x "/(.*)" (\S+)$', line)
        if command:
            current = (command.group(1), command.group(2))
            continue
        found = re.match(r"(\S+) \((\d+)\) = ?([0-9a-f ]*)$", line.strip())
        if current and found and found.group(1) == current[1]:
            values.setdefault(current[0], {})[current[1]] = bytes.fromhex(found.group(3))
            current = None
    return values


def check_tree(image: Path, tree: Tree) -> None:
    """Assert that ``image`` holds exactly ``tree``: contents, symlinks, hard links, xattrs."""
    files, links = read_tree(image)
    missing = sorted(set(tree.files) - set(files))
    extra = sorted(set(files) - set(tree.files))
    wrong = sorted(p for p in tree.files if p in files and files[p] != tree.files[p])
    assert not (missing or extra or wrong), (
        f"{image}: missing {missing[:5]}, unexpected {extra[:5]}, wrong content {wrong[:5]}"
    )
    assert links == tree.symlinks, f"{image}: symlinks differ"
    if tree.hardlinks:
        names = [*tree.hardlinks, *tree.hardlinks.values()]
        numbers = inode_numbers(image, names)
        assert set(numbers) == set(names), f"{image}: inode numbers not found for all links"
        split = [n for n, first in tree.hardlinks.items() if numbers.get(n) != numbers.get(first)]
        assert not split, f"{image}: hard links not sharing an inode: {split[:5]}"
    if tree.xattrs:
        found = xattrs(image, {p: list(attrs) for p, attrs in tree.xattrs.items()})
        assert found == tree.xattrs, f"{image}: extended attributes differ"


def blocks_of(image: Path, filespec: str) -> list[int]:
    """The data blocks of a file ("/path" or "<inode>"), in order (debugfs ``blocks``)."""
    text = debugfs(image, [f"blocks {quote(filespec)}"])
    return [int(n) for n in text.split() if n.isdigit()]


def block_size(image: Path) -> int:
    text = output(["dumpe2fs", "-h", str(image)])
    found = re.search(r"^Block size:\s+(\d+)", text, re.MULTILINE)
    assert found, f"dumpe2fs -h {image} shows no block size"
    return int(found.group(1))


def add_pending_journal(
    image: Path, rel: str, data: bytes, *, checksums: bool = False
) -> list[int]:
    """Leave ``image`` as a crash would after committing a new file ``rel`` but before checkpoint.

    The file's data blocks are written home; the metadata blocks its creation changed reach the
    image only as a committed journal transaction, and the volume is flagged needs_recovery.
    Returns the file's data blocks (free in the on-disk bitmaps, used after a replay).
    """
    bs = block_size(image)
    with tempfile.TemporaryDirectory(prefix="clonebay-journal-") as tmp:
        after = Path(tmp) / "after.img"
        shutil.copyfile(image, after)
        source = Path(tmp) / "content"
        source.write_bytes(data)
        debugfs(after, [f"write {quote(str(source))} {quote('/' + rel)}"], write=True)
        data_blocks = blocks_of(after, "/" + rel)
        changed = _changed_blocks(image, after, bs)
        home = set(data_blocks)
        metadata = [b for b in changed if b not in home]
        payload = Path(tmp) / "payload"
        with open(after, "rb") as src, open(image, "r+b") as dst, open(payload, "wb") as out:
            for block in data_blocks:
                os.pwrite(dst.fileno(), os.pread(src.fileno(), bs, block * bs), block * bs)
            for block in metadata:
                out.write(os.pread(src.fileno(), bs, block * bs))
        opener = "jo -c" if checksums else "jo"
        listed = ",".join(str(b) for b in metadata)
        debugfs(image, [opener, f"jw -b {listed} {quote(str(payload))}", "jc"], write=True)
    return data_blocks


def _changed_blocks(a: Path, b: Path, bs: int) -> list[int]:
    """Blocks whose content differs between two images of the same size."""
    changed = []
    chunk = 256 * bs
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                break
            if x != y:
                for i in range(0, max(len(x), len(y)), bs):
                    if x[i : i + bs] != y[i : i + bs]:
                        changed.append((offset + i) // bs)
            offset += chunk
    return changed
