"""Typed, checked access to the JSON objects of a manifest.

Every value a reader takes from manifest.json goes through ``JsonObject``: it checks the type and
the range, and an error names the file and the key path ("manifest.json:
table.partitions[1].start: must be a non-negative integer, got -2048"), so that a damaged or
hand-edited manifest gives an ``ImageError`` (exit 5) instead of a traceback. Keys a reader does
not ask for are ignored (docs/format.md §9: later versions may add keys).
"""

from __future__ import annotations

from typing import Any

from clonebay.imaging.spec import ImageError

U64_MAX = (1 << 64) - 1


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


class JsonObject:
    """One JSON object of a manifest at key path ``path`` (empty for the top) in ``file``."""

    def __init__(self, obj: object, path: str, file: str) -> None:
        if not isinstance(obj, dict):
            raise ImageError(f"{file}: {path or 'manifest'}: must be a JSON object")
        self.obj: dict[str, Any] = obj
        self.path = path
        self.file = file

    def fail(self, key: str, why: str) -> ImageError:
        return ImageError(f"{self.file}: {join(self.path, key)}: {why}")

    def integer(
        self, key: str, low: int = 0, high: int = U64_MAX, default: int | None = None
    ) -> int:
        value = self.obj.get(key, default)
        if type(value) is not int or not low <= value <= high:
            if low == 0 and high == U64_MAX:
                raise self.fail(key, f"must be a non-negative integer, got {value!r}")
            raise self.fail(key, f"must be an integer in [{low}, {high}], got {value!r}")
        return value

    def optional_integer(self, key: str, low: int = 0, high: int = U64_MAX) -> int | None:
        """An integer, or None when the key is absent or null."""
        if self.obj.get(key) is None:
            return None
        return self.integer(key, low, high)

    def sector_size(self, key: str, default: int, high: int = 1 << 16) -> int:
        """A power of two from 512 to ``high`` (64 KiB for a logical sector)."""
        value = self.obj.get(key, default)
        if type(value) is not int or not 512 <= value <= high or value & (value - 1):
            raise self.fail(key, f"must be a power of two from 512 to {high}, got {value!r}")
        return value

    def text(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.obj.get(key, "")
        if not isinstance(value, str) or (choices is not None and value not in choices):
            allowed = f"one of {', '.join(repr(c) for c in choices)}" if choices else "a string"
            raise self.fail(key, f"must be {allowed}, got {value!r}")
        return value

    def items(self, key: str) -> list[Any]:
        value = self.obj.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type(value).__name__}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        if not all(isinstance(s, str) for s in items):
            raise self.fail(key, "must be a list of strings")
        return tuple(items)

    def sub(self, key: str, default: object = None) -> JsonObject:
        """The object under ``key`` (``default`` when absent, e.g. ``{}``)."""
        return JsonObject(self.obj.get(key, default), join(self.path, key), self.file)

    def objects(self, key: str) -> list[JsonObject]:
        """The objects of the list under ``key``, each with its index in the path."""
        return [
            JsonObject(item, f"{join(self.path, key)}[{i}]", self.file)
            for i, item in enumerate(self.items(key))
        ]
