"""Memory watches and waits ride out a broken connection (resuming after the
last revision, each change once), and a watch that cannot go on without a
gap ends with a reset instead of skipping."""

from __future__ import annotations

import threading
import time
from typing import List, Tuple

import pytest
from cluster import Cluster
from proxy import Proxy

from volley import Client, Unavailable, WatchOptions

FAST = WatchOptions(reconnect_budget=10.0, initial_backoff=0.01, max_backoff=0.05)


def test_memory_watch_resumes_after_the_connection_drops(
    cluster: Cluster, client: Client, namespace: str
) -> None:
    writer = client.memory(namespace=namespace)
    writer.put("seed", "x")  # revision 1: the watch starts after it
    proxy = Proxy(cluster.address)
    seen: List[Tuple[int, str]] = []
    try:
        with Client(proxy.address, cluster.admin_token, watch_options=FAST) as through:
            changes = through.memory(namespace=namespace).watch(after_revision=1)
            for turn in range(3):
                for number in range(turn * 3, turn * 3 + 3):
                    writer.put(f"k/{number}", "v")
                for _ in range(3):
                    change = next(changes)
                    seen.append((change.revision, change.key))
                proxy.cut()  # the stream breaks under the watch
            changes.close()
            assert proxy.connections >= 2
    finally:
        proxy.close()
    assert seen == [(number + 2, f"k/{number}") for number in range(9)]


def test_memory_wait_rides_out_a_broken_connection(
    cluster: Cluster, client: Client, namespace: str
) -> None:
    proxy = Proxy(cluster.address)
    result: List[bytes] = []
    try:
        with Client(proxy.address, cluster.admin_token, watch_options=FAST) as through:
            waiter = threading.Thread(
                target=lambda: result.append(
                    through.memory(namespace=namespace).wait("late", timeout=30).value
                )
            )
            waiter.start()
            deadline = time.monotonic() + 10
            while proxy.connections == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.cut()
            client.memory(namespace=namespace).put("late", "here")
            waiter.join(30)
    finally:
        proxy.close()
    assert result == [b"here"]


def test_a_watch_resuming_past_the_scopes_revision_ends_with_a_reset(
    client: Client, namespace: str
) -> None:
    memory = client.memory(namespace=namespace)
    memory.put("k", "v")
    changes = list(memory.watch(after_revision=1000))
    assert len(changes) == 1
    reset = changes[0]
    assert reset.reset and reset.reset_reason == "store_restarted"
    assert reset.revision == 1


def test_a_watch_with_no_coordinator_gives_up_unavailable(cluster: Cluster) -> None:
    proxy = Proxy(cluster.address)
    proxy.close()  # nothing listens there any more
    options = WatchOptions(reconnect_budget=0.5, initial_backoff=0.01, max_backoff=0.05)
    with Client(proxy.address, cluster.admin_token, watch_options=options) as nowhere:
        with pytest.raises(Unavailable):
            next(nowhere.memory(namespace="none").watch())
        with pytest.raises(Unavailable):
            nowhere.memory(namespace="none").wait("k", timeout=5)
