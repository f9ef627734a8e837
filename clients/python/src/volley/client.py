"""`Client`: one connection to a coordinator (thread-safe; use one per
process), and `Memory`, the memory calls on one scope."""

from __future__ import annotations

import datetime
import os
import random
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import grpc

from ._proto.volley.v1 import volley_pb2 as pb
from ._proto.volley.v1 import volley_pb2_grpc as pb_grpc
from .batch import BatchDict, batch_from_dict, ops_from_dicts, read_batch_file
from .connection import DEFAULT_ADDRESS, MAX_MESSAGE_BYTES, Connection, PathLike, resolve_connection
from .errors import (
    InvalidArgument,
    InvalidBatch,
    TimedOut,
    Unauthenticated,
    Unavailable,
    VolleyError,
    from_rpc_error,
)
from .models import (
    BatchState,
    BatchStatus,
    BatchSummary,
    CancelResult,
    Event,
    EventKind,
    MemoryChange,
    MemoryEntry,
    MemoryKey,
    OpState,
    PutResult,
    WhyResult,
    WorkerInfo,
)

__all__ = ["DEFAULT_ADDRESS", "Client", "EventStream", "Memory", "VolleyWarning", "WatchOptions"]

#: Ops go to the coordinator in chunks of about this many encoded bytes.
_CHUNK_BYTES = 1024 * 1024

Seconds = Union[float, datetime.timedelta]
T = TypeVar("T")


class VolleyWarning(UserWarning):
    """A warning the coordinator returned with a submission (a wait for a
    key nothing writes, accepted with ``allow_unwritten: true``, …).
    ``strict: true`` in the batch makes them errors."""


@dataclass(frozen=True)
class WatchOptions:
    """How a watch rides out a coordinator going away."""

    reconnect_budget: float = 60.0
    """Seconds the watch keeps trying to reconnect, counted from the moment
    it lost its stream (an event starts the count afresh); 0: never."""
    initial_backoff: float = 0.1
    """Seconds before the first reconnection attempt; doubles after each."""
    max_backoff: float = 2.0
    """The longest pause between two attempts."""


def _seconds(value: Optional[Seconds]) -> Optional[float]:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


class Client:
    """A connection to a Volley coordinator.

    >>> with Client("https://volley.example.com:7070", token="…") as client:  # doctest: +SKIP
    ...     batch_id = client.submit({"ops": [{"id": "a", "kind": "noop"}]})
    ...     print(client.wait(batch_id).state)

    ``url`` is ``host:port``, ``http://host:port`` or ``https://host:port``
    (default ``$VOLLEY_COORDINATOR``, else ``127.0.0.1:7070``). ``https://``
    means TLS: the server is verified against ``tls_ca`` (a PEM file; default
    ``$VOLLEY_TLS_CA``, else the system's roots), and ``tls_cert`` with
    ``tls_key`` (``$VOLLEY_TLS_CERT``, ``$VOLLEY_TLS_KEY``) are the client
    certificate a coordinator with mTLS asks for. TLS files with a URL that
    is not ``https://`` raise ``ValueError``.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call
    (default ``$VOLLEY_TOKEN``, else the content of ``token_file`` or
    ``$VOLLEY_TOKEN_FILE``); ``token=""`` sends none. A call without a valid
    token raises :class:`Unauthenticated`, one the token's role may not make
    :class:`PermissionDenied`.

    ``timeout`` is the deadline in seconds of each unary call (None: none);
    watches and memory waits have their own. ``channel`` overrides the
    connection (the token is still added to its calls).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        tls_ca: Optional[PathLike] = None,
        tls_cert: Optional[PathLike] = None,
        tls_key: Optional[PathLike] = None,
        *,
        token_file: Optional[PathLike] = None,
        timeout: Optional[float] = None,
        watch_options: WatchOptions = WatchOptions(),
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        self.connection: Connection = resolve_connection(
            url,
            token=token,
            token_file=token_file,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        #: The URL as given (or from the environment).
        self.url = self.connection.url
        #: Same as :attr:`url` (the name before 0.2).
        self.address = self.url
        self.timeout = timeout
        self.watch_options = watch_options
        if channel is None:
            channel = self.connection.channel(_CHANNEL_OPTIONS)
        else:
            channel = self.connection.authorize(channel)
        self._channel = channel
        self._closed = False
        self._batches = pb_grpc.BatchServiceStub(channel)
        self._memory = pb_grpc.MemoryServiceStub(channel)
        self._workers = pb_grpc.WorkerServiceStub(channel)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Closes the connection; open watches raise :class:`VolleyError`."""
        self._closed = True
        self._channel.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    # -------------------------------------------------------------- batches

    def submit(
        self, batch: Union[BatchDict, pb.Batch], idempotency_key: Optional[str] = None
    ) -> str:
        """Submits a batch and returns its id.

        ``batch`` is a dict with the batch file's schema (``name``,
        ``max_parallel``, ``on_failure``, ``ops: [{id, kind, args, after,
        wait_for, …}]`` …) or a ``volley.v1.Batch``. It is streamed in
        chunks, so no batch is too large for one gRPC message.

        ``idempotency_key`` (at most 128 bytes of printable ASCII; default:
        a new random key) makes a retry safe: submitting the same batch
        again with the same key returns the first call's batch id instead
        of creating a second batch. The same key with another batch raises
        a :class:`VolleyError` with code ``ALREADY_EXISTS``.

        Raises :class:`InvalidBatch` when the batch is rejected (nothing
        ran): its ``problems`` name each op and field. Warnings come back as
        :class:`VolleyWarning`.
        """
        message = batch if isinstance(batch, pb.Batch) else batch_from_dict(batch)
        key = idempotency_key if idempotency_key is not None else new_idempotency_key()
        response: pb.SubmitBatchResponse = self._call(
            self._batches.SubmitBatch, _chunks(message, key), invalid=InvalidBatch
        )
        for warning in response.warnings:
            warnings.warn(VolleyWarning(warning), stacklevel=2)
        return str(response.batch_id)

    def submit_file(self, path: Union[str, os.PathLike[str]]) -> str:
        """Submits a batch file (YAML, or JSON when it starts with ``{``)."""
        return self.submit(read_batch_file(path))

    def watch(
        self,
        batch_id: str,
        after_seq: int = 0,
        *,
        timeout: Optional[Seconds] = None,
        options: Optional[WatchOptions] = None,
    ) -> EventStream:
        """The batch's events with ``seq > after_seq`` (0: from the first),
        each exactly once and in order, ending with ``BATCH_FINISHED``.

        When the stream breaks in a way a reconnection can cure (the
        coordinator is unavailable or restarting, the connection dropped,
        the stream ended before the batch did), the watch reconnects with
        backoff and resumes after the last event it yielded, within
        ``options.reconnect_budget``. Other errors (``NotFound`` for an
        unknown batch, …) are raised from the iteration, as is
        :class:`TimedOut` once ``timeout`` seconds have passed. ``close()``
        (or leaving its ``with`` block) stops it from any thread.
        """
        return EventStream(
            self._batches,
            batch_id,
            after_seq,
            options or self.watch_options,
            None if timeout is None else time.monotonic() + (_seconds(timeout) or 0.0),
            self._error,
            lambda: self._closed,
        )

    def status(self, batch_id: str, *, ops: bool = True) -> BatchStatus:
        """The batch's state, counts, timings, and (unless ``ops=False``)
        every op's state, output, error, attempts and worker."""
        request = pb.GetBatchRequest(batch_id=batch_id, omit_ops=not ops)
        return BatchStatus.from_proto(self._call(self._batches.GetBatch, request))

    def wait(self, batch_id: str, timeout: Optional[Seconds] = None) -> BatchStatus:
        """Blocks until the batch ends and returns its final status.
        Raises :class:`TimedOut` after ``timeout`` seconds."""
        summary = self.status(batch_id, ops=False)
        if not summary.ended:
            with self.watch(batch_id, timeout=timeout) as events:
                for _ in events:
                    pass
        return self.status(batch_id)

    def cancel(self, batch_id: str) -> CancelResult:
        """Cancels what has not finished; running ops are stopped."""
        response = self._call(self._batches.CancelBatch, pb.CancelBatchRequest(batch_id=batch_id))
        return CancelResult(BatchState.from_proto(response.state), response.cancelled)

    def list_batches(self, limit: int = 100) -> List[BatchSummary]:
        """The most recent batches."""
        response = self._call(self._batches.ListBatches, pb.ListBatchesRequest(limit=limit))
        return [BatchSummary.from_proto(summary) for summary in response.batches]

    def why(self, batch_id: str, op_id: str) -> WhyResult:
        """Why an op is not running (or how it ended)."""
        response = self._call(self._batches.Why, pb.WhyRequest(batch_id=batch_id, op_id=op_id))
        return WhyResult(response.op_id, OpState.from_proto(response.state), list(response.reasons))

    def spawn_ops(
        self,
        batch_id: str,
        ops: Sequence[Mapping[str, Any]],
        spawned_by: str = "",
        idempotency_key: Optional[str] = None,
    ) -> int:
        """Adds ops (dicts, as in a batch's ``ops``) to a running batch;
        they are validated with it. Returns how many were added.

        ``idempotency_key`` (default: a new random key): the same ops again
        with the same key return the first call's answer instead of adding
        them twice (or failing on their ids)."""
        request = pb.SpawnOpsRequest(
            batch_id=batch_id,
            ops=ops_from_dicts(ops),
            spawned_by=spawned_by,
            idempotency_key=(
                idempotency_key if idempotency_key is not None else new_idempotency_key()
            ),
        )
        response = self._call(self._batches.SpawnOps, request, invalid=InvalidBatch)
        for warning in response.warnings:
            warnings.warn(VolleyWarning(warning), stacklevel=2)
        return int(response.op_count)

    # -------------------------------------------------------------- workers

    def workers(self) -> List[WorkerInfo]:
        """The workers connected to the cluster."""
        response = self._call(self._workers.ListWorkers, pb.ListWorkersRequest())
        return [WorkerInfo.from_proto(worker) for worker in response.workers]

    # --------------------------------------------------------------- memory

    def memory(self, *, namespace: Optional[str] = None, batch: Optional[str] = None) -> Memory:
        """Memory calls on one scope: a shared ``namespace``, or the own
        memory of the batch with id ``batch``. Exactly one must be given."""
        if (namespace is None) == (batch is None):
            raise ValueError("memory(): give exactly one of namespace= or batch=")
        return Memory(self, namespace=namespace or "", batch_id=batch or "")

    # ------------------------------------------------------------- plumbing

    def _call(
        self,
        method: Any,
        request: Any,
        *,
        timeout: Union[float, None, str] = "default",
        invalid: Type[InvalidArgument] = InvalidArgument,
    ) -> Any:
        """Calls ``method``, mapping a failure to a :class:`VolleyError`.
        ``timeout``: seconds, None for no deadline, "default" for the
        client's ``timeout``."""
        try:
            return method(request, timeout=self.timeout if timeout == "default" else timeout)
        except grpc.RpcError as error:
            raise self._error(error, invalid) from None
        except ValueError:
            # gRPC's "Cannot invoke RPC: Channel closed!": told apart by the
            # client's state, not the message.
            if self._closed:
                raise VolleyError(f"the client for {self.url} is closed") from None
            raise

    def _error(
        self, error: grpc.RpcError, invalid: Type[InvalidArgument] = InvalidArgument
    ) -> VolleyError:
        """The typed error for a failed call; an UNAUTHENTICATED one says
        where this client's token came from (never the token)."""
        typed = from_rpc_error(error, invalid)
        if isinstance(typed, Unauthenticated):
            source = self.connection.token_source
            hint = (
                "this client sends no token: pass token= or set VOLLEY_TOKEN or VOLLEY_TOKEN_FILE"
                if self.connection.token is None
                else f"the token from {source} was refused (unknown, expired or revoked)"
            )
            typed = Unauthenticated(f"{typed.message} ({hint})", typed.code)
        return typed


_CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Reconnect within seconds when a coordinator comes back (the
    # default backoff grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def new_idempotency_key() -> str:
    """A fresh idempotency key: 128 random bits in hex."""
    return secrets.token_hex(16)


def _chunks(batch: pb.Batch, idempotency_key: str = "") -> Iterator[pb.SubmitBatchChunk]:
    """The header (the batch without its ops, with the idempotency key),
    then the ops in chunks."""
    header = pb.Batch()
    header.CopyFrom(batch)
    del header.ops[:]
    yield pb.SubmitBatchChunk(header=header, idempotency_key=idempotency_key)
    chunk: List[pb.Op] = []
    size = 0
    for op in batch.ops:
        chunk.append(op)
        size += op.ByteSize()
        if size >= _CHUNK_BYTES:
            yield pb.SubmitBatchChunk(ops=pb.OpChunk(ops=chunk))
            chunk, size = [], 0
    if chunk:
        yield pb.SubmitBatchChunk(ops=pb.OpChunk(ops=chunk))


# Statuses after which a watch reconnects and resumes: the coordinator
# cannot serve now or went away (UNAVAILABLE, which is also what a dropped
# connection gives), or the call was cut under it (CANCELLED, when not by us).
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class EventStream(Iterator[Event]):
    """A batch's events, resumed after the last one yielded whenever the
    stream breaks (see :meth:`Client.watch`). Iterate it; ``close()`` it (or
    use it as a context manager) to stop early."""

    def __init__(
        self,
        stub: pb_grpc.BatchServiceStub,
        batch_id: str,
        after_seq: int,
        options: WatchOptions,
        deadline: Optional[float],
        to_error: Callable[[grpc.RpcError], VolleyError] = from_rpc_error,
        client_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.batch_id = batch_id
        #: The last event yielded (or ``after_seq``): a new stream starts after it.
        self.last_seq = after_seq
        #: How many streams were opened (1 + reconnections).
        self.streams_opened = 0
        self._stub = stub
        self._options = options
        self._deadline = deadline
        self._to_error = to_error
        self._client_closed = client_closed
        self._call: Optional[Any] = None
        self._outage_started: Optional[float] = None
        self._backoff = options.initial_backoff
        self._ended = False

    def __iter__(self) -> EventStream:
        return self

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the watch; iteration ends (safe from any thread)."""
        self._ended = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def __next__(self) -> Event:
        if self._ended:
            raise StopIteration
        try:
            event = self._next_event()
        except BaseException:
            self.close()
            raise
        if event is None:
            raise StopIteration
        if event.kind is EventKind.BATCH_FINISHED:
            self.close()  # done, even if the coordinator keeps the stream open
        return event

    def _next_event(self) -> Optional[Event]:
        while True:
            call = self._call
            if call is None:
                if self._ended:
                    return None
                call = self._open()
            interruption: Union[grpc.RpcError, None]
            try:
                message = next(call)
            except ValueError:
                # The channel was closed under the call (with an interceptor
                # on the channel, gRPC reports it at the first read).
                if self._client_closed():
                    raise self._closed_error() from None
                raise
            except StopIteration:
                interruption = None  # ended before the batch did
            except grpc.RpcError as error:
                if self._ended:  # closed by us
                    return None
                code = error.code() if isinstance(error, grpc.Call) else None
                if code not in _RESUMABLE:
                    raise self._to_error(error) from None
                interruption = error
            else:
                return self._accept(message)
            self._call = None
            self._pause_before_retry(interruption)

    def _open(self) -> Any:
        request = pb.WatchBatchRequest(batch_id=self.batch_id, after_seq=self.last_seq)
        timeout = None
        if self._deadline is not None:
            timeout = max(self._deadline - time.monotonic(), 0.001)
        try:
            call = self._stub.WatchBatch(request, timeout=timeout)
        except ValueError:  # "Cannot invoke RPC: Channel closed!"
            if self._client_closed():
                raise self._closed_error() from None
            raise
        self._call = call
        self.streams_opened += 1
        return call

    def _closed_error(self) -> VolleyError:
        return VolleyError(
            f"the watch of batch {self.batch_id} stopped after event {self.last_seq}: "
            "its client was closed"
        )

    def _accept(self, message: pb.BatchEvent) -> Event:
        """Checks that the event follows the last one: never repeat, never
        skip (events are gapless, so a gap is a coordinator bug)."""
        expected = self.last_seq + 1
        if message.seq != expected:
            raise VolleyError(
                f"watch of batch {self.batch_id}: expected event {expected}, received "
                f"event {message.seq} (events are gapless; stopping rather than skip or repeat)",
                grpc.StatusCode.INTERNAL,
            )
        self.last_seq = message.seq
        self._outage_started = None
        self._backoff = self._options.initial_backoff
        return Event.from_proto(message)

    def _pause_before_retry(self, interruption: Optional[grpc.RpcError]) -> None:
        """Waits out the backoff, or raises once the outage has lasted the
        whole budget."""
        now = time.monotonic()
        if self._outage_started is None:
            self._outage_started = now
        outage = now - self._outage_started
        budget = self._options.reconnect_budget
        if outage >= budget:
            if interruption is None:
                raise Unavailable(
                    f"the watch of batch {self.batch_id} ended after event {self.last_seq}, "
                    "before the batch finished"
                )
            raise self._to_error(interruption) from None
        delay = min(self._backoff, budget - outage)
        if self._deadline is not None:
            delay = min(delay, max(self._deadline - now, 0.0))
        time.sleep(delay * (0.5 + random.random() / 2))
        self._backoff = min(self._backoff * 2, self._options.max_backoff)


class Memory:
    """Memory calls on one scope (a namespace, or a batch's own memory).
    Get one from :meth:`Client.memory`."""

    def __init__(self, client: Client, *, namespace: str = "", batch_id: str = "") -> None:
        self._client = client
        self.namespace = namespace
        self.batch_id = batch_id

    def __repr__(self) -> str:
        scope = f"namespace={self.namespace!r}" if self.namespace else f"batch={self.batch_id!r}"
        return f"Memory({scope})"

    def get(self, key: str) -> Optional[MemoryEntry]:
        """The key's value, or None when it does not exist."""
        request = pb.GetMemoryRequest(key=key, namespace=self.namespace, batch_id=self.batch_id)
        response = self._client._call(self._client._memory.GetMemory, request)
        return _entry(key, response)

    def put(
        self,
        key: str,
        value: Union[bytes, str],
        *,
        content_type: str = "",
        ttl: Optional[Seconds] = None,
        if_version: Optional[int] = None,
    ) -> PutResult:
        """Writes a key (a str is stored as UTF-8), unblocking the ops that
        wait for it. ``if_version`` makes it a compare-and-set (0: only if
        the key does not exist); a mismatch raises :class:`Conflict`.
        ``ttl`` is in seconds."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        ttl_seconds = _seconds(ttl)
        request = pb.PutMemoryRequest(
            key=key,
            value=data,
            content_type=content_type,
            ttl_ms=0 if ttl_seconds is None else max(1, round(ttl_seconds * 1000)),
            namespace=self.namespace,
            batch_id=self.batch_id,
        )
        if if_version is not None:
            request.if_version = if_version
        response = self._client._call(self._client._memory.PutMemory, request)
        return PutResult(version=response.version, unblocked=response.unblocked)

    def delete(self, key: str, *, if_version: Optional[int] = None) -> bool:
        """Deletes a key (only at ``if_version``, when given); whether it existed."""
        request = pb.DeleteMemoryRequest(key=key, namespace=self.namespace, batch_id=self.batch_id)
        if if_version is not None:
            request.if_version = if_version
        return bool(self._client._call(self._client._memory.DeleteMemory, request).deleted)

    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[MemoryKey]:
        """Every key under ``prefix``, fetched a page at a time."""
        token = ""
        while True:
            request = pb.ListMemoryRequest(
                prefix=prefix,
                page_token=token,
                limit=page_size,
                namespace=self.namespace,
                batch_id=self.batch_id,
            )
            response = self._client._call(self._client._memory.ListMemory, request)
            for info in response.keys:
                yield MemoryKey(
                    key=info.key,
                    version=info.version,
                    size=info.size,
                    content_type=info.content_type,
                    expires_at_ms=info.expires_at_ms,
                )
            token = response.next_page_token
            if not token:
                return

    def incr(self, key: str, delta: int = 1) -> int:
        """Adds ``delta`` to an integer key (absent: 0); the new value."""
        request = pb.IncrMemoryRequest(
            key=key, delta=delta, namespace=self.namespace, batch_id=self.batch_id
        )
        return int(self._client._call(self._client._memory.IncrMemory, request).value)

    def wait(
        self,
        key: str,
        timeout: Optional[Seconds] = None,
        *,
        options: Optional[WatchOptions] = None,
    ) -> MemoryEntry:
        """Blocks until the key exists and returns its value; raises
        :class:`TimedOut` after ``timeout`` seconds (None: wait forever).

        A wait is only a read: when the coordinator goes away under it
        (UNAVAILABLE), it is made again, through the same address, for what
        is left of ``timeout``, until the outage has lasted the reconnect
        budget of ``options`` (default: the client's ``watch_options``);
        then :class:`Unavailable` is raised."""
        options = options or self._client.watch_options
        seconds = _seconds(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        outage_started: Optional[float] = None
        backoff = options.initial_backoff
        while True:
            left: Optional[float] = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimedOut(
                        f"memory key `{key}` did not appear within {seconds}s",
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    )
            request = pb.WaitMemoryRequest(
                key=key,
                timeout_ms=0 if left is None else max(1, round(left * 1000)),
                namespace=self.namespace,
                batch_id=self.batch_id,
            )
            # The server times the wait out; the call's own deadline is only
            # a safety net for a server that never answers.
            call_timeout = None if left is None else left + 30.0
            try:
                response = self._client._call(
                    self._client._memory.WaitMemory, request, timeout=call_timeout
                )
            except Unavailable:
                now = time.monotonic()
                if outage_started is None:
                    outage_started = now
                if now - outage_started >= options.reconnect_budget:
                    raise
                time.sleep(min(backoff, options.reconnect_budget - (now - outage_started)))
                backoff = min(backoff * 2, options.max_backoff)
                continue
            entry = _entry(key, response)
            if entry is None:
                raise VolleyError(
                    f"wait for memory key {key} returned no value", grpc.StatusCode.INTERNAL
                )
            return entry

    def watch(
        self,
        prefix: str = "",
        *,
        after_revision: int = 0,
        include_existing: bool = False,
        options: Optional[WatchOptions] = None,
    ) -> Generator[MemoryChange, None, None]:
        """Changes under ``prefix`` after ``after_revision`` (0: from now on,
        with every existing key first when ``include_existing``), each once
        and in revision order, until the caller stops iterating.

        When the coordinator goes away (UNAVAILABLE, CANCELLED, or the
        stream ends), the watch reconnects through the same address and
        resumes after the last revision it yielded, in the same store
        epoch, until the outage has lasted the reconnect budget of
        ``options`` (default: the client's ``watch_options``); then it
        raises :class:`Unavailable`. When the changes to resume from are
        gone (the store restarted empty, or they were trimmed), the last
        change yielded has ``reset`` set: read the keys again, then watch
        after its ``revision``."""
        options = options or self._client.watch_options
        last = after_revision
        epoch = ""
        # Still in (or yet to start) the snapshot of existing keys; a break
        # in it is cured by a fresh one, of which only what is new is yielded.
        snapshot = include_existing and after_revision == 0
        snapshot_left = 0
        snapshot_seen: Set[Tuple[str, int]] = set()
        outage_started: Optional[float] = None
        backoff = options.initial_backoff
        while True:
            request = pb.WatchMemoryRequest(
                prefix=prefix,
                after_revision=0 if snapshot else last,
                include_existing=snapshot,
                store_epoch=epoch,
                namespace=self.namespace,
                batch_id=self.batch_id,
            )
            interruption: Optional[grpc.RpcError] = None
            call = None
            try:
                call = self._client._memory.WatchMemory(request, timeout=None)
                headers = {name: value for name, value in (call.initial_metadata() or ())}
                if headers:
                    outage_started = None  # a new stream starts the count afresh
                epoch = headers.get(_STORE_EPOCH_HEADER, epoch)
                start = _header_int(headers, _WATCH_AFTER_HEADER)
                existing = _header_int(headers, _WATCH_EXISTING_HEADER)
                if snapshot:
                    if start is not None and existing is not None:
                        last, snapshot_left, snapshot = start, existing, existing > 0
                    else:
                        snapshot = False
                elif last == 0 and start is not None:
                    last = start
                for message in call:
                    outage_started = None
                    backoff = options.initial_backoff
                    if message.kind == pb.MEMORY_CHANGE_KIND_RESET:
                        yield MemoryChange.from_proto(message)
                        return
                    if snapshot_left > 0:
                        snapshot_left -= 1
                        if snapshot_left == 0:
                            snapshot = False
                        fresh = (message.key, message.version) not in snapshot_seen
                        snapshot_seen.add((message.key, message.version))
                        if snapshot_left == 0:
                            snapshot_seen.clear()
                        if fresh:
                            yield MemoryChange.from_proto(message)
                        continue
                    snapshot = False
                    if message.revision <= last:
                        raise VolleyError(
                            f"memory watch: received revision {message.revision} after "
                            f"revision {last} (stopping rather than repeat or reorder)",
                            grpc.StatusCode.INTERNAL,
                        )
                    last = message.revision
                    yield MemoryChange.from_proto(message)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code not in _RESUMABLE:
                    raise self._client._error(error) from None
                interruption = error
            except ValueError:  # the channel was closed under the stream
                if self._client.closed:
                    raise VolleyError(f"the client for {self._client.url} is closed") from None
                raise
            finally:
                if call is not None:
                    call.cancel()
            now = time.monotonic()
            if outage_started is None:
                outage_started = now
            outage = now - outage_started
            if outage >= options.reconnect_budget:
                if interruption is None:
                    raise Unavailable(
                        f"the memory watch ended after revision {last} and no coordinator "
                        "took it over"
                    )
                raise self._client._error(interruption) from None
            delay = min(backoff, options.reconnect_budget - outage)
            time.sleep(delay * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, options.max_backoff)


# Response headers of WatchMemory (see proto/src/lib.rs).
_STORE_EPOCH_HEADER = "volley-store-epoch"
_WATCH_AFTER_HEADER = "volley-watch-after"
_WATCH_EXISTING_HEADER = "volley-watch-existing"


def _header_int(headers: Dict[str, Any], name: str) -> Optional[int]:
    value = headers.get(name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _rpc_iter(call: Iterable[T], client: Client) -> Iterator[T]:
    """The messages of a server stream, its failures as typed errors."""
    try:
        yield from call
    except grpc.RpcError as error:
        raise client._error(error) from None
    except ValueError:  # the channel was closed under the stream
        if client.closed:
            raise VolleyError(f"the client for {client.url} is closed") from None
        raise


def _entry(key: str, response: pb.GetMemoryResponse) -> Optional[MemoryEntry]:
    if not response.found:
        return None
    return MemoryEntry(
        key=key,
        value=bytes(response.value),
        content_type=response.content_type,
        version=response.version,
    )
