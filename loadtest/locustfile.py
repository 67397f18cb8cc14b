"""Locust scenarios for open spikes (run with `make loadtest`, or against a deployment).

A large send is mostly a delivery spike: Apple Mail Privacy Protection fetches every
image as the message lands, Gmail's proxy fetches at the first open (and sometimes
many times more), and human opens decay over hours. The shapes:
- `spike`: an MPP prefetch wave at delivery, then Gmail proxy fetches and human opens
  (with clicks) decaying;
- `refetch`: a re-fetch storm: proxies fetching the same few URLs over and over;
- `steady`: a constant mix.
Environment: ATOPEN_SECRET (signs URLs), ATOPEN_LOAD_SHAPE (spike|refetch|steady),
ATOPEN_LOAD_SECONDS (the shape's length), ATOPEN_LOAD_RECIPIENTS and ATOPEN_LOAD_SEED
(the seeded population, see population.py), ATOPEN_LOAD_BLOCKS (comma-separated block
ids one email embeds), ATOPEN_LOAD_PEAK_USERS.
"""

from __future__ import annotations

import itertools
import os
import random

from locust import FastHttpUser, LoadTestShape, User, between, constant, task

from loadtest.population import Population
from server.signing import Signer

SIGNER = Signer(os.environ.get("ATOPEN_SECRET", "load-secret").split(","))
POPULATION = Population(
    int(os.environ.get("ATOPEN_LOAD_RECIPIENTS", "10000")),
    int(os.environ.get("ATOPEN_LOAD_SEED", "1")),
)
BLOCKS = [b for b in os.environ.get("ATOPEN_LOAD_BLOCKS", "cart-reminder,greeting").split(",") if b]
SECONDS = float(os.environ.get("ATOPEN_LOAD_SECONDS", "60"))
PEAK_USERS = int(os.environ.get("ATOPEN_LOAD_PEAK_USERS", "200"))

MPP_AGENT = "Mozilla/5.0"
GMAIL_AGENT = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
BROWSER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
_next_recipient = itertools.count()


class EmailOpen(FastHttpUser):
    """One fetch of an email's images (and sometimes a click), as one kind of client."""

    abstract = True
    agent = BROWSER_AGENT
    click_share = 0.0

    def open_email(self, index: int) -> None:
        headers = {"User-Agent": self.agent}
        for block in BLOCKS:
            url = POPULATION.image_url(SIGNER, block, index)
            with self.client.get(
                url, headers=headers, name=f"/i/{block}", catch_response=True
            ) as r:
                if r.status_code != 200 or not r.content:
                    r.failure(f"status {r.status_code}")
        if self.click_share and random.random() < self.click_share:
            block = random.choice(BLOCKS)
            self.client.get(
                POPULATION.click_url(SIGNER, block, index),
                headers=headers,
                name=f"/c/{block}",
                allow_redirects=False,
            )

    def next_index(self) -> int:
        return next(_next_recipient) % POPULATION.size


class MppPrefetch(EmailOpen):
    """Apple Mail fetching every image at delivery."""

    agent = MPP_AGENT
    wait_time = constant(0.1)

    @task
    def prefetch(self) -> None:
        self.open_email(self.next_index())


class GmailProxy(EmailOpen):
    """Google's image proxy at a reader's first open."""

    agent = GMAIL_AGENT
    wait_time = between(0.2, 1.0)

    @task
    def fetch(self) -> None:
        self.open_email(self.next_index())


class HumanOpen(EmailOpen):
    """A reader in a browser or mail app, who sometimes clicks."""

    wait_time = between(0.5, 2.0)
    click_share = 0.05

    @task
    def open_and_maybe_click(self) -> None:
        self.open_email(random.randrange(POPULATION.size))


class RefetchStorm(EmailOpen):
    """Proxies fetching the same few recipients' images over and over."""

    agent = GMAIL_AGENT
    wait_time = constant(0.05)

    @task
    def refetch(self) -> None:
        self.open_email(random.randrange(min(20, POPULATION.size)))


# (share of the run, users as a share of the peak, the user classes)
_SHAPES: dict[str, list[tuple[float, float, list[type[User]]]]] = {
    "spike": [
        (0.10, 0.2, [MppPrefetch]),
        (0.35, 1.0, [MppPrefetch, GmailProxy, HumanOpen]),
        (0.55, 0.5, [GmailProxy, HumanOpen]),
        (0.80, 0.25, [HumanOpen, GmailProxy]),
        (1.00, 0.1, [HumanOpen]),
    ],
    "refetch": [(1.00, 1.0, [RefetchStorm, GmailProxy])],
    "steady": [(1.00, 0.5, [MppPrefetch, GmailProxy, HumanOpen])],
}


class OpenCurve(LoadTestShape):
    """The chosen shape, stretched over ATOPEN_LOAD_SECONDS; stops by itself."""

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        # locust leaves get_run_time unannotated.
        elapsed = self.get_run_time() / SECONDS  # type: ignore[no-untyped-call]
        for end, users, classes in _SHAPES[os.environ.get("ATOPEN_LOAD_SHAPE", "spike")]:
            if elapsed < end:
                count = max(1, int(users * PEAK_USERS))
                return count, max(1.0, count / 5), classes
        return None
