from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_MEDIUM: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class OnFailure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_FAILURE_UNSPECIFIED: _ClassVar[OnFailure]
    ON_FAILURE_CONTINUE: _ClassVar[OnFailure]
    ON_FAILURE_FAIL_FAST: _ClassVar[OnFailure]

class Hazards(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HAZARDS_UNSPECIFIED: _ClassVar[Hazards]
    HAZARDS_REJECT: _ClassVar[Hazards]
    HAZARDS_ORDER: _ClassVar[Hazards]
    HAZARDS_ALLOW: _ClassVar[Hazards]

class RetryOn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRY_ON_UNSPECIFIED: _ClassVar[RetryOn]
    RETRY_ON_FAILURE: _ClassVar[RetryOn]
    RETRY_ON_TIMEOUT: _ClassVar[RetryOn]
    RETRY_ON_LOST_WORKER: _ClassVar[RetryOn]

class RunIf(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_IF_UNSPECIFIED: _ClassVar[RunIf]
    RUN_IF_SUCCESS: _ClassVar[RunIf]
    RUN_IF_ALWAYS: _ClassVar[RunIf]

class RetryFailed(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRY_FAILED_UNSPECIFIED: _ClassVar[RetryFailed]
    RETRY_FAILED_NONE: _ClassVar[RetryFailed]
    RETRY_FAILED_SEQUENTIAL: _ClassVar[RetryFailed]

class OpState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_STATE_UNSPECIFIED: _ClassVar[OpState]
    OP_STATE_WAITING: _ClassVar[OpState]
    OP_STATE_READY: _ClassVar[OpState]
    OP_STATE_RUNNING: _ClassVar[OpState]
    OP_STATE_SUCCEEDED: _ClassVar[OpState]
    OP_STATE_FAILED: _ClassVar[OpState]
    OP_STATE_SKIPPED: _ClassVar[OpState]
    OP_STATE_CANCELLED: _ClassVar[OpState]

class BatchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_STATE_UNSPECIFIED: _ClassVar[BatchState]
    BATCH_STATE_RUNNING: _ClassVar[BatchState]
    BATCH_STATE_SUCCEEDED: _ClassVar[BatchState]
    BATCH_STATE_FAILED: _ClassVar[BatchState]
    BATCH_STATE_CANCELLED: _ClassVar[BatchState]
    BATCH_STATE_LOST: _ClassVar[BatchState]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_BATCH_SUBMITTED: _ClassVar[EventKind]
    EVENT_KIND_OP_STARTED: _ClassVar[EventKind]
    EVENT_KIND_OP_SUCCEEDED: _ClassVar[EventKind]
    EVENT_KIND_OP_FAILED: _ClassVar[EventKind]
    EVENT_KIND_OP_SKIPPED: _ClassVar[EventKind]
    EVENT_KIND_OP_CANCELLED: _ClassVar[EventKind]
    EVENT_KIND_OP_RETRYING: _ClassVar[EventKind]
    EVENT_KIND_BATCH_FINISHED: _ClassVar[EventKind]
    EVENT_KIND_OPS_ADDED: _ClassVar[EventKind]
    EVENT_KIND_OP_BLOCKED: _ClassVar[EventKind]

class MemoryChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_CHANGE_KIND_UNSPECIFIED: _ClassVar[MemoryChangeKind]
    MEMORY_CHANGE_KIND_PUT: _ClassVar[MemoryChangeKind]
    MEMORY_CHANGE_KIND_DELETE: _ClassVar[MemoryChangeKind]
    MEMORY_CHANGE_KIND_RESET: _ClassVar[MemoryChangeKind]

class MemoryResetReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_RESET_REASON_UNSPECIFIED: _ClassVar[MemoryResetReason]
    MEMORY_RESET_REASON_STORE_RESTARTED: _ClassVar[MemoryResetReason]
    MEMORY_RESET_REASON_CHANGES_TRIMMED: _ClassVar[MemoryResetReason]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_CANCELLED: _ClassVar[FailureKind]
    FAILURE_KIND_PERMANENT: _ClassVar[FailureKind]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_CRITICAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_MEDIUM: Priority
PRIORITY_LOW: Priority
ON_FAILURE_UNSPECIFIED: OnFailure
ON_FAILURE_CONTINUE: OnFailure
ON_FAILURE_FAIL_FAST: OnFailure
HAZARDS_UNSPECIFIED: Hazards
HAZARDS_REJECT: Hazards
HAZARDS_ORDER: Hazards
HAZARDS_ALLOW: Hazards
RETRY_ON_UNSPECIFIED: RetryOn
RETRY_ON_FAILURE: RetryOn
RETRY_ON_TIMEOUT: RetryOn
RETRY_ON_LOST_WORKER: RetryOn
RUN_IF_UNSPECIFIED: RunIf
RUN_IF_SUCCESS: RunIf
RUN_IF_ALWAYS: RunIf
RETRY_FAILED_UNSPECIFIED: RetryFailed
RETRY_FAILED_NONE: RetryFailed
RETRY_FAILED_SEQUENTIAL: RetryFailed
OP_STATE_UNSPECIFIED: OpState
OP_STATE_WAITING: OpState
OP_STATE_READY: OpState
OP_STATE_RUNNING: OpState
OP_STATE_SUCCEEDED: OpState
OP_STATE_FAILED: OpState
OP_STATE_SKIPPED: OpState
OP_STATE_CANCELLED: OpState
BATCH_STATE_UNSPECIFIED: BatchState
BATCH_STATE_RUNNING: BatchState
BATCH_STATE_SUCCEEDED: BatchState
BATCH_STATE_FAILED: BatchState
BATCH_STATE_CANCELLED: BatchState
BATCH_STATE_LOST: BatchState
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_BATCH_SUBMITTED: EventKind
EVENT_KIND_OP_STARTED: EventKind
EVENT_KIND_OP_SUCCEEDED: EventKind
EVENT_KIND_OP_FAILED: EventKind
EVENT_KIND_OP_SKIPPED: EventKind
EVENT_KIND_OP_CANCELLED: EventKind
EVENT_KIND_OP_RETRYING: EventKind
EVENT_KIND_BATCH_FINISHED: EventKind
EVENT_KIND_OPS_ADDED: EventKind
EVENT_KIND_OP_BLOCKED: EventKind
MEMORY_CHANGE_KIND_UNSPECIFIED: MemoryChangeKind
MEMORY_CHANGE_KIND_PUT: MemoryChangeKind
MEMORY_CHANGE_KIND_DELETE: MemoryChangeKind
MEMORY_CHANGE_KIND_RESET: MemoryChangeKind
MEMORY_RESET_REASON_UNSPECIFIED: MemoryResetReason
MEMORY_RESET_REASON_STORE_RESTARTED: MemoryResetReason
MEMORY_RESET_REASON_CHANGES_TRIMMED: MemoryResetReason
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_ERROR: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_CANCELLED: FailureKind
FAILURE_KIND_PERMANENT: FailureKind

class Backoff(_message.Message):
    __slots__ = ("initial_ms", "max_ms", "multiplier", "no_jitter")
    INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NO_JITTER_FIELD_NUMBER: _ClassVar[int]
    initial_ms: int
    max_ms: int
    multiplier: float
    no_jitter: bool
    def __init__(self, initial_ms: _Optional[int] = ..., max_ms: _Optional[int] = ..., multiplier: _Optional[float] = ..., no_jitter: bool = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("id", "kind", "args_json", "after", "run_if", "timeout_ms", "attempts", "priority", "store_as", "wait_for", "reads", "writes", "requires", "wait_for_any", "wait_timeout_ms", "backoff", "retry_on", "max_output_bytes", "group")
    class RequiresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    RUN_IF_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STORE_AS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_ANY_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    args_json: str
    after: _containers.RepeatedScalarFieldContainer[str]
    run_if: RunIf
    timeout_ms: int
    attempts: int
    priority: Priority
    store_as: str
    wait_for: _containers.RepeatedScalarFieldContainer[str]
    reads: _containers.RepeatedScalarFieldContainer[str]
    writes: _containers.RepeatedScalarFieldContainer[str]
    requires: _containers.ScalarMap[str, str]
    wait_for_any: _containers.RepeatedScalarFieldContainer[str]
    wait_timeout_ms: int
    backoff: Backoff
    retry_on: _containers.RepeatedScalarFieldContainer[RetryOn]
    max_output_bytes: int
    group: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., args_json: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., run_if: _Optional[_Union[RunIf, str]] = ..., timeout_ms: _Optional[int] = ..., attempts: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., store_as: _Optional[str] = ..., wait_for: _Optional[_Iterable[str]] = ..., reads: _Optional[_Iterable[str]] = ..., writes: _Optional[_Iterable[str]] = ..., requires: _Optional[_Mapping[str, str]] = ..., wait_for_any: _Optional[_Iterable[str]] = ..., wait_timeout_ms: _Optional[int] = ..., backoff: _Optional[_Union[Backoff, _Mapping]] = ..., retry_on: _Optional[_Iterable[_Union[RetryOn, str]]] = ..., max_output_bytes: _Optional[int] = ..., group: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("name", "max_parallel", "on_failure", "hazards", "ops", "namespace", "labels", "wait_timeout_ms", "strict", "deadline_ms", "retry_failed", "trace_context", "tenant", "allow_unwritten", "lost_worker_retries")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    HAZARDS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FAILED_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNWRITTEN_FIELD_NUMBER: _ClassVar[int]
    LOST_WORKER_RETRIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_parallel: int
    on_failure: OnFailure
    hazards: Hazards
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    namespace: str
    labels: _containers.ScalarMap[str, str]
    wait_timeout_ms: int
    strict: bool
    deadline_ms: int
    retry_failed: RetryFailed
    trace_context: _containers.ScalarMap[str, str]
    tenant: str
    allow_unwritten: bool
    lost_worker_retries: int
    def __init__(self, name: _Optional[str] = ..., max_parallel: _Optional[int] = ..., on_failure: _Optional[_Union[OnFailure, str]] = ..., hazards: _Optional[_Union[Hazards, str]] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., namespace: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., wait_timeout_ms: _Optional[int] = ..., strict: bool = ..., deadline_ms: _Optional[int] = ..., retry_failed: _Optional[_Union[RetryFailed, str]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., tenant: _Optional[str] = ..., allow_unwritten: bool = ..., lost_worker_retries: _Optional[int] = ...) -> None: ...

class SubmitBatchChunk(_message.Message):
    __slots__ = ("header", "ops", "idempotency_key")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    header: Batch
    ops: OpChunk
    idempotency_key: str
    def __init__(self, header: _Optional[_Union[Batch, _Mapping]] = ..., ops: _Optional[_Union[OpChunk, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class OpChunk(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    def __init__(self, ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ...) -> None: ...

class SubmitBatchResponse(_message.Message):
    __slots__ = ("batch_id", "op_count", "warnings")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OP_COUNT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    op_count: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch_id: _Optional[str] = ..., op_count: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidationFailure(_message.Message):
    __slots__ = ("problems", "total")
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    total: int
    def __init__(self, problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("op_id", "field", "message")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    field: str
    message: str
    def __init__(self, op_id: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class BatchEvent(_message.Message):
    __slots__ = ("seq", "at_ms", "kind", "op_id", "attempt", "worker", "message", "batch_state")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_STATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at_ms: int
    kind: EventKind
    op_id: str
    attempt: int
    worker: str
    message: str
    batch_state: BatchState
    def __init__(self, seq: _Optional[int] = ..., at_ms: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., op_id: _Optional[str] = ..., attempt: _Optional[int] = ..., worker: _Optional[str] = ..., message: _Optional[str] = ..., batch_state: _Optional[_Union[BatchState, str]] = ...) -> None: ...

class OpStatus(_message.Message):
    __slots__ = ("id", "kind", "state", "attempts", "worker", "started_ms", "duration_ms", "output", "error", "details_json", "after", "group")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: OpState
    attempts: int
    worker: str
    started_ms: int
    duration_ms: int
    output: str
    error: str
    details_json: str
    after: _containers.RepeatedScalarFieldContainer[str]
    group: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[OpState, str]] = ..., attempts: _Optional[int] = ..., worker: _Optional[str] = ..., started_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., details_json: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., group: _Optional[str] = ...) -> None: ...

class BatchStatus(_message.Message):
    __slots__ = ("batch_id", "name", "state", "created_at_ms", "wall_ms", "sequential_ms", "speedup", "total", "succeeded", "failed", "skipped", "cancelled", "running", "ops", "critical_path", "critical_path_ms", "error", "owner")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WALL_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENTIAL_MS_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    name: str
    state: BatchState
    created_at_ms: int
    wall_ms: int
    sequential_ms: int
    speedup: float
    total: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    running: int
    ops: _containers.RepeatedCompositeFieldContainer[OpStatus]
    critical_path: _containers.RepeatedScalarFieldContainer[str]
    critical_path_ms: int
    error: str
    owner: str
    def __init__(self, batch_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[BatchState, str]] = ..., created_at_ms: _Optional[int] = ..., wall_ms: _Optional[int] = ..., sequential_ms: _Optional[int] = ..., speedup: _Optional[float] = ..., total: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., skipped: _Optional[int] = ..., cancelled: _Optional[int] = ..., running: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[OpStatus, _Mapping]]] = ..., critical_path: _Optional[_Iterable[str]] = ..., critical_path_ms: _Optional[int] = ..., error: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class WatchBatchRequest(_message.Message):
    __slots__ = ("batch_id", "after_seq")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    after_seq: int
    def __init__(self, batch_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("batch_id", "omit_ops", "ops_offset", "ops_limit", "op_id")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OMIT_OPS_FIELD_NUMBER: _ClassVar[int]
    OPS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    OPS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    omit_ops: bool
    ops_offset: int
    ops_limit: int
    op_id: str
    def __init__(self, batch_id: _Optional[str] = ..., omit_ops: bool = ..., ops_offset: _Optional[int] = ..., ops_limit: _Optional[int] = ..., op_id: _Optional[str] = ...) -> None: ...

class CancelBatchRequest(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...

class CancelBatchResponse(_message.Message):
    __slots__ = ("state", "cancelled")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    state: BatchState
    cancelled: int
    def __init__(self, state: _Optional[_Union[BatchState, str]] = ..., cancelled: _Optional[int] = ...) -> None: ...

class ListBatchesRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class WhyRequest(_message.Message):
    __slots__ = ("batch_id", "op_id")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    op_id: str
    def __init__(self, batch_id: _Optional[str] = ..., op_id: _Optional[str] = ...) -> None: ...

class WhyResponse(_message.Message):
    __slots__ = ("op_id", "state", "reasons")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    state: OpState
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, op_id: _Optional[str] = ..., state: _Optional[_Union[OpState, str]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class SpawnOpsRequest(_message.Message):
    __slots__ = ("batch_id", "ops", "spawned_by", "idempotency_key")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    SPAWNED_BY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    spawned_by: str
    idempotency_key: str
    def __init__(self, batch_id: _Optional[str] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., spawned_by: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SpawnOpsResponse(_message.Message):
    __slots__ = ("op_count", "warnings")
    OP_COUNT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    op_count: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, op_count: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchSummary(_message.Message):
    __slots__ = ("batch_id", "name", "state", "created_at_ms", "total", "done", "tenant", "finished_at_ms")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    name: str
    state: BatchState
    created_at_ms: int
    total: int
    done: int
    tenant: str
    finished_at_ms: int
    def __init__(self, batch_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[BatchState, str]] = ..., created_at_ms: _Optional[int] = ..., total: _Optional[int] = ..., done: _Optional[int] = ..., tenant: _Optional[str] = ..., finished_at_ms: _Optional[int] = ...) -> None: ...

class ListBatchesResponse(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[BatchSummary]
    def __init__(self, batches: _Optional[_Iterable[_Union[BatchSummary, _Mapping]]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "key", "namespace")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: str
    namespace: str
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class GetMemoryResponse(_message.Message):
    __slots__ = ("found", "value", "content_type", "version")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    content_type: str
    version: int
    def __init__(self, found: bool = ..., value: _Optional[bytes] = ..., content_type: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PutMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "key", "value", "namespace", "content_type", "ttl_ms", "if_version", "writer_op", "writer_attempt")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    WRITER_OP_FIELD_NUMBER: _ClassVar[int]
    WRITER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: str
    value: bytes
    namespace: str
    content_type: str
    ttl_ms: int
    if_version: int
    writer_op: str
    writer_attempt: int
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., namespace: _Optional[str] = ..., content_type: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., if_version: _Optional[int] = ..., writer_op: _Optional[str] = ..., writer_attempt: _Optional[int] = ...) -> None: ...

class PutMemoryResponse(_message.Message):
    __slots__ = ("unblocked", "version")
    UNBLOCKED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    unblocked: int
    version: int
    def __init__(self, unblocked: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "key", "namespace", "if_version")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: str
    namespace: str
    if_version: int
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[str] = ..., namespace: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class DeleteMemoryResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...

class ListMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "namespace", "prefix", "page_token", "limit")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    namespace: str
    prefix: str
    page_token: str
    limit: int
    def __init__(self, batch_id: _Optional[str] = ..., namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., page_token: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class MemoryKeyInfo(_message.Message):
    __slots__ = ("key", "version", "size", "content_type", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    size: int
    content_type: str
    expires_at_ms: int
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class ListMemoryResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[MemoryKeyInfo]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[MemoryKeyInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IncrMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "key", "namespace", "delta")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: str
    namespace: str
    delta: int
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[str] = ..., namespace: _Optional[str] = ..., delta: _Optional[int] = ...) -> None: ...

class IncrMemoryResponse(_message.Message):
    __slots__ = ("value", "version", "unblocked")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNBLOCKED_FIELD_NUMBER: _ClassVar[int]
    value: int
    version: int
    unblocked: int
    def __init__(self, value: _Optional[int] = ..., version: _Optional[int] = ..., unblocked: _Optional[int] = ...) -> None: ...

class WatchMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "namespace", "prefix", "after_revision", "include_existing", "store_epoch")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXISTING_FIELD_NUMBER: _ClassVar[int]
    STORE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    namespace: str
    prefix: str
    after_revision: int
    include_existing: bool
    store_epoch: str
    def __init__(self, batch_id: _Optional[str] = ..., namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., after_revision: _Optional[int] = ..., include_existing: bool = ..., store_epoch: _Optional[str] = ...) -> None: ...

class MemoryChange(_message.Message):
    __slots__ = ("revision", "key", "kind", "version", "value", "value_omitted", "content_type", "at_ms", "reset_reason")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_OMITTED_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    RESET_REASON_FIELD_NUMBER: _ClassVar[int]
    revision: int
    key: str
    kind: MemoryChangeKind
    version: int
    value: bytes
    value_omitted: bool
    content_type: str
    at_ms: int
    reset_reason: MemoryResetReason
    def __init__(self, revision: _Optional[int] = ..., key: _Optional[str] = ..., kind: _Optional[_Union[MemoryChangeKind, str]] = ..., version: _Optional[int] = ..., value: _Optional[bytes] = ..., value_omitted: bool = ..., content_type: _Optional[str] = ..., at_ms: _Optional[int] = ..., reset_reason: _Optional[_Union[MemoryResetReason, str]] = ...) -> None: ...

class WaitMemoryRequest(_message.Message):
    __slots__ = ("batch_id", "key", "namespace", "timeout_ms")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: str
    namespace: str
    timeout_ms: int
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[str] = ..., namespace: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class GetBatchPlanRequest(_message.Message):
    __slots__ = ("batch_id", "ops_offset", "ops_limit")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OPS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    OPS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    ops_offset: int
    ops_limit: int
    def __init__(self, batch_id: _Optional[str] = ..., ops_offset: _Optional[int] = ..., ops_limit: _Optional[int] = ...) -> None: ...

class BatchPlanPage(_message.Message):
    __slots__ = ("namespace", "total", "args_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    total: int
    args_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., total: _Optional[int] = ..., args_json: _Optional[_Iterable[str]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("worker_id", "kinds", "labels", "slots", "version", "running")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    slots: int
    version: str
    running: _containers.RepeatedCompositeFieldContainer[OpRef]
    def __init__(self, worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., version: _Optional[str] = ..., running: _Optional[_Iterable[_Union[OpRef, _Mapping]]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("batch_id", "op_index", "op_id", "kind", "args_json", "attempt", "timeout_ms", "trace_context", "namespace", "token", "lease_ticket", "max_output_bytes")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OP_INDEX_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_TICKET_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    op_index: int
    op_id: str
    kind: str
    args_json: str
    attempt: int
    timeout_ms: int
    trace_context: _containers.ScalarMap[str, str]
    namespace: str
    token: str
    lease_ticket: str
    max_output_bytes: int
    def __init__(self, batch_id: _Optional[str] = ..., op_index: _Optional[int] = ..., op_id: _Optional[str] = ..., kind: _Optional[str] = ..., args_json: _Optional[str] = ..., attempt: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., namespace: _Optional[str] = ..., token: _Optional[str] = ..., lease_ticket: _Optional[str] = ..., max_output_bytes: _Optional[int] = ...) -> None: ...

class OpResult(_message.Message):
    __slots__ = ("batch_id", "op_index", "attempt", "ok", "output", "error", "details_json", "started_at_ms", "duration_ms", "failure_kind", "retry_after_ms")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OP_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    op_index: int
    attempt: int
    ok: bool
    output: str
    error: str
    details_json: str
    started_at_ms: int
    duration_ms: int
    failure_kind: FailureKind
    retry_after_ms: int
    def __init__(self, batch_id: _Optional[str] = ..., op_index: _Optional[int] = ..., attempt: _Optional[int] = ..., ok: bool = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., details_json: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ..., failure_kind: _Optional[_Union[FailureKind, str]] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Results(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OpResult]
    def __init__(self, results: _Optional[_Iterable[_Union[OpResult, _Mapping]]] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("register", "results", "heartbeat", "return_ops")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RETURN_OPS_FIELD_NUMBER: _ClassVar[int]
    register: Register
    results: Results
    heartbeat: Heartbeat
    return_ops: ReturnOps
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., results: _Optional[_Union[Results, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., return_ops: _Optional[_Union[ReturnOps, _Mapping]] = ...) -> None: ...

class ReturnOps(_message.Message):
    __slots__ = ("ops", "reason")
    OPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpRef]
    reason: str
    def __init__(self, ops: _Optional[_Iterable[_Union[OpRef, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Registered(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class CancelOps(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpRef]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpRef, _Mapping]]] = ...) -> None: ...

class OpRef(_message.Message):
    __slots__ = ("batch_id", "op_index", "attempt", "ticket")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OP_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    op_index: int
    attempt: int
    ticket: str
    def __init__(self, batch_id: _Optional[str] = ..., op_index: _Optional[int] = ..., attempt: _Optional[int] = ..., ticket: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("registered", "assignments", "cancel")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    assignments: Assignments
    cancel: CancelOps
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., assignments: _Optional[_Union[Assignments, _Mapping]] = ..., cancel: _Optional[_Union[CancelOps, _Mapping]] = ...) -> None: ...

class KnownKinds(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "kinds", "labels", "slots", "busy", "coordinator", "draining")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    slots: int
    busy: int
    coordinator: str
    draining: bool
    def __init__(self, worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., busy: _Optional[int] = ..., coordinator: _Optional[str] = ..., draining: bool = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "role", "tenant", "name", "created_at_ms", "expires_at_ms", "revoked_at_ms", "last_used_at_ms", "labels", "kinds")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    tenant: str
    name: str
    created_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int
    last_used_at_ms: int
    labels: _containers.ScalarMap[str, str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., revoked_at_ms: _Optional[int] = ..., last_used_at_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("role", "tenant", "ttl_ms", "name", "labels", "kinds")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    role: str
    tenant: str
    ttl_ms: int
    name: str
    labels: _containers.ScalarMap[str, str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[str] = ..., tenant: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: bool = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("token_id", "role", "tenant")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    role: str
    tenant: str
    def __init__(self, token_id: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...
