"""JSON documents in Redis (profiles, inventory items): put, merge-patch, get, delete.

A document is one JSON object stored as one string. `null` never gets stored: in a PUT
it is dropped, and in a PATCH it deletes the member (RFC 7396), so a template never
sees `None` where it expects a value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from content_sources.redis_cluster_pipe import cluster_client

JsonObject = dict[str, Any]


def without_nulls(value: Any) -> Any:
    """Drop `null` members at every depth (a stored null would print as a blank)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return without_nulls(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def decode_object(raw: object) -> JsonObject | None:
    """A stored document, or None when absent or not a JSON object (never raises)."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class DocumentStore:
    """JSON objects under keys made by `key_of(id)`; `on_change` is called after each
    write (a process that keeps copies of the documents forgets them)."""

    def __init__(
        self,
        redis: Redis,
        key_of: Callable[[str], str],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = redis
        self._key_of = key_of
        self._on_change = on_change

    async def get(self, doc_id: str) -> JsonObject | None:
        return decode_object(await self._redis.get(self._key_of(doc_id)))

    async def put(self, doc_id: str, document: JsonObject) -> JsonObject:
        stored: JsonObject = without_nulls(document)
        await self._redis.set(self._key_of(doc_id), orjson.dumps(stored))
        self._on_change()
        return stored

    async def put_many(self, documents: dict[str, JsonObject]) -> None:
        """Store all or nothing: one MULTI/EXEC transaction. On a Redis Cluster, where
        the documents live in different slots, each is stored whole but not all at once
        (every document is checked before any is written)."""
        atomic = cluster_client(self._redis) is None
        async with self._redis.pipeline(transaction=atomic) as pipe:
            for doc_id, document in documents.items():
                pipe.set(self._key_of(doc_id), orjson.dumps(without_nulls(document)))
            await pipe.execute()
        self._on_change()

    async def patch(
        self,
        doc_id: str,
        patch: JsonObject,
        *,
        create: bool = True,
        check: Callable[[JsonObject], object] | None = None,
    ) -> JsonObject | None:
        """Apply a merge patch atomically (optimistic WATCH, retried on a concurrent write).

        `check` sees the patched document before it is written and may raise to refuse it.
        Returns the patched document, or None when it does not exist and `create` is false.
        """
        key = self._key_of(doc_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    current = decode_object(await pipe.get(key))
                    if current is None and not create:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return None
                    patched: JsonObject = merge_patch(current or {}, patch)
                    if check is not None:
                        check(patched)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, orjson.dumps(patched))
                    await pipe.execute()
                    self._on_change()
                    return patched
                except WatchError:
                    continue

    async def delete(self, doc_id: str) -> bool:
        deleted = bool(await self._redis.delete(self._key_of(doc_id)))
        if deleted:
            self._on_change()
        return deleted
