"""Volley's Python client: submit batches to a Volley cluster, watch their
events, read their results, cancel them, and use memory.

>>> from volley import Client                                # doctest: +SKIP
>>> with Client("127.0.0.1:7070", token="…") as client:
...     batch_id = client.submit({"name": "hello", "ops": [
...         {"id": "greet", "kind": "echo", "args": {"text": "hi"}}]})
...     for event in client.watch(batch_id):
...         print(event.seq, event.kind, event.op_id)
...     print(client.status(batch_id).outputs)

The token comes from ``token=`` or ``$VOLLEY_TOKEN`` / ``$VOLLEY_TOKEN_FILE``;
an ``https://`` URL means TLS (``tls_ca``, and ``tls_cert``/``tls_key`` for mTLS).

The generated gRPC code is in ``volley._proto.volley.v1`` for anything the
wrapper does not cover.
"""

from .batch import BatchDict, batch_from_dict, parse_batch, parse_duration_ms, read_batch_file
from .client import DEFAULT_ADDRESS, Client, EventStream, Memory, VolleyWarning, WatchOptions
from .errors import (
    Conflict,
    InvalidArgument,
    InvalidBatch,
    NotFound,
    PermissionDenied,
    Problem,
    TimedOut,
    Unauthenticated,
    Unavailable,
    VolleyError,
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
    OpStatus,
    PutResult,
    WhyResult,
    WorkerInfo,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "BatchDict",
    "BatchState",
    "BatchStatus",
    "BatchSummary",
    "CancelResult",
    "Client",
    "Conflict",
    "Event",
    "EventKind",
    "EventStream",
    "InvalidArgument",
    "InvalidBatch",
    "Memory",
    "MemoryChange",
    "MemoryEntry",
    "MemoryKey",
    "NotFound",
    "OpState",
    "OpStatus",
    "PermissionDenied",
    "Problem",
    "PutResult",
    "TimedOut",
    "Unauthenticated",
    "Unavailable",
    "VolleyError",
    "VolleyWarning",
    "WatchOptions",
    "WhyResult",
    "WorkerInfo",
    "batch_from_dict",
    "parse_batch",
    "parse_duration_ms",
    "read_batch_file",
]
