"""A seeded population of recipients for load tests: profiles, events, signed URLs.

The same seed gives the same recipients, so runs compare. Seeding goes through the
management API, as a real integration would; URLs are signed with the project's own
signer.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from server.signing import Signer

FIRST_NAMES = (
    "Ann",
    "Bob",
    "Cleo",
    "Dan",
    "Ewa",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kasia",
    "Luis",
    "Maya",
    "Noor",
    "Olu",
    "Priya",
    "Quinn",
    "Rafał",
    "Sofía",
    "Tomás",
)
CITIES = (
    ("Warsaw", "PL", "Europe/Warsaw"),
    ("New York", "US", "America/New_York"),
    ("Tokyo", "JP", "Asia/Tokyo"),
    ("London", "GB", "Europe/London"),
    ("Lisbon", "PT", "Europe/Lisbon"),
    ("São Paulo", "BR", "America/Sao_Paulo"),
)
EVENT_TYPES = (("cart_abandoned", 0.3), ("purchase", 0.2), ("view", 0.6))


@dataclass(frozen=True, slots=True)
class Population:
    size: int
    seed: int = 1

    def recipient(self, index: int) -> str:
        return f"load-{self.seed}-{index:07d}"

    def profile(self, index: int) -> dict[str, object]:
        rng = random.Random(f"{self.seed}:{index}")
        city, country, tz = rng.choice(CITIES)
        profile: dict[str, object] = {"city": city, "country": country, "tz": tz}
        if rng.random() < 0.9:  # some recipients have no first name: the default must hold
            profile["first_name"] = rng.choice(FIRST_NAMES)
        return profile

    def events(self, index: int, now: datetime) -> list[dict[str, object]]:
        rng = random.Random(f"{self.seed}:{index}:events")
        found: list[dict[str, object]] = []
        for kind, chance in EVENT_TYPES:
            if rng.random() < chance:
                found.append(
                    {
                        "recipient": self.recipient(index),
                        "type": kind,
                        "ts": (now - timedelta(hours=rng.uniform(0.1, 96))).isoformat(),
                        "props": {"item": "Trail boots", "amount": round(rng.uniform(5, 200), 2)},
                        "id": f"{self.recipient(index)}-{kind}",
                    }
                )
        return found

    def image_url(self, signer: Signer, block: str, index: int, ext: str = "png") -> str:
        return signer.sign_url(f"/i/{block}.{ext}?r={self.recipient(index)}")

    def click_url(self, signer: Signer, block: str, index: int) -> str:
        return signer.sign_url(f"/c/{block}?r={self.recipient(index)}")


async def seed(base_url: str, token: str, population: Population, concurrency: int = 32) -> None:
    """Store every recipient's profile and events through the API."""
    headers = {"Authorization": f"Bearer {token}"}
    now = datetime.now(UTC)
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base_url, headers=headers) as session:

        async def put_profile(index: int) -> None:
            async with limit:
                path = f"/api/v1/profiles/{population.recipient(index)}"
                async with session.put(path, json=population.profile(index)) as response:
                    response.raise_for_status()

        await asyncio.gather(*(put_profile(i) for i in range(population.size)))
        events = [e for i in range(population.size) for e in population.events(i, now)]
        for start in range(0, len(events), 1000):
            async with session.post("/api/v1/events", json=events[start : start + 1000]) as r:
                r.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed a load-test population through the API")
    parser.add_argument("--base-url", required=True, help="e.g. https://img.example.com")
    parser.add_argument("--token", required=True, help="an ATOPEN_API_TOKEN of that service")
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(seed(args.base_url, args.token, Population(args.recipients, args.seed)))


if __name__ == "__main__":
    main()
