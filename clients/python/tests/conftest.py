"""Fixtures: one real cluster (redis-server, a coordinator, two workers) for
the whole session, and a client connected to it per test (with the
cluster's admin token once the binary has authentication)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Generator, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Cluster  # noqa: E402

from volley import Client  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("cluster"), workers=2).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.client(timeout=30) as connected:
        yield connected


@pytest.fixture
def namespace() -> str:
    """A memory namespace of this test's own."""
    return f"pytest-{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used the cluster shows the tail of its logs."""
    report = yield
    running = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(running, Cluster):
        report.sections.append(("cluster logs", running.logs_tail()))
    return report
