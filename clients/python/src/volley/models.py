"""What the client returns: plain dataclasses and string enums built from
the proto messages, so callers never touch generated code.

The enums are ``str`` subclasses whose values are the lower-case names the
CLI prints (``BatchState.SUCCEEDED == "succeeded"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional, Type, TypeVar

from ._proto.volley.v1 import volley_pb2 as pb

__all__ = [
    "BatchState",
    "BatchStatus",
    "BatchSummary",
    "CancelResult",
    "Event",
    "EventKind",
    "MemoryChange",
    "MemoryEntry",
    "MemoryKey",
    "OpState",
    "OpStatus",
    "PutResult",
    "WhyResult",
    "WorkerInfo",
]


class _ProtoEnum(str, Enum):
    """A proto enum by its short lower-case name; values this client does
    not know (from a newer server) read as ``UNSPECIFIED``."""

    def __str__(self) -> str:
        return str(self.value)


E = TypeVar("E", bound=_ProtoEnum)


def _from_proto(cls: Type[E], proto_enum: Any, prefix: str, number: int) -> E:
    try:
        name = proto_enum.Name(number)
    except ValueError:
        return cls["UNSPECIFIED"]
    return cls[name[len(prefix) :]]


class BatchState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def ended(self) -> bool:
        """Whether a batch in this state is over."""
        return self not in (BatchState.RUNNING, BatchState.UNSPECIFIED)

    @classmethod
    def from_proto(cls, number: int) -> BatchState:
        return _from_proto(cls, pb.BatchState, "BATCH_STATE_", number)


class OpState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (OpState.SUCCEEDED, OpState.FAILED, OpState.SKIPPED, OpState.CANCELLED)

    @classmethod
    def from_proto(cls, number: int) -> OpState:
        return _from_proto(cls, pb.OpState, "OP_STATE_", number)


class EventKind(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    BATCH_SUBMITTED = "batch_submitted"
    OP_STARTED = "op_started"
    OP_SUCCEEDED = "op_succeeded"
    OP_FAILED = "op_failed"
    OP_SKIPPED = "op_skipped"
    OP_CANCELLED = "op_cancelled"
    OP_RETRYING = "op_retrying"
    BATCH_FINISHED = "batch_finished"
    OPS_ADDED = "ops_added"
    OP_BLOCKED = "op_blocked"

    @classmethod
    def from_proto(cls, number: int) -> EventKind:
        return _from_proto(cls, pb.EventKind, "EVENT_KIND_", number)


@dataclass(frozen=True)
class Event:
    """One event of a batch, in ``seq`` order (1, 2, 3, … with no gaps)."""

    seq: int
    at_ms: int
    kind: EventKind
    op_id: str
    attempt: int
    worker: str
    message: str
    batch_state: Optional[BatchState]
    """The batch's final state, on ``BATCH_FINISHED`` only."""

    @classmethod
    def from_proto(cls, event: pb.BatchEvent) -> Event:
        kind = EventKind.from_proto(event.kind)
        return cls(
            seq=event.seq,
            at_ms=event.at_ms,
            kind=kind,
            op_id=event.op_id,
            attempt=event.attempt,
            worker=event.worker,
            message=event.message,
            batch_state=(
                BatchState.from_proto(event.batch_state)
                if kind is EventKind.BATCH_FINISHED
                else None
            ),
        )


@dataclass(frozen=True)
class OpStatus:
    """Where one op is, and how it ended."""

    id: str
    kind: str
    state: OpState
    attempts: int
    worker: str
    started_ms: int
    """Since the batch was submitted."""
    duration_ms: int
    output: str
    error: str
    details_json: str
    after: List[str]
    """Its resolved dependencies."""
    group: str = ""
    """The ``foreach:`` op it was expanded from (its id); empty for an op
    written by hand."""

    @property
    def details(self) -> Any:
        """``details_json`` parsed (a shell op's exit code and stderr, …);
        None when there are none."""
        return json.loads(self.details_json) if self.details_json else None

    @classmethod
    def from_proto(cls, op: pb.OpStatus) -> OpStatus:
        return cls(
            id=op.id,
            kind=op.kind,
            state=OpState.from_proto(op.state),
            attempts=op.attempts,
            worker=op.worker,
            started_ms=op.started_ms,
            duration_ms=op.duration_ms,
            output=op.output,
            error=op.error,
            details_json=op.details_json,
            after=list(op.after),
            group=op.group,
        )


@dataclass(frozen=True)
class BatchStatus:
    """A batch's state, counts, timings and (unless left out) every op."""

    batch_id: str
    name: str
    state: BatchState
    created_at_ms: int
    """Unix milliseconds."""
    wall_ms: int
    sequential_ms: int
    speedup: float
    total: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    running: int
    ops: List[OpStatus]
    critical_path: List[str]
    critical_path_ms: int
    error: str
    owner: str
    """The coordinator that owns the batch now; empty once it ended."""

    @property
    def ended(self) -> bool:
        return self.state.ended

    @property
    def ok(self) -> bool:
        """Whether every op succeeded."""
        return self.state is BatchState.SUCCEEDED

    def op(self, op_id: str) -> OpStatus:
        """The op with this id (KeyError if the batch has none)."""
        for op in self.ops:
            if op.id == op_id:
                return op
        raise KeyError(op_id)

    @property
    def outputs(self) -> Dict[str, str]:
        """Each op's output by its id."""
        return {op.id: op.output for op in self.ops}

    @classmethod
    def from_proto(cls, status: pb.BatchStatus) -> BatchStatus:
        return cls(
            batch_id=status.batch_id,
            name=status.name,
            state=BatchState.from_proto(status.state),
            created_at_ms=status.created_at_ms,
            wall_ms=status.wall_ms,
            sequential_ms=status.sequential_ms,
            speedup=status.speedup,
            total=status.total,
            succeeded=status.succeeded,
            failed=status.failed,
            skipped=status.skipped,
            cancelled=status.cancelled,
            running=status.running,
            ops=[OpStatus.from_proto(op) for op in status.ops],
            critical_path=list(status.critical_path),
            critical_path_ms=status.critical_path_ms,
            error=status.error,
            owner=status.owner,
        )


@dataclass(frozen=True)
class BatchSummary:
    """A batch as ``list_batches`` lists it."""

    batch_id: str
    name: str
    state: BatchState
    created_at_ms: int
    total: int
    done: int

    @classmethod
    def from_proto(cls, summary: pb.BatchSummary) -> BatchSummary:
        return cls(
            batch_id=summary.batch_id,
            name=summary.name,
            state=BatchState.from_proto(summary.state),
            created_at_ms=summary.created_at_ms,
            total=summary.total,
            done=summary.done,
        )


@dataclass(frozen=True)
class CancelResult:
    state: BatchState
    """The batch's state after the cancellation."""
    cancelled: int
    """How many ops it cancelled."""


@dataclass(frozen=True)
class WhyResult:
    """Why an op is where it is, most important reason first."""

    op_id: str
    state: OpState
    reasons: List[str]


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    kinds: List[str]
    labels: Dict[str, str]
    slots: int
    busy: int
    coordinator: str
    """The coordinator it is connected to."""
    draining: bool = False
    """It is shutting down: it finishes what it runs and takes nothing new."""

    @classmethod
    def from_proto(cls, worker: pb.WorkerInfo) -> WorkerInfo:
        return cls(
            worker_id=worker.worker_id,
            kinds=list(worker.kinds),
            labels=dict(worker.labels),
            slots=worker.slots,
            busy=worker.busy,
            coordinator=worker.coordinator,
            draining=worker.draining,
        )


@dataclass(frozen=True)
class MemoryEntry:
    """A value read from memory."""

    key: str
    value: bytes
    content_type: str
    version: int
    """1 on the first write, +1 on each."""

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


@dataclass(frozen=True)
class PutResult:
    version: int
    """The key's version after the write."""
    unblocked: int
    """How many waiting ops the write made ready."""


@dataclass(frozen=True)
class MemoryKey:
    """A key as ``Memory.list`` lists it."""

    key: str
    version: int
    size: int
    content_type: str
    expires_at_ms: int
    """Unix milliseconds; 0: never."""


@dataclass(frozen=True)
class MemoryChange:
    """One write or delete under a watched prefix."""

    revision: int
    """Per scope, 1, 2, 3, … in write order: resume after it."""
    key: str
    deleted: bool
    version: int
    value: Optional[bytes]
    """The value written (None for deletes, and for puts over 64 KiB:
    ``get`` those)."""
    content_type: str
    at_ms: int
    reset: bool = False
    """The watch cannot go on without a gap (the store restarted empty, or
    the changes to resume from were trimmed): the last change of a watch.
    Read the keys again, then watch after its ``revision`` (the scope's
    revision now)."""
    reset_reason: str = ""
    """For a reset: ``store_restarted`` or ``changes_trimmed``."""

    @classmethod
    def from_proto(cls, change: pb.MemoryChange) -> MemoryChange:
        deleted = change.kind == pb.MEMORY_CHANGE_KIND_DELETE
        reset = change.kind == pb.MEMORY_CHANGE_KIND_RESET
        reason = ""
        if reset:
            reason = (
                "changes_trimmed"
                if change.reset_reason == pb.MEMORY_RESET_REASON_CHANGES_TRIMMED
                else "store_restarted"
            )
        return cls(
            revision=change.revision,
            key=change.key,
            deleted=deleted,
            version=change.version,
            value=None if deleted or reset or change.value_omitted else change.value,
            content_type=change.content_type,
            at_ms=change.at_ms,
            reset=reset,
            reset_reason=reason,
        )
