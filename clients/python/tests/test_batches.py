"""Batches against a real cluster: submit, watch, status, failures,
cancellation, validation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from cluster import Cluster

from volley import (
    BatchState,
    Client,
    Event,
    EventKind,
    InvalidBatch,
    NotFound,
    OpState,
    Problem,
    TimedOut,
    VolleyError,
    VolleyWarning,
)

CHAIN = {
    "name": "chain",
    "ops": [
        {"id": "a", "kind": "echo", "args": {"text": "hello"}},
        {
            "id": "b",
            "kind": "shell",
            "after": ["a"],
            "args": {"cmd": "printf '%s world' '${ops.a.output}'"},
        },
        {
            "id": "c",
            "kind": "memory.put",
            "after": ["b"],
            "args": {"key": "greeting", "value": "${ops.b.output}!"},
        },
    ],
}


def kinds(events: List[Event]) -> List[Tuple[EventKind, str]]:
    return [(event.kind, event.op_id) for event in events]


def test_a_chain_runs_in_order_and_watch_ends_with_the_batch(client: Client) -> None:
    batch_id = client.submit(CHAIN)

    events = list(client.watch(batch_id))

    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert kinds(events) == [
        (EventKind.BATCH_SUBMITTED, ""),
        (EventKind.OP_STARTED, "a"),
        (EventKind.OP_SUCCEEDED, "a"),
        (EventKind.OP_STARTED, "b"),
        (EventKind.OP_SUCCEEDED, "b"),
        (EventKind.OP_STARTED, "c"),
        (EventKind.OP_SUCCEEDED, "c"),
        (EventKind.BATCH_FINISHED, ""),
    ]
    assert events[-1].batch_state is BatchState.SUCCEEDED
    assert all(event.batch_state is None for event in events[:-1])
    assert {event.worker for event in events if event.kind is EventKind.OP_SUCCEEDED} <= {
        "pytest-worker-1",
        "pytest-worker-2",
    }


def test_status_has_every_ops_result(client: Client) -> None:
    batch_id = client.submit(CHAIN)

    status = client.wait(batch_id, timeout=30)

    assert status.ok and status.state == "succeeded"
    assert (status.batch_id, status.name, status.total, status.succeeded) == (
        batch_id,
        "chain",
        3,
        3,
    )
    assert status.outputs == {"a": "hello", "b": "hello world", "c": "hello world!"}
    shell = status.op("b")
    assert (shell.kind, shell.state, shell.attempts, shell.after) == (
        "shell",
        OpState.SUCCEEDED,
        1,
        ["a"],
    )
    assert shell.details["exit_code"] == 0
    assert shell.worker in ("pytest-worker-1", "pytest-worker-2")
    assert status.critical_path == ["a", "b", "c"]
    assert status.created_at_ms > 0 and status.wall_ms >= 0
    # memory.put wrote into the batch's own memory.
    entry = client.memory(batch=batch_id).get("greeting")
    assert entry is not None and entry.text == "hello world!" and entry.version == 1
    # Counts only.
    summary = client.status(batch_id, ops=False)
    assert summary.ops == [] and summary.succeeded == 3
    assert batch_id in [batch.batch_id for batch in client.list_batches(limit=1000)]


def test_a_failing_op_fails_the_batch_and_skips_its_dependents(client: Client) -> None:
    batch_id = client.submit(
        {
            "name": "failing",
            "ops": [
                {"id": "ok", "kind": "noop"},
                {"id": "bad", "kind": "shell", "args": {"cmd": "echo broken >&2; exit 3"}},
                {"id": "after-bad", "kind": "echo", "args": {"text": "never"}, "after": ["bad"]},
            ],
        }
    )

    events = list(client.watch(batch_id))
    status = client.status(batch_id)

    assert (EventKind.OP_FAILED, "bad") in kinds(events)
    assert (EventKind.OP_SKIPPED, "after-bad") in kinds(events)
    assert events[-1].kind is EventKind.BATCH_FINISHED
    assert events[-1].batch_state is BatchState.FAILED
    assert status.state is BatchState.FAILED and not status.ok
    assert (status.succeeded, status.failed, status.skipped) == (1, 1, 1)
    bad = status.op("bad")
    assert bad.state is OpState.FAILED
    assert "3" in bad.error and "broken" in bad.error
    assert bad.details["exit_code"] == 3
    assert status.op("after-bad").state is OpState.SKIPPED
    assert "bad" in status.op("after-bad").error


def test_cancel_stops_a_long_running_batch(client: Client) -> None:
    batch_id = client.submit(
        {
            "name": "long",
            "ops": [
                {"id": "slow", "kind": "sleep", "args": {"ms": 600_000}},
                {"id": "later", "kind": "noop", "after": ["slow"]},
            ],
        }
    )
    with client.watch(batch_id, timeout=30) as events:
        for event in events:
            if event.kind is EventKind.OP_STARTED:
                break

    result = client.cancel(batch_id)
    status = client.wait(batch_id, timeout=30)

    assert result.cancelled >= 1
    assert status.state is BatchState.CANCELLED
    assert status.op("slow").state is OpState.CANCELLED
    assert status.op("later").state in (OpState.CANCELLED, OpState.SKIPPED)
    tail = list(client.watch(batch_id, after_seq=2, timeout=30))
    assert tail[-1].batch_state is BatchState.CANCELLED


def test_wait_times_out(client: Client) -> None:
    batch_id = client.submit({"ops": [{"id": "slow", "kind": "sleep", "args": {"ms": 600_000}}]})
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            client.wait(batch_id, timeout=0.5)
        assert time.monotonic() - started < 10
    finally:
        client.cancel(batch_id)


def test_the_server_rejects_an_invalid_batch_naming_op_and_field(client: Client) -> None:
    with pytest.raises(InvalidBatch) as raised:
        client.submit(
            {
                "ops": [
                    {"id": "x", "kind": "echo", "args": {"txt": "typo"}},
                    {"id": "y", "kind": "noop", "after": ["z"]},
                ],
            }
        )

    error = raised.value
    assert error.code is not None and error.code.name == "INVALID_ARGUMENT"
    assert "op `x`" in error.message and "args.txt" in error.message
    assert "op `y`" in error.message and "`z`" in error.message
    by_op = {problem.op_id: problem for problem in error.problems}
    assert by_op["x"].field == "args.txt" and "txt" in by_op["x"].message
    assert by_op["y"].field == "after" and "z" in by_op["y"].message


def test_the_server_rejects_a_cycle(client: Client) -> None:
    with pytest.raises(InvalidBatch) as raised:
        client.submit(
            {
                "ops": [
                    {"id": "p", "kind": "noop", "after": ["q"]},
                    {"id": "q", "kind": "noop", "after": ["p"]},
                ]
            }
        )
    assert "p" in str(raised.value) and "q" in str(raised.value)
    assert raised.value.problems


def test_unknown_fields_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(InvalidBatch) as raised:
        client.submit({"ops": [{"id": "a", "kind": "noop", "afer": []}]})
    assert raised.value.code is None  # refused here, not by the server
    assert raised.value.problems == [Problem("a", "afer", raised.value.problems[0].message)]
    assert "did you mean `after`" in str(raised.value)


def test_submit_file(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "batch.yaml"
    path.write_text(
        "name: from-file\n"
        "on_failure: fail_fast\n"
        "ops:\n"
        "  - id: one\n"
        "    kind: echo\n"
        "    args: {text: one}\n"
        "    timeout: 10s\n"
        "    priority: high\n"
        "  - id: two\n"
        "    kind: echo\n"
        "    args: {text: '${ops.one.output} two'}\n"
    )
    status = client.wait(client.submit_file(path), timeout=30)
    assert status.name == "from-file"
    assert status.outputs == {"one": "one", "two": "one two"}

    json_path = tmp_path / "batch.json"
    json_path.write_text(json.dumps({"ops": [{"id": "j", "kind": "echo", "args": {"text": "j"}}]}))
    assert client.wait(client.submit_file(json_path), timeout=30).outputs == {"j": "j"}


def test_server_warnings_come_back_as_python_warnings(client: Client) -> None:
    with pytest.warns(VolleyWarning, match="never"):
        batch_id = client.submit(
            {
                # A key nobody writes is an error unless allowed; then a warning.
                "allow_unwritten": True,
                "ops": [
                    {"id": "waits", "kind": "noop", "wait_for": ["never"], "wait_timeout": "200ms"},
                ],
            }
        )
    status = client.wait(batch_id, timeout=30)
    assert status.op("waits").state is OpState.FAILED
    assert "never" in status.op("waits").error


def test_unknown_batches_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.status("no-such-batch")
    with pytest.raises(NotFound):
        list(client.watch("no-such-batch"))
    with pytest.raises(NotFound):
        client.cancel("no-such-batch")


def test_watch_resumes_after_a_given_seq(client: Client) -> None:
    batch_id = client.submit(CHAIN)
    everything = list(client.watch(batch_id))

    tail = list(client.watch(batch_id, after_seq=3))

    assert tail == everything[3:]


def test_watch_can_be_closed_from_another_thread(client: Client) -> None:
    batch_id = client.submit({"ops": [{"id": "slow", "kind": "sleep", "args": {"ms": 600_000}}]})
    try:
        events = client.watch(batch_id)
        seen = []
        threading.Timer(0.5, events.close).start()
        for event in events:
            seen.append(event)
        assert seen and seen[0].kind is EventKind.BATCH_SUBMITTED
    finally:
        client.cancel(batch_id)


def test_workers(client: Client, cluster: Cluster) -> None:
    workers = client.workers()
    assert sorted(worker.worker_id for worker in workers) == ["pytest-worker-1", "pytest-worker-2"]
    for worker in workers:
        assert worker.slots == cluster.slots
        assert {"noop", "echo", "shell", "memory.put"} <= set(worker.kinds)
        assert worker.draining is False


def test_why(client: Client) -> None:
    batch_id = client.submit({"ops": [{"id": "a", "kind": "noop"}]})
    client.wait(batch_id, timeout=30)
    why = client.why(batch_id, "a")
    assert why.op_id == "a" and why.state is OpState.SUCCEEDED


def test_closing_the_client_stops_its_watches(cluster: Cluster) -> None:
    client = cluster.client()
    batch_id = client.submit({"ops": [{"id": "slow", "kind": "sleep", "args": {"ms": 600_000}}]})
    try:
        events = client.watch(batch_id)
        assert next(events).kind is EventKind.BATCH_SUBMITTED
        threading.Timer(0.3, client.close).start()
        with pytest.raises(VolleyError, match="client was closed"):
            list(events)
    finally:
        with cluster.client() as other:
            other.cancel(batch_id)


def test_spawn_ops_adds_to_a_running_batch(client: Client, namespace: str) -> None:
    batch_id = client.submit(
        {"namespace": namespace, "ops": [{"id": "gate", "kind": "noop", "wait_for": ["go"]}]}
    )
    added = client.spawn_ops(
        batch_id, [{"id": "extra", "kind": "echo", "after": ["gate"], "args": {"text": "more"}}]
    )
    with pytest.raises(InvalidBatch) as raised:
        client.spawn_ops(batch_id, [{"id": "gate", "kind": "noop"}])  # a duplicate id
    client.memory(namespace=namespace).put("go", "1")
    status = client.wait(batch_id, timeout=30)

    assert added == 1
    assert any(problem.op_id == "gate" for problem in raised.value.problems), raised.value
    assert status.ok and status.outputs == {"gate": "", "extra": "more"}
    assert EventKind.OPS_ADDED in [event.kind for event in client.watch(batch_id)]


def test_one_idempotency_key_gives_one_batch_and_one_spawn(client: Client, namespace: str) -> None:
    batch = {"namespace": namespace, "ops": [{"id": "gate", "kind": "noop", "wait_for": ["go"]}]}
    first = client.submit(batch, idempotency_key="py-submit-1")
    again = client.submit(batch, idempotency_key="py-submit-1")
    fresh = client.submit(batch)  # a new key each call
    with pytest.raises(VolleyError, match="was used for another batch"):
        client.submit({"ops": [{"id": "other", "kind": "noop"}]}, idempotency_key="py-submit-1")
    with pytest.raises(InvalidBatch, match="idempotency key"):
        client.submit(batch, idempotency_key="not ascii é")
    child = [{"id": "child", "kind": "echo", "after": ["gate"], "args": {"text": "once"}}]
    added = client.spawn_ops(first, child, idempotency_key="py-spawn-1")
    added_again = client.spawn_ops(first, child, idempotency_key="py-spawn-1")
    client.memory(namespace=namespace).put("go", "1")
    status = client.wait(first, timeout=30)
    client.wait(fresh, timeout=30)

    assert again == first and fresh != first
    assert added == added_again == 1
    assert status.ok and status.outputs == {"gate": "", "child": "once"}
