"""Fixtures for the tests on a real Redis Cluster (`make test-cluster`).

Every test in this directory is marked `cluster`: `make test` leaves them out, and
`make test-cluster` runs only them. One cluster serves the session; each test starts
with every master emptied. Tests that kill a node start a cluster of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster.local_cluster import LocalCluster

CLUSTER_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, emptied for this test."""
    shared_cluster.flush()
    return shared_cluster


@pytest.fixture
def redis_url(cluster: LocalCluster) -> str:
    """The shared fixtures (`make_client`, `client`) start the app on the cluster."""
    return cluster.url


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster for this test alone (one whose nodes it may kill)."""
    cluster = LocalCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
