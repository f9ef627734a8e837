"""Typed errors: a gRPC status mapped back by its code (never by its
message), with a rejected batch's problems decoded from the status details.

Every error the client raises is a :class:`VolleyError`::

    VolleyError
    ├── InvalidArgument      INVALID_ARGUMENT (a bad key, an oversized value, …)
    │   └── InvalidBatch     the batch was rejected (by the server or while
    │                        converting it here); nothing ran
    ├── NotFound             NOT_FOUND (no such batch or op; also a batch
    │                        of another tenant)
    ├── Unauthenticated      UNAUTHENTICATED (no token, or an unknown,
    │                        expired or revoked one)
    ├── PermissionDenied     PERMISSION_DENIED (the token's role may not
    │                        make this call)
    ├── Unavailable          UNAVAILABLE (cannot reach the coordinator, or it
    │                        cannot serve now); retryable
    ├── Conflict             FAILED_PRECONDITION / ABORTED (compare-and-set
    │                        found another version, a stale writer)
    └── TimedOut             DEADLINE_EXCEEDED (a wait ran out of time)

Other codes (ALREADY_EXISTS, DATA_LOSS, INTERNAL, …) raise a plain
:class:`VolleyError` whose :attr:`~VolleyError.code` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Type

import grpc

from ._proto.volley.v1 import volley_pb2 as pb

__all__ = [
    "Conflict",
    "InvalidArgument",
    "InvalidBatch",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "TimedOut",
    "Unauthenticated",
    "Unavailable",
    "VolleyError",
]

# The trailer tonic's `Status::with_details` carries the details in: for
# INVALID_ARGUMENT from SubmitBatch/SpawnOps, an encoded ValidationFailure.
_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a batch."""

    op_id: str
    """The op at fault; empty when the problem is the batch's."""
    field: str
    """The field at fault (``after``, ``args``, ``timeout``, …)."""
    message: str

    def __str__(self) -> str:
        where = f"op `{self.op_id}`: " if self.op_id else ""
        field = f"field `{self.field}`: " if self.field else ""
        return f"{where}{field}{self.message}"


class VolleyError(Exception):
    """Any error from the Volley client."""

    #: Whether the same call may succeed later (the coordinator was down, …).
    retryable: bool = False

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        #: The gRPC status code, when the error came from the server.
        self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgument(VolleyError):
    """The request was refused as invalid."""

    def __init__(
        self,
        message: str,
        problems: Sequence[Problem] = (),
        code: Optional[grpc.StatusCode] = grpc.StatusCode.INVALID_ARGUMENT,
    ) -> None:
        super().__init__(message, code)
        #: Every problem found, each naming its op and field (may be empty).
        self.problems: List[Problem] = list(problems)


class InvalidBatch(InvalidArgument):
    """The batch was rejected before anything ran.

    Raised by the server's validation (``code`` is INVALID_ARGUMENT, and
    :attr:`problems` lists everything it found) and by the client's own
    conversion of a dict or file (``code`` is None, one problem).
    """


class NotFound(VolleyError):
    """No such batch, op or key. A batch of another tenant is not found
    either: its id tells a client of another tenant nothing."""


class Unauthenticated(VolleyError):
    """The coordinator did not accept the call's token: there was none, or
    it is unknown, expired or revoked. Not retryable with the same token
    (the CLI exits 5 for it)."""


class PermissionDenied(VolleyError):
    """The token is valid but its role may not make this call (a client
    token managing tokens, a worker token submitting a batch, …; the CLI
    exits 6 for it)."""


class Unavailable(VolleyError):
    """The coordinator could not be reached, or cannot serve now."""

    retryable = True


class Conflict(VolleyError):
    """A compare-and-set found another version, or a write came from a
    stale attempt."""


class TimedOut(VolleyError):
    """A wait (or the call's deadline) ran out of time."""


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimedOut,
}


def from_rpc_error(
    error: grpc.RpcError, invalid: Type[InvalidArgument] = InvalidArgument
) -> VolleyError:
    """The typed error for a failed call; ``invalid`` is the class used for
    INVALID_ARGUMENT (:class:`InvalidBatch` for submissions)."""
    call = error if isinstance(error, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    message = (call.details() if call is not None else None) or str(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid(message, _problems(call), code)
    cls = _BY_CODE.get(code, VolleyError)
    return cls(message, code)


def _problems(call: Optional[grpc.Call]) -> List[Problem]:
    """The ValidationFailure in the status details, if any."""
    if call is None:
        return []
    for key, value in call.trailing_metadata() or ():
        if key == _DETAILS_TRAILER and isinstance(value, bytes):
            try:
                failure = pb.ValidationFailure.FromString(value)
            except Exception:  # not ours (a google.rpc.Status from a proxy, …)
                return []
            return [Problem(p.op_id, p.field, p.message) for p in failure.problems]
    return []
