"""A master killed mid-run: opens keep answering, and no acknowledged write is lost.

While readers open images and a marketer writes profiles, the master that holds the
first reader's data is killed outright (SIGKILL: nothing more reaches its disk or its
replica). Every image request still gets a whole image (its block's default while the
slot fails over, and personal throughout for the readers on the other masters); every
write the API acknowledged before, during or after the kill is there once the replica
has taken over; and the opens are personal again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster.local_cluster import LocalCluster
from sample_blocks import greeting
from support import AUTH, decode, put_block, signed

from content_sources.redis_keys import profile_key

READERS = [f"reader-{n}" for n in range(24)]
# How long after the kill the test waits for the opens to be personal again.
RECOVERY_S = 30.0


async def test_a_master_killed_mid_run_loses_no_acknowledged_write(
    make_client: Any, own_cluster: LocalCluster
) -> None:
    client = await make_client(store_url=own_cluster.url)
    await put_block(client, "hello", greeting("Hello {{ profile.first_name }}"))
    for reader in READERS:
        response = await client.put(
            f"/api/v1/profiles/{reader}", json={"first_name": reader}, headers=AUTH
        )
        assert response.status == 200
    victim = own_cluster.master_of(profile_key(READERS[0]))
    on_victim = [r for r in READERS if own_cluster.master_of(profile_key(r)) is victim]

    # (reader, status, content type, variant, image size) of every open.
    answers: list[tuple[str, int, str, str, tuple[int, int] | None]] = []
    acknowledged: dict[str, str] = {}
    refused: list[int] = []
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            for reader in READERS:
                response = await client.get(signed(f"/i/hello.png?r={reader}"))
                body = await response.read()
                size = decode(body).size if response.status == 200 else None
                variant = response.headers.get("X-Atopen-Variant", "")
                answers.append((reader, response.status, response.content_type, variant, size))

    async def write() -> None:
        n = 0
        while not stop.is_set():
            writer, name = f"writer-{n}", f"name-{n}"
            response = await client.put(
                f"/api/v1/profiles/{writer}", json={"first_name": name}, headers=AUTH
            )
            if response.status == 200:
                acknowledged[writer] = name
            else:
                refused.append(response.status)
            n += 1

    tasks = [asyncio.create_task(read()), asyncio.create_task(write())]
    await asyncio.sleep(0.5)
    own_cluster.kill(victim)
    killed_at = time.monotonic()

    # Until the victim's readers are personal again: the replica has taken over.
    recovered_after = None
    while time.monotonic() - killed_at < RECOVERY_S:
        await asyncio.sleep(0.2)
        response = await client.get(signed(f"/i/hello.png?r={on_victim[0]}"))
        if response.headers.get("X-Atopen-Variant") == "named":
            recovered_after = time.monotonic() - killed_at
            break
    await asyncio.sleep(0.5)  # some more opens and writes on the new master
    stop.set()
    await asyncio.gather(*tasks)
    assert recovered_after is not None, f"opens not personal {RECOVERY_S} s after the kill"

    # Every image request got a whole image: personal, or the default during failover.
    assert answers
    assert {(status, kind, size) for _, status, kind, _, size in answers} == {
        (200, "image/png", (400, 100))
    }
    assert {variant for *_, variant, _ in answers} <= {"named", "default"}
    # The readers on the other masters were personal throughout.
    assert {v for r, *_, v, _ in answers if r not in on_victim} == {"named"}
    # The API refused writes only as "unavailable, retry": nothing else went wrong.
    assert set(refused) <= {503}
    assert len(acknowledged) > 0

    # Every acknowledged write is there, on the promoted replica too.
    for writer, name in [*acknowledged.items(), *((r, r) for r in READERS)]:
        response = await client.get(f"/api/v1/profiles/{writer}", headers=AUTH)
        assert response.status == 200, writer
        assert (await response.json())["profile"]["first_name"] == name
    for reader in on_victim:
        response = await client.get(signed(f"/i/hello.png?r={reader}"))
        assert response.headers["X-Atopen-Variant"] == "named"
    # A load balancer keeps sending opens to this server.
    assert (await client.get("/readyz")).status == 200
    print(
        f"failover: personal again after {recovered_after:.1f} s; {len(answers)} opens "
        f"({sum(v == 'default' for *_, v, _ in answers)} defaults), "
        f"{len(acknowledged)} writes acknowledged, {len(refused)} refused with 503"
    )
