"""Memory against a real cluster: namespaces and batch scopes, waits,
compare-and-set, listing, watching."""

from __future__ import annotations

import threading
import time

import pytest

from volley import Client, Conflict, OpState, TimedOut, VolleyWarning


def test_put_get_delete_in_a_namespace(client: Client, namespace: str) -> None:
    memory = client.memory(namespace=namespace)
    assert memory.get("k") is None

    first = memory.put("k", "v1", content_type="text/plain")
    second = memory.put("k", b"v2")
    entry = memory.get("k")

    assert (first.version, second.version) == (1, 2)
    assert entry is not None
    assert (entry.key, entry.value, entry.text, entry.version) == ("k", b"v2", "v2", 2)
    assert memory.delete("k") is True
    assert memory.delete("k") is False
    assert memory.get("k") is None
    # Another namespace does not see it.
    memory.put("k", "here")
    assert client.memory(namespace=namespace + "-other").get("k") is None


def test_compare_and_set(client: Client, namespace: str) -> None:
    memory = client.memory(namespace=namespace)
    assert memory.put("lock", "me", if_version=0).version == 1
    with pytest.raises(Conflict):
        memory.put("lock", "you", if_version=0)
    assert memory.put("lock", "me again", if_version=1).version == 2
    with pytest.raises(Conflict):
        memory.delete("lock", if_version=1)
    assert memory.delete("lock", if_version=2)


def test_list_and_incr(client: Client, namespace: str) -> None:
    memory = client.memory(namespace=namespace)
    for index in range(5):
        memory.put(f"list/{index}", str(index))
    memory.put("other", "x")
    assert memory.incr("counter") == 1
    assert memory.incr("counter", 41) == 42

    keys = list(memory.list("list/", page_size=2))

    assert [key.key for key in keys] == [f"list/{index}" for index in range(5)]
    assert all(key.size == 1 and key.version == 1 for key in keys)
    assert {key.key for key in memory.list()} == {f"list/{i}" for i in range(5)} | {
        "other",
        "counter",
    }


def test_wait_unblocks_when_another_thread_puts(client: Client, namespace: str) -> None:
    memory = client.memory(namespace=namespace)
    writer = threading.Timer(0.3, lambda: memory.put("signal", "go"))
    started = time.monotonic()
    writer.start()
    try:
        entry = memory.wait("signal", timeout=20)
    finally:
        writer.join()
    assert entry.text == "go" and entry.version == 1
    assert time.monotonic() - started >= 0.25
    # A key that exists already returns at once.
    assert memory.wait("signal", timeout=1).text == "go"


def test_wait_times_out(client: Client, namespace: str) -> None:
    started = time.monotonic()
    with pytest.raises(TimedOut):
        client.memory(namespace=namespace).wait("never", timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 10


def test_a_client_put_unblocks_a_waiting_op(client: Client, namespace: str) -> None:
    batch_id = client.submit(
        {
            "namespace": namespace,
            "ops": [
                {
                    "id": "reader",
                    "kind": "echo",
                    "wait_for": ["input"],
                    "args": {"text": "got ${memory.input}"},
                }
            ],
        }
    )
    assert client.status(batch_id).op("reader").state is OpState.WAITING

    client.memory(namespace=namespace).put("input", "data")

    status = client.wait(batch_id, timeout=30)
    assert status.ok and status.outputs == {"reader": "got data"}


def test_batch_scope(client: Client) -> None:
    with pytest.warns(VolleyWarning, match="no op of this batch writes"):
        batch_id = client.submit(
            {
                # The test writes `gate` as a client: without this the
                # coordinator refuses a wait nothing in the batch can end.
                "allow_unwritten": True,
                "ops": [
                    {
                        "id": "gate",
                        "kind": "echo",
                        "wait_for": ["gate"],
                        "args": {"text": "${memory.gate}"},
                    },
                    {"id": "store", "kind": "echo", "args": {"text": "stored"}, "store_as": "out"},
                ],
            }
        )
    memory = client.memory(batch=batch_id)
    memory.put("gate", "open")
    status = client.wait(batch_id, timeout=30)
    assert status.outputs == {"gate": "open", "store": "stored"}
    stored = memory.get("out")
    assert stored is not None and stored.text == "stored"


def test_watch_memory(client: Client, namespace: str) -> None:
    memory = client.memory(namespace=namespace)
    memory.put("w/a", "1")
    memory.put("w/b", "2")
    memory.delete("w/a")

    changes = memory.watch("w/", after_revision=0, include_existing=True)
    first = next(changes)
    changes.close()

    assert first.key == "w/b" and first.value == b"2" and not first.deleted


def test_scope_must_be_one_of_namespace_or_batch(client: Client) -> None:
    with pytest.raises(ValueError):
        client.memory()
    with pytest.raises(ValueError):
        client.memory(namespace="a", batch="b")
