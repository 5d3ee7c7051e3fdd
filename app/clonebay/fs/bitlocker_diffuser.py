"""The Elephant diffuser (BitLocker's AES-CBC + diffuser mode, Windows Vista to 8), undone for many
sectors at once in plain Python.

Ferguson's diffuser ("AES-CBC + Elephant diffuser: A Disk Encryption Algorithm for Windows
Vista", Microsoft, 2006) treats a sector as 32-bit little-endian words d[0..n-1] and, to undo
it, runs diffuser B three times and diffuser A five times, each pass a recurrence over i:

    B: d[i] += d[i+2] ^ rotl(d[i+5], Rb[i % 4]),  Rb = 0, 10, 0, 25
    A: d[i] += d[i-2] ^ rotl(d[i-5], Ra[i % 4]),  Ra = 9, 0, 13, 0

(indices modulo n, additions modulo 2**32; dislocker's diffuser.c and the Linux kernel's
dm-crypt elephant IV implement the same). Then the 32-byte sector key is XORed over the sector.

Each d[i] depends on words updated just before it, so one sector cannot be vectorised; but
sectors are independent. So word i of N sectors is packed into one Python integer, 64 bits per
sector ("lanes": the word in the low 32 bits, 32 zero bits above it), and each step is a handful
of big-integer operations on all N sectors at once. Additions carry into a lane's zero half and
are masked off; rotations are a left and a right shift masked back to 32 bits (bits shifted in
from the next lane land in the masked half). For 512-byte sectors that is 1024 steps per batch,
whatever the batch size: 63 MB/s against 1.9 MB/s for a word-by-word loop (measured, 1 MiB
batches of 512-byte sectors; 44 MB/s with 4096-byte sectors).
"""

from __future__ import annotations

LANE = 8  # bytes per sector in a packed integer: the 32-bit word and 32 bits of headroom
SECTOR_KEY = 32
ROUNDS_B, ROTATE_B = 3, (0, 10, 0, 25)
ROUNDS_A, ROTATE_A = 5, (9, 0, 13, 0)


def _pack(data: bytes, stride: int, words: int, count: int) -> list[int]:
    """Word i of each of ``count`` records of ``stride`` bytes, as one lane integer per i."""
    lanes = bytearray(LANE * count)
    packed = []
    for i in range(words):
        for b in range(4):
            lanes[b::LANE] = data[4 * i + b :: stride]
        packed.append(int.from_bytes(lanes, "little"))
    return packed


def _unpack(packed: list[int], stride: int, count: int) -> bytes:
    out = bytearray(stride * count)
    for i, value in enumerate(packed):
        lanes = value.to_bytes(LANE * count, "little")
        for b in range(4):
            out[4 * i + b :: stride] = lanes[b::LANE]
    return bytes(out)


def _steps(words: int, sign: int, rotations: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(i, i±2, i±5, rotation) for one pass, indices already taken modulo ``words``."""
    return [
        (i, (i + 2 * sign) % words, (i + 5 * sign) % words, rotations[i % 4]) for i in range(words)
    ]


def undiffuse(data: bytes, sector_keys: bytes, sector_size: int) -> bytes:
    """Undo diffusers B and A, then XOR each sector's 32-byte key (``sector_keys`` holds one per
    sector, in order), for every sector of ``data``."""
    count, words = len(data) // sector_size, sector_size // 4
    if count == 0:
        return b""
    mask = int.from_bytes(b"\xff\xff\xff\xff\0\0\0\0" * count, "little")
    d = _pack(data, sector_size, words, count)
    for rounds, steps in (
        (ROUNDS_B, _steps(words, +1, ROTATE_B)),
        (ROUNDS_A, _steps(words, -1, ROTATE_A)),
    ):
        for _ in range(rounds):
            for i, near, far, r in steps:
                x = d[far]
                if r:
                    x = ((x << r) | (x >> (32 - r))) & mask
                d[i] = (d[i] + (d[near] ^ x)) & mask
    keys = _pack(sector_keys, SECTOR_KEY, SECTOR_KEY // 4, count)
    for i in range(words):
        d[i] ^= keys[i % len(keys)]
    return _unpack(d, sector_size, count)
