"""The bytes of recently served models, so concurrent fetches read the disk once.

A model is read and verified (its SHA-256 against its name) in a worker thread once,
however many fetches ask for it at the same time (they await the same task); cached models
are served without waiting. A blob that no longer matches its hash is never served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict

from holo.errors import ChecksumError
from holo.store.store import Store

__all__ = ["BlobCache"]

logger = logging.getLogger(__name__)


def _read_verified(store: Store, sha256: str) -> bytes:
    path = store.blob_path(sha256)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:  # never serve a damaged blob
        logger.error("blob %s does not match its hash: damaged on disk", path)
        raise ChecksumError(
            f"the stored model {sha256[:12]}... is damaged on the server's disk; convert the "
            "study again (an administrator should check the disk)"
        )
    return data


class BlobCache:
    """Verified blob bytes, least recently used first out beyond ``capacity_bytes``
    (512 MiB: a few dozen full-detail models)."""

    def __init__(self, store: Store, capacity_bytes: int = 512 << 20) -> None:
        self._store = store
        self._capacity = capacity_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0  # bytes in _items
        self._loading: dict[str, asyncio.Task[bytes]] = {}

    async def get(self, sha256: str) -> bytes:
        cached = self._items.get(sha256)
        if cached is not None:
            self._items.move_to_end(sha256)
            return cached
        task = self._loading.get(sha256)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(_read_verified, self._store, sha256))
            self._loading[sha256] = task
            task.add_done_callback(lambda _t: self._loading.pop(sha256, None))
        data = await asyncio.shield(task)
        if sha256 not in self._items:
            self._items[sha256] = data
            self._size += len(data)
            while self._size > self._capacity and len(self._items) > 1:
                self._size -= len(self._items.popitem(last=False)[1])
        return data
