"""A watch whose connection drops reconnects and resumes after the last
event it yielded: against the real cluster through a proxy that cuts its
connections, and against a scripted fake coordinator for the edge cases
(gaps, errors a reconnection cannot cure, the reconnect budget)."""

from __future__ import annotations

import threading
from concurrent import futures
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

import grpc
import pytest
from cluster import Cluster
from proxy import Proxy

from volley import (
    BatchState,
    Client,
    EventKind,
    NotFound,
    Unauthenticated,
    Unavailable,
    VolleyError,
    WatchOptions,
)
from volley._proto.volley.v1 import volley_pb2 as pb
from volley._proto.volley.v1 import volley_pb2_grpc as pb_grpc

FAST = WatchOptions(reconnect_budget=10.0, initial_backoff=0.01, max_backoff=0.05)


def test_watch_resumes_after_the_connection_drops(cluster: Cluster) -> None:
    proxy = Proxy(cluster.address)
    try:
        with cluster.client() as direct, Client(proxy.address, cluster.admin_token) as client:
            batch_id = direct.submit(
                {
                    "ops": [
                        {
                            "id": f"s{i}",
                            "kind": "sleep",
                            "args": {"ms": 100},
                            "after": [f"s{i - 1}"] if i else [],
                        }
                        for i in range(4)
                    ]
                }
            )
            seqs: List[int] = []
            with client.watch(batch_id, timeout=60, options=FAST) as events:
                for event in events:
                    seqs.append(event.seq)
                    if event.seq in (2, 5):
                        proxy.cut()  # the stream breaks under the watch
                last = event
            assert events.streams_opened >= 3
            assert proxy.connections >= 3
    finally:
        proxy.close()
    # Every event exactly once, in order, through two reconnections.
    assert seqs == list(range(1, 4 * 2 + 3))
    assert last.kind is EventKind.BATCH_FINISHED and last.batch_state is BatchState.SUCCEEDED


# ------------------------------------------------------------ fake coordinator

# What the fake does on each WatchBatch call, in turn: ("through", N, end)
# sends the events up to seq N then ends with `end` (a status code, or None
# for a clean end of stream); ("refuse", code) fails at once; ("skip", k)
# sends from after_seq + 1 + k on (a gap). After the script: every event.
Step = Tuple[Any, ...]


class FakeBatches(pb_grpc.BatchServiceServicer):
    def __init__(self, total: int, script: List[Step]) -> None:
        self.total = total
        self.script = list(script)
        self.after_seqs: List[int] = []
        #: The `authorization` metadata of each WatchBatch call (None: absent).
        self.authorizations: List[Optional[str]] = []
        self.lock = threading.Lock()

    def event(self, seq: int) -> pb.BatchEvent:
        last = seq == self.total
        return pb.BatchEvent(
            seq=seq,
            kind=pb.EVENT_KIND_BATCH_FINISHED if last else pb.EVENT_KIND_OP_SUCCEEDED,
            op_id="" if last else f"op{seq}",
            batch_state=pb.BATCH_STATE_SUCCEEDED if last else pb.BATCH_STATE_UNSPECIFIED,
        )

    def WatchBatch(
        self, request: pb.WatchBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BatchEvent]:
        if request.batch_id != "b1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"batch {request.batch_id} not found")
        metadata = {key: value for key, value in context.invocation_metadata()}
        with self.lock:
            self.after_seqs.append(request.after_seq)
            authorization = metadata.get("authorization")
            self.authorizations.append(None if authorization is None else str(authorization))
            step: Optional[Step] = self.script.pop(0) if self.script else None
        start = request.after_seq + 1
        if step is None:
            yield from (self.event(seq) for seq in range(start, self.total + 1))
        elif step[0] == "refuse":
            context.abort(step[1], "refused")
        elif step[0] == "skip":
            yield from (self.event(seq) for seq in range(start + step[1], self.total + 1))
        else:
            _, through, end = step
            yield from (self.event(seq) for seq in range(start, through + 1))
            if end is not None:
                context.abort(end, "broken")


@contextmanager
def fake_coordinator(batches: FakeBatches, token: str = "") -> Iterator[Client]:
    """Serves ``batches`` on a free port; a client connected to it (sending
    ``token``; none when empty)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BatchServiceServicer_to_server(batches, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", token, watch_options=FAST) as client:
            yield client
    finally:
        server.stop(grace=None)


def collect(client: Client, after_seq: int = 0) -> Tuple[List[int], Optional[VolleyError]]:
    seqs: List[int] = []
    try:
        for event in client.watch("b1", after_seq, timeout=30):
            seqs.append(event.seq)
    except VolleyError as error:
        return seqs, error
    return seqs, None


def test_resumes_after_each_broken_stream_where_it_stopped() -> None:
    batches = FakeBatches(
        12,
        [
            ("through", 3, grpc.StatusCode.UNAVAILABLE),
            ("refuse", grpc.StatusCode.UNAVAILABLE),
            ("through", 6, None),  # ends early, cleanly
            ("through", 9, grpc.StatusCode.CANCELLED),
        ],
    )
    with fake_coordinator(batches) as client:
        assert collect(client) == (list(range(1, 13)), None)
    assert batches.after_seqs == [0, 3, 3, 6, 9]


def test_starts_after_the_callers_seq() -> None:
    batches = FakeBatches(5, [])
    with fake_coordinator(batches) as client:
        assert collect(client, after_seq=2) == ([3, 4, 5], None)
    assert batches.after_seqs == [2]


def test_an_error_reconnecting_cannot_cure_ends_the_watch() -> None:
    batches = FakeBatches(10, [("through", 2, grpc.StatusCode.OUT_OF_RANGE)])
    with fake_coordinator(batches) as client:
        seqs, error = collect(client)
        assert seqs == [1, 2]
        assert type(error) is VolleyError and error.code is grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(NotFound):
            list(client.watch("nope"))
    assert batches.after_seqs == [0]


def test_a_gap_is_an_error_not_skipped() -> None:
    batches = FakeBatches(10, [("through", 3, grpc.StatusCode.UNAVAILABLE), ("skip", 1)])
    with fake_coordinator(batches) as client:
        seqs, error = collect(client)
    assert seqs == [1, 2, 3]
    assert error is not None and error.code is grpc.StatusCode.INTERNAL
    assert "expected event 4, received event 5" in str(error)


def test_gives_up_once_the_reconnect_budget_is_spent() -> None:
    script: List[Step] = [("through", 2, grpc.StatusCode.UNAVAILABLE)]
    script += [("refuse", grpc.StatusCode.UNAVAILABLE)] * 1000
    batches = FakeBatches(10, script)
    with fake_coordinator(batches) as client:
        options = WatchOptions(reconnect_budget=0.3, initial_backoff=0.01, max_backoff=0.05)
        seqs: List[int] = []
        with pytest.raises(Unavailable):
            for event in client.watch("b1", options=options):
                seqs.append(event.seq)
    assert seqs == [1, 2]
    assert len(batches.after_seqs) > 2 and set(batches.after_seqs[1:]) == {2}


def test_a_zero_budget_never_reconnects() -> None:
    batches = FakeBatches(10, [("through", 2, None)])
    with fake_coordinator(batches) as client:
        options = WatchOptions(reconnect_budget=0)
        seqs: List[int] = []
        with pytest.raises(Unavailable, match="ended after event 2"):
            for event in client.watch("b1", options=options):
                seqs.append(event.seq)
    assert seqs == [1, 2]
    assert batches.after_seqs == [0]


def test_every_reconnection_sends_the_token() -> None:
    batches = FakeBatches(
        9,
        [
            ("through", 3, grpc.StatusCode.UNAVAILABLE),
            ("refuse", grpc.StatusCode.UNAVAILABLE),
            ("through", 6, None),
        ],
    )
    with fake_coordinator(batches, token="s3cret-token") as client:
        assert collect(client) == (list(range(1, 10)), None)
    assert batches.after_seqs == [0, 3, 3, 6]
    assert batches.authorizations == ["Bearer s3cret-token"] * 4


def test_an_unauthenticated_watch_is_not_retried() -> None:
    batches = FakeBatches(
        9, [("through", 2, grpc.StatusCode.UNAUTHENTICATED)] + [("through", 9, None)]
    )
    with fake_coordinator(batches) as client:
        seqs, error = collect(client)
    assert seqs == [1, 2]
    assert isinstance(error, Unauthenticated)
    assert "this client sends no token" in str(error)
    assert batches.after_seqs == [0]


def test_a_watch_past_the_end_of_a_finished_batch_ends_with_its_final_event(
    client: Client,
) -> None:
    batch_id = client.submit({"ops": [{"id": "a", "kind": "echo", "args": {"text": "hi"}}]})
    assert client.wait(batch_id, timeout=60).state == BatchState.SUCCEEDED
    for after in (3, 4, 1000):
        with client.watch(batch_id, after_seq=after, timeout=30, options=FAST) as events:
            seen = list(events)
        # The coordinator makes the final event from the batch's record
        # when the store's is behind the watcher: one, numbered after it.
        assert [event.kind for event in seen][-1] == EventKind.BATCH_FINISHED, (after, seen)
        assert seen[-1].batch_state == BatchState.SUCCEEDED
        assert seen[0].seq == after + 1
