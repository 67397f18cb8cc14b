"""Naming the store: a Redis Cluster URL, and how a batch is cut by slot for a cluster.

The cluster itself is exercised by `make test-cluster` (tests/cluster); these are the
parts that need no cluster running.
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError as StoreConnectionError

from content_sources.redis_cluster_pipe import assemble, split_by_slot
from content_sources.redis_keys import inventory_key, profile_key
from server.datastore.redis_client import cluster_seeds, is_cluster_url
from server.datastore.replication import marker_key
from server.settings import SettingsError, load_settings


def test_a_cluster_url_names_its_seeds_and_credentials() -> None:
    url = "rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002"
    assert is_cluster_url(url)
    assert cluster_seeds(url) == (
        "app",
        "s@cret",
        [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)],
    )
    assert not is_cluster_url("redis://10.0.0.1:6379/0")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://", "empty seed"),
        ("redis+cluster://a:1,,b:2", "empty seed"),
        ("redis+cluster://a:99999", "no valid port"),
        ("redis+cluster://:7000", "names no host"),
    ],
)
def test_a_cluster_url_without_usable_seeds_stops_the_start_naming_the_variable(
    url: str, why: str
) -> None:
    with pytest.raises(SettingsError, match=f"^ATOPEN_REDIS_URL: .*{why}"):
        load_settings({"ATOPEN_REDIS_URL": url})


def test_the_settings_take_a_cluster_url() -> None:
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert load_settings({"ATOPEN_REDIS_URL": url}).redis_url == url


def keys_in_distinct_slots(count: int) -> list[str]:
    keys: list[str] = []
    n = 0
    while len(keys) < count:
        key = inventory_key(f"sku-{n}")
        if key_slot(key.encode()) not in {key_slot(k.encode()) for k in keys}:
            keys.append(key)
        n += 1
    return keys


def test_items_read_together_are_asked_of_each_slot_and_answered_in_their_order() -> None:
    keys = keys_in_distinct_slots(3)
    profile = profile_key("u1")
    parts, sources = split_by_slot([("GET", profile), ("MGET", *keys)])
    assert parts[0] == ("GET", profile)
    assert sorted(parts[1:]) == sorted(("MGET", key) for key in keys)
    # Each part's reply is its key's value: the caller gets them in the order it asked.
    replies: list[object] = [b"profile", *([str(part[1]).encode()] for part in parts[1:])]
    assert assemble(replies, sources) == [b"profile", [k.encode() for k in keys]]


def test_keys_of_one_slot_stay_one_command() -> None:
    keys = [f"atopen:x:{{same}}:{n}" for n in range(3)]
    parts, sources = split_by_slot([("MGET", *keys)])
    assert parts == [("MGET", *keys)]
    assert assemble([[b"1", None, b"3"]], sources) == [[b"1", None, b"3"]]


def test_a_part_that_failed_fails_the_read_it_belongs_to_only() -> None:
    keys = keys_in_distinct_slots(2)
    _, sources = split_by_slot([("GET", profile_key("u1")), ("MGET", *keys)])
    down = StoreConnectionError("the master is down")
    replies: list[object] = [b"profile", [b"1"], down]
    assert assemble(replies, sources) == [b"profile", down]


@pytest.mark.parametrize("slot", [0, 1, 5460, 5461, 12182, 16383])
def test_the_replication_marker_of_a_slot_is_in_that_slot(slot: int) -> None:
    assert key_slot(marker_key(slot).encode()) == slot
