"""Request ids made here are unique, and all of one shape, however many requests come."""

from __future__ import annotations

import re

from server.web.request_handling import new_request_id


def test_ids_stay_unique_and_of_one_shape_past_each_run_of_their_counter() -> None:
    ids = [new_request_id() for _ in range(3 * 4096 + 5)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len({request_id[:16] for request_id in ids}) == 1  # one process, one prefix
    # In order: each id is the one after the last (a counter).
    counts = [int(request_id[16:], 16) for request_id in ids]
    assert counts == list(range(counts[0], counts[0] + len(ids)))
