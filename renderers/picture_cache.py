"""A bounded in-memory cache of pictures, shared by the render threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from PIL import Image

Picture = TypeVar("Picture")


class PictureCache(Generic[Picture]):
    """Pictures by key, bounded in bytes (as `size_of` counts them), least recently used
    dropped first.

    Used for what is the same on many opens while the rest changes: resampled images
    (a logo, a product shot) and the composed static layers of a plan. Renders run in
    worker threads, hence the lock. Cached pictures are shared: never modify one.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Picture], int]) -> None:
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._bytes = 0
        self._pictures: OrderedDict[Hashable, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Picture | None:
        with self._lock:
            picture = self._pictures.get(key)
            if picture is not None:
                self._pictures.move_to_end(key)
            return picture

    def put(self, key: Hashable, picture: Picture) -> None:
        size = self._size_of(picture)
        if size > self._max_bytes:
            return
        with self._lock:
            if key in self._pictures:
                return
            self._pictures[key] = picture
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, dropped = self._pictures.popitem(last=False)
                self._bytes -= self._size_of(dropped)


def image_bytes(picture: Image.Image) -> int:
    """The memory a decoded picture's pixels take."""
    return picture.width * picture.height * len(picture.getbands())
