"""Batches as dicts (the shape of a YAML batch file: the README's "The
batch file") and files, converted to ``volley.v1.Batch`` the way the
Rust client's ``batch_file.rs`` does: unknown fields are refused, durations are
``"10m"``/``"1h 30m"``/``"250ms"`` or whole milliseconds, enums are their
lower-case names. A bad value raises :class:`~volley.errors.InvalidBatch`
naming the op (by id, or by position when it has none) and the field.

An op's ``foreach:`` is expanded here into ordinary ops (see
:mod:`volley.matrix`), as the Rust client does, before anything is sent.

Everything else (ids, references, cycles, kinds, args that do not fit the
kind, hazards) is the server's to check: it reports every problem at once.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, TypeVar, Union

import yaml

from ._proto.volley.v1 import volley_pb2 as pb
from .errors import InvalidBatch, Problem
from .matrix import ForeachError, expand, foreach_values_as_rust_reads_them

__all__ = [
    "BatchDict",
    "batch_from_dict",
    "ops_from_dicts",
    "parse_batch",
    "parse_duration_ms",
    "read_batch_file",
]

V = TypeVar("V")

#: A batch as a mapping: ``{"name": …, "ops": [{"id": …, "kind": …}, …]}``.
BatchDict = Mapping[str, Any]

_U32 = 2**32 - 1
_U64 = 2**64 - 1

_ON_FAILURE = {"continue": pb.ON_FAILURE_CONTINUE, "fail_fast": pb.ON_FAILURE_FAIL_FAST}
_HAZARDS = {"reject": pb.HAZARDS_REJECT, "order": pb.HAZARDS_ORDER, "allow": pb.HAZARDS_ALLOW}
_RETRY_FAILED = {"none": pb.RETRY_FAILED_NONE, "sequential": pb.RETRY_FAILED_SEQUENTIAL}
_RUN_IF = {"success": pb.RUN_IF_SUCCESS, "always": pb.RUN_IF_ALWAYS}
_PRIORITY = {
    "critical": pb.PRIORITY_CRITICAL,
    "high": pb.PRIORITY_HIGH,
    "medium": pb.PRIORITY_MEDIUM,
    "low": pb.PRIORITY_LOW,
}
_RETRY_ON = {
    "failure": pb.RETRY_ON_FAILURE,
    "timeout": pb.RETRY_ON_TIMEOUT,
    "lost_worker": pb.RETRY_ON_LOST_WORKER,
}

_BATCH_FIELDS = (
    "name",
    "max_parallel",
    "on_failure",
    "hazards",
    "namespace",
    "labels",
    "wait_timeout",
    "strict",
    "allow_unwritten",
    "deadline",
    "retry_failed",
    "retry",
    "ops",
)
_OP_FIELDS = (
    "id",
    "kind",
    "args",
    "after",
    "run_if",
    "timeout",
    "attempts",
    "priority",
    "store_as",
    "wait_for",
    "wait_for_any",
    "wait_timeout",
    "backoff",
    "retry_on",
    "reads",
    "writes",
    "requires",
    "foreach",
)
_BACKOFF_FIELDS = ("initial", "max", "multiplier", "jitter")
_RETRY_FIELDS = ("lost_worker",)


class _Where:
    """Where a value sits, for errors: the source, the op and the field."""

    def __init__(self, source: str, op_id: str = "", op_position: str = "") -> None:
        self.source = source
        self.op_id = op_id
        self.op_position = op_position  # "op #2 (counting from 1): " when it has no id

    def fail(self, field: str, message: str) -> NoReturn:
        problem = Problem(self.op_id, field, self.op_position + message)
        prefix = f"{self.source}: " if self.source else ""
        raise InvalidBatch(f"{prefix}{problem}", [problem], code=None)


def batch_from_dict(batch: BatchDict, source: str = "", *, base_dir: str = ".") -> pb.Batch:
    """Converts a batch dict (the schema of a batch file) to a ``Batch``.

    ``source`` (a file name, say) prefixes error messages. Raises
    :class:`InvalidBatch` naming the op and field of the first bad value.
    An op's ``foreach`` is expanded, a ``{glob: …}`` resolved under
    ``base_dir`` (default: the current directory).
    """
    return _batch_from_dict(batch, source, base_dir, None)


def _batch_from_dict(
    batch: BatchDict,
    source: str,
    base_dir: str,
    text: Optional[str],
    foreach_values: Optional[Mapping[int, Any]] = None,
) -> pb.Batch:
    """:func:`batch_from_dict`; ``text`` (the file's, when there is one)
    gives errors about a ``foreach`` its line, and ``foreach_values`` are
    the ops' ``foreach`` as the Rust client reads the file."""
    where = _Where(source)
    if not isinstance(batch, Mapping):
        where.fail("batch", f"expected a mapping of batch fields, got {_type_name(batch)}")
    _refuse_unknown(batch, _BATCH_FIELDS, where)
    message = pb.Batch(
        name=_string(batch, "name", where),
        max_parallel=_integer(batch, "max_parallel", where, _U32),
        on_failure=_choice(batch, "on_failure", _ON_FAILURE, where),
        hazards=_choice(batch, "hazards", _HAZARDS, where),
        namespace=_string(batch, "namespace", where),
        labels=_string_map(batch, "labels", where),
        wait_timeout_ms=_duration(batch, "wait_timeout", where),
        strict=_boolean(batch, "strict", where, False),
        allow_unwritten=_boolean(batch, "allow_unwritten", where, False),
        deadline_ms=_duration(batch, "deadline", where),
        retry_failed=_choice(batch, "retry_failed", _RETRY_FAILED, where),
    )
    retry = batch.get("retry")
    if retry is not None:
        if not isinstance(retry, Mapping):
            where.fail(
                "retry", f"expected a mapping like {{lost_worker: 3}}, got {_type_name(retry)}"
            )
        _refuse_unknown(retry, _RETRY_FIELDS, where)
        if retry.get("lost_worker") is not None:
            message.lost_worker_retries = _integer(retry, "lost_worker", where, _U32)
    ops = batch.get("ops")
    if ops is not None:
        message.ops.extend(_ops_from_dicts(ops, source, base_dir, text, foreach_values))
    return message


def ops_from_dicts(
    ops: Sequence[Mapping[str, Any]], source: str = "", *, base_dir: str = "."
) -> List[pb.Op]:
    """Converts a list of op dicts (the ``ops`` of a batch) to ``Op``s,
    each ``foreach`` expanded (a ``{glob: …}`` under ``base_dir``)."""
    return _ops_from_dicts(ops, source, base_dir, None)


def _ops_from_dicts(
    ops: Sequence[Mapping[str, Any]],
    source: str,
    base_dir: str,
    text: Optional[str],
    foreach_values: Optional[Mapping[int, Any]] = None,
) -> List[pb.Op]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
        _Where(source).fail("ops", f"expected a list of ops, got {_type_name(ops)}")
    messages = [_op_from_dict(op, index, source) for index, op in enumerate(ops)]
    # Each op's `foreach` (by index), kept as written for `expand` to check.
    rust_read = foreach_values or {}
    foreach: List[Tuple[int, Any]] = [
        (index, rust_read.get(index, op["foreach"]))
        for index, op in enumerate(ops)
        if op.get("foreach") is not None
    ]
    try:
        return expand(messages, foreach, base_dir, text)
    except ForeachError as error:
        prefix = f"{source}: " if source else ""
        problem = Problem(error.op_id, error.field, error.message)
        raise InvalidBatch(f"{prefix}{error}", [problem], code=None) from error


def _op_from_dict(op: Any, index: int, source: str) -> pb.Op:
    op_id = op.get("id") if isinstance(op, Mapping) else None
    if isinstance(op_id, str) and op_id:
        where = _Where(source, op_id=op_id)
    else:
        where = _Where(source, op_position=f"op #{index + 1} (counting from 1): ")
    if not isinstance(op, Mapping):
        where.fail("op", f"expected a mapping of op fields, got {_type_name(op)}")
    _refuse_unknown(op, _OP_FIELDS, where)
    for required in ("id", "kind"):
        if op.get(required) is None:
            where.fail(required, f"missing field `{required}`")
    message = pb.Op(
        id=_string(op, "id", where),
        kind=_string(op, "kind", where),
        args_json=_args(op, where),
        after=_strings(op, "after", where),
        run_if=_choice(op, "run_if", _RUN_IF, where),
        timeout_ms=_duration(op, "timeout", where),
        attempts=_integer(op, "attempts", where, _U32),
        priority=_choice(op, "priority", _PRIORITY, where),
        store_as=_string(op, "store_as", where),
        wait_for=_strings(op, "wait_for", where),
        wait_for_any=_strings(op, "wait_for_any", where),
        wait_timeout_ms=_duration(op, "wait_timeout", where),
        retry_on=[
            _lookup(name, _RETRY_ON, "retry_on", where) for name in _strings(op, "retry_on", where)
        ],
        reads=_strings(op, "reads", where),
        writes=_strings(op, "writes", where),
        requires=_string_map(op, "requires", where),
    )
    backoff = op.get("backoff")
    if backoff is not None:
        if not isinstance(backoff, Mapping):
            where.fail(
                "backoff",
                f"expected a mapping like {{initial: 1s, max: 30s}}, got {_type_name(backoff)}",
            )
        _refuse_unknown(backoff, _BACKOFF_FIELDS, where)
        multiplier = backoff.get("multiplier", 0.0)
        if multiplier is None:
            multiplier = 0.0
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            where.fail("multiplier", f"expected a number, got {_type_name(multiplier)}")
        message.backoff.CopyFrom(
            pb.Backoff(
                initial_ms=_duration(backoff, "initial", where),
                max_ms=_duration(backoff, "max", where),
                multiplier=float(multiplier),
                no_jitter=not _boolean(backoff, "jitter", where, True),
            )
        )
    return message


def read_batch_file(path: Union[str, os.PathLike[str]]) -> pb.Batch:
    """Reads a batch file: JSON when it starts with ``{``, YAML otherwise.

    Raises :class:`InvalidBatch` for a file that is not well-formed (with
    its line and column) or does not fit the schema, and ``OSError`` when it
    cannot be read.
    """
    name = os.fspath(path)
    with open(name, encoding="utf-8-sig") as file:
        text = file.read()
    # A `foreach: {glob: …}` is relative to the file's directory (`.` for
    # a bare file name, where the Rust client's `Path::parent` gives ``).
    return parse_batch(text, name, base_dir=os.path.dirname(name) or ".")


def parse_batch(text: str, source: str = "<batch>", *, base_dir: str = ".") -> pb.Batch:
    """Parses a batch file's text (see :func:`read_batch_file`); a
    ``foreach: {glob: …}`` is resolved under ``base_dir``."""
    text = text.lstrip("\ufeff")
    document: Any
    foreach_values: Optional[Dict[int, Any]] = None
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            _syntax_error(source, error.lineno, error.colno, error.msg)
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            _syntax_error(source, line, column, str(error.problem or error))
        except yaml.YAMLError as error:
            _syntax_error(source, 1, 1, str(error))
        if "foreach" in text:
            # Items are read as the Rust client reads them (`yes` is the
            # text `yes`), so both expand a file into the same ops.
            foreach_values = foreach_values_as_rust_reads_them(text)
    if document is None:
        document = {}
    return _batch_from_dict(document, source, base_dir, text, foreach_values)


def _syntax_error(source: str, line: int, column: int, message: str) -> NoReturn:
    problem = Problem("", "", f"{message} (line {line}, column {column})")
    raise InvalidBatch(f"{source}:{line}:{column}: {message}", [problem], code=None)


# ------------------------------------------------------------------ fields


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _refuse_unknown(mapping: Mapping[Any, Any], known: Sequence[str], where: _Where) -> None:
    for key in mapping:
        if key not in known:
            name = str(key)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            expected = ", ".join(f"`{field}`" for field in known)
            where.fail(name, f"unknown field `{name}`{hint}, expected one of {expected}")


def _string(mapping: Mapping[str, Any], field: str, where: _Where) -> str:
    value = mapping.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        where.fail(field, f"expected a string, got {_type_name(value)}")
    return value


def _strings(mapping: Mapping[str, Any], field: str, where: _Where) -> List[str]:
    value = mapping.get(field)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        where.fail(field, f"expected a list of strings, got {_type_name(value)}")
    for item in value:
        if not isinstance(item, str):
            where.fail(field, f"expected a list of strings, got an item that is {_type_name(item)}")
    return list(value)


def _integer(mapping: Mapping[str, Any], field: str, where: _Where, largest: int) -> int:
    value = mapping.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        where.fail(field, f"expected a whole number, got {_type_name(value)}")
    if not 0 <= value <= largest:
        where.fail(field, f"{value} is out of range (0 to {largest})")
    return value


def _boolean(mapping: Mapping[str, Any], field: str, where: _Where, default: bool) -> bool:
    value = mapping.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        where.fail(field, f"expected true or false, got {_type_name(value)}")
    return value


def _lookup(name: Any, choices: Mapping[str, V], field: str, where: _Where) -> V:
    if not isinstance(name, str) or name not in choices:
        expected = ", ".join(f"`{choice}`" for choice in choices)
        shown = f"`{name}`" if isinstance(name, str) else _type_name(name)
        where.fail(field, f"unknown variant {shown}, expected one of {expected}")
    return choices[name]


def _choice(
    mapping: Mapping[str, Any], field: str, choices: Mapping[str, V], where: _Where
) -> Optional[V]:
    """The enum value named by ``mapping[field]``; None (unset) when absent."""
    value = mapping.get(field)
    return None if value is None else _lookup(value, choices, field, where)


def _string_map(mapping: Mapping[str, Any], field: str, where: _Where) -> Dict[str, str]:
    """A mapping of strings to strings, where ``true`` and ``8`` count as
    the strings they spell (as in YAML's unquoted scalars)."""
    value = mapping.get(field)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        where.fail(field, f"expected a mapping of strings to strings, got {_type_name(value)}")
    result: Dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            where.fail(field, f"expected string keys, got {_type_name(key)}")
        if isinstance(item, bool):
            result[key] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            result[key] = str(item)
        else:
            where.fail(field, f"`{key}`: expected a string, got {_type_name(item)}")
    return result


def _args(op: Mapping[str, Any], where: _Where) -> str:
    args = op.get("args")
    if args is None:
        return ""
    if not isinstance(args, Mapping):
        where.fail(
            "args", f"expected a mapping of argument names to values, got {_type_name(args)}"
        )
    try:
        return json.dumps(args, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        where.fail("args", f"not representable as JSON: {error}")


def _duration(mapping: Mapping[str, Any], field: str, where: _Where) -> int:
    value = mapping.get(field)
    if value is None:
        return 0
    try:
        return parse_duration_ms(value)
    except ValueError as error:
        where.fail(field, str(error))


# ---------------------------------------------------------------- durations

# humantime's units (what the Rust side parses), in nanoseconds.
_UNIT_NS: Dict[str, int] = {}
for _names, _ns in (
    (("nsec", "ns"), 1),
    (("usec", "us", "\u00b5s"), 1_000),
    (("msec", "ms"), 1_000_000),
    (("seconds", "second", "sec", "s"), 1_000_000_000),
    (("minutes", "minute", "min", "m"), 60_000_000_000),
    (("hours", "hour", "hr", "h"), 3_600_000_000_000),
    (("days", "day", "d"), 86_400_000_000_000),
    (("weeks", "week", "w"), 604_800_000_000_000),
    (("months", "month", "M"), 2_630_016_000_000_000),
    (("years", "year", "y"), 31_557_600_000_000_000),
):
    for _name in _names:
        _UNIT_NS[_name] = _ns

_DURATION_PART = re.compile(r"\s*(\d+)\s*([A-Za-z\u00b5]+)")


def parse_duration_ms(value: Union[str, int, datetime.timedelta]) -> int:
    """Milliseconds from ``"10m"``, ``"1h 30m"``, ``"250ms"`` (humantime's
    syntax), whole milliseconds, or a ``timedelta``. Raises ValueError."""
    if isinstance(value, datetime.timedelta):
        if value < datetime.timedelta(0):
            raise ValueError(f"bad duration {value}: a duration cannot be negative")
        return value // datetime.timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            "expected a duration like `10m` or `1h 30m`, or whole milliseconds, "
            f"got {_type_name(value)}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad duration {value}: a timeout cannot be negative")
        if value > _U64:
            raise ValueError(f"bad duration {value}: too long")
        return value
    text = value.strip()
    total_ns = 0
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None or match.group(2) not in _UNIT_NS:
            raise ValueError(f"bad duration `{value}` (try `90s`, `10m`, `1h 30m`)")
        total_ns += int(match.group(1)) * _UNIT_NS[match.group(2)]
        position = match.end()
    if not text:
        raise ValueError("bad duration ``: empty (try `90s`, `10m`, `1h 30m`)")
    millis = total_ns // 1_000_000
    if millis > _U64:
        raise ValueError(f"bad duration `{value}`: too long")
    return millis
