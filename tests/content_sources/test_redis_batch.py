"""The lean store path of the hot routes: raw pipelines and auto-pipelining, on a real Redis."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import hiredis
import pytest
import trustme
from redis import Redis as BlockingRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import ResponseError
from support import BUSY_STORE, free_port

from content_sources.redis_batch import StoreBatcher, execute_raw
from content_sources.redis_pipe import pack, pack_command
from content_sources.source import RedisCommand


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2.0)
    yield client
    await client.aclose()


@pytest.fixture
async def batcher(redis: Redis) -> AsyncIterator[StoreBatcher]:
    batcher = StoreBatcher(redis)
    yield batcher
    batcher.close()


async def test_replies_come_back_raw_and_in_order(redis: Redis) -> None:
    await redis.set("p:ann", b'{"first_name":"Ann"}')
    await redis.hset("mem:ann", "hero", "x")
    await redis.zadd("ev:ann", {"a": 1, "b": 2})
    replies = await execute_raw(
        redis,
        [
            ("GET", "p:ann"),
            ("MGET", "p:ann", "p:nobody"),
            ("HGET", "mem:ann", "hero"),
            ("ZREVRANGE", "ev:ann", 0, -1),
            ("GET", "p:nobody"),
        ],
    )
    assert replies == [
        b'{"first_name":"Ann"}',
        [b'{"first_name":"Ann"}', None],
        b"x",
        [b"b", b"a"],
        None,
    ]


async def test_an_error_reply_takes_its_slot_and_the_rest_still_answer(redis: Redis) -> None:
    await redis.set("p:ann", b"1")
    replies = await execute_raw(redis, [("HGET", "p:ann", "f"), ("INCRBY", "n", 2), ("GET", "n")])
    assert isinstance(replies[0], ResponseError)
    assert "WRONGTYPE" in str(replies[0])
    assert replies[1:] == [2, b"2"]


async def test_arguments_of_every_kind_arrive_intact(redis: Redis) -> None:
    await execute_raw(redis, [("HSET", "h", "s", "Zoë", "b", b"\x00\xff", "i", 7, "f", 2.5)])
    assert await redis.hgetall("h") == {
        b"s": "Zoë".encode(),
        b"b": b"\x00\xff",
        b"i": b"7",
        b"f": b"2.5",
    }


def test_pack_refuses_what_the_store_cannot_take() -> None:
    with pytest.raises(TypeError, match="bool"):
        pack([("SET", "k", True)])


async def test_a_killed_connection_is_replaced_without_an_error(
    redis: Redis, redis_url: str
) -> None:
    """A store restart leaves dead connections in the pool: the next call still answers."""
    await execute_raw(redis, [("SET", "k", "v")])
    [pooled_id] = await execute_raw(redis, [("CLIENT", "ID")])
    async with Redis.from_url(redis_url) as killer:
        assert await killer.client_kill_filter(_id=str(pooled_id)) == 1
    assert await execute_raw(redis, [("GET", "k")]) == [b"v"]


async def test_concurrent_opens_each_get_their_own_replies(
    redis: Redis, batcher: StoreBatcher
) -> None:
    for i in range(50):
        await redis.set(f"p:{i}", str(i))
    replies = await asyncio.gather(
        *(batcher.execute([("GET", f"p:{i}"), ("GET", "p:none")]) for i in range(50))
    )
    assert replies == [[str(i).encode(), None] for i in range(50)]


async def test_a_batch_with_an_error_fails_only_the_open_that_sent_it(
    redis: Redis, batcher: StoreBatcher
) -> None:
    await redis.set("p:ann", b"1")
    good, bad = await asyncio.gather(
        batcher.execute([("GET", "p:ann")]),
        batcher.execute([("HGET", "p:ann", "f")]),
        return_exceptions=True,
    )
    assert good == [b"1"]
    assert isinstance(bad, ResponseError)


async def test_a_deadline_ends_the_wait_and_the_store_serves_the_next_batch(
    redis: Redis, redis_url: str, batcher: StoreBatcher
) -> None:
    await redis.set("k", "v")
    async with Redis.from_url(redis_url) as other:
        stall = asyncio.ensure_future(other.eval(BUSY_STORE, 0, 500))
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await batcher.execute([("GET", "k")], deadline=time.monotonic() + 0.05)
        await stall
    assert await batcher.execute([("GET", "k")], deadline=time.monotonic() + 5) == [b"v"]


async def test_a_key_read_by_many_opens_at_once_is_read_once(
    redis: Redis, batcher: StoreBatcher
) -> None:
    await redis.rpush("events", "a", "b")
    await redis.config_resetstat()
    replies = await asyncio.gather(
        *(batcher.execute([("LRANGE", "events", 0, -1), ("GET", f"p:{i % 2}")]) for i in range(20))
    )
    stats = await redis.info("commandstats")
    assert stats["cmdstat_lrange"]["calls"] == 1
    assert stats["cmdstat_get"]["calls"] == 2
    assert all(reply == [[b"a", b"b"], None] for reply in replies)
    events = replies[0][0]
    assert isinstance(events, list)
    events.append(b"changed")  # each open has its own copy
    assert replies[1][0] == [b"a", b"b"]


@asynccontextmanager
async def keeping(redis: Redis, max_age_s: float) -> AsyncIterator[StoreBatcher]:
    """A batcher that keeps shared reads for `max_age_s`."""
    batcher = StoreBatcher(redis, shared_max_age_s=max_age_s)
    try:
        yield batcher
    finally:
        batcher.close()


async def test_shared_reads_are_answered_again_until_they_are_too_old(redis: Redis) -> None:
    read = [("MGET", "inv:1", "inv:2")]
    await redis.mset({"inv:1": "5", "inv:2": "7"})
    await redis.config_resetstat()
    async with keeping(redis, 0.2) as batcher:
        first = await batcher.execute(read, shared=True)
        await redis.set("inv:1", "4")
        again = await batcher.execute(read, shared=True)
        unshared = await batcher.execute(read)
        stats = await redis.info("commandstats")
        assert first == again == [[b"5", b"7"]]
        assert unshared == [[b"4", b"7"]]  # a read not marked shared always goes out
        assert stats["cmdstat_mget"]["calls"] == 2
        kept = again[0]
        assert isinstance(kept, list)
        kept.append(b"changed")  # each open still has its own copy
        assert await batcher.execute(read, shared=True) == [[b"5", b"7"]]
        await asyncio.sleep(0.25)
        assert await batcher.execute(read, shared=True) == [[b"4", b"7"]]


async def test_forgotten_shared_reads_are_read_afresh(redis: Redis) -> None:
    await redis.set("inv:1", "5")
    async with keeping(redis, 3600) as batcher:
        assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"5"]
        await redis.set("inv:1", "0")
        assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"5"]
        batcher.forget_shared()
        assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"0"]


async def test_kept_replies_stay_fresh_until_too_old_or_forgotten(redis: Redis) -> None:
    read = (("GET", "inv:1"),)
    await redis.set("inv:1", "5")
    async with keeping(redis, 0.2) as batcher:
        assert batcher.kept_replies(read) is None  # nothing read yet
        await batcher.execute(read, shared=True)
        kept = batcher.kept_replies(read)
        assert kept is not None
        assert kept.replies == [b"5"]
        assert batcher.still_fresh(kept)
        await asyncio.sleep(0.25)
        assert not batcher.still_fresh(kept)
        assert batcher.kept_replies(read) is None
        await batcher.execute(read, shared=True)
        fresh = batcher.kept_replies(read)
        assert fresh is not None
        assert fresh is not kept
        assert batcher.still_fresh(fresh)
        batcher.forget_shared()
        assert not batcher.still_fresh(fresh)


async def test_a_read_on_its_way_when_the_data_changed_is_not_kept(redis: Redis) -> None:
    await redis.set("inv:1", "5")
    await redis.config_resetstat()
    async with keeping(redis, 3600) as batcher:
        reading = asyncio.ensure_future(batcher.execute([("GET", "inv:1")], shared=True))
        await asyncio.sleep(0)  # the read is on its way
        await redis.set("inv:1", "0")
        batcher.forget_shared()
        await reading  # whichever value it saw, it may predate the change
        assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"0"]
        stats = await redis.info("commandstats")
        assert stats["cmdstat_get"]["calls"] == 2  # read again, not kept


async def test_with_no_max_age_every_shared_read_goes_out(
    redis: Redis, batcher: StoreBatcher
) -> None:
    await redis.set("inv:1", "5")
    assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"5"]
    await redis.set("inv:1", "0")
    assert await batcher.execute([("GET", "inv:1")], shared=True) == [b"0"]


async def test_a_lost_connection_is_replaced_and_the_reads_sent_again(
    redis: Redis, redis_url: str, batcher: StoreBatcher
) -> None:
    await redis.set("k", "v")
    [first] = await batcher.execute([("CLIENT", "ID")])
    # Killed with a blocking client, so that this event loop cannot see the connection
    # close before the next read is written to it: that read is lost with it.
    with BlockingRedis.from_url(redis_url) as killer:
        assert killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert await batcher.execute([("GET", "k")]) == [b"v"]
    [second] = await batcher.execute([("CLIENT", "ID")])
    assert second != first


@asynccontextmanager
async def batcher_on(url: str, socket_timeout: float | None = None) -> AsyncIterator[StoreBatcher]:
    """A batcher of its own on a client for `url`, closed afterwards."""
    async with Redis.from_url(url, socket_timeout=socket_timeout) as client:
        batcher = StoreBatcher(client)
        try:
            yield batcher
        finally:
            batcher.close()


async def test_a_connection_that_answers_nothing_is_closed_and_replaced(
    redis_url: str,
) -> None:
    async with batcher_on(redis_url, socket_timeout=0.2) as batcher:
        [first] = await batcher.execute([("CLIENT", "ID")])
        async with Redis.from_url(redis_url) as other:
            stall = asyncio.ensure_future(other.eval(BUSY_STORE, 0, 600))
            await asyncio.sleep(0.1)
            with pytest.raises(TimeoutError):
                await batcher.execute([("GET", "k")])  # no deadline: the socket timeout
            await stall
        [second] = await batcher.execute([("CLIENT", "ID")])
        assert second != first


def with_credentials(url: str, username: str, password: str, db: int) -> str:
    """`url` (redis:// or unix://) logged in as `username` on database `db`."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("?")[0]
    if scheme == "unix":
        return f"unix://{username}:{password}@{rest}?db={db}"
    return f"{scheme}://{username}:{password}@{rest.split('/')[0]}/{db}"


@pytest.fixture
async def store_user(redis: Redis) -> AsyncIterator[tuple[str, str]]:
    await redis.execute_command(
        "ACL", "SETUSER", "pipe-reader", "on", ">pipe-secret", "~*", "+@all"
    )
    yield "pipe-reader", "pipe-secret"
    await redis.execute_command("ACL", "DELUSER", "pipe-reader")


async def test_credentials_and_database_come_from_the_url(
    redis_url: str, store_user: tuple[str, str]
) -> None:
    username, password = store_user
    db3_url = with_credentials(redis_url, username, password, 3)
    async with Redis.from_url(db3_url) as db3:
        await db3.set("where", "db3")
        try:
            async with batcher_on(db3_url) as batcher:
                assert await batcher.execute([("GET", "where")]) == [b"db3"]
        finally:
            await db3.flushdb()
    async with batcher_on(with_credentials(redis_url, username, "wrong", 3)) as refused:
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await refused.execute([("GET", "where")])


async def test_an_unreachable_store_is_a_connection_error() -> None:
    async with batcher_on(f"redis://127.0.0.1:{free_port()}", socket_timeout=1) as nowhere:
        with pytest.raises(StoreConnectionError, match="cannot reach the store"):
            await nowhere.execute([("GET", "k")])


async def test_reads_waiting_when_the_batcher_closes_get_an_error(
    redis_url: str, batcher: StoreBatcher
) -> None:
    async with Redis.from_url(redis_url) as other:
        stall = asyncio.ensure_future(other.eval(BUSY_STORE, 0, 300))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(batcher.execute([("GET", "k")]))
        await asyncio.sleep(0.05)
        batcher.close()
        with pytest.raises(StoreConnectionError):
            await waiting
        with pytest.raises(StoreConnectionError, match="closed"):
            await batcher.execute([("GET", "k")])
        await stall


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def test_a_rediss_url_reaches_the_store_over_tls(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    store = redis.connection_pool.connection_kwargs

    async def tls_front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Speaks only TLS, and forwards what it decrypts to the test store."""
        if "path" in store:
            to_store = await asyncio.open_unix_connection(store["path"])
        else:
            to_store = await asyncio.open_connection(store["host"], store["port"])
        await asyncio.gather(relay(reader, to_store[1]), relay(to_store[0], writer))

    front = await asyncio.start_server(tls_front, "127.0.0.1", 0, ssl=server_context)
    port = front.sockets[0].getsockname()[1]
    try:
        await redis.set("k", "over TLS")
        async with batcher_on(f"rediss://localhost:{port}/0?ssl_ca_certs={ca_file}") as batcher:
            assert await batcher.execute([("GET", "k")]) == [b"over TLS"]
        # The front refuses what is not TLS: the reply above did come through it.
        async with batcher_on(f"redis://localhost:{port}/0", socket_timeout=1) as plain:
            with pytest.raises((StoreConnectionError, TimeoutError)):
                await plain.execute([("GET", "k")])
    finally:
        front.close()
        await front.wait_closed()


AWKWARD_COMMANDS: list[RedisCommand] = [
    ("SET", "", b""),
    ("SET", "Zoë ☃ 𝄞", "日本語"),
    ("HSET", "h", "big", 2**100, "small", -(2**70), "zero", 0, "one", -1),
    ("SET", b"a\r\nb", b"\r\n*1\r\n$3\r\n"),
    ("SET", "line\r\nbreak", b"\x00\xff" * 1000),
    ("EVAL", "return 1", 3, "k1", "k2", "k3", 86_400, b"{}", 2),
    ("PING",),
]


def test_pack_writes_the_bytes_hiredis_does_and_python_would() -> None:
    for command in AWKWARD_COMMANDS:
        by_hiredis = hiredis.pack_command(command)  # type: ignore[arg-type]
        assert pack([command]) == by_hiredis, command
        assert pack_command(command) == by_hiredis, command
    assert pack(AWKWARD_COMMANDS) == b"".join(pack([c]) for c in AWKWARD_COMMANDS)


def test_pack_of_mixed_arguments_writes_floats_as_their_repr() -> None:
    assert pack([("SET", "k", 2.5, 7)]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n2.5\r\n$1\r\n7\r\n"
